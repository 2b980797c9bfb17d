# Shared by the benchmarks: a real control plane owned by the calling
# script (stopped when it exits), and the release binary.
set -euo pipefail
shopt -s inherit_errexit
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

cargo build --release --locked >&2
operator=$repo/target/release/catalio-operator

cp_dir=$(mktemp -d "${TMPDIR:-/tmp}/catalio-cp.bench-XXXXXX")
export KUBECONFIG
KUBECONFIG=$(tests/controlplane/cluster.sh up "$cp_dir" --owner-pid $$ --crds crds)
PATH=$(cat "$cp_dir/bin"):$PATH

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # admin-port
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$1/readyz" > /dev/null && return 0
    sleep 0.1
  done
  echo "operator not ready" >&2; return 1
}

# Resident memory of PID in MiB; with "peak", its high-water mark.
rss() { # pid [peak]
  local field=VmRSS
  [ "${2:-}" = peak ] && field=VmHWM
  awk -v f="$field:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}

require_wrk() {
  command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
}

# A namespace (default "bench") with the read-only credential "load".
bench_credential() {
  local ns=${1:-bench}
  kubectl create namespace "$ns" > /dev/null
  kubectl -n "$ns" apply -f - > /dev/null <<YAML
apiVersion: catalio.ai/v1
kind: ApiCredential
metadata: {name: load}
spec: {displayName: Load test, scopes: ["*:read"]}
YAML
}

# req/s, p50, p99 and non-2xx of a `wrk --latency` report, tab-separated.
wrk_figures() { # report-file
  awk '/Requests\/sec/ {rps = $2} $1 == "50%" {p50 = $2} $1 == "99%" {p99 = $2} /Non-2xx/ {errors = $NF}
       END {printf "%s\t%s\t%s\t%s", rps, p50, p99, errors == "" ? 0 : errors}' "$1"
}

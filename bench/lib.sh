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

# For benchmarks that keep the server and wrk apart: sets cpus, server_cpu
# (the last CPU) and wrk_cpus (the others, a taskset list).
pin_apart() {
  command -v taskset > /dev/null || { echo "needs taskset (util-linux)" >&2; exit 1; }
  cpus=$(nproc)
  [ "$cpus" -ge 2 ] || { echo "needs 2 CPUs: one for the server, one for wrk" >&2; exit 1; }
  server_cpu=$((cpus - 1))
  wrk_cpus=0-$((cpus - 2))
}

# Prints the `wrk --latency` REPORT as the row NAME and sets rate; fails
# when any answer was not 2xx or the rate is not positive.
checked_row() { # name report
  local figures errors
  figures=$(wrk_figures "$2")
  printf '%-52s\t%s\n' "$1" "$figures"
  rate=$(echo "$figures" | cut -f1)
  errors=$(echo "$figures" | cut -f4)
  if [ "$errors" != 0 ] || ! awk -v r="$rate" 'BEGIN {exit !(r > 0)}'; then
    echo "$1: $errors non-2xx answers, rate $rate" >&2
    exit 1
  fi
}

# A as a percentage of B.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f%%", 100 * a / b}'; }

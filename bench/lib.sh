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

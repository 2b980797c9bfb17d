#!/usr/bin/env bash
# Fuzzes every target for SECONDS each with SANITIZER (none or address) and
# prints one line of figures per target. Fails if any target found a crash
# or a hang; the input that caused it is in fuzz/artifacts/TARGET/. Copy it
# into fuzz/regressions/TARGET/, where `cargo test` replays it, and fix.
#
#   fuzz/run.sh [SECONDS] [SANITIZER] [TARGET...]
#
# cargo fuzz runs on stable without a sanitizer; AddressSanitizer needs
# nightly flags, which RUSTC_BOOTSTRAP=1 allows on the stable compiler.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds=${1:-60}
sanitizer=${2:-none}
shift $(( $# < 2 ? $# : 2 ))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)

command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
corpus=${FUZZ_CORPUS:-../target/fuzz-corpus}

cargo fuzz build -s "$sanitizer" > /dev/null 2>&1 || cargo fuzz build -s "$sanitizer"
failed=0
printf '%-18s %-9s %8s %14s %10s  %s\n' target sanitizer seconds executions "exec/s" result
for target in "${targets[@]}"; do
  mkdir -p "$corpus/$target"
  log=$(mktemp)
  if cargo fuzz run -s "$sanitizer" "$target" "$corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      > "$log" 2>&1; then
    result=ok
  else
    # No artifact: the run itself failed (a build error, say); the log says why.
    result="FOUND: see $(grep -o 'artifacts/[^ ]*' "$log" | tail -n1 || true)"
    failed=1
  fi
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n1; }
  printf '%-18s %-9s %8s %14s %10s  %s\n' "$target" "$sanitizer" "$seconds" \
    "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" "$result"
  [ "$result" = ok ] || tail -n 30 "$log" >&2
  rm -f "$log"
done
exit "$failed"

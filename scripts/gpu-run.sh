#!/usr/bin/env bash
# Runs a bundle made by scripts/gpu-bundle.sh, on the GPU host (needs the NVIDIA driver and the
# CUDA 13 libraries; no Rust). Run from the repo root so tests find files by relative path.
#   bash .gpu/gpu-run.sh tests [TEST ARGS...]     every test binary
#   bash .gpu/gpu-run.sh sanitize [TOOL]          every test binary under compute-sanitizer (memcheck)
#   bash .gpu/gpu-run.sh benches [FILTER]         every criterion bench
#   bash .gpu/gpu-run.sh example NAME [ARGS...]   one example
# Logs go to $OUT if set, else <bundle>/logs; the end of each log is printed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=${OUT:-$here/logs}
mkdir -p "$logs"
[[ -d $here/bin ]] || xz -dc "$here/bundle.tar.xz" | tar -C "$here" -xf -
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
mode=${1:-tests}
shift || true
status=0
run_each() { # kind, log suffix, wrapper..., --, args
  local kind=$1 suffix=$2; shift 2
  local wrapper=()
  while [[ $1 != -- ]]; do wrapper+=("$1"); shift; done
  shift
  for bin in "$here"/bin/"$kind"-*; do
    [[ -x $bin ]] || continue
    local name=${bin##*/}
    echo "=== $name"
    local log=$logs/$name$suffix.log
    "${wrapper[@]}" "$bin" "$@" > "$log" 2>&1
    local rc=$?
    tail -n 12 "$log"
    ((rc == 0)) || { echo "=== $name exited $rc"; status=1; }
  done
}
case $mode in
  tests) run_each test "" -- "$@" ;;
  sanitize)
    tool=${1:-memcheck}
    # one test thread: sanitizer runs are slow and racecheck wants no interleaving
    run_each test ".$tool" compute-sanitizer --tool "$tool" --error-exitcode 9 -- --test-threads 1 ;;
  benches) run_each bench "" -- --bench "$@" ;;
  example) name=$1; shift; "$here/bin/example-$name" "$@" 2>&1 | tee "$logs/example-$name.log"; status=${PIPESTATUS[0]} ;;
  *) echo "usage: gpu-run.sh tests|sanitize [TOOL]|benches [FILTER]|example NAME [ARGS...]" >&2; exit 2 ;;
esac
exit $status

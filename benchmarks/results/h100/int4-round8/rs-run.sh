#!/usr/bin/env bash
# int4-rs helper's one GPU call: RS harness (f64 checks + kernel times), test-int4, memcheck /
# racecheck on the RS-path tests, criterion; every step under `timeout` within one overall budget;
# all logs in one tar in $OUT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
L=$here/logs_run
mkdir -p "$L"
start=$(date +%s)
BUDGET=${BUDGET:-258}
left() { echo $((BUDGET - ($(date +%s) - start))); }
step() { # name timeout cmd...
  local name=$1 t=$2
  shift 2
  local l
  l=$(left)
  if ((l < 8)); then echo "$name skipped (budget)" | tee -a "$L/steps.txt"; return; fi
  ((t > l)) && t=$l
  local s0
  s0=$(date +%s)
  timeout -k 3 "$t" "$@" > "$L/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc limit=${t}s took=$(($(date +%s) - s0))s" | tee -a "$L/steps.txt"
  tail -n 8 "$L/$name.log"
  tar -C "$here" -cf "$OUT/int4-rs-logs.tar" logs_run 2>/dev/null
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$L/gpu.txt" 2>&1
cat "$L/gpu.txt"; date -u | tee -a "$L/steps.txt"
[[ -d $here/bin ]] || xz -dc "$here/bundle.tar.xz" | tar -C "$here" -xf -
step harness 75 "$here/int4_rs_harness"
step test-int4 150 "$here/bin/test-int4"
step memcheck-small 40 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/test-int4" --test-threads 1 matmul_hopper_rs_small linear_bias_act_rs_path
step bench 50 "$here/bin/bench-int4" --bench 'cuda/int4/4096x11008/m(128|256|384|512|1024)/(int4_F16|candle_F16_matmul)$' --warm-up-time 0.3 --measurement-time 0.6
step racecheck 30 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$here/bin/test-int4" --test-threads 1 --exact matmul_hopper_rs_small
step memcheck-path 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/test-int4" --test-threads 1 --exact matmul_hopper_rs_path
date -u | tee -a "$L/steps.txt"
tar -C "$here" -cf "$OUT/int4-rs-logs.tar" logs_run

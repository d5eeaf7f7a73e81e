#!/usr/bin/env bash
# int4-mc helper's one GPU call: RS harness (f64 checks + kernel times, clustered / multicast
# variants next to round 8's and cuBLAS), test-int4 (after a one-test warm-up), criterion with an
# nvidia-smi clock / power log, memcheck / racecheck on the RS tests; each step under `timeout`
# within one overall budget; all logs in one tar in $OUT.
set -u
here=$(cd "$(dirname "$0")" && pwd)
L=$here/logs_run
mkdir -p "$L"
start=$(date +%s)
BUDGET=${BUDGET:-255}
left() { echo $((BUDGET - ($(date +%s) - start))); }
pack() { tar -C "$here" -cf "$OUT/int4-mc-logs.tar" logs_run 2>/dev/null; }
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
  echo "$name rc=$rc limit=${t}s start=$s0 end=$(date +%s) took=$(($(date +%s) - s0))s" | tee -a "$L/steps.txt"
  tail -n 6 "$L/$name.log"
  pack
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader > "$L/gpu.txt" 2>&1
cat "$L/gpu.txt"; date -u | tee -a "$L/steps.txt"
# clocks / power for the whole run (100 ms); the step lines carry epoch start / end times
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv -lms 100 > "$L/smi.csv" 2>&1 &
smi=$!
[[ -d $here/bin ]] || xz -dc "$here/bundle.tar.xz" | tar -C "$here" -xf -
T=$here/bin/test-int4
step harness 70 "$here/int4_rs_harness"
step warmup 75 "$T" --exact matmul_hopper_rs_cluster_small
step test-int4 150 "$T"
step bench 45 "$here/bin/bench-int4" --bench 'cuda/int4/4096x11008/m(64|128|192|256|512)/(int4_F16|candle_F16_matmul)$' --warm-up-time 0.3 --measurement-time 0.6
step memcheck-small 45 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --test-threads 1 matmul_hopper_rs_small matmul_hopper_rs_cluster_small linear_bias_act_rs_path
step racecheck 40 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$T" --test-threads 1 --exact matmul_hopper_rs_cluster_small
step racecheck-plain 20 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$T" --test-threads 1 --exact matmul_hopper_rs_small
step memcheck-path 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --test-threads 1 --exact matmul_hopper_rs_cluster_path
kill "$smi" 2>/dev/null
date -u | tee -a "$L/steps.txt"
pack

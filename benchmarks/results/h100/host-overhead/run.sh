#!/usr/bin/env bash
# host-overhead round: one GPU call. Tests + memcheck (branch), then timing with main's and the
# branch's binaries alternated (probe, criterion), then ncu kernel counts. Logs: $OUT/host-overhead.tar
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here/out}
L=$here/logs; mkdir -p "$L" "$OUT"
t0=$(date +%s)
left() { echo $((232 - ($(date +%s) - t0))); }
pack() { tar -C "$here" -cf "$OUT/host-overhead.tar" logs 2>/dev/null; }
step() { # name timeout cmd...
  local name=$1 to=$2; shift 2
  local l; l=$(left); ((to > l)) && to=$l
  if ((to < 5)); then echo "SKIP $name (no time)" | tee -a "$L/steps.txt"; return; fi
  local s=$(date +%s)
  timeout -k 3 "$to" "$@" > "$L/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc ${to}s-limit took $(( $(date +%s) - s ))s at +$(( $(date +%s) - t0 ))s" | tee -a "$L/steps.txt"
}
cd "$here"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$L/gpu.txt"
xz -dc bins.tar.xz | tar -xf - && echo "unpacked at +$(( $(date +%s) - t0 ))s" | tee -a "$L/steps.txt"
B=$here/branch; M=$here/main
which ncu >> "$L/gpu.txt" 2>&1; which compute-sanitizer >> "$L/gpu.txt" 2>&1
# Phase A (parallel): branch tests + memcheck; main probe in --ncu mode = JIT warm-up of main's PTX
( step test-ffn 150 $B/test-ffn ) &
( step test-int4 150 $B/test-int4 ) &
( step memcheck-ffn 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test-ffn --exact cooperative_ffn_matches_reference --test-threads 1 ) &
( step memcheck-int4 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test-int4 --exact matmul_matches_dequantized_weight --test-threads 1 ) &
( step warm-main 120 $M/example-host_cost --ncu ) &
wait
pack
grep -h "test result\|ERROR SUMMARY\|FAILED\|panicked" "$L"/test-*.log "$L"/memcheck-*.log | tee -a "$L/steps.txt"
# Phase B: timing, main and branch alternated
FF='cuda/ffn/F16/(768x3072/m1|4096x11008/m16)/(fused|stock)$'
FI='cuda/int4/4096x11008/m(1|16)/(int4_F16|candle_F16_matmul)$'
CA=(--warm-up-time 0.3 --measurement-time 0.8 --noplot)
step probe-main-1 30 $M/example-host_cost
step probe-branch-1 40 $B/example-host_cost
pack
step bench-ffn-main 30 $M/bench-ffn --bench "$FF" "${CA[@]}"
step bench-ffn-branch 30 $B/bench-ffn --bench "$FF" "${CA[@]}"
step bench-int4-main 30 $M/bench-int4 --bench "$FI" "${CA[@]}"
step bench-int4-branch 30 $B/bench-int4 --bench "$FI" "${CA[@]}"
pack
step probe-main-2 30 $M/example-host_cost
step probe-branch-2 40 $B/example-host_cost
pack
# Phase C: kernels per call (ncu), branch then main
NV=()
for c in ffn_768x3072_m1 ffn_4096x11008_m16 int4_4096x11008_m1 int4_4096x11008_m16 candle_affine_1x768 candle_matmul_1x4096x11008; do NV+=(--nvtx-include "call_$c/"); done
step ncu-branch 40 ncu --nvtx "${NV[@]}" --metrics gpu__time_duration.sum $B/example-host_cost --ncu
step ncu-main 40 ncu --nvtx "${NV[@]}" --metrics gpu__time_duration.sum $M/example-host_cost --ncu
pack
echo "done at +$(( $(date +%s) - t0 ))s" | tee -a "$L/steps.txt"
pack

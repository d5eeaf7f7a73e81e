#!/usr/bin/env bash
# ncu profile of one INT4 RS GEMM launch at K=4096 -> N=11008, M=512 (main f4e4836's criterion bench),
# and of candle's cuBLAS f16 matmul at the same shape, for where the RS kernel's time goes.
set -u
here=$(cd "$(dirname "$0")" && pwd); L=$here/logs; mkdir -p "$L"
pack() { tar -C "$here" -cf "$OUT/ncu-logs.tar" logs 2>/dev/null; }
[[ -x $here/main/bench-int4 ]] || { mkdir -p "$here/main"; xz -dc "$here/main-bench.tar.xz" | tar -C "$here/main" -xf -; }
B=$here/main/bench-int4
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$L/gpu.txt"
S=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section LaunchStats --section Occupancy)
timeout 200 ncu "${S[@]}" -k regex:int4_gemm_rs --launch-skip 20 --launch-count 1 "$B" --bench 'cuda/int4/4096x11008/m512/int4_F16$' --warm-up-time 0.05 --measurement-time 0.1 > "$L/ncu-rs.txt" 2>&1
echo "rs rc $?"; pack
timeout 150 ncu "${S[@]}" -k regex:'gemm|sm90|cutlass|nvjet' --launch-skip 20 --launch-count 1 "$B" --bench 'cuda/int4/4096x11008/m512/candle_F16_matmul$' --warm-up-time 0.05 --measurement-time 0.1 > "$L/ncu-cublas.txt" 2>&1
echo "cublas rc $?"; pack
grep -E "^  [a-z_]+.*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Tensor|Issue Slots|Warp Cycles Per Issued|No Eligible|Stall|Registers|Block Limit" "$L/ncu-rs.txt" | head -60

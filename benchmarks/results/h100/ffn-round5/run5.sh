#!/usr/bin/env bash
# Round 5 of the FFN (branch ffn): one GPU call. Harness first (kernel variants, same process),
# then the crate's tests, lib unit tests, the bench, memcheck and racecheck on the changed kernel.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/logs}
mkdir -p "$out"
start=$(date +%s)
left() { echo $((228 - ($(date +%s) - start))); }
step() { echo "step $1 rc=$2 at $(( $(date +%s) - start ))s" | tee -a "$out/steps.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$out/gpu.txt"
chmod +x "$here/ffn_timing"
timeout 75 "$here/ffn_timing" r5 > "$out/harness_r5.txt" 2>&1; step harness $?
xz -dc "$here/bundle.tar.xz" | tar -C "$here" -xf -; step untar $?
timeout 75 "$here/bin/test-ffn" --test-threads 16 > "$out/test-ffn.txt" 2>&1; step test-ffn $?
timeout 20 "$here/bin/test-tiny_gemm" ffn:: > "$out/test-lib-ffn.txt" 2>&1; step test-lib $?
timeout 40 "$here/bin/bench-ffn" --bench 'cuda/ffn/F16/(512x2048/m1|768x3072/m1|4096x11008/m(1|16|512))/(fused|stock)$' > "$out/bench-ffn.txt" 2>&1; step bench $?
t=$(( $(left) - 40 )); ((t > 10)) || t=10
timeout $t compute-sanitizer --tool memcheck --error-exitcode 9 "$here/bin/test-ffn" --test-threads 1 cooperative_ffn_matches_reference > "$out/memcheck-ffn.txt" 2>&1; step memcheck $?
t=$(left); ((t > 5)) || t=5
timeout $t compute-sanitizer --tool racecheck --error-exitcode 9 "$here/bin/test-ffn" --test-threads 1 cooperative_ffn_grid_loops > "$out/racecheck-ffn.txt" 2>&1; step racecheck $?
grep -h "test result\|ERROR SUMMARY\|RACECHECK SUMMARY\|FAIL\|panicked" "$out"/*.txt | head -40

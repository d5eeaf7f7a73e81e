#!/usr/bin/env bash
# Round 6 of the FFN (benchmarks/ffn.md): one GPU call, <= 240 s.
#   1. branch ffn-next (crate code of 6a80f19 = 9704c43): tests, lib tests, bench, memcheck, racecheck
#      (binaries in bin-next/)
#   2. the kernel harness `r6` (scripts/ffn_kernel_timing.cu at 9704c43 + the bulk header of 1a0ebf6+):
#      bandwidth ceilings and the crate's kernel (`base`), then each bulk-copy variant in its own
#      process (f64 checks first, then times at 4096x11008 next to the crate's kernel)
#   3. branch ffn-bulk (the bulk-copy kernel wired in; bin-bulk/): the cooperative tests + model
#      shapes, bench at 4096x11008, memcheck and racecheck on the bulk-copy tests
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/logs}
mkdir -p "$out"
start=$(date +%s)
left() { echo $((234 - ($(date +%s) - start))); }
step() { echo "step $1 rc=$2 at $(( $(date +%s) - start ))s" | tee -a "$out/steps.txt"; }
cap() { local t=$1 l; l=$(left); ((l < t)) && t=$l; ((t < 1)) && t=1; echo "$t"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader | tee "$out/gpu.txt"
xz -dc "$here/bins.tar.xz" | tar -C "$here" -xf -; step untar $?
N=$here/bin-next B=$here/bin-bulk H=$here/bin-next/ffn_timing
BENCH='cuda/ffn/F16/(512x2048/m1|768x3072/m(1|4)|4096x11008/m(1|16|512))/(fused|stock)$'

# 1 + 3 (tests only): both branches' test binaries side by side (8 threads each)
timeout "$(cap 85)" "$N/test-ffn" --test-threads 8 > "$out/next-test-ffn.txt" 2>&1 &
p1=$!
timeout "$(cap 85)" "$B/test-ffn" --test-threads 8 cooperative model_shapes > "$out/bulk-test-ffn.txt" 2>&1 &
p2=$!
wait $p1; step next-test-ffn $?
wait $p2; step bulk-test-ffn $?
timeout "$(cap 20)" "$N/test-tiny_gemm" ffn:: > "$out/next-test-lib-ffn.txt" 2>&1; step next-test-lib $?
timeout "$(cap 20)" "$B/test-tiny_gemm" ffn:: > "$out/bulk-test-lib-ffn.txt" 2>&1; step bulk-test-lib $?
timeout "$(cap 40)" "$N/bench-ffn" --bench "$BENCH" > "$out/next-bench-ffn.txt" 2>&1; step next-bench $?
timeout "$(cap 40)" compute-sanitizer --tool memcheck --error-exitcode 9 "$N/test-ffn" --test-threads 1 cooperative_ffn_matches_reference > "$out/next-memcheck-ffn.txt" 2>&1; step next-memcheck $?
timeout "$(cap 40)" compute-sanitizer --tool racecheck --error-exitcode 9 "$N/test-ffn" --test-threads 1 cooperative_ffn_grid_loops > "$out/next-racecheck-ffn.txt" 2>&1; step next-racecheck $?

# 2: harness
chmod +x "$H"
timeout "$(cap 30)" "$H" r6 base > "$out/harness-base.txt" 2>&1; step harness-base $?
for v in b16d b16 b8d b16def b16d6 b16dk1 b32d b32x16d; do
  (( $(left) > 75 )) || { echo "skip harness $v (time)" >> "$out/steps.txt"; continue; }
  timeout 20 "$H" r6 "$v" > "$out/harness-$v.txt" 2>&1; step "harness-$v" $?
done

# 3: bulk-copy crate build: bench (same run as 1's), sanitizers
timeout "$(cap 25)" "$B/bench-ffn" --bench 'cuda/ffn/F16/4096x11008/m(1|16)/(fused|stock)$' > "$out/bulk-bench-ffn.txt" 2>&1; step bulk-bench $?
timeout "$(cap 35)" compute-sanitizer --tool memcheck --error-exitcode 9 "$B/test-ffn" --test-threads 1 cooperative_ffn_bulk_copy_once > "$out/bulk-memcheck-ffn.txt" 2>&1; step bulk-memcheck $?
timeout "$(cap 40)" compute-sanitizer --tool racecheck --error-exitcode 9 "$B/test-ffn" --test-threads 1 cooperative_ffn_bulk_copy_once > "$out/bulk-racecheck-ffn.txt" 2>&1; step bulk-racecheck $?
grep -h "test result\|ERROR SUMMARY\|RACECHECK SUMMARY\|FAIL\|panicked" "$out"/*.txt | head -40
grep -h "r6 4096x11008 m=16\|r6 read" "$out"/harness-*.txt | head -60

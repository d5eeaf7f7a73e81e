#!/usr/bin/env bash
# ffn-m16 round 7, verification of the final crate change (`_pf` entries for 16-row units with >= 16M
# W2 elements): lib ffn:: unit tests, test-ffn, criterion new vs main (same run, alternating),
# memcheck of the pf entries through the crate (llama shape), racecheck of the same template
# instantiation in the harness.
set -uo pipefail
B=.gpu-ffn-m16
R=/tmp/res7b; mkdir -p $R
save() { tar -C $R -cf "${OUT:-/tmp}/r7b.tar" .; }
step() { local t=$1 log=$2; shift 2; echo "=== $* (limit ${t}s, $(date +%T))"; timeout "$t" "$@" > "$log" 2>&1; echo "=== rc $? $(date +%T)"; tail -n 3 "$log"; save; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader | tee $R/gpu.txt
C=$B/crate; [[ -d $C/bin ]] || xz -dc $C/bundle.tar.xz | tar -C $C -xf -
mkdir -p $B/old; [[ -x $B/old/bench-ffn-main ]] || xz -dc $B/old-bench.tar.xz | tar -C $B/old -xf -
step 60 $R/lib_ffn_tests.txt $C/bin/test-tiny_gemm ffn:: --test-threads 8
step 130 $R/test_ffn.txt $C/bin/test-ffn --test-threads 8
F='cuda/ffn/F16/(768x3072/m1|4096x11008/m(1|16))/(fused|stock)$'
crit=(--warm-up-time 0.3 --measurement-time 0.6)
step 45 $R/bench_new1.txt $C/bin/bench-ffn --bench "$F" "${crit[@]}"
step 45 $R/bench_main1.txt $B/old/bench-ffn-main --bench "$F" "${crit[@]}"
step 45 $R/bench_new2.txt $C/bin/bench-ffn --bench "$F" "${crit[@]}"
step 60 $R/racecheck_harness_pf.txt compute-sanitizer --tool racecheck --error-exitcode 9 $B/ffn_r7 0 san
step 110 $R/memcheck_llama.txt compute-sanitizer --tool memcheck --error-exitcode 9 $C/bin/test-ffn cooperative_ffn_llama_shape --test-threads 1
for f in $R/bench_*.txt; do echo "## ${f##*/}"; grep -A1 "^cuda" $f | grep -E "^cuda|time:" | paste - - | awk '{print $1, $5, $6}'; done
grep -HE "test result|ERROR SUMMARY|RACECHECK SUMMARY|panicked|check pro1" $R/*.txt
save

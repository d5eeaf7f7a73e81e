#!/usr/bin/env bash
# ffn-m16 round 7: harness (variants vs the crate's hl1 / pr8, same process), then the crate bundle
# (p2pro1 in the nt2 16-row entries): test-ffn, memcheck, racecheck, criterion new vs main (same run).
set -uo pipefail
B=.gpu-ffn-m16
R=/tmp/res7; mkdir -p $R
save() { tar -C $R -cf "${OUT:-/tmp}/r7$MODE.tar" .; }
step() { local t=$1 log=$2; shift 2; echo "=== $* (limit ${t}s, $(date +%T))"; timeout "$t" "$@" > "$log" 2>&1; echo "=== rc $? $(date +%T)"; tail -n 4 "$log"; save; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader | tee $R/gpu.txt
C=$B/crate; [[ -d $C/bin ]] || xz -dc $C/bundle.tar.xz | tar -C $C -xf -
mkdir -p $B/old; [[ -x $B/old/bench-ffn-main ]] || xz -dc $B/old-bench.tar.xz | tar -C $B/old -xf -
MODE=${1:-a}
if [[ $MODE == a ]]; then
step 150 $R/harness_r7.txt $B/ffn_r7 5
grep -E "^r7|checks:|FAIL|var " $R/harness_r7.txt
step 240 $R/test_ffn.txt $C/bin/test-ffn --test-threads 8
F='cuda/ffn/F16/(768x3072/m1|4096x11008/m(1|16))/(fused|stock)$'
crit=(--warm-up-time 0.3 --measurement-time 0.6)
step 90 $R/bench_new1.txt $C/bin/bench-ffn --bench "$F" "${crit[@]}"
step 90 $R/bench_main1.txt $B/old/bench-ffn-main --bench "$F" "${crit[@]}"
step 90 $R/bench_new2.txt $C/bin/bench-ffn --bench "$F" "${crit[@]}"
step 90 $R/bench_main2.txt $B/old/bench-ffn-main --bench "$F" "${crit[@]}"
else
step 300 $R/memcheck_coop.txt compute-sanitizer --tool memcheck --error-exitcode 9 $C/bin/test-ffn cooperative_ffn_matches_reference --test-threads 1
step 240 $R/racecheck_coop.txt compute-sanitizer --tool racecheck --error-exitcode 9 $C/bin/test-ffn cooperative_ffn_grid_loops --test-threads 1
fi
for f in $R/bench_*.txt; do echo "## ${f##*/}"; grep -A1 "^cuda" $f | grep -E "^cuda|time:" | paste - - | awk '{print $1, $5, $6}'; done
grep -hE "test result|ERROR SUMMARY|RACECHECK SUMMARY|panicked" $R/*.txt
save

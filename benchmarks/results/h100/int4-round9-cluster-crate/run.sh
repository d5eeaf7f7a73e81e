#!/usr/bin/env bash
# Branch int4-mc-cluster rebased on main f4e4836: RS GEMM in clusters of 2 (x multicast) routed from 16
# feature blocks. Per-call A/B against main f4e4836's bench binary (alternated, clock log), then, if the
# branch is faster at M=512, test-int4 + memcheck + racecheck of the branch.
set -u
here=$(cd "$(dirname "$0")" && pwd); L=$here/logs; mkdir -p "$L"
pack() { tar -C "$here" -cf "$OUT/mcc-logs.tar" logs 2>/dev/null; }
step() { local name=$1 t=$2; shift 2; local s0=$(date +%s); timeout -k 3 "$t" "$@" > "$L/$name.log" 2>&1; echo "$name rc=$? took=$(($(date +%s)-s0))s" | tee -a "$L/steps.txt"; pack; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/gpu.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw --format=csv -lms 200 > "$L/clocks.csv" 2>&1 &
SMI=$!
[[ -d $here/bin ]] || xz -dc "$here/bundle.tar.xz" | tar -C "$here" -xf -
[[ -x $here/main/bench-int4 ]] || { mkdir -p "$here/main"; xz -dc "$here/main-bench.tar.xz" | tar -C "$here/main" -xf -; }
T=$here/bin/test-int4
step warmup 80 "$T" --exact matmul_hopper_rs_cluster_small
F='cuda/int4/4096x11008/m(128|256|384|512)/(int4_F16|candle_F16_matmul)$'
for r in 1 2; do
  step bench-branch-$r 45 "$here/bin/bench-int4" --bench "$F" --warm-up-time 0.3 --measurement-time 0.6
  step bench-main-$r 45 "$here/main/bench-int4" --bench "$F" --warm-up-time 0.3 --measurement-time 0.6
done
kill $SMI
for f in bench-branch-1 bench-main-1 bench-branch-2 bench-main-2; do echo "## $f"; grep -A1 "^cuda" "$L/$f.log" | grep -E "^cuda|time:" | paste - - | awk '{print $1, $5, $6}' | tee "$L/$f.sum"; done
val() { grep "m512/int4_F16" "$L/$1.sum" | awk '{print $2}'; }
b=$(echo "$(val bench-branch-1) $(val bench-branch-2)" | awk '{print ($1+$2)/2}'); m=$(echo "$(val bench-main-1) $(val bench-main-2)" | awk '{print ($1+$2)/2}')
echo "M=512 branch $b main $m" | tee -a "$L/steps.txt"
if awk -v a="$b" -v c="$m" 'BEGIN{exit !(a < 0.98*c)}'; then
  step test-int4 150 "$T" --test-threads 16
  step memcheck 70 compute-sanitizer --tool memcheck --error-exitcode 9 "$T" --test-threads 4 matmul_hopper_rs
  step racecheck 40 compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 9 "$T" --test-threads 1 --exact matmul_hopper_rs_cluster_small
  grep -hE "^test result|SUMMARY" "$L"/test-int4.log "$L"/memcheck.log "$L"/racecheck.log
else
  echo "branch not faster at M=512: tests skipped" | tee -a "$L/steps.txt"
fi
pack

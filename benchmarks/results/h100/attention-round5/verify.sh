#!/usr/bin/env bash
# attn round 5: one GPU call. Harness (TMA variants + the current kernels, f64-checked), op-vs-kernel
# gap (crate PTX via the driver JIT vs nvcc SASS, 50 vs 2000 launches), crate tests, sanitizers,
# prefill bench. Each step under `timeout`, results saved after every step.
set -uo pipefail
B=.gpu-attn; G=$B/bin
[[ -d $G ]] || xz -dc "$B/bundle.tar.xz" | tar -C "$B" -xf -
R=/tmp/res; mkdir -p $R
save() { tar -C $R -cf "${OUT:-/tmp}/results.tar" .; }
end=$((SECONDS + ${BUDGET:-228}))
step() { # limit log cmd...
  local t=$1 log=$2; shift 2
  local left=$((end - SECONDS)); ((left < t)) && t=$left
  ((t < 5)) && { echo "=== skipped (no time left): $*"; return; }
  echo "=== $* (limit ${t}s, $(date +%T))"
  timeout "$t" "$@" > "$log" 2>&1; echo "=== rc $? $(date +%T)"; save
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader | tee $R/gpu.txt
# SM clock, power, temperature and throttle reasons every 200 ms through the run
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 200 > $R/smi.csv 2>&1 &
SMI=$!
H=$G/attention_sm90_timing; chmod +x $H
step 45 $R/harness.txt $H
grep -E "correctness|FAIL|^\[|^  " $R/harness.txt | grep -vE "worst max err" | head -150
step 40 $R/gap.txt $H --gap $G/attention_sm90.ptx 2000
cat $R/gap.txt
step 50 $R/test-attention.txt $G/test-attention --test-threads 16
grep -hE "^test result|FAILED|panicked" $R/test-attention.txt
san=(compute-sanitizer --error-exitcode 9 --tool)
step 40 $R/memcheck.txt "${san[@]}" memcheck $G/test-attention --test-threads 8 hopper
step 40 $R/racecheck.txt "${san[@]}" racecheck --racecheck-report all $G/test-attention --test-threads 1 hopper_race
step 15 $R/synccheck.txt "${san[@]}" synccheck $G/test-attention --test-threads 1 hopper_race
grep -HE "SUMMARY|test result" $R/memcheck.txt $R/racecheck.txt $R/synccheck.txt; grep -m3 -A4 "Potential\|Error" $R/racecheck.txt | head -20
AF='cuda/(attn_seq/b1_h8_d64_causal/F16/(fused|stock)/(512|2048)|attn_seq/b1_h32_d128_causal/F16/(fused|stock)/4096)'
step 40 $R/bench_attention.txt $G/bench-attention --bench "$AF" --warm-up-time 0.3 --measurement-time 0.6
grep -A1 "^cuda" $R/bench_attention.txt | grep -E "^cuda|time:" | paste - - | awk '{print $1, $5, $6}'
step 40 $R/racecheck-harness.txt "${san[@]}" racecheck --racecheck-report all $H --race t_
grep -E "correctness|SUMMARY" $R/racecheck-harness.txt
kill $SMI 2>/dev/null
save

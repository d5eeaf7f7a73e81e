#!/usr/bin/env bash
# One device call that verifies and measures everything (run on the GPU host from the repo root,
# after `scripts/gpu-bundle.sh --tests --benches --examples` built .gpu/ here):
#   every GPU test (first: it also warms the driver's PTX JIT cache), compute-sanitizer memcheck
#   and racecheck on each op's kernel tests, the benchmark CLI sweeps and profile, the GPT compare,
#   and the criterion benches of the issues' cases. Results go to $OUT/results.tar (saved after
#   every step, so a run cut short still returns what it did); lay them out in
#   benchmarks/results/<card>/ and render with scripts/benchmarks-md.py and scripts/criterion-md.py.
#   STEPS="tests sanitize gpt cli criterion" picks parts (all by default). The whole bundle can pass the
#   device tool's 64 MiB tree limit: then bundle tests and benches+examples apart and run twice.
set -uo pipefail
R=/tmp/res
mkdir -p "$R/logs"
B=${BUNDLE:-.gpu} # the bundle folder (a run may carry tests and benches in two bundles: BUNDLE=.gpu-tests)
G=$B/bin
[[ -d $G ]] || xz -dc "$B/bundle.tar.xz" | tar -C "$B" -xf -
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$R/gpu.txt"
STEPS=${STEPS:-tests sanitize gpt cli criterion}
save() { tar -C "$R" -cf "${OUT:-/tmp}/results.tar" .; }
step() { # limit_s log command...
  local t=$1 log=$2
  shift 2
  echo "=== $* (limit ${t}s, $(date +%T))"
  timeout "$t" "$@" > "$log" 2>&1
  echo "=== rc $? $(date +%T)"
  save
}
want() { [[ " $STEPS " == *" $1 "* ]]; }
san=(compute-sanitizer --error-exitcode 9 --tool) # then the tool name

if want tests; then
  for bin in $G/test-*; do
    step 200 "$R/logs/${bin##*/}.log" "$bin" --test-threads 16
    grep -E "^test result|FAILED|panicked" "$R/logs/${bin##*/}.log" | head -5
  done
fi
if want sanitize; then
  step 90 "$R/logs/memcheck-attention.txt" "${san[@]}" memcheck $G/test-attention --test-threads 8 \
    decode_one_query decode_scratch_reuse every_head_dim prefill_four_kv_groups prefill_big_grids hopper_prefill
  step 60 "$R/logs/memcheck-ffn.txt" "${san[@]}" memcheck $G/test-ffn --test-threads 8 \
    large_m_activation two_launch one_launch_kernel_matches batched seed_shape cooperative_ffn_matches \
    cooperative_ffn_grid
  step 60 "$R/logs/memcheck-int4.txt" "${san[@]}" memcheck $G/test-int4 --test-threads 8 matmul
  step 40 "$R/logs/memcheck-gpt.txt" "${san[@]}" memcheck $G/test-gpt --test-threads 4
  step 60 "$R/logs/racecheck-attention.txt" "${san[@]}" racecheck $G/test-attention --test-threads 1 \
    decode_scratch_reuse hopper_prefill negative_and_zero_scale
  step 50 "$R/logs/racecheck-ffn.txt" "${san[@]}" racecheck $G/test-ffn --test-threads 1 cooperative_ffn_grid two_launch
  step 50 "$R/logs/racecheck-int4.txt" "${san[@]}" racecheck $G/test-int4 --test-threads 1 matmul_tensor_core_path
  grep -HE "ERROR SUMMARY|RACECHECK SUMMARY|^test result" "$R"/logs/*check-*.txt
fi
if want gpt; then # first of the timed parts: on a fresh host it also pays the PTX JIT
  step 90 "$R/gpt_compare.txt" $G/example-gpt --random-init gpt2 --compare --no-generate
  tail -n 4 "$R/gpt_compare.txt"
fi
if want cli; then
  mkdir -p "$R/bench"
  step 80 "$R/bench_seq.txt" $G/example-benchmark --device cuda --mode seq_length --op all --repeats 5 --target-ms 20 --out "$R/bench"
  step 60 "$R/bench_batch.txt" $G/example-benchmark --device cuda --mode batch_size --op all --repeats 5 --target-ms 20 --out "$R/bench"
  step 60 "$R/profile.txt" $G/example-benchmark --device cuda --profile --out "$R/bench"
  grep -E "^\[|whole block" "$R/profile.txt"
fi
if want criterion; then
  crit=(--warm-up-time 0.3 --measurement-time 0.6)
  step 100 "$R/bench_attention.txt" $G/bench-attention --bench cuda/ "${crit[@]}"
  step 110 "$R/bench_ffn.txt" $G/bench-ffn --bench 'cuda/ffn/F16/(512x2048|768x3072|4096x11008)/' "${crit[@]}"
  step 80 "$R/bench_int4.txt" $G/bench-int4 --bench 'cuda/int4/4096x11008/' "${crit[@]}"
fi
save

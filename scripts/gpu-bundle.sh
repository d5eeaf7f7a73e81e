#!/usr/bin/env bash
# Builds the crate's CUDA test / bench / example binaries here (no GPU needed: see
# scripts/cuda-toolchain.sh) and packs them, with gpu-run.sh, into one folder to copy to a GPU host.
#
#   scripts/gpu-bundle.sh [--tests] [--benches] [--examples] [all] [--only NAME]...
#     kinds add up (none given = all); --only NAME keeps only targets named NAME (repeatable),
#     e.g. `--tests --examples --only gpt` packs test-gpt and example-gpt but not bench-gpt;
#     NAME may carry its kind (`--only bench-attention`) to pick one binary of several
#   GPU_BUNDLE_DIR  output folder (default .gpu at the repo root; keep it out of git)
#
# Then on the GPU host, from the folder's parent: bash .gpu/gpu-run.sh tests|benches|example NAME ...
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
tests=0 benches=0 examples=0
only=()
while (($#)); do
  case $1 in
    --tests) tests=1 ;;
    --benches) benches=1 ;;
    --examples) examples=1 ;;
    all) tests=1 benches=1 examples=1 ;;
    --only) only+=("$2"); shift ;;
    *) echo "usage: $0 [--tests] [--benches] [--examples] [all] [--only NAME]..." >&2; exit 2 ;;
  esac
  shift
done
((tests + benches + examples)) || tests=1 benches=1 examples=1
out=$(realpath -m "${GPU_BUNDLE_DIR:-$top/.gpu}")
: "${CUDA_COMPUTE_CAP:=90}"
export CUDA_COMPUTE_CAP
command -v nvcc >/dev/null || { echo "gpu-bundle: nvcc not on PATH; source the env.sh of scripts/cuda-toolchain.sh" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/bin"

# Prints "kind name path" for every executable cargo built (from its JSON messages).
collect() {
  python3 -c '
import sys, json
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        k = m["target"]["kind"][0]
        if m["profile"]["test"] and k in ("lib", "bin"): k = "test"
        print(k, m["target"]["name"], m["executable"])'
}
{
  if ((tests)); then
    cargo test --release --features cuda --no-run --message-format=json-render-diagnostics
  fi
  if ((benches)); then
    cargo bench --features cuda --no-run --message-format=json-render-diagnostics
  fi
  if ((examples)); then
    cargo build --release --features cuda --examples --message-format=json-render-diagnostics
  fi
} | collect | sort -u > "$out/manifest.all"

while read -r kind name path; do
  if ((${#only[@]})) && [[ ! " ${only[*]} " == *" $name "* && ! " ${only[*]} " == *" $kind-$name "* ]]; then continue; fi
  echo "$kind $name" >> "$out/manifest.txt"
  cp "$path" "$out/bin/$kind-$name"
  strip "$out/bin/$kind-$name" 2>/dev/null || true
done < "$out/manifest.all"
rm "$out/manifest.all"
[[ -s $out/manifest.txt ]] || { echo "gpu-bundle: no binaries matched" >&2; exit 1; }
cp scripts/gpu-run.sh "$out/gpu-run.sh"
# One solid archive: the binaries share candle's embedded PTX (~40 MB each), which xz -9 (64 MiB
# window) stores once; with -6 (8 MiB window) a 16-binary bundle passed 72 MiB before it was stopped.
tar -C "$out" -cf - bin | xz -T0 -9 > "$out/bundle.tar.xz"
rm -rf "$out/bin"
size=$(stat -c %s "$out/bundle.tar.xz")
echo "gpu-bundle: $(wc -l < "$out/manifest.txt") binaries, $((size / 1024 / 1024)) MiB in $out/bundle.tar.xz"
sed 's/^/  /' "$out/manifest.txt"

#!/usr/bin/env bash
# ncu stall reasons of one INT4 RS GEMM launch (K=4096 -> N=11008, M=512; main f4e4836's criterion bench).
set -u
here=$(cd "$(dirname "$0")" && pwd); L=$here/logs; mkdir -p "$L"
pack() { tar -C "$here" -cf "$OUT/ncu2-logs.tar" logs 2>/dev/null; }
[[ -x $here/main/bench-int4 ]] || { mkdir -p "$here/main"; xz -dc "$here/main-bench.tar.xz" | tar -C "$here/main" -xf -; }
B=$here/main/bench-int4
timeout 200 ncu --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' --section SourceCounters --print-details all -k regex:int4_gemm_rs --launch-skip 20 --launch-count 1 "$B" --bench 'cuda/int4/4096x11008/m512/int4_F16$' --warm-up-time 0.05 --measurement-time 0.1 > "$L/ncu-stalls.txt" 2>&1
echo "rc $?"; pack
grep -E "stalled_.*ratio" "$L/ncu-stalls.txt" | awk '{print $1, $NF}' | sort -k2 -g -r | head -12

#!/usr/bin/env python3
"""Prints Markdown tables from criterion's console output (the bench_*.txt logs of a device run):
one table per benchmark group, one row per case, one column per variant (fused, stock, int4_F16,
...), each cell criterion's middle estimate in µs. Then, with --targets, the issues' target cases
in one table (ours, the same-run baseline, the target). Numbers are parsed, never retyped.

    python3 scripts/criterion-md.py benchmarks/results/h100/bench_*.txt [--targets]
"""
import re
import sys

UNITS = {"ps": 1e-6, "ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}

# (issue, case label, row key, our variant, baseline variant, target µs). Row keys are the bench ids
# with the variant removed (see split_id). Targets are the issues' H100 f16 targets.
TARGETS = [
    ("#3", "causal [1,8,512,64]", "cuda/attn_seq/b1_h8_d64_causal/F16/512", "fused", "stock", 10),
    ("#3", "causal [1,8,2048,64]", "cuda/attn_seq/b1_h8_d64_causal/F16/2048", "fused", "stock", 30),
    ("#3", "causal [16,8,512,64]", "cuda/attn_batch/h8_n512_d64_causal/F16/16", "fused", "stock", 30),
    ("#3", "causal [1,32,4096,128]", "cuda/attn_seq/b1_h32_d128_causal/F16/4096", "fused", "stock", 400),
    ("#3", "decode [1,32,1,128], Nk=512", "cuda/attn_decode/b1_h32_q1_d128/F16/512", "fused", "stock", 10),
    ("#3", "decode [1,32,1,128], Nk=8192", "cuda/attn_decode/b1_h32_q1_d128/F16/8192", "fused", "stock", 57),
    ("#4", "M=1, 512→2048→512", "cuda/ffn/F16/512x2048/m1", "fused", "stock", 8),
    ("#4", "M=1, 768→3072→768", "cuda/ffn/F16/768x3072/m1", "fused", "stock", 9),
    ("#4", "M=1, 4096→11008→4096", "cuda/ffn/F16/4096x11008/m1", "fused", "stock", 70),
    ("#4", "M=16, 4096→11008→4096", "cuda/ffn/F16/4096x11008/m16", "fused", "stock", 70),
    ("#4", "M=512, 4096→11008→4096 (erf GELU)", "cuda/ffn/F16/4096x11008/m512", "fused", "stock", 170),
    ("#5", "M=1, 4096→11008", "cuda/int4/4096x11008/m1", "int4_F16", "candle_F16_matmul", 10),
    ("#5", "M=16, 4096→11008", "cuda/int4/4096x11008/m16", "int4_F16", "candle_F16_matmul", 14),
    ("#5", "M=512, 4096→11008", "cuda/int4/4096x11008/m512", "int4_F16", "candle_F16_matmul", 90),
]


def split_id(bench_id):
    """(row key, variant): the variant is the last path component, or the one before a trailing
    number (criterion's parameter, e.g. a sequence length)."""
    parts = bench_id.split("/")
    if parts[-1].isdigit() and len(parts) > 2:
        return "/".join(parts[:-2] + parts[-1:]), parts[-2]
    return "/".join(parts[:-1]), parts[-1]


def parse(paths):
    results = {}
    for path in paths:
        current = None
        for line in open(path, encoding="utf-8", errors="replace"):
            line = line.rstrip("\n")
            if re.match(r"^(cuda|cpu)/\S+$", line):
                current = line
                continue
            m = re.match(r"^\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
            if m and current:
                value, unit = float(m.group(1)), m.group(2)
                results[current] = value * UNITS[unit]
                current = None
    return results


def fmt(v):
    return "" if v is None else (f"{v:.1f}" if v >= 1 else f"{v:.2f}")


def tables(results):
    groups = {}
    for bench_id, v in results.items():
        key, variant = split_id(bench_id)
        group = "/".join(key.split("/")[:2])
        g = groups.setdefault(group, {"variants": [], "rows": {}})
        if variant not in g["variants"]:
            g["variants"].append(variant)
        g["rows"].setdefault(key, {})[variant] = v
    out = []
    for group, g in groups.items():
        out.append(f"`{group}`, µs per call:\n")
        out.append("| case | " + " | ".join(g["variants"]) + " |")
        out.append("|---" * (len(g["variants"]) + 1) + "|")
        for key, row in g["rows"].items():
            case = key[len(group) + 1 :]
            out.append(f"| {case} | " + " | ".join(fmt(row.get(v)) for v in g["variants"]) + " |")
        out.append("")
    return "\n".join(out)


def target_table(results):
    out = ["| issue | case (H100 target) | ours | baseline, same run | speedup | target | met |", "|---" * 7 + "|"]
    for issue, label, key, ours, base, target in TARGETS:
        o = results.get(split_join(key, ours))
        b = results.get(split_join(key, base))
        if o is None:
            out.append(f"| {issue} | {label} | not measured | {fmt(b)} | | ≤ {target} | |")
            continue
        speedup = f"{b / o:.2f}x" if b else ""
        out.append(f"| {issue} | {label} | {fmt(o)} | {fmt(b)} | {speedup} | ≤ {target} | {'yes' if o <= target else 'no'} |")
    return "\n".join(out) + "\n"


def split_join(key, variant):
    """The bench id of `variant` in row `key` (inverse of split_id)."""
    head, _, last = key.rpartition("/")
    return f"{head}/{variant}/{last}" if last.isdigit() else f"{key}/{variant}"


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    res = parse(args)
    if "--targets" in sys.argv:
        print(target_table(res))
    print(tables(res))

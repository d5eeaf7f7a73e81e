#!/usr/bin/env python3
"""Prints the GPU section of BENCHMARKS.md from one integrated device run's results folder
(benchmarks/results/<card>/: the benchmark CLI's <device>_<mode>.md summaries, profile.txt,
gpt_compare.txt, logs/). Numbers are pasted from the tools' own output, never retyped.

    python3 scripts/benchmarks-md.py benchmarks/results/h100 "main at <commit>" > /tmp/section.md

then replace the text between the `begin: generated` / `end: generated` markers in BENCHMARKS.md.
"""
import json
import pathlib
import re
import sys

d = pathlib.Path(sys.argv[1])
label = sys.argv[2] if len(sys.argv) > 2 else ""
rel = d.as_posix()


def read(name):
    p = d / name
    return p.read_text() if p.exists() else None


dev = "cuda" if (d / "cuda_batch_size.json").exists() else "cpu"
meta = json.loads(read(f"{dev}_batch_size.json"))["meta"]
out = []
w = out.append
w(f"## {meta['card']} (driver {meta['driver']}), {meta['dtype']}, integrated run of {label}\n")
w(f"Raw output, JSON, plots, logs: `{rel}/`. Run {meta['date_utc']}; every table below is the CLI's "
  "own Markdown summary (`<device>_<mode>.md`), stock timed in the same run"
  + (" (" + meta["timing"] + ")" if "timing" in meta else "") + ".\n")
logs = d / "logs"
if logs.exists():
    res = []
    for f in sorted(logs.glob("test-*.log")):
        m = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored", f.read_text())
        if m:
            ok = all(r[0] == "ok" for r in m)
            passed = sum(int(r[1]) for r in m)
            ign = sum(int(r[3]) for r in m)
            res.append(f"{f.stem[5:]} {passed}{' (+' + str(ign) + ' ignored)' if ign else ''}{'' if ok else ' FAILED'}")
    san = []
    for f in sorted(list(logs.glob("memcheck-*.txt")) + list(logs.glob("racecheck-*.txt"))):
        t = f.read_text()
        m = re.search(r"(ERROR SUMMARY: \d+ errors|RACECHECK SUMMARY: \d+ hazards)", t)
        if m:
            san.append(f"{f.stem}: {m.group(1)}")
    w("GPU tests in this run (all test binaries, outputs poisoned): " + ", ".join(res) + ". "
      "compute-sanitizer: " + "; ".join(san) + ".\n")
for stem, title in [
    (f"{dev}_batch_size", "### Decode: one token per sequence, batch sweep (`--mode batch_size`)"),
    (f"{dev}_seq_length", "### Prefill: one sequence, sequence-length sweep (`--mode seq_length`)"),
    (f"{dev}_batch_size_no_events",
     "### Decode again with CUDA event tracking off (`--mode batch_size --no-event-tracking`)"),
]:
    t = read(stem + ".md")
    if t:
        w(title + "\n")
        w(t.strip() + "\n")
        plots = sorted(p.name for p in d.glob(f"*_{stem}.png"))
        if plots:
            w("Plots: " + ", ".join(f"[{p.split('_' + dev)[0]}]({rel}/{p})" for p in plots) + ".\n")
t = read("profile.txt")
if t:
    body = t[t.index("block prefill"):t.index("wrote")].strip()
    w("### Profile: one pre-LN block, prefill of 128 tokens (`--profile`)\n")
    w(f"Trace: `{rel}/trace_{dev}.json` (open in ui.perfetto.dev; one synchronized pass per variant, a "
      "span per op; CUDA builds also emit NVTX ranges for Nsight Systems).\n")
    w("```\n" + body + "\n```\n")
t = read("gpt_compare.txt")
if t:
    body = "\n".join(l for l in t.splitlines() if not l.startswith("===") or "compare" in l)
    w("### GPT-2 small (`gpt --random-init gpt2 --compare --no-generate`), batch 1, f16\n")
    w("```\n" + body.strip() + "\n```\n")
print("\n".join(out))

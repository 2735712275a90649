#!/usr/bin/env python
"""CPU per shuffled training batch, this checkout's loader side by side with a baseline checkout.

Each measurement runs in a fresh child process (``PYTHONPATH`` = the checkout), A and B
interleaved round by round (A B A B ...), so that a slow spell of the shared machine hits both
alike. A child opens the output, faults the mapping in (one untimed pass over the plan), then
times three epochs (DataLoader: one) of 64-row shuffled batches of the model columns (input_ids, attention_mask,
labels) per way; CPU = user + system seconds (``getrusage``) of the child **and its reaped children** (DataLoader
workers), so worker start-up and inter-process copies count. Ways:

- ``take``: ``ds.take(idx, MODEL_COLUMNS)`` (numpy, stored dtypes);
- ``gather int64`` / ``gather int32``: ``torch_data.gather`` (``long=True`` / ``False``);
- ``DataLoader nw=0`` / ``nw=2``: ``DataLoader(DenoiseBatches(path, 64, columns=MODEL_COLUMNS),
  batch_size=None, num_workers=...)``, one whole epoch including worker start-up.

    python benchmarks/bench_load_ab.py --data OUT [--compact OUT2] --baseline /path/to/main

``--compact`` adds both checkouts on a ``prepare --compact`` output of the same corpus
(``--no-baseline-compact``: only this one, for a baseline that cannot read it); ``--ways`` picks
ways (comma-separated). Recorded figures: ``benchmarks/README_load.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from torch.utils.data import DataLoader
from denoise_cli import open_dataset
from denoise_cli.load import epoch_batches
from denoise_cli.torch_data import DenoiseBatches, gather
out, way = sys.argv[1], sys.argv[2]
cols = ("input_ids", "attention_mask", "labels")
ds = open_dataset(out)
plan = epoch_batches(len(ds), 64, shuffle=True, seed=0, epoch=0)
for idx in plan:
    ds.take(idx, cols)
import resource
def cpu():  # microsecond resolution (os.times counts 10 ms ticks)
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
if way.startswith("DataLoader"):
    nw = int(way.split("=")[1])
    c = cpu()
    n = 0
    for b in DataLoader(DenoiseBatches(out, 64, columns=cols), batch_size=None, num_workers=nw):
        n += 1
    c = cpu() - c
else:
    fn = {
        "take": lambda idx: ds.take(idx, cols),
        "gather int64": lambda idx: gather(ds, idx, cols, long=True),
        "gather int32": lambda idx: gather(ds, idx, cols, long=False),
    }[way]
    c = cpu()
    for _ in range(3):
        for idx in plan:
            fn(idx)
    c = cpu() - c
    n = 3 * len(plan)
import denoise_cli
print(json.dumps({"us_per_batch": c / n * 1e6, "batches": n, "code": denoise_cli.__file__}))
"""

WAYS = ["take", "gather int64", "gather int32", "DataLoader nw=0", "DataLoader nw=2"]


def run(tree: Path, out: str, way: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    # cwd = the checkout: ``python -c`` puts the working directory first on sys.path
    r = subprocess.run(
        [sys.executable, "-c", CHILD, out, way],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        sys.exit(f"{tree} {way}: {r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if not res["code"].startswith(str(tree.resolve())):
        sys.exit(f"{way}: imported {res['code']}, not the checkout {tree}")
    return float(res["us_per_batch"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--compact")
    ap.add_argument("--baseline", type=Path, required=True, help="checkout of the baseline")
    ap.add_argument("--no-baseline-compact", action="store_true")
    ap.add_argument("--ways", default=",".join(WAYS), help="comma-separated subset of the ways")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if bad := [w for w in ways if w not in WAYS]:
        ap.error(f"unknown ways {bad}; known: {WAYS}")
    base = args.baseline.resolve()
    sides = {"baseline": (base, args.data), "this": (ROOT, args.data)}
    if args.compact:
        if not args.no_baseline_compact:
            sides["baseline, --compact"] = (base, args.compact)
        sides["this, --compact"] = (ROOT, args.compact)
    res: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for way in ways:
            for side, (tree, out) in sides.items():
                res.setdefault((side, way), []).append(run(tree, out, way))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("| way | " + " | ".join(f"{s} us/batch" for s in sides) + " |")
    print("|---|" + "---:|" * len(sides))
    for way in ways:
        cells = [f"{statistics.median(res[(s, way)]):,.0f}" for s in sides]
        print(f"| {way} | " + " | ".join(cells) + " |")
    print(f"(median of {args.rounds} interleaved rounds; one epoch of 64 x 512 batches each)")


if __name__ == "__main__":
    main()

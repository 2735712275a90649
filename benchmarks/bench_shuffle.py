#!/usr/bin/env python
"""CPU per shuffled training batch: row-shuffled gathers vs a `denoise shuffle`d output read in
blocks, side by side in one run.

``--data OUT`` is an ordinary output; the script shuffles it once into ``--shuffled DIR`` (timed:
CPU-seconds of the `denoise shuffle` process) unless that directory already holds its shuffle.
Each measurement is a fresh child process; ways are interleaved round by round (A B A B ...).
A child opens the output and runs one untimed epoch the way it measures (faulting the mapping in
and making the way's one-time objects, such as the zero-copy tensors of each record batch), then
times ``--epochs`` epochs (default 10) of 64-row batches of the model columns (input_ids,
attention_mask, labels): the steady state of a training run; CPU = user + system of
the child (``getrusage``), so a batch's cost includes the loader's Python work, the copies and the
fresh pages of new arrays. Ways (``rows``: ``shuffle=True`` on OUT; ``blocks``:
``shuffle="blocks"`` on the shuffled output):

- ``numpy rows`` / ``numpy blocks``: ``ds.iter_batches(64, shuffle=..., columns=MODEL_COLUMNS)``;
- ``torch rows int64`` / ``torch blocks int64``: ``DenoiseBatches(..., columns=MODEL_COLUMNS)``
  (the default: int64 tensors);
- ``torch rows int32`` / ``torch blocks int32``: the same with ``long=False``;
- ``torch blocks zero-copy``: ``long=False, zero_copy=True`` (read-only tensors over the mapping).

    python benchmarks/bench_shuffle.py --data OUT --shuffled OUT-SHUF [--rounds 5]

``--baseline DIR`` (another revision's ``denoise_cli/``, e.g. from ``git archive``) adds the
ways of ``--baseline-ways`` run with that revision, as ``WAY @base``, in the same rounds.

Recorded figures: ``benchmarks/README_load.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from denoise_cli import open_dataset
from denoise_cli.torch_data import MODEL_COLUMNS, DenoiseBatches
out, way = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3])
ds = open_dataset(out)
shuffle = "blocks" if "blocks" in way else True
if way.startswith("numpy"):
    def epoch(e):
        return ds.iter_batches(64, shuffle=shuffle, seed=0, epoch=e, columns=MODEL_COLUMNS)
else:
    kw = {"long": "int64" in way}
    if "zero-copy" in way:
        kw = {"long": False, "zero_copy": True}
    db = DenoiseBatches(ds, 64, shuffle=shuffle, columns=MODEL_COLUMNS, **kw)
    def epoch(e):
        db.set_epoch(e)
        return db
def cpu():
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime
for b in epoch(epochs):  # untimed: faults the mapping in, makes the way's one-time objects
    pass
c = cpu()
n = 0
for e in range(epochs):
    for b in epoch(e):
        n += 1
c = cpu() - c
print(json.dumps({"us_per_batch": c / n * 1e6, "batches": n}))
"""

BASE = " @base"
WAYS = [
    "numpy rows",
    "numpy blocks",
    "torch rows int64",
    "torch blocks int64",
    "torch rows int32",
    "torch blocks int32",
    "torch blocks zero-copy",
]


def run(out: str, way: str, baseline: str | None = None, epochs: int = 3) -> float:
    root = baseline if way.endswith(BASE) and baseline else str(ROOT)
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    way = way.removesuffix(BASE)
    r = subprocess.run(
        [sys.executable, "-c", CHILD, out, way, str(epochs)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        sys.exit(f"{way}: {r.stderr[-2000:]}")
    return float(json.loads(r.stdout.strip().splitlines()[-1])["us_per_batch"])


def children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="an ordinary denoise output")
    ap.add_argument("--shuffled", required=True, help="its shuffle (made here if missing)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="timed epochs per child")
    ap.add_argument("--baseline", help="a directory holding another revision's denoise_cli/")
    ap.add_argument("--baseline-ways", default="torch blocks zero-copy", help="comma-separated")
    ap.add_argument("--ways", default=",".join(WAYS), help="comma-separated (default: all)")
    args = ap.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    unknown = sorted(set(ways) - set(WAYS))
    if unknown:
        ap.error(f"unknown ways {unknown}; choose from {WAYS}")
    if args.baseline:
        ways += [w + BASE for w in args.baseline_ways.split(",") if w]
    if not (Path(args.shuffled) / "denoise.json").exists():
        c = children_cpu()
        subprocess.run(
            [sys.executable, "-m", "denoise_cli", "shuffle", args.data, args.shuffled],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        print(f"denoise shuffle: {children_cpu() - c:.2f} CPU-s")
    res: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = ways if r % 2 == 0 else ways[::-1]
        for way in order:
            out = args.shuffled if "blocks" in way else args.data
            res.setdefault(way, []).append(run(out, way, args.baseline, args.epochs))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("| way | us/batch (median) | per round |")
    print("|---|---:|---|")
    for way in ways:
        v = res[way]
        cells = ", ".join(f"{x:,.0f}" for x in v)
        print(f"| {way} | {statistics.median(v):,.1f} | {cells} |")
    print(
        f"(median of {args.rounds} interleaved rounds; {args.epochs} epochs of 64 x 512 batches "
        "each, after one untimed epoch)"
    )


if __name__ == "__main__":
    main()

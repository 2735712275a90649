#!/usr/bin/env python
"""CPU per shuffled training batch: row-shuffled gathers vs a `denoise shuffle`d output read in
blocks, side by side in one run.

``--data OUT`` is an ordinary output; the script shuffles it once into ``--shuffled DIR`` (timed:
CPU-seconds of the `denoise shuffle` process) unless that directory already holds its shuffle.
Each measurement is a fresh child process; ways are interleaved round by round (A B A B ...).
A child opens the output, faults the mapping in (one untimed pass), then times three epochs of
64-row batches of the model columns (input_ids, attention_mask, labels); CPU = user + system of
the child (``getrusage``), so a batch's cost includes the loader's Python work, the copies and the
fresh pages of new arrays. Ways (``rows``: ``shuffle=True`` on OUT; ``blocks``:
``shuffle="blocks"`` on the shuffled output):

- ``numpy rows`` / ``numpy blocks``: ``ds.iter_batches(64, shuffle=..., columns=MODEL_COLUMNS)``;
- ``torch rows int64`` / ``torch blocks int64``: ``DenoiseBatches(..., columns=MODEL_COLUMNS)``
  (the default: int64 tensors);
- ``torch rows int32`` / ``torch blocks int32``: the same with ``long=False``;
- ``torch blocks zero-copy``: ``long=False, zero_copy=True`` (read-only tensors over the mapping).

    python benchmarks/bench_shuffle.py --data OUT --shuffled OUT-SHUF [--rounds 5]

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
ds = open_dataset(out)
shuffle = "blocks" if "blocks" in way else True
for b in ds.iter_batches(64, shuffle=shuffle, columns=MODEL_COLUMNS):  # fault the mapping in
    pass
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
c = cpu()
n = 0
for e in range(3):
    for b in epoch(e):
        n += 1
c = cpu() - c
print(json.dumps({"us_per_batch": c / n * 1e6, "batches": n}))
"""

WAYS = [
    "numpy rows",
    "numpy blocks",
    "torch rows int64",
    "torch blocks int64",
    "torch rows int32",
    "torch blocks int32",
    "torch blocks zero-copy",
]


def run(out: str, way: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-c", CHILD, out, way], env=env, cwd=ROOT, capture_output=True, text=True
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
    args = ap.parse_args()
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
        order = WAYS if r % 2 == 0 else WAYS[::-1]
        for way in order:
            out = args.shuffled if "blocks" in way else args.data
            res.setdefault(way, []).append(run(out, way))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print("| way | us/batch (median) | per round |")
    print("|---|---:|---|")
    for way in WAYS:
        v = res[way]
        cells = ", ".join(f"{x:,.0f}" for x in v)
        print(f"| {way} | {statistics.median(v):,.1f} | {cells} |")
    print(f"(median of {args.rounds} interleaved rounds; three epochs of 64 x 512 batches each)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Cost of reading an output behind an ``s3://`` URL vs the same output in a local directory.

``open_dataset(url)`` copies the output once, whole files, into a local cache directory
(``output.remote.localize``) and then serves it memory-mapped like a local one. Measured side
by side, variants interleaved round by round (median of ``--rounds``):

- **local**: ``open_dataset(local dir)``, then epoch 1 and epoch 2 of shuffled batches
  (``iter_batches(64, shuffle=True)``, each batch's model columns copied once);
- **s3 cold**: ``open_dataset(url)`` with an empty cache directory (the download is part of the
  open), then epochs 1 and 2;
- **s3 warm**: ``open_dataset(url)`` with the cache already filled (a second run of a training
  job), then epoch 1.

The S3 server is moto's, in a **separate process** on 127.0.0.1 (loopback: no network latency
or bandwidth limit, so the download figures are a lower bound for a real bucket); CPU is
``time.process_time`` of this process only (the client: s3fs, the copy, the reader), wall is
wall time. Input: ``--data OUT`` (an existing output) or ``--corpus DIR`` (default
``../shared/corpus/en-prose``, first ``--files`` files) prepared with ``-I 512 -T 512``.

    python benchmarks/bench_load_remote.py [--data OUT | --corpus DIR --files 1] [--rounds 5]

Recorded figures: ``benchmarks/README_load.md`` ("Outputs behind a URL").
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "en-prose"
COLS = ("input_ids", "attention_mask", "labels")
BATCH = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def epoch(ds: Any, e: int) -> int:
    n = 0
    for b in ds.iter_batches(BATCH, shuffle=True, seed=0, epoch=e):
        for c in COLS:
            np.array(b[c], copy=True)
        n += 1
    return n


def timed(fn: Any) -> tuple[float, float, Any]:
    c0, w0 = time.process_time(), time.perf_counter()
    res = fn()
    return time.process_time() - c0, time.perf_counter() - w0, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from denoise_cli.config import Lengths, PrepareConfig, load_mixture
    from denoise_cli.load.dataset import open_dataset
    from denoise_cli.prepare.run import prepare

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-remote-"))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        local = args.data
        if local is None:
            inp = tmp / "in"
            inp.mkdir()
            for p in sorted(args.corpus.glob("*.jsonl*"))[: args.files]:
                os.symlink(p, inp / p.name)
            local = tmp / "out"
            cfg = PrepareConfig(
                mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 512, 512)
            )
            prepare([str(inp)], str(local), cfg, workers=0, progress=False)
        import s3fs

        opts = {
            "key": "bench",
            "secret": "bench",
            "endpoint_url": f"http://127.0.0.1:{port}",
        }
        for _ in range(100):
            try:
                fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
                fs.mkdir("bench")
                break
            except Exception:
                time.sleep(0.1)
        files = [p for p in sorted(local.rglob("*")) if p.is_file() and ".denoise" not in p.parts]
        for p in files:
            fs.put_file(str(p), f"bench/out/{p.relative_to(local).as_posix()}")
        url = "s3://bench/out/"
        nbytes = sum(p.stat().st_size for p in files)
        ds0 = open_dataset(local)
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cpus; python "
            f"{platform.python_version()}, numpy {np.__version__}, s3fs {s3fs.__version__}"
        )
        print(
            f"data: {local}: {len(ds0):,} rows, {len(ds0.manifest['shards'])} shards, "
            f"{nbytes / 2**20:.1f} MiB; batch {BATCH}, shuffled, columns {', '.join(COLS)}"
        )
        warm_cache = tmp / "warm"
        open_dataset(url, storage_options=opts, cache_dir=warm_cache)
        res: dict[str, list[tuple[float, float]]] = {}

        def add(k: str, c: float, w: float) -> None:
            res.setdefault(k, []).append((c, w))

        nb = 0
        for r in range(args.rounds):
            c, w, ds = timed(lambda: open_dataset(local))
            add("local: open", c, w)
            c, w, nb = timed(lambda ds=ds: epoch(ds, 0))
            add("local: epoch 1", c, w)
            c, w, _ = timed(lambda ds=ds: epoch(ds, 1))
            add("local: epoch 2", c, w)
            cold = tmp / f"cold-{r}"
            c, w, ds = timed(lambda cold=cold: open_dataset(url, storage_options=opts,
                                                             cache_dir=cold))  # fmt: skip
            add("s3 cold: open (downloads)", c, w)
            c, w, _ = timed(lambda ds=ds: epoch(ds, 0))
            add("s3 cold: epoch 1", c, w)
            c, w, _ = timed(lambda ds=ds: epoch(ds, 1))
            add("s3 cold: epoch 2", c, w)
            shutil.rmtree(cold)
            c, w, ds = timed(lambda: open_dataset(url, storage_options=opts,
                                                  cache_dir=warm_cache))  # fmt: skip
            add("s3 warm: open (cache hit)", c, w)
            c, w, _ = timed(lambda ds=ds: epoch(ds, 0))
            add("s3 warm: epoch 1", c, w)
        print(f"{nb} batches per epoch; median of {args.rounds} interleaved rounds\n")
        print("| step | CPU s | wall s | CPU ms/batch | wall ms/batch |")
        print("|---|---:|---:|---:|---:|")
        for k, v in res.items():
            c = float(np.median([x for x, _ in v]))
            w = float(np.median([y for _, y in v]))
            print(f"| {k} | {c:.3f} | {w:.3f} | {1000 * c / nb:.3f} | {1000 * w / nb:.3f} |")
        print(f"\nfirst epoch per batch incl. open: see 'open' + 'epoch 1' rows / {nb}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

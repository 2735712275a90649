#!/usr/bin/env python
"""Disk bytes per real token of one corpus prepared in several storage variants, side by side.

Each variant is ``denoise_cli.prepare.run.prepare`` of the same corpus, tokenizer (the embedded
GPT-2 BPE) and mixture (``ul2``, encoder-decoder I = T = 512 unless ``--layout``/lengths say
otherwise): the default Arrow output, ``--compact``, zstd Parquet (default and compact) and
``--pack 4`` (default and compact). Real tokens are the rows' ``input_length + target_length`` of the default output
(the same examples in every unpacked variant); bytes are the shard files under ``data/``.

    python benchmarks/bench_storage.py [--corpus DIR] [--variants default,compact,...]

Recorded figures: ``benchmarks/README_load.md`` ("Storage").
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "default": {},
    "compact": {"compact": True},
    "parquet": {"format": "parquet"},
    "parquet-compact": {"format": "parquet", "compact": True},
    "pack4": {"pack_factor": 4},
    "pack4-compact": {"pack_factor": 4, "compact": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--corpus",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "corpus" / "en-prose"),
    )
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("-I", type=int, default=512)
    ap.add_argument("-T", type=int, default=512)
    args = ap.parse_args()

    import numpy as np

    from denoise_cli import open_dataset
    from denoise_cli.config import Lengths, PrepareConfig, load_mixture
    from denoise_cli.prepare.run import prepare

    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    sizes: dict[str, int] = {}
    rows: dict[str, int] = {}
    real = 0
    try:
        for name in args.variants.split(","):
            cfg = PrepareConfig(
                mixture=load_mixture("ul2"),
                lengths=Lengths("encoder-decoder", args.I, args.T),
                **VARIANTS[name],  # type: ignore[arg-type]
            )
            out = tmp / name
            t = time.perf_counter()
            prepare([args.corpus], str(out), cfg, workers=1, progress=False)
            sizes[name] = sum(p.stat().st_size for p in (out / "data").iterdir())
            ds = open_dataset(out)
            rows[name] = len(ds)
            if name == "default" or (not real and not cfg.pack_factor):
                for b in ds.iter_batches(4096, drop_last=False):
                    real += int(b["input_length"].sum()) + int(b["target_length"].sum())
            print(f"prepared {name} in {time.perf_counter() - t:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = sizes.get("default")
    print(f"corpus {args.corpus}; real tokens (inputs + targets) {real:,}")
    print("| variant | rows | MiB | bytes / real token | vs default |")
    print("|---|---:|---:|---:|---:|")
    for name, s in sizes.items():
        ratio = f"{s / base:.2f}x" if base else "-"
        print(f"| {name} | {rows[name]:,} | {s / 2**20:.1f} | {s / real:.2f} | {ratio} |")
    del np


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""CPU cost of getting UL2 training batches as torch tensors: pre-corrupted shards vs on the fly.

Side by side in one run (CPU time = ``time.process_time``, all threads of this process; torch is
limited to one thread so that neither side pays for thread spinning on a shared machine; each
figure is the median of interleaved rounds, so that a slow spell of the machine hits every variant
alike):

1. **shards**: ``open_dataset(out)``, a shuffled batch plan (``epoch_batches``), and per batch
   ``denoise_cli.torch_data.gather`` (one fancy index per column over the mapped shards,
   straight into new tensors), for batch sizes 64 and 256 of an encoder-decoder output with I = T = 512.
   Variants: the model columns (input_ids, attention_mask, labels) widened to int64 (what a model
   takes), the same kept int32/int8 (widen on the device), all ten columns, numpy ``take`` then
   ``to_tensors`` (a second pass for the widening), and the whole path through
   ``DataLoader(DenoiseBatches(...), batch_size=None)``.
2. **on the fly**: the ``text-denoising`` package's ``DataCollatorForUL2`` (its own R/S/X
   defaults) applied to pre-tokenized 512-token examples (the same corpus and tokenizer: the
   shards' ``tokenizer.json`` through ``transformers.PreTrainedTokenizerFast``), same batch sizes.
   Tokenization is not timed: only the collator call that turns examples into a batch.
3. **epoch read**: every row once, shuffled (``take`` of all columns) and sequential
   (``iter_batches(shuffle=False)``, each zero-copy view copied once so the bytes are really
   read), as rows/s and MB/s of shard bytes, next to a raw ``cat``-style read of the same files
   (``readinto`` 8 MiB blocks; page cache warm: the files were just written or read).

Input: ``--data OUT`` (an existing encoder-decoder output, I = T = 512) or ``--corpus DIR``
(default ``../shared/corpus/en-prose``), prepared once into a temporary directory with
``--mixture ul2 -I 512 -T 512``.

    python benchmarks/bench_load.py [--data OUT | --corpus DIR] [--keep]

Recorded figures: ``benchmarks/README_load.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "en-prose"
MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")


def interleaved(
    variants: dict[str, Callable[[int], Any]],
    per_round: dict[str, int],
    rounds: int,
    warmup: int = 2,
) -> dict[str, tuple[float, float]]:
    """Median over ``rounds`` of (CPU seconds, wall seconds) per call of each variant
    (``per_round[name]`` calls a round). The variants take turns round by round, so a slow spell
    of this shared machine hits all of them alike and the ratios stay meaningful."""
    for fn in variants.values():
        for i in range(warmup):
            fn(i)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, fn in variants.items():
            n = per_round[name]
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(n):
                fn(r * n + i)
            c, w = time.process_time() - c0, time.perf_counter() - w0
            samples[name].append((c / n, w / n))
    return {
        k: (float(np.median([c for c, _ in v])), float(np.median([w for _, w in v])))
        for k, v in samples.items()
    }


def prepare_corpus(corpus: Path, out: Path) -> None:
    from denoise_cli.config import Lengths, PrepareConfig, load_mixture
    from denoise_cli.prepare.run import prepare

    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 512, 512))
    t = time.perf_counter()
    prepare([str(corpus)], str(out), cfg, workers=0, progress=False)
    print(f"prepared {corpus} -> {out} in {time.perf_counter() - t:.1f}s", flush=True)


def read_texts(corpus: Path, max_chars: int) -> list[str]:
    """The first documents of the corpus (json lines, optionally zstd), up to ``max_chars``."""
    import io

    import orjson
    import zstandard

    texts: list[str] = []
    total = 0
    for p in sorted(corpus.rglob("*.jsonl*")):
        with open(p, "rb") as raw:
            stream: Any = (
                zstandard.ZstdDecompressor().stream_reader(raw) if p.suffix == ".zst" else raw
            )
            for line in io.TextIOWrapper(stream, encoding="utf-8"):
                if not line.strip():
                    continue
                t = orjson.loads(line).get("text")
                if isinstance(t, str) and t:
                    texts.append(t)
                    total += len(t)
                    if total >= max_chars:
                        return texts
    return texts


COLLATOR = "on the fly: DataCollatorForUL2"


def collator_calls(
    out: Path, corpus: Path, manifest: dict[str, Any], sizes: list[int]
) -> dict[int, Callable[[int], Any]]:
    """Per batch size, a function that collates the i-th of a few fixed random batches of
    pre-tokenized 512-token examples with ``DataCollatorForUL2`` (empty when unavailable)."""
    try:
        from text_denoising import DataCollatorForUL2
        from transformers import PreTrainedTokenizerFast
    except Exception as e:  # any import failure means: skip this side
        print(f"on the fly: SKIPPED - text-denoising / transformers not importable ({e!r})")
        return {}
    from tokenizers import Tokenizer

    tokinfo = manifest["tokenizer"]
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(out / "tokenizer.json"),
        pad_token=tokinfo["pad"]["token"],
        eos_token=tokinfo["eos"]["token"],
        bos_token=tokinfo["pad"]["token"],  # the collator's decoder start = pad, as in T5
    )
    # Pre-tokenized examples: documents joined with EOS and cut into 512-token chunks.
    enc = Tokenizer.from_file(str(out / "tokenizer.json"))
    need = max(sizes) * 512 * 2
    texts = read_texts(corpus, max_chars=need * 6) if corpus.is_dir() else []
    ids: list[int] = []
    for e in enc.encode_batch(texts, add_special_tokens=False):
        ids.extend(e.ids)
        ids.append(tokinfo["eos"]["id"])
    if len(ids) < need:
        print(f"on the fly: SKIPPED - the corpus {corpus} gave {len(ids)} tokens (< {need})")
        return {}
    chunks = [ids[i : i + 512] for i in range(0, len(ids) - 511, 512)]
    collator = DataCollatorForUL2(tokenizer=tok)
    rng = np.random.default_rng(0)
    calls: dict[int, Callable[[int], Any]] = {}
    for bs in sizes:
        batches = [
            [{"input_ids": chunks[j]} for j in rng.choice(len(chunks), bs, replace=False)]
            for _ in range(8)
        ]
        shapes = {k: tuple(v.shape) for k, v in collator(batches[0]).items()}
        print(f"  on the fly  bs {bs:3d}: DataCollatorForUL2 -> {shapes}", flush=True)
        calls[bs] = lambda i, b=batches: collator(b[i % len(b)])
    return calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="existing encoder-decoder output (I = T = 512)")
    ap.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS,
        help="corpus to prepare when --data is not given; also the collator's text",
    )
    ap.add_argument(
        "--batches", type=int, default=300, help="timed batches per shard variant (all rounds)"
    )
    ap.add_argument(
        "--rounds", type=int, default=15, help="interleaved rounds (one collator call each)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary output")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from torch.utils.data import DataLoader

    from denoise_cli import open_dataset
    from denoise_cli.load import epoch_batches
    from denoise_cli.torch_data import DenoiseBatches, gather, to_tensors

    tmp = None
    if args.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
        out = tmp / "out"
        prepare_corpus(args.corpus, out)
    else:
        out = args.data
    try:
        ds = open_dataset(out)
        m = ds.manifest
        if m["layout"] != "encoder-decoder" or m["row_widths"] != [512, 512]:
            sys.exit(
                f"{out}: need an encoder-decoder output with I = T = 512, got {m['layout']} "
                f"{m['row_widths']}"
            )
        shard_bytes = sum(s["bytes"] for s in m["shards"])
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; "
            f"python {platform.python_version()}, numpy {np.__version__}, torch "
            f"{torch.__version__}"
        )
        print(
            f"data: {out}: {len(ds):,} rows, {len(m['shards'])} shards, {ds.num_batches} record "
            f"batches, {shard_bytes / 2**20:.1f} MiB, format {m['format']}"
        )

        sizes = [64, 256]
        coll = collator_calls(out, args.corpus, m, sizes)
        results: dict[int, dict[str, tuple[float, float]]] = {}
        for bs in sizes:
            plan = epoch_batches(len(ds), bs, shuffle=True, seed=0, epoch=0)
            for idx in plan:  # fault in the mapping and warm the page cache
                ds.take(idx)
            variants: dict[str, Callable[[int], Any]] = {
                "gather, model cols, int64": lambda i, p=plan: gather(
                    ds, p[i % len(p)], MODEL_COLUMNS, long=True
                ),
                "gather, model cols, int32": lambda i, p=plan: gather(
                    ds, p[i % len(p)], MODEL_COLUMNS, long=False
                ),
                "gather, all 10 cols, int64": lambda i, p=plan: gather(
                    ds, p[i % len(p)], long=True
                ),
                "take + to_tensors, model cols, int64": lambda i, p=plan: to_tensors(
                    ds.take(p[i % len(p)], MODEL_COLUMNS), long=True
                ),
            }
            dl = DataLoader(
                DenoiseBatches(ds, bs, seed=0, columns=MODEL_COLUMNS),
                batch_size=None,
                num_workers=0,
            )
            it: list[Any] = [iter(dl)]

            def next_batch(i: int, it: list[Any] = it, dl: Any = dl) -> Any:
                try:
                    return next(it[0])
                except StopIteration:
                    it[0] = iter(dl)
                    return next(it[0])

            variants["DataLoader(DenoiseBatches, batch_size=None), model cols, int64"] = next_batch
            b = next_batch(0)
            desc = ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in b.items())
            print(f"  shards      bs {bs:3d}: {{{desc}}}", flush=True)
            per_round = {k: max(1, args.batches // args.rounds) for k in variants}
            if bs in coll:
                variants[COLLATOR] = coll[bs]
                per_round[COLLATOR] = 1
            results[bs] = interleaved(variants, per_round, rounds=args.rounds)

        print(
            f"\nper batch, shuffled (median of {args.rounds} interleaved rounds; CPU = "
            "process_time):"
        )
        print("| batch | way | CPU ms/batch | wall ms/batch | CPU ratio on the fly / this |")
        print("|---|---|---:|---:|---:|")
        for bs in sizes:
            c_fly = results[bs].get(COLLATOR)
            for name, (c, w) in results[bs].items():
                ratio = f"{c_fly[0] / c:,.0f}x" if c_fly else "n/a"
                label = name if name == COLLATOR else f"shards: {name}"
                digits = 1 if name == COLLATOR else 3
                print(
                    f"| {bs} x 512 | {label} | {c * 1e3:.{digits}f} | {w * 1e3:.{digits}f} | "
                    f"{ratio} |"
                )

        # ------------------------------------------------------------ epoch read vs cat
        print("\nfull epoch (every row once), page cache warm:")
        files = [out / s["path"] for s in m["shards"]]
        buf = bytearray(8 << 20)

        def cat() -> int:
            total = 0
            for p in files:
                with open(p, "rb", buffering=0) as f:
                    while k := f.readinto(buf):
                        total += k
            return total

        def epoch_shuffled() -> int:
            rows = 0
            for b in ds.iter_batches(256, shuffle=True, seed=1, drop_last=False):
                rows += len(b["input_ids"])
            return rows

        def epoch_sequential() -> int:
            rows = 0
            for b in ds.iter_batches(1024, shuffle=False, drop_last=False):
                c = {k: np.array(v) for k, v in b.items()}  # really read the bytes
                rows += len(c["input_ids"])
            return rows

        def epoch_fresh_open() -> int:
            d = open_dataset(out)  # a new mapping: includes the page-fault cost of first touch
            rows = 0
            for b in d.iter_batches(256, shuffle=True, seed=2, drop_last=False):
                rows += len(b["input_ids"])
            return rows

        cat()
        lines = []
        for name, fn, is_rows in [
            ("cat (readinto 8 MiB)", cat, False),
            ("epoch, sequential, copied", epoch_sequential, True),
            ("epoch, shuffled take (256)", epoch_shuffled, True),
            ("epoch, shuffled, fresh open", epoch_fresh_open, True),
        ]:
            best = None
            for _ in range(3):
                c0, w0 = time.process_time(), time.perf_counter()
                r = fn()
                c, w = time.process_time() - c0, time.perf_counter() - w0
                if best is None or w < best[1]:
                    best = (c, w, r)
            assert best is not None
            c, w, r = best
            rows = r if is_rows else len(ds)
            if not is_rows:
                assert r == shard_bytes, (r, shard_bytes)
            lines.append(
                f"| {name} | {rows / w:,.0f} | {shard_bytes / 2**20 / w:,.0f} | "
                f"{w * 1e3:.1f} | {c * 1e3:.1f} |"
            )
        print("| read | rows/s | MiB/s | wall ms | CPU ms |")
        print("|---|---:|---:|---:|---:|")
        print("\n".join(lines))
        print("(best of 3; MiB = shard bytes on disk; rows/s of cat = rows in those bytes)")
    finally:
        if tmp is not None:
            if args.keep:
                print(f"kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

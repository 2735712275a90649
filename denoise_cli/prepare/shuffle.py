"""``denoise shuffle IN OUT``: write IN's rows in one seeded global order, for loaders that read
consecutive rows.

A shuffled training batch of an ordinary output is a gather of rows from all over the mapped
shards (one fancy index per column, bounded by memory bandwidth); after ``denoise shuffle`` it is
a contiguous slice, a zero-copy view (``iter_batches(..., shuffle="blocks")`` permutes the order
of the batches per epoch). Row ``j`` of OUT is row ``perm[j]`` of IN (``output.shuffled``); the
rows themselves, the schema, the format and the per-file accounting are IN's, so OUT verifies
like IN (``verify --source`` included) and its examples are still those of (seed, file, position,
config, tokenizer). Each epoch of a ``--epochs K`` output gets its own order (seed, epoch).

Like ``merge``, it writes ``.denoise/shuffle.json`` first and the manifest last; a rerun after a
kill clears what the interrupted shuffle wrote (only that) and starts again, with the same bytes.
OUT must be new or empty (or an interrupted shuffle); IN is only read, and must pass the fast
open-time checks first. The cost: every output shard is built in memory (``shard_rows`` rows).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ConfigError, OutputError
from ..load.checks import check_shard_files, check_shard_rows
from ..output.layout import (
    MANIFEST,
    TOKENIZER,
    check_no_overlap,
    clear_output,
    epoch_dir,
    locked_output,
    output_path,
    shuffle_record,
    shuffled_shard_name,
)
from ..output.manifest import dumps, read_manifest
from ..output.remote import is_output_url, localize
from ..output.shards import ShardWriter, atomic_write_bytes, read_shard_mapped, shard_format
from ..output.shuffled import SHUFFLE, is_shuffled, key_digest, permutation, take_rows
from .finalize import write_epoch_files, write_top
from .outdir import check_new_output

__all__ = ["DEFAULT_SHARD_ROWS", "shuffle"]

#: rows per shard of a shuffled output unless ``shard_rows`` says otherwise
DEFAULT_SHARD_ROWS = 65_536


def shuffle(
    src: str,
    out: str,
    *,
    seed: int = 0,
    shard_rows: int | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``src``'s rows into ``out`` in the order :func:`output.shuffled.permutation` gives
    (see module docstring); returns the top manifest. ``notify`` gets a line per shard written."""
    if shard_rows is not None and shard_rows < 1:
        raise ConfigError(f"--shard-rows must be >= 1, got {shard_rows}")
    if is_output_url(out):
        raise ConfigError(
            f"shuffle writes a local directory, not {out}: shuffle locally, then upload it"
        )
    inp = localize(src) if is_output_url(src) else Path(src)
    top = read_manifest(inp)
    if top.get("split_dirs"):
        names = ", ".join(str(inp / d) for d in top["split_dirs"].values())
        raise ConfigError(
            f"{inp} holds held-out splits (prepare --split): shuffle one split at a time ({names})"
        )
    if is_shuffled(top):
        raise ConfigError(f"{inp} is already a shuffled output; shuffle its source instead")
    dst = Path(out)
    check_no_overlap(dst, [inp], [])
    check_new_output(dst, shuffle_record(dst), "shuffle")
    dst.mkdir(parents=True, exist_ok=True)
    with locked_output(dst, "denoise shuffle"):
        check_new_output(dst, shuffle_record(dst), "shuffle")
        clear_output(dst)  # an interrupted shuffle: start over, only our entries go
        marker = {"source": str(inp.resolve()), "seed": seed, "shard_rows": shard_rows}
        atomic_write_bytes(shuffle_record(dst), dumps(marker))
        epochs = int(top.get("epochs", 1))
        manifests = []
        for e in range(epochs):
            sub = epoch_dir(epochs, e)
            d_in = output_path(inp, sub.rstrip("/"), "epoch directory") if sub else inp
            m = read_manifest(d_in) if sub else top
            manifests.append(_shuffle_one(d_in, dst, m, seed, e, epochs, shard_rows, notify))
        return write_top(dst, manifests)


def _shuffle_one(
    d_in: Path,
    dst: Path,
    m: dict[str, Any],
    seed: int,
    epoch: int,
    epochs: int,
    shard_rows: int | None,
    notify: Callable[[str], None] | None,
) -> dict[str, Any]:
    fmt = m["format"]
    check_shard_files(d_in, m, "fast")
    batches: list[pa.RecordBatch] = []
    chain: dict[int, int] = {}
    for s in m["shards"]:
        p = output_path(d_in, s["path"], f"{MANIFEST}: shard path")
        bs, _ = read_shard_mapped(p, fmt)  # batches hold their mapping open
        check_shard_rows(p, s, bs, chain)
        batches.extend(b for b in bs if b.num_rows)
    n = sum(b.num_rows for b in batches)
    if not n:
        raise OutputError(f"{d_in} has no rows to shuffle")
    schema = batches[0].schema
    starts = np.concatenate([[0], np.cumsum([b.num_rows for b in batches])]).astype(np.int64)
    perm = permutation(n, seed, int(m.get("epoch", 0)))
    per = shard_rows or DEFAULT_SHARD_ROWS
    sub = epoch_dir(epochs, epoch)
    shards = []
    for j, a in enumerate(range(0, n, per)):
        rel = shuffled_shard_name(1, 0, j, shard_format(fmt).name)
        path = dst / sub / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rb = take_rows(batches, starts, perm[a : a + per])
        w = ShardWriter(path, fmt, schema)
        try:
            w.write(rb)
            info = w.commit()
        except BaseException:
            w.abort()
            raise
        shards.append({"path": rel, "source_files": [], **info, "keys_sha256": key_digest([rb])})
        if notify is not None:
            where = f"{sub}{rel}"
            notify(f"{where}: {rb.num_rows:,} rows ({a + rb.num_rows:,} of {n:,})")
    res = {k: v for k, v in m.items() if k != "shards"}
    res["shards"] = shards
    res[SHUFFLE] = {
        "seed": seed,
        "shard_rows": per,
        "source_shards": m["shards"],
        "source_manifest_sha256": hashlib.sha256(dumps(m)).hexdigest(),
    }
    tok = (d_in / TOKENIZER).read_text(encoding="utf-8")
    write_epoch_files(dst / sub, res, tok, epochs > 1)
    return res

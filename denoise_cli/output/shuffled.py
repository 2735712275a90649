"""Shuffled outputs (``denoise shuffle IN OUT``) and the one way checks read any output's rows.

Row ``j`` of a shuffled output is row ``perm[j]`` of its source, ``perm =``
:func:`permutation` ``(rows, seed, epoch)``: a function of the seed, the epoch and the row count
only, never of the machine or the shard size. Its shards hold the rows in that order, one record
batch per shard, so a training batch of consecutive rows is a zero-copy slice of one mapped
buffer (``iter_batches(..., shuffle="blocks")``). The manifest keeps the source's per-file
accounting (``files``, ``totals``) and records, under ``"shuffle"``, the seed and the source's
shard entries: the *logical* shards.

Everything that checks rows against the files they came from (verify's chains and rebuild,
``verify --source``, ``stats``, ``inspect``) reads an output through :func:`logical_shards`:
for an ordinary output its shards; for a shuffled one the source's shards, rebuilt on the fly
from the shuffled rows by the inverse permutation, in the source's order. So every check of an
unshuffled output applies unchanged to a shuffled one, and the shards on disk are checked
(sizes, hashes, unlisted files) as for any output. The cost: a logical read of a shuffled output
gathers rows from everywhere (random access over the mapped shards).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import OutputError
from .layout import MANIFEST, output_path
from .shards import open_shard, read_shard_mapped, stored_columns

__all__ = [
    "KEY_COLUMNS",
    "SHUFFLE",
    "LogicalShard",
    "is_shuffled",
    "key_digest",
    "logical_shards",
    "permutation",
    "source_manifest",
    "take_rows",
]

#: the manifest key of a shuffled output: ``{"seed", "shard_rows", "source_shards",
#: "source_manifest_sha256"}``
SHUFFLE = "shuffle"
#: mixed into the seed so that the row order never shares a stream with prepare's draws
_TAG = 0x5348_5546  # "SHUF"
#: rows per record batch of a logical read
_CHUNK = 1024


def permutation(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The row order of a shuffled output: row ``j`` is source row ``perm[j]`` (int64)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_TAG, seed, epoch])))
    return rng.permutation(n).astype(np.int64)


def is_shuffled(m: dict[str, Any]) -> bool:
    return SHUFFLE in m


def source_manifest(m: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a shuffled dataset's source, rebuilt from ``m`` (its ``shards`` are the
    logical ones); ``dumps`` of it hashes to ``m["shuffle"]["source_manifest_sha256"]`` unless
    the manifest was edited."""
    res = {k: v for k, v in m.items() if k not in ("shards", SHUFFLE)}
    res["shards"] = m[SHUFFLE]["source_shards"]
    return res


#: the columns that say where a row comes from (file, example): what a shard's key digest hashes
KEY_COLUMNS = ("source_file", "example_index", "segment_example_index")


def key_digest(batches: Sequence[pa.RecordBatch]) -> str:
    """sha256 of the :data:`KEY_COLUMNS` of ``batches`` (their value buffers, in order): recorded
    per shard of a shuffled output (``keys_sha256``) so that the open-time check finds swapped,
    reordered or replaced rows by reading only these small columns."""
    h = hashlib.sha256()
    for name in KEY_COLUMNS:  # column by column: the same digest however rows are batched
        if not batches or name not in batches[0].schema.names:
            continue
        h.update(name.encode())
        for b in batches:
            col = b.column(name)
            arr = col.flatten() if pa.types.is_fixed_size_list(col.type) else col
            h.update(np.ascontiguousarray(arr.to_numpy(zero_copy_only=False)).tobytes())
    return h.hexdigest()


def take_rows(
    batches: Sequence[pa.RecordBatch], starts: np.ndarray, idx: np.ndarray
) -> pa.RecordBatch:
    """Rows ``idx`` (any order, in range) of the concatenation of ``batches`` (``starts``: the
    first row of each, then the total), as one record batch of their schema, in ``idx``'s order.
    One ``take`` per touched batch, then one reordering ``take``."""
    idx = np.asarray(idx, dtype=np.int64)
    if not len(idx):
        return batches[0].slice(0, 0)
    b = np.searchsorted(starts, idx, side="right") - 1
    order = np.argsort(b, kind="stable")
    bs = b[order]
    cuts = np.flatnonzero(np.diff(bs)) + 1
    parts = []
    for grp in np.split(order, cuts):
        bi = int(b[grp[0]])
        parts.append(batches[bi].take(pa.array(idx[grp] - starts[bi])))
    got = parts[0] if len(parts) == 1 else pa.concat_batches(parts)
    back = np.empty(len(idx), dtype=np.int64)
    back[order] = np.arange(len(idx), dtype=np.int64)
    if np.array_equal(back, np.arange(len(idx))):
        return got
    return got.take(pa.array(back))


@dataclass
class _Physical:
    """A shuffled dataset's shards, mapped, and the inverse permutation (loaded once)."""

    batches: list[pa.RecordBatch]
    starts: np.ndarray
    inv: np.ndarray  # inv[i]: the row of the shuffled output that holds source row i
    schema: pa.Schema


def _load_physical(out: Path, m: dict[str, Any]) -> _Physical:
    batches: list[pa.RecordBatch] = []
    for s in m["shards"]:
        p = output_path(out, s["path"], f"{MANIFEST}: shard path")
        bs, _ = read_shard_mapped(p, m["format"])  # batches hold their mapping open
        batches.extend(b for b in bs if b.num_rows)
    n = sum(b.num_rows for b in batches)
    sh = m[SHUFFLE]
    want = sum(int(s["rows"]) for s in sh["source_shards"])
    if n != want:
        raise OutputError(
            f"{out}: the shuffled shards hold {n:,} rows, the source's shards {want:,}"
        )
    perm = permutation(n, int(sh["seed"]), int(m.get("epoch", 0)))
    inv = np.empty(n, dtype=np.int64)
    inv[perm] = np.arange(n, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum([b.num_rows for b in batches])]).astype(np.int64)
    schema = batches[0].schema if batches else pa.schema([])
    return _Physical(batches, starts, inv, schema)


class _ShuffledRows:
    """The shards of one shuffled dataset, mapped once, on first use, for all its logical shards."""

    def __init__(self, out: Path, m: dict[str, Any]) -> None:
        self.out, self.m = out, m
        self._phys: _Physical | None = None

    def exists(self) -> bool:
        return all(
            output_path(self.out, s["path"], f"{MANIFEST}: shard path").is_file()
            for s in self.m["shards"]
        )

    def physical(self) -> _Physical:
        if self._phys is None:
            self._phys = _load_physical(self.out, self.m)
        return self._phys


@dataclass
class LogicalShard:
    """One shard as the checks see it: ``entry`` is its manifest entry (a shuffled output: the
    source's), ``rel`` the name problems are reported under; :meth:`open` reads its rows in the
    file order the entry describes."""

    entry: dict[str, Any]
    rel: str
    path: Path | None  # the shard file; None: rebuilt from a shuffled output's rows
    fmt: str
    first: int = 0  # a rebuilt shard: its first source row
    rows: _ShuffledRows | None = field(default=None, repr=False)  # a rebuilt shard's source

    def exists(self) -> bool:
        """Its file is there (a rebuilt shard: every shard of the shuffled output)."""
        if self.path is not None:
            return self.path.is_file()
        return self.rows is not None and self.rows.exists()

    def open(
        self, columns: Sequence[str] | None = None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        if self.path is not None:
            return open_shard(self.path, self.fmt, columns)
        assert self.rows is not None
        ph = self.rows.physical()
        # as open_shard: the file's schema, the stored columns ``columns`` are read from
        cols = stored_columns(ph.schema, columns) if columns is not None else None
        lo, hi = self.first, self.first + int(self.entry["rows"])

        # only the columns asked for are gathered (selecting a mapped batch copies nothing)
        batches = ph.batches if cols is None else [b.select(cols) for b in ph.batches]

        def gen() -> Iterator[pa.RecordBatch]:
            for a in range(lo, hi, _CHUNK):
                yield take_rows(batches, ph.starts, ph.inv[a : min(a + _CHUNK, hi)])

        return ph.schema, gen()


def _check_entry(m: dict[str, Any]) -> None:
    """The ``shuffle`` entry is what a logical read needs: a seed >= 0 and the source's shard
    entries (a name and a row count each); an :class:`OutputError` otherwise."""
    sh = m[SHUFFLE]
    ok = isinstance(sh, dict)
    seed = sh.get("seed") if ok else None
    ok = ok and isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
    src = sh.get("source_shards") if ok else None
    ok = (
        ok
        and isinstance(src, list)
        and all(
            isinstance(s, dict)
            and isinstance(s.get("path"), str)
            and isinstance(s.get("rows"), int)
            and s["rows"] >= 0
            for s in src or []
        )
    )
    if not ok:
        raise OutputError(
            f"{MANIFEST}: malformed {SHUFFLE!r} entry (a seed >= 0 and source_shards, each with "
            "a path and rows, expected)"
        )


def logical_shards(out: Path, m: dict[str, Any]) -> list[LogicalShard]:
    """The shards of dataset ``m`` (one epoch's manifest) in the order its files' rows run:
    its own shards, or for a shuffled output the source's, rebuilt (see module docstring). Shard
    paths go through ``layout.output_path``."""
    fmt = m["format"]
    if not is_shuffled(m):
        return [
            LogicalShard(
                s, str(s["path"]), output_path(out, s["path"], f"{MANIFEST}: shard path"), fmt
            )
            for s in m["shards"]
        ]
    _check_entry(m)
    rows = _ShuffledRows(out, m)

    res: list[LogicalShard] = []
    first = 0
    for s in m[SHUFFLE]["source_shards"]:
        rel = f"{s['path']} (rebuilt from the shuffled rows)"
        res.append(LogicalShard(s, rel, None, fmt, first, rows))
        first += int(s["rows"])
    return res

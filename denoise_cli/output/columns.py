"""Row gathers over mapped shards: one numpy fancy index per column for a whole batch.

All record batches of an Arrow IPC shard lie in its memory-mapped file; Parquet shards are decoded
into memory. For each dtype, one flat numpy array spans the memory of every shard of a dataset
(from the lowest buffer to the end of the highest), and a column of width ``W`` is read through a
sliding-window view of it (``[N - W + 1, W]``, row stride one element, read-only): row ``r`` of
record batch ``b`` starts at element ``base[b] + r * W``, so the rows of a batch, from any shards
and in any order, come out of one fancy index straight into the caller's arrays (widened there).
Only elements inside the shards' own buffers are ever read: fixed-width rows are checked by
Arrow (``RecordBatch.validate``), list offsets are checked at open, and a ragged row whose ``W``
elements would run past its buffer is copied on its own. A compact shard's ragged ids start at
``base[b] + offsets[r]``; what lies past the row's length is set to the fill, and derived columns
(``attention_mask``, decoder-only ``labels``) are rebuilt from the lengths
(:func:`.schema.derive_column`). Either format gives the default format's arrays.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import OutputError
from .schema import LOGICAL_DTYPES, logical_dtype, logical_order, ragged_info, rebuild, rebuilds
from .shards import dtype_of


@dataclass
class _Source:
    """One stored column: per record batch, ``base`` (the element of its first row, ragged: of
    its first list value) and ``end`` (the element past its buffer) in the span of its dtype;
    ``win`` the window view (None for width 1); ragged: ``offsets`` and ``fill``."""

    flat: np.ndarray
    win: np.ndarray | None
    width: int
    base: np.ndarray
    end: np.ndarray
    offsets: _Source | None = None
    fill: int = 0


def _inside(buf: pa.Buffer, f: pa.Buffer | None) -> bool:
    return (
        f is not None and f.address <= buf.address and buf.address + buf.size <= f.address + f.size
    )


class MappedRows:
    """The rows of a dataset's shards (``shards``: per shard, its record batches and the mapped
    file they lie in, or None), gathered by :meth:`take`. ``columns``: ``{name: (row shape,
    dtype)}`` as the default format stores them. Holds the buffers (and so the mappings)."""

    def __init__(self, shards: list[tuple[list[pa.RecordBatch], pa.Buffer | None]]) -> None:
        batches: list[pa.RecordBatch] = []
        files: list[pa.Buffer | None] = []
        for bs, buf in shards:
            for b in bs:
                if b.num_rows:
                    try:
                        b.validate()
                    except pa.ArrowException as e:
                        raise OutputError(f"a record batch does not validate: {e}") from None
                    batches.append(b)
                    files.append(buf)
        self._batches = batches
        self._files = files
        sizes = [b.num_rows for b in batches]
        self.num_rows = sum(sizes)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._src: dict[str, _Source] = {}
        self._tables: dict[tuple[int, np.dtype[Any], bool], np.ndarray] = {}
        self.columns: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        if not batches:
            return
        self._span_lo, self._span_hi = self._span()
        self._flats: dict[np.dtype[Any], np.ndarray] = {}
        for i, f in enumerate(batches[0].schema):
            cols = [b.column(i) for b in batches]
            info = ragged_info(f)
            if info is not None:
                w, fill = info
                offs = self._source([c.offsets for c in cols], 1, [0] * len(cols))
                vals = [c.values for c in cols]
                src = self._source(vals, w, [0] * len(cols), offsets=offs, fill=fill)
                self._check_offsets(f.name, offs, vals)
                self.columns[f.name] = ((w,), LOGICAL_DTYPES[f.name])
            elif pa.types.is_fixed_size_list(f.type):
                w = f.type.list_size
                src = self._source([c.values for c in cols], w, [c.offset * w for c in cols])
                self.columns[f.name] = ((w,), logical_dtype(f) or src.flat.dtype)
            else:
                src = self._source(cols, 1, [0] * len(cols))
                self.columns[f.name] = ((), src.flat.dtype)
            self._src[f.name] = src
        self._rules = rebuilds(batches[0].schema)
        for r in self._rules.values():
            self.columns[r.name] = ((r.width,), LOGICAL_DTYPES[r.name])
        self.columns = {k: self.columns[k] for k in logical_order(list(self.columns))}

    def _regions(self) -> list[tuple[int, int]]:
        """(address, size) of every buffer rows are read from: the mapped files, and any column
        buffer outside its file (a decoded or decompressed one)."""
        out: list[tuple[int, int]] = []
        for b, f in zip(self._batches, self._files, strict=True):
            if f is not None:
                out.append((f.address, f.size))
            for col in b.columns:
                for buf in col.buffers():  # with the children's
                    if buf is not None and buf.size and not _inside(buf, f):
                        out.append((buf.address, buf.size))
        return out

    def _span(self) -> tuple[int, int]:
        reg = self._regions()
        lo = min(a for a, _ in reg) // 8 * 8
        hi = max(a + s for a, s in reg)
        return lo, hi

    def _flat(self, dt: np.dtype[Any]) -> np.ndarray:
        flat = self._flats.get(dt)
        if flat is None:
            size = self._span_hi - self._span_lo
            raw = (ctypes.c_char * size).from_address(self._span_lo)
            flat = np.frombuffer(memoryview(raw), dtype=dt, count=size // dt.itemsize)
            flat.flags.writeable = False
            self._flats[dt] = flat
        return flat

    def _source(
        self,
        arrays: list[pa.Array],
        width: int,
        starts: list[int],
        *,
        offsets: _Source | None = None,
        fill: int = 0,
    ) -> _Source:
        dt = np.dtype(dtype_of(arrays[0].type))
        isz = dt.itemsize
        base: list[int] = []
        end: list[int] = []
        for a, s, f in zip(arrays, starts, self._files, strict=True):
            buf = a.buffers()[1]
            if buf is None or (buf.address - self._span_lo) % isz:
                raise OutputError(f"column of type {a.type}: buffer not aligned, cannot map it")
            lim = f if f is not None and _inside(buf, f) else buf
            base.append((buf.address - self._span_lo) // isz + a.offset + s)
            end.append((lim.address + lim.size - self._span_lo) // isz)
        flat = self._flat(dt)
        win = None
        if width > 1:
            win = np.lib.stride_tricks.as_strided(
                flat, shape=(len(flat) - width + 1, width), strides=(isz, isz), writeable=False
            )
        return _Source(
            flat,
            win,
            width,
            np.asarray(base, dtype=np.int64),
            np.asarray(end, dtype=np.int64),
            offsets,
            fill,
        )

    def _check_offsets(self, name: str, offs: _Source, values: list[pa.Array]) -> None:
        """List offsets read from a file: non-decreasing and inside their values, else nothing
        is read through them."""
        for bi, b in enumerate(self._batches):
            o = offs.flat[offs.base[bi] : offs.base[bi] + b.num_rows + 1]
            if len(o) and (o[0] < 0 or o[-1] > len(values[bi]) or (np.diff(o) < 0).any()):
                raise OutputError(f"column {name}: list offsets out of range (damaged shard)")

    def _gather(
        self, name: str, b: np.ndarray, rr: np.ndarray, out: np.ndarray | None
    ) -> np.ndarray:
        """Rows of column ``name`` into ``out``; ``out`` None: into a new array (the fancy
        index's own result where the stored dtype is the column's: no second copy)."""
        src = self._src[name]
        o = src.offsets
        if o is None:
            e = src.base[b] + rr * src.width
        else:
            i = o.base[b] + rr
            st = o.flat[i]
            e = src.base[b] + st
        dt = self.columns[name][1]
        if out is None and src.flat.dtype != dt:
            out = np.empty((len(e), *self.columns[name][0]), dtype=dt)
        if src.win is None:
            g = src.flat[e]
        elif o is None or (e + src.width <= src.end[b]).all():
            g = src.win[e]
        else:  # a ragged row within W elements of the end of its buffer: row by row
            g = np.empty((len(e), src.width), dtype=dt) if out is None else out
            for r, s, lim in zip(range(len(e)), e.tolist(), src.end[b].tolist(), strict=True):
                v = src.flat[s : min(s + src.width, lim)]
                g[r, : len(v)] = v
        if out is None:
            out = g
        elif g is not out:
            out[...] = g
        if o is not None:
            lens = o.flat[i + 1] - st
            past = np.take(self._steps(src.width, np.dtype(bool), after=True), lens, 0, mode="clip")
            np.copyto(out, src.fill, where=past)
        return out

    def _steps(self, width: int, dt: np.dtype[Any], *, after: bool = False) -> np.ndarray:
        """``[width + 1, width]`` table, row ``l``: 1 at the positions ``< l`` (``after``: the
        positions ``>= l``), so a batch's masks are one row gather by length (cached)."""
        key = (width, dt, after)
        t = self._tables.get(key)
        if t is None:
            pos = np.arange(width)[None, :]
            lens = np.arange(width + 1)[:, None]
            t = (pos >= lens if after else pos < lens).astype(dt)
            t.flags.writeable = False
            self._tables[key] = t
        return t

    def take(self, rows: np.ndarray, out: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Rows ``rows`` (any order, in range) of the columns ``out`` names: written into its
        arrays (``len(rows)`` rows; any integer dtype at least as wide as the column's), new
        arrays where it holds None. Returns the arrays, in ``out``'s order."""
        b = np.searchsorted(self.starts, rows, side="right") - 1
        rr = rows - self.starts[b]
        res: dict[str, np.ndarray] = {}
        for k, o in out.items():
            if k in self._src:
                res[k] = self._gather(k, b, rr, o)
            else:
                shape, dt = self.columns[k]
                res[k] = np.empty((len(rows), *shape), dtype=dt) if o is None else o
        rules = [self._rules[k] for k in out if k in self._rules]
        if not rules:
            return res
        a: dict[str, np.ndarray] = {}
        for r in rules:
            for k in r.sources:
                if k in a:
                    continue
                if k in res and k not in self._rules:
                    a[k] = res[k]
                else:
                    shape, dt = self.columns[k]
                    a[k] = np.empty((len(rows), *shape), dtype=dt)
                    self._gather(k, b, rr, a[k])
                    if k in self._rules:  # e.g. decoder-only labels need complete input_ids
                        rebuild(self._rules[k], a, a[k])
        for r in rules:
            o = res[r.name]
            if r.kind == "mask_len" and o.dtype.kind in "iub":  # = rebuild's, as a row gather
                il = a["input_length"]  # clip: lengths past the width give full rows
                np.take(self._steps(r.width, o.dtype), il, axis=0, out=o, mode="clip")
            else:
                rebuild(r, a, o)
        return res

"""Row gathers over one mapped shard: one numpy fancy index per shard and column, no pyarrow call.

All record batches of an Arrow IPC shard lie in its memory-mapped file. A column of dtype ``d``
and width ``W`` is read through a sliding-window view of the file as ``d`` (``[N - W + 1, W]``,
row stride one element, read-only): row ``r`` of record batch ``b`` starts at element
``base[b] + r * W``, so rows of any record batches of the shard come out of one fancy index into
the caller's arrays (widened there if they are wider). A compact shard's ragged ids start at
``base[b] + offsets[r]``: the window takes ``W`` elements and what lies past the row's length is
set to the fill; derived columns (``attention_mask``, decoder-only ``labels``) are rebuilt from
the lengths (:func:`.schema.derive_column`). Either format gives the default format's arrays.
Parquet shards (decoded into memory) are one buffer per column; where record batches do not
share a buffer the column is copied into one at open. Used by ``load.dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .schema import LOGICAL_DTYPES, derive_column, derived_columns, logical_order, ragged_info
from .shards import dtype_of


@dataclass
class _Source:
    """One stored column of a shard: ``flat`` (all its elements' buffer), ``win`` (the window
    view, ``[len(flat) - W + 1, W]``, None when ``W`` is 1 or longer than ``flat``), ``base``
    (per record batch, the element of its first row / first list value)."""

    flat: np.ndarray
    win: np.ndarray | None
    width: int
    base: np.ndarray
    offsets: _Source | None = None  # ragged: the list offsets column
    fill: int = 0


def _window(flat: np.ndarray, width: int) -> np.ndarray | None:
    if width == 1 or len(flat) < width:
        return None
    isz = flat.itemsize
    return np.lib.stride_tricks.as_strided(
        flat, shape=(len(flat) - width + 1, width), strides=(isz, isz), writeable=False
    )


class MappedShard:
    """The rows of one shard (its non-empty record batches ``batches``; ``buffer``: the mapped
    file they lie in, or None) gathered by :meth:`take`. ``columns``: ``{name: (row shape,
    dtype)}`` as the default format stores them."""

    def __init__(self, batches: list[pa.RecordBatch], buffer: pa.Buffer | None) -> None:
        self._buffer = buffer  # keeps the mapping alive
        self._file: dict[np.dtype[Any], np.ndarray] = {}
        batches = [b for b in batches if b.num_rows]
        sizes = [b.num_rows for b in batches]
        self.num_rows = sum(sizes)
        self._starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._src: dict[str, _Source] = {}
        self.columns: dict[str, tuple[tuple[int, ...], np.dtype[Any]]] = {}
        self._derived: list[str] = []
        self._width = 0
        if not batches:
            return
        schema = batches[0].schema
        for i, f in enumerate(schema):
            cols = [b.column(i) for b in batches]
            info = ragged_info(f)
            if info is not None:
                w, fill = info
                offs = self._source([c.offsets for c in cols], 1, [0] * len(cols))
                src = self._source(
                    [c.values for c in cols], w, [0] * len(cols), offsets=offs, fill=fill
                )
                self.columns[f.name] = ((w,), LOGICAL_DTYPES[f.name])
                if f.name == "input_ids":
                    self._derived, self._width = derived_columns(f), w
            elif pa.types.is_fixed_size_list(f.type):
                w = f.type.list_size
                src = self._source([c.values for c in cols], w, [c.offset * w for c in cols])
                self.columns[f.name] = ((w,), src.flat.dtype)
            else:
                src = self._source(cols, 1, [0] * len(cols))
                self.columns[f.name] = ((), src.flat.dtype)
            self._src[f.name] = src
        for d in self._derived:
            self.columns[d] = ((self._width,), LOGICAL_DTYPES[d])
        self.columns = {k: self.columns[k] for k in logical_order(list(self.columns))}

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
        bufs = [a.buffers()[1] for a in arrays]
        f = self._buffer
        if f is not None and all(
            b is not None
            and f.address <= b.address
            and b.address + b.size <= f.address + f.size
            and (b.address - f.address) % isz == 0
            for b in bufs
        ):
            flat = self._file.get(dt)
            if flat is None:
                flat = self._file[dt] = np.frombuffer(f, dtype=dt, count=f.size // isz)
            first = [(b.address - f.address) // isz for b in bufs]
        else:  # one buffer per record batch: used as it is if there is one, else copied into one
            parts = [np.frombuffer(b, dtype=dt, count=b.size // isz) for b in bufs]
            flat = parts[0] if len(parts) == 1 else np.concatenate(parts)
            first = np.concatenate([[0], np.cumsum([len(p) for p in parts])])[:-1].tolist()
        # element of each array's first element (its own slice offset, plus the parent's row
        # offset for a fixed-size list)
        base = np.asarray(
            [e + a.offset + s for e, a, s in zip(first, arrays, starts, strict=True)],
            dtype=np.int64,
        )
        return _Source(flat, _window(flat, width), width, base, offsets, fill)

    def _rows(self, src: _Source, b: np.ndarray, rr: np.ndarray) -> np.ndarray:
        """The first stored element of rows ``rr`` of record batches ``b``."""
        if src.offsets is None:
            return src.base[b] + rr * src.width
        o = src.offsets
        return src.base[b] + o.flat[o.base[b] + rr]

    def _lengths(self, src: _Source, b: np.ndarray, rr: np.ndarray) -> np.ndarray:
        o = src.offsets
        assert o is not None
        i = o.base[b] + rr
        return o.flat[i + 1].astype(np.int64) - o.flat[i]

    def _gather(self, name: str, b: np.ndarray, rr: np.ndarray, out: np.ndarray) -> None:
        src = self._src[name]
        e = self._rows(src, b, rr)
        if src.width == 1:
            out[...] = src.flat[e]
            return
        if src.win is not None and (src.offsets is None or int(e.max()) < len(src.win)):
            out[...] = src.win[e]
        else:  # a ragged row within W elements of the end of the buffer: row by row
            for i, s in enumerate(e.tolist()):
                v = src.flat[s : s + src.width]
                out[i, : len(v)] = v
        if src.offsets is not None:
            lens = self._lengths(src, b, rr)
            np.copyto(out, src.fill, where=np.arange(src.width)[None, :] >= lens[:, None])

    def take(self, rows: np.ndarray, out: dict[str, np.ndarray]) -> None:
        """Write rows ``rows`` (indices into this shard, any order) into ``out``
        (``{column: array of len(rows) rows}``; any integer dtype at least as wide)."""
        if len(self._starts) == 2:
            b = np.zeros(len(rows), dtype=np.int64)
            rr = rows
        else:
            b = np.searchsorted(self._starts, rows, side="right") - 1
            rr = rows - self._starts[b]
        derived = [k for k in out if k not in self._src]
        for k, o in out.items():
            if k in self._src:
                self._gather(k, b, rr, o)
        if not derived:
            return
        a: dict[str, np.ndarray] = {}
        for k in ("input_ids", "input_length", "target_length"):
            if k in out:
                a[k] = out[k]
            else:
                shape, dt = self.columns[k]
                a[k] = np.empty((len(rows), *shape), dtype=dt)
                self._gather(k, b, rr, a[k])
        for k in derived:
            if k not in self._derived:
                raise KeyError(f"no column {k!r} (columns: {', '.join(self.columns)})")
            derive_column(k, a, self._width, out[k])

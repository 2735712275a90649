"""Shard files: the format registry (Arrow IPC stream, zstd Parquet), the one writer and the one
reader of shards, and atomic file writes.

Arrow IPC *stream* files are what ``datasets.save_to_disk`` writes (so ``load_from_disk``
reads them) and are memory-mapped when read (zero-copy); Parquet shards are decoded. A shard
is written under a temporary name, fsync'ed, then renamed: it is visible under its final name
only when complete, and its sha256 is computed while writing (no second read). Row formats
(columns) live in :mod:`.schema`, names in :mod:`.layout` (a shard's extension is its format's
name). A new format is one :class:`ShardFormat` and its entry in :data:`FORMATS`: ``--format``'s
choices, the config check (:func:`format_of`) and the readers all come from there. See
docs/architecture.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ConfigError, OutputError
from .layout import tmp_path
from .schema import (
    LOGICAL_DTYPES,
    expand_ragged,
    logical_dtype,
    logical_order,
    ragged_info,
    rebuild,
    rebuilds,
)


class _HashingFile:
    """A binary file wrapper that hashes what is written through it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "wb")
        self.sha = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        mv = memoryview(data)
        self.sha.update(mv)
        self.size += mv.nbytes
        return self._f.write(mv)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self.closed = True

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class ShardFormat:
    """How one shard format writes and reads record batches."""

    name = ""  # --format, the manifest's "format" and the shards' file extension
    help = ""  # what --format's help says of it
    load_from_disk = False  # datasets.load_from_disk reads it: the output gets the HF files

    def writer(self, sink: Any, schema: pa.Schema) -> Any:
        """An object with ``write_batch(batch)`` and ``close()`` writing to ``sink``."""
        raise NotImplementedError

    def write(self, w: Any, batch: pa.RecordBatch) -> None:
        w.write_batch(batch)

    def open(
        self, path: Path, columns: Sequence[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """A shard's schema and its record batches, reading only ``columns``."""
        raise NotImplementedError

    def read_all(self, path: Path) -> list[pa.RecordBatch]:
        _, batches = self.open(path, None)
        return list(batches)

    def read_mapped(self, path: Path) -> tuple[list[pa.RecordBatch], pa.Buffer | None]:
        """All record batches and the one buffer they all lie in (None: not known)."""
        return self.read_all(path), None


class ArrowFormat(ShardFormat):
    """Arrow IPC stream files, memory-mapped when read (zero-copy)."""

    name = "arrow"
    help = "uncompressed IPC, zero-copy, datasets.load_from_disk"
    load_from_disk = True

    def writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pa.ipc.new_stream(sink, schema)

    def open(
        self, path: Path, columns: Sequence[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))
        if columns is not None:
            columns = stored_columns(reader.schema, columns)

        def gen() -> Iterator[pa.RecordBatch]:
            for rb in reader:
                yield rb.select(list(columns)) if columns is not None else rb

        return reader.schema, gen()

    def read_mapped(self, path: Path) -> tuple[list[pa.RecordBatch], pa.Buffer | None]:
        buf = pa.memory_map(str(path), "r").read_buffer()
        return list(pa.ipc.open_stream(buf)), buf


class ParquetFormat(ShardFormat):
    """zstd Parquet, one row group per written batch (decoded when read)."""

    name = "parquet"
    help = "zstd; load_dataset('parquet', data_dir=OUT + '/data')"

    def writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pq.ParquetWriter(sink, schema, compression="zstd")

    def write(self, w: Any, batch: pa.RecordBatch) -> None:
        w.write_batch(batch, row_group_size=max(batch.num_rows, 1))

    def open(
        self, path: Path, columns: Sequence[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        pf = pq.ParquetFile(str(path))
        cols = stored_columns(pf.schema_arrow, columns) if columns is not None else None
        return pf.schema_arrow, pf.iter_batches(batch_size=8192, columns=cols)

    def read_all(self, path: Path) -> list[pa.RecordBatch]:
        batches: list[pa.RecordBatch] = pq.read_table(path).combine_chunks().to_batches()
        return batches


#: format name (``--format``, the manifest's ``format``) -> its reader and writer
FORMATS: dict[str, ShardFormat] = {f.name: f for f in (ArrowFormat(), ParquetFormat())}


def format_of(name: str) -> ShardFormat:
    """The format a config names (``--format``); a ConfigError that lists the choices if none."""
    if name not in FORMATS:
        *rest, last = FORMATS
        choices = f"{', '.join(rest)} or {last}" if rest else last
        raise ConfigError(f"--format must be {choices}, got {name!r}")
    return FORMATS[name]


def shard_format(fmt: str) -> ShardFormat:
    """The format an output's manifest names; an OutputError if it is unknown."""
    if fmt not in FORMATS:
        raise OutputError(f"unknown shard format {fmt!r} (known: {', '.join(FORMATS)})")
    return FORMATS[fmt]


def _unreadable(path: Path, fmt: str, e: BaseException) -> OutputError:
    return OutputError(
        f"shard {path} is not a readable {fmt} shard ({type(e).__name__}: {e}); "
        "run `denoise verify` on the output"
    )


def open_shard(
    path: Path, fmt: str, columns: Sequence[str] | None = None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A shard's schema and its record batches, reading only ``columns`` (Arrow IPC: memory-mapped,
    zero-copy; Parquet: only those column chunks are decoded). A file that is not a readable
    shard raises :class:`OutputError` naming it (at open or while iterating)."""
    sf = shard_format(fmt)
    try:
        schema, batches = sf.open(path, columns)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, fmt, e) from None

    def gen() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(path, fmt, e) from None

    return schema, gen()


def stored_columns(schema: pa.Schema, columns: Sequence[str]) -> list[str]:
    """The stored columns to read for the (logical) ``columns``: a column a compact shard does not
    store, or completes at read time, brings the ones it is rebuilt from
    (:func:`.schema.rebuilds`)."""
    names = schema.names
    rules = rebuilds(schema)
    out: list[str] = []
    for c in columns:
        need = [c] if c in names else ["input_ids"] if c in rules else [c]
        if c in rules:
            need += rules[c].sources
        for s in need:
            if s not in out:
                out.append(s)
    return out


def read_shard_mapped(path: Path, fmt: str) -> tuple[list[pa.RecordBatch], pa.Buffer | None]:
    """All record batches of a shard and, for Arrow IPC, the memory-mapped file they lie in (what
    :class:`.columns.MappedShard` gathers rows from); errors as :func:`read_shard`."""
    sf = shard_format(fmt)
    try:
        return sf.read_mapped(path)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, fmt, e) from None


def read_shard(path: Path, fmt: str) -> list[pa.RecordBatch]:
    """All record batches of a shard; Arrow shards are memory-mapped (zero-copy). A file that
    is not a readable shard raises :class:`OutputError` naming it."""
    sf = shard_format(fmt)
    try:
        return sf.read_all(path)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, fmt, e) from None


_NP = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.uint8(): np.uint8,
    pa.uint16(): np.uint16,
    pa.uint32(): np.uint32,
    pa.uint64(): np.uint64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def dtype_of(t: pa.DataType) -> type:
    """The numpy scalar type of a primitive Arrow integer or float type."""
    dt = _NP.get(t)
    if dt is None:
        raise ValueError(f"unexpected column type {t}")
    return dt


def _flat(a: pa.Array, start: int, count: int) -> np.ndarray:
    dt = _NP.get(a.type)
    if dt is None or a.null_count:
        raise ValueError(f"unexpected column type {a.type} (or nulls)")
    off = a.offset + start
    return np.frombuffer(a.buffers()[1], dtype=dt, count=off + count)[off:]


def list_parts(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The values (zero-copy, from the child's first element) and the ``n + 1`` offsets into them
    of a ``list`` column."""
    offs = col.offsets
    o = _flat(offs, 0, len(offs))
    vals = col.values
    return _flat(vals, 0, len(vals)), o


def batch_arrays(rb: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Numpy arrays of a record batch's columns, as the default format stores them: zero-copy
    views of primitive and fixed-size-list columns (``[n, W]``); a compact shard's ragged ids are
    padded back to ``[n, W]`` and its derived columns rebuilt (copies). Built from the Arrow
    buffers directly: ``Array.to_numpy`` imports pandas on first use (~1.5 s per process)."""
    out: dict[str, np.ndarray] = {}
    n = rb.num_rows
    for f, col in zip(rb.schema, rb.columns, strict=True):
        name = f.name
        if pa.types.is_fixed_size_list(col.type):
            w = col.type.list_size
            out[name] = _flat(col.values, col.offset * w, n * w).reshape(n, w)
        elif (info := ragged_info(f)) is not None:
            w, fill = info
            vals, offs = list_parts(col)
            a = np.empty((n, w), dtype=np.int32)
            out[name] = expand_ragged(vals, offs[:-1], np.diff(offs), w, fill, a)
            continue
        else:
            out[name] = _flat(col, 0, n)
        dt = logical_dtype(f)
        if dt is not None:
            out[name] = out[name].astype(dt)
    rules = rebuilds(rb.schema)
    if rules:
        for r in rules.values():
            if all(s in out for s in r.sources) and (r.kind == "ignore") == (r.name in out):
                if r.name not in out:
                    out[r.name] = np.empty((n, r.width), dtype=LOGICAL_DTYPES[r.name])
                rebuild(r, out, out[r.name])
        out = {k: out[k] for k in logical_order(list(out))}
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Write one shard from record batches; ``commit()`` makes it appear atomically."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = tmp_path(path)
        self.rows = 0
        self._fmt = shard_format(fmt)
        self._sink = _HashingFile(self.tmp)
        self._pa_sink = pa.PythonFile(self._sink, mode="w")
        self._w = self._fmt.writer(self._pa_sink, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._fmt.write(self._w, batch)
        self.rows += batch.num_rows

    def commit(self) -> dict[str, Any]:
        self._w.close()
        self._pa_sink.close()
        self._sink.close()
        os.replace(self.tmp, self.path)
        return {"rows": self.rows, "bytes": self._sink.size, "sha256": self._sink.sha.hexdigest()}

    def abort(self) -> None:
        try:
            self._w.close()
        except Exception:
            pass
        try:
            self._sink.close()
        except Exception:
            pass
        self.tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def hf_dataset_files(
    shards: list[str], fingerprint: str, denoiser_names: Sequence[str] = ()
) -> tuple[bytes, bytes]:
    """``state.json`` and ``dataset_info.json`` so that ``datasets.load_from_disk(out)`` works.

    The description names the ``denoiser`` values. They are not a ``ClassLabel`` feature:
    ``datasets`` stores a ClassLabel as int64 and refuses (``External features info don't match
    the dataset``) an int8 column declared as one; the names travel in the shards' schema
    metadata too (:func:`.schema.with_components`)."""
    import orjson

    desc = "UL2 mixture-of-denoisers examples written by denoise (see denoise.json)"
    if denoiser_names:
        table = ", ".join(f"{i} = {n}" for i, n in enumerate(denoiser_names))
        desc += f"; column denoiser: {table}"

    state: dict[str, Any] = {
        "_data_files": [{"filename": s} for s in shards],
        "_fingerprint": fingerprint[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    info = {
        "citation": "",
        "description": desc,
        "homepage": "",
        "license": "",
    }
    return (
        orjson.dumps(state, option=orjson.OPT_INDENT_2),
        orjson.dumps(info, option=orjson.OPT_INDENT_2),
    )

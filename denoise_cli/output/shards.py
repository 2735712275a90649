"""Shard files: the format registry (Arrow IPC stream, zstd Parquet), the one writer and the one
reader of shards, and atomic file writes.

Arrow IPC *stream* files are what ``datasets.save_to_disk`` writes (so ``load_from_disk``
reads them) and are memory-mapped when read (zero-copy); Parquet shards are decoded. A shard
is written under a temporary name, fsync'ed, then renamed: it is visible under its final name
only when complete, and its sha256 is computed while writing (no second read). Row formats
(columns) live in :mod:`.schema`, names in :mod:`.layout`. A new format is one entry in
:data:`FORMATS`. See docs/architecture.md.
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

from ..errors import OutputError
from .layout import tmp_path


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

    name = ""

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


class ArrowFormat(ShardFormat):
    """Arrow IPC stream files, memory-mapped when read (zero-copy)."""

    name = "arrow"

    def writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pa.ipc.new_stream(sink, schema)

    def open(
        self, path: Path, columns: Sequence[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))

        def gen() -> Iterator[pa.RecordBatch]:
            for rb in reader:
                yield rb.select(list(columns)) if columns is not None else rb

        return reader.schema, gen()


class ParquetFormat(ShardFormat):
    """zstd Parquet, one row group per written batch (decoded when read)."""

    name = "parquet"

    def writer(self, sink: Any, schema: pa.Schema) -> Any:
        return pq.ParquetWriter(sink, schema, compression="zstd")

    def write(self, w: Any, batch: pa.RecordBatch) -> None:
        w.write_batch(batch, row_group_size=max(batch.num_rows, 1))

    def open(
        self, path: Path, columns: Sequence[str] | None
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        pf = pq.ParquetFile(str(path))
        cols = list(columns) if columns is not None else None
        return pf.schema_arrow, pf.iter_batches(batch_size=8192, columns=cols)

    def read_all(self, path: Path) -> list[pa.RecordBatch]:
        batches: list[pa.RecordBatch] = pq.read_table(path).combine_chunks().to_batches()
        return batches


#: format name (``--format``, the manifest's ``format``) -> its reader and writer
FORMATS: dict[str, ShardFormat] = {"arrow": ArrowFormat(), "parquet": ParquetFormat()}


def shard_format(fmt: str) -> ShardFormat:
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


def _flat(a: pa.Array, start: int, count: int) -> np.ndarray:
    dt = _NP.get(a.type)
    if dt is None or a.null_count:
        raise ValueError(f"unexpected column type {a.type} (or nulls)")
    off = a.offset + start
    return np.frombuffer(a.buffers()[1], dtype=dt, count=off + count)[off:]


def batch_arrays(rb: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Zero-copy numpy views of a record batch's primitive and fixed-size-list columns
    (``[n, W]``). Built from the Arrow buffers directly: ``Array.to_numpy`` imports pandas on
    first use, which costs ~1.5 s per process."""
    out: dict[str, np.ndarray] = {}
    n = rb.num_rows
    for name, col in zip(rb.schema.names, rb.columns, strict=True):
        if pa.types.is_fixed_size_list(col.type):
            w = col.type.list_size
            out[name] = _flat(col.values, col.offset * w, n * w).reshape(n, w)
        else:
            out[name] = _flat(col, 0, n)
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

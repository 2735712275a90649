"""Writing: numpy rows -> Arrow IPC / Parquet shards, atomically; output-directory helpers.

Columns are built from numpy buffers (``pa.array`` of a contiguous int32 array is zero-copy,
``FixedSizeListArray.from_arrays`` wraps it), never from Python lists of tokens.

Schema (one row per example):

================  ==========================  =============================================
column            type                        meaning
================  ==========================  =============================================
input_ids         fixed_size_list<int32>[W]   W = inputs_length (enc-dec) / seq_length
labels            fixed_size_list<int32>[V]   V = targets_length / seq_length; -100 = ignore
attention_mask    fixed_size_list<int8>[W]    1 on real tokens of input_ids
prefix_length     int32 (decoder-only only)   mode token + inputs: bidirectional prefix
input_length      int32                       real tokens in input_ids
target_length     int32                       tokens with a label (targets + EOS)
denoiser          int8                        index into the manifest's mixture table
source_file       int32                       index into the manifest's files
example_index     int64                       chunk index within that file's token stream
token_offset      int64                       offset of the raw chunk in that stream
================  ==========================  =============================================

Shards are Arrow IPC *stream* files (what ``datasets.save_to_disk`` writes, so
``datasets.load_from_disk`` reads them) or zstd Parquet. A shard is written under a temporary
name in the same directory, fsync'ed, then renamed: a shard is visible under its final name only
when complete. Its sha256 is computed while writing (no second read).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .config import Lengths
from .corrupt import Rows, row_widths
from .layout import TMP_PREFIX as TMP_PREFIX  # re-exported


def schema(lengths: Lengths) -> pa.Schema:
    wi, wt = row_widths(lengths)
    fields = [
        pa.field("input_ids", pa.list_(pa.int32(), wi), nullable=False),
        pa.field("labels", pa.list_(pa.int32(), wt), nullable=False),
        pa.field("attention_mask", pa.list_(pa.int8(), wi), nullable=False),
    ]
    if lengths.layout == "decoder-only":
        fields.append(pa.field("prefix_length", pa.int32(), nullable=False))
    fields += [
        pa.field("input_length", pa.int32(), nullable=False),
        pa.field("target_length", pa.int32(), nullable=False),
        pa.field("denoiser", pa.int8(), nullable=False),
        pa.field("source_file", pa.int32(), nullable=False),
        pa.field("example_index", pa.int64(), nullable=False),
        pa.field("token_offset", pa.int64(), nullable=False),
    ]
    return pa.schema(fields)


_ARROW_TYPES = {
    np.dtype(np.int8): pa.int8(),
    np.dtype(np.int32): pa.int32(),
    np.dtype(np.int64): pa.int64(),
}


def _prim(arr: np.ndarray) -> pa.Array:
    """Zero-copy Arrow array over a contiguous numpy buffer (``pa.array`` would also work but
    imports pandas on first use: +0.5 s per process)."""
    a = np.ascontiguousarray(arr)
    return pa.Array.from_buffers(_ARROW_TYPES[a.dtype], len(a), [None, pa.py_buffer(a)])


def _fixed(arr: np.ndarray) -> pa.Array:
    _b, w = arr.shape
    return pa.FixedSizeListArray.from_arrays(_prim(arr.reshape(-1)), w)


def record_batch(
    rows: Rows,
    lengths: Lengths,
    components: np.ndarray,
    source_file: int,
    example_index: np.ndarray,
    token_offset: np.ndarray,
) -> pa.RecordBatch:
    n = len(rows.input_length)
    cols: list[pa.Array] = [
        _fixed(rows.input_ids),
        _fixed(rows.labels),
        _fixed(rows.attention_mask),
    ]
    if lengths.layout == "decoder-only":
        cols.append(_prim(rows.prefix_length))
    cols += [
        _prim(rows.input_length),
        _prim(rows.target_length),
        _prim(np.asarray(components, dtype=np.int8)),
        _prim(np.full(n, source_file, dtype=np.int32)),
        _prim(np.asarray(example_index, dtype=np.int64)),
        _prim(np.asarray(token_offset, dtype=np.int64)),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=schema(lengths))


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


class ShardWriter:
    """Write one shard from record batches; ``commit()`` makes it appear atomically."""

    def __init__(
        self, path: Path, lengths: Lengths, fmt: str, schema_: pa.Schema | None = None
    ) -> None:
        self.path = path
        self.tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
        self.rows = 0
        self._schema = schema_ if schema_ is not None else schema(lengths)
        self._fmt = fmt
        self._sink = _HashingFile(self.tmp)
        self._pa_sink = pa.PythonFile(self._sink, mode="w")
        self._w: Any
        if fmt == "parquet":
            self._w = pq.ParquetWriter(self._pa_sink, self._schema, compression="zstd")
        else:
            self._w = pa.ipc.new_stream(self._pa_sink, self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        if self._fmt == "parquet":
            self._w.write_batch(batch, row_group_size=max(batch.num_rows, 1))
        else:
            self._w.write_batch(batch)
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
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
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


def hf_dataset_files(shards: list[str], fingerprint: str) -> tuple[bytes, bytes]:
    """``state.json`` and ``dataset_info.json`` so that ``datasets.load_from_disk(out)`` works."""
    import orjson

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
        "description": "UL2 mixture-of-denoisers examples written by denoise (see denoise.json)",
        "homepage": "",
        "license": "",
    }
    return (
        orjson.dumps(state, option=orjson.OPT_INDENT_2),
        orjson.dumps(info, option=orjson.OPT_INDENT_2),
    )

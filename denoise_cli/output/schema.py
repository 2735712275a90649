"""Row formats: the Arrow schemas of unpacked and packed rows and the record batches built
from numpy rows (zero-copy: each column wraps its numpy buffer).

Unpacked (one example per row): ``input_ids`` / ``labels`` / ``attention_mask`` as
``fixed_size_list`` of the row widths, decoder-only ``prefix_length``, then ``input_length``,
``target_length``, ``denoiser``, ``source_file``, ``example_index``, ``token_offset``. Packed
(``prepare --pack``): the same token columns plus segment ids, positions and per-segment
metadata lists of width ``K``. Compact rows (``prepare --compact``) store ``input_ids`` (and
encoder-decoder ``labels``) as ragged lists of the smallest unsigned type holding the vocabulary,
without padding (field metadata: the fixed width and the fill value); ``attention_mask`` and
decoder-only ``labels`` are not stored: :func:`expand_ragged` and :func:`derive_column` rebuild the
default columns from the lengths. The README's "Output" section and docs/packing.md describe the
columns; :func:`shard_schema` is the schema a manifest implies. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import Lengths
from ..rows.base import IGNORE_INDEX, Rows, row_widths
from ..rows.packing import PackedRows


def shard_schema(m: dict[str, Any]) -> pa.Schema:
    """The schema of every shard of the dataset whose manifest is ``m``."""
    lengths = Lengths.from_dict(m["lengths"])
    if m.get("compact") and not m.get("packing"):
        tok = m["tokenizer"]
        return compact_schema(lengths, int(tok["vocab_size"]), int(tok["pad"]["id"]))
    if m.get("packing"):
        return packed_schema(lengths, int(m["packing"]["max_segments"]))
    return unpacked_schema(lengths)


def unpacked_schema(lengths: Lengths) -> pa.Schema:
    """The Arrow schema of unpacked rows of ``lengths`` (one example per row)."""
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


def prim_array(arr: np.ndarray) -> pa.Array:
    """Zero-copy Arrow array over a contiguous numpy buffer (``pa.array`` would also work but
    imports pandas on first use: +0.5 s per process)."""
    a = np.ascontiguousarray(arr)
    return pa.Array.from_buffers(_ARROW_TYPES[a.dtype], len(a), [None, pa.py_buffer(a)])


def fixed_array(arr: np.ndarray) -> pa.Array:
    """A ``fixed_size_list`` column over a contiguous ``[n, W]`` numpy array (zero-copy)."""
    _b, w = arr.shape
    return pa.FixedSizeListArray.from_arrays(prim_array(arr.reshape(-1)), w)


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
        fixed_array(rows.input_ids),
        fixed_array(rows.labels),
        fixed_array(rows.attention_mask),
    ]
    if lengths.layout == "decoder-only":
        cols.append(prim_array(rows.prefix_length))
    cols += [
        prim_array(rows.input_length),
        prim_array(rows.target_length),
        prim_array(np.asarray(components, dtype=np.int8)),
        prim_array(np.full(n, source_file, dtype=np.int32)),
        prim_array(np.asarray(example_index, dtype=np.int64)),
        prim_array(np.asarray(token_offset, dtype=np.int64)),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=unpacked_schema(lengths))


# --------------------------------------------------------------------------- packed rows


def packed_schema(lengths: Lengths, max_segs: int) -> pa.Schema:
    """The Arrow schema of packed rows of ``lengths`` with ``max_segs`` segments per row."""
    W, V = row_widths(lengths)
    K = max_segs

    def fixed(name: str, t: pa.DataType, w: int) -> pa.Field:
        return pa.field(name, pa.list_(t, w), nullable=False)

    def prim(name: str, t: pa.DataType) -> pa.Field:
        return pa.field(name, t, nullable=False)

    i8, i32, i64 = pa.int8(), pa.int32(), pa.int64()
    fields = [fixed("input_ids", i32, W), fixed("labels", i32, V), fixed("attention_mask", i8, W)]
    if lengths.layout == "encoder-decoder":
        fields += [
            fixed("encoder_segment_ids", i32, W),
            fixed("encoder_positions", i32, W),
            fixed("decoder_segment_ids", i32, V),
            fixed("decoder_positions", i32, V),
        ]
    else:
        fields += [
            fixed("segment_ids", i32, W),
            fixed("positions", i32, W),
            fixed("prefix_mask", i8, W),
        ]
    fields += [
        prim("num_segments", i32),
        prim("input_length", i32),
        prim("target_length", i32),
        prim("source_file", i32),
        fixed("segment_denoiser", i8, K),
        fixed("segment_example_index", i64, K),
        fixed("segment_token_offset", i64, K),
        fixed("segment_input_length", i32, K),
        fixed("segment_target_length", i32, K),
    ]
    if lengths.layout == "decoder-only":
        fields.append(fixed("segment_prefix_length", i32, K))
    return pa.schema(fields)


def packed_record_batch(packed: PackedRows, lengths: Lengths, source_file: int) -> pa.RecordBatch:
    """Arrow record batch of :func:`packed_schema` over the packed arrays (zero-copy: every
    column wraps its numpy buffer)."""
    K = packed.source_row.shape[1]
    sch = packed_schema(lengths, K)
    R = packed.num_rows
    arrays: list[pa.Array] = []
    for f in sch:
        if f.name == "source_file":
            arrays.append(prim_array(np.full(R, source_file, dtype=np.int32)))
            continue
        v = packed.columns[f.name]
        arrays.append(fixed_array(v) if v.ndim == 2 else prim_array(v))
    return pa.RecordBatch.from_arrays(arrays, schema=sch)


# --------------------------------------------------------------------------- compact rows

#: field metadata of a ragged (compact) column: the fixed width and the fill value of its rows
WIDTH_KEY = b"denoise.width"
FILL_KEY = b"denoise.fill"
#: field metadata of compact ``input_ids``: the columns not stored, rebuilt at read time
DERIVED_KEY = b"denoise.derived"
#: columns a compact shard does not store, and the stored columns each is rebuilt from
DERIVED_SOURCES: dict[str, tuple[str, ...]] = {
    "attention_mask": ("input_ids", "input_length"),
    "labels": ("input_ids", "input_length", "target_length"),  # decoder-only
}
#: the dtype of every column as the default format stores it (what readers of compact shards get)
LOGICAL_DTYPES: dict[str, np.dtype[Any]] = {
    "input_ids": np.dtype(np.int32),
    "labels": np.dtype(np.int32),
    "attention_mask": np.dtype(np.int8),
}


_UNSIGNED = {pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32}


def id_type(vocab_size: int) -> pa.DataType:
    """The smallest unsigned Arrow integer type that holds every id of ``vocab_size``."""
    if vocab_size <= 1 << 8:
        return pa.uint8()
    if vocab_size <= 1 << 16:
        return pa.uint16()
    return pa.uint32()


def _ragged(
    name: str, t: pa.DataType, width: int, fill: int, derived: Sequence[str] = ()
) -> pa.Field:
    meta = {WIDTH_KEY: str(width).encode(), FILL_KEY: str(fill).encode()}
    if derived:
        meta[DERIVED_KEY] = ",".join(derived).encode()
    return pa.field(name, pa.list_(t), nullable=False, metadata=meta)


def compact_schema(lengths: Lengths, vocab_size: int, pad_id: int) -> pa.Schema:
    """The Arrow schema of compact unpacked rows: ragged ids of :func:`id_type`, no padding, no
    ``attention_mask``, no decoder-only ``labels``; the other columns as :func:`unpacked_schema`."""
    wi, wt = row_widths(lengths)
    t = id_type(vocab_size)
    enc = lengths.layout == "encoder-decoder"
    derived = ["attention_mask"] if enc else ["attention_mask", "labels"]
    fields = [_ragged("input_ids", t, wi, pad_id, derived)]
    if enc:
        fields.append(_ragged("labels", t, wt, IGNORE_INDEX))
    full = unpacked_schema(lengths)
    fields += [f for f in full if f.name not in ("input_ids", "labels", "attention_mask")]
    return pa.schema(fields)


def derived_columns(f: pa.Field) -> list[str]:
    """The columns rebuilt from a compact ``input_ids`` field (empty for any other field)."""
    d = (f.metadata or {}).get(DERIVED_KEY)
    return d.decode().split(",") if d else []


def ragged_info(f: pa.Field) -> tuple[int, int] | None:
    """``(width, fill)`` of a compact ragged column, None for any other field."""
    if not pa.types.is_list(f.type) or not f.metadata or WIDTH_KEY not in f.metadata:
        return None
    return int(f.metadata[WIDTH_KEY]), int(f.metadata[FILL_KEY])


def ragged_array(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A ``list`` column over the first ``lengths[i]`` entries of each row of ``values``
    (``[n, W]``, already of the stored type)."""
    n, w = values.shape
    keep = np.arange(w)[None, :] < lengths[:, None]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.ascontiguousarray(values[keep])
    t = pa.from_numpy_dtype(flat.dtype)
    vals = pa.Array.from_buffers(t, len(flat), [None, pa.py_buffer(flat)])
    offs = pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(offsets)])
    return pa.ListArray.from_arrays(offs, vals)


def compact_record_batch(
    rows: Rows,
    lengths: Lengths,
    components: np.ndarray,
    source_file: int,
    example_index: np.ndarray,
    token_offset: np.ndarray,
    vocab_size: int,
    pad_id: int,
) -> pa.RecordBatch:
    """The record batch of :func:`compact_schema` (the default batch's columns, ids narrowed)."""
    full = record_batch(rows, lengths, components, source_file, example_index, token_offset)
    sch = compact_schema(lengths, vocab_size, pad_id)
    idt = _UNSIGNED[sch.field("input_ids").type.value_type]
    cols: list[pa.Array] = [ragged_array(rows.input_ids.astype(idt), rows.input_length)]
    if lengths.layout == "encoder-decoder":
        cols.append(ragged_array(rows.labels.astype(idt), rows.target_length))
    cols += [full.column(f.name) for f in sch if f.name not in ("input_ids", "labels")]
    return pa.RecordBatch.from_arrays(cols, schema=sch)


def expand_ragged(
    values: np.ndarray, starts: np.ndarray, lens: np.ndarray, width: int, fill: int, out: np.ndarray
) -> np.ndarray:
    """``out[i, :lens[i]] = values[starts[i]:starts[i] + lens[i]]`` and ``fill`` after (one
    vectorized pass; ``out`` is ``[n, width]`` of any integer dtype)."""
    lens = np.minimum(np.asarray(lens, dtype=np.int64), width)
    keep = np.arange(width)[None, :] < lens[:, None]
    out[...] = fill
    total = int(lens.sum())
    if total:
        first = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=first[1:])
        idx = np.repeat(np.asarray(starts, dtype=np.int64) - first, lens) + np.arange(total)
        out[keep] = values[idx]
    return out


def derive_column(
    name: str, a: dict[str, np.ndarray], width: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Rebuild a column compact shards do not store (:data:`DERIVED_SOURCES`) from the logical
    arrays ``a`` (``[n, width]``): ``attention_mask`` = 1 on the first ``input_length`` positions;
    decoder-only ``labels`` = ``input_ids`` on the last ``target_length`` real tokens, -100
    elsewhere."""
    n = len(a["input_length"])
    if out is None:
        out = np.empty((n, width), dtype=LOGICAL_DTYPES[name])
    pos = np.arange(width)[None, :]
    il = a["input_length"][:, None]
    if name == "attention_mask":
        np.less(pos, il, out=out, casting="unsafe")
        return out
    if name == "labels":
        keep = (pos >= il - a["target_length"][:, None]) & (pos < il)
        out[...] = IGNORE_INDEX
        np.copyto(out, a["input_ids"], where=keep, casting="unsafe")
        return out
    raise KeyError(name)


def logical_order(names: list[str]) -> list[str]:
    """The column order of the default format for the columns ``names`` (compact + derived)."""
    first = [c for c in ("input_ids", "labels", "attention_mask") if c in names]
    return first + [c for c in names if c not in first]

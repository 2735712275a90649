"""Row formats: the Arrow schemas of unpacked and packed rows and the record batches built
from numpy rows (zero-copy: each column wraps its numpy buffer).

Unpacked (one example per row): ``input_ids`` / ``labels`` / ``attention_mask`` as
``fixed_size_list`` of the row widths, decoder-only ``prefix_length``, then ``input_length``,
``target_length``, ``denoiser``, ``source_file``, ``example_index``, ``token_offset``. Packed
(``prepare --pack``): the same token columns plus segment ids, positions and per-segment
metadata lists of width ``K``. Compact rows (``prepare --compact``) store ids in the smallest
unsigned type holding the vocabulary: unpacked as ragged lists without padding (field metadata:
width, fill), packed with narrow segment ids and positions; ``attention_mask``, decoder-only
``labels`` and packed labels' -100 are not stored: :func:`rebuilds` says how readers rebuild
the default columns (:func:`expand_ragged`, :func:`rebuild`). The README's "Output" section and
docs/packing.md describe the columns; :func:`shard_schema` is the schema a manifest implies.
The names of the ``denoiser`` values travel as schema metadata (:func:`with_components`).
See docs/architecture.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import Lengths
from ..rows.base import IGNORE_INDEX, Rows, row_widths
from ..rows.packing import PackedRows

#: schema metadata keys: the denoiser names as a JSON list (position = the value of the
#: ``denoiser`` / ``segment_denoiser`` columns) and the manifest's component table (JSON)
META_DENOISER_NAMES = b"denoise.denoiser_names"
META_COMPONENTS = b"denoise.components"


def shard_schema(m: dict[str, Any]) -> pa.Schema:
    """The schema of every shard of the dataset whose manifest is ``m`` (with its metadata)."""
    lengths = Lengths.from_dict(m["lengths"])
    if m.get("compact"):
        tok = m["tokenizer"]
        v, pad = int(tok["vocab_size"]), int(tok["pad"]["id"])
        if m.get("packing"):
            sch = compact_packed_schema(lengths, int(m["packing"]["max_segments"]), v, pad)
        else:
            sch = compact_schema(lengths, v, pad)
    elif m.get("packing"):
        sch = packed_schema(lengths, int(m["packing"]["max_segments"]))
    else:
        sch = unpacked_schema(lengths)
    return with_components(sch, m["components"])


def with_components(schema: pa.Schema, components: list[dict[str, Any]]) -> pa.Schema:
    """``schema`` with the component table as metadata, so that pyarrow, polars, duckdb or
    Parquet readers see which denoiser each ``denoiser`` value is without ``denoise.json``.
    ``components`` are the manifest's entries (``ComponentPlan.to_dict``), in index order."""
    names = [str(c["denoiser"]) for c in sorted(components, key=lambda c: int(c["index"]))]
    return schema.with_metadata(
        {
            META_DENOISER_NAMES: json.dumps(names),
            META_COMPONENTS: json.dumps(components, sort_keys=True),
        }
    )


def denoiser_names(schema: pa.Schema) -> list[str] | None:
    """The denoiser names a shard's schema carries (:func:`with_components`), or None."""
    raw = (schema.metadata or {}).get(META_DENOISER_NAMES)
    if raw is None:
        return None
    names = json.loads(raw)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


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
#: field metadata of compact ``input_ids``: the columns not stored, rebuilt at read time, and
#: (packed rows) the segment-id column ``attention_mask`` is rebuilt from
DERIVED_KEY = b"denoise.derived"
MASK_KEY = b"denoise.mask_from"
#: field metadata of a narrowed fixed-width column: the dtype readers get
DTYPE_KEY = b"denoise.dtype"
#: field metadata of compact packed ``labels``: -100 where the first column is 0 or the second
#: (if any) is not
IGNORE_KEY = b"denoise.ignore_where"
#: the dtype of every column as the default format stores it (what readers of compact shards get)
LOGICAL_DTYPES: dict[str, np.dtype[Any]] = {
    "input_ids": np.dtype(np.int32),
    "labels": np.dtype(np.int32),
    "attention_mask": np.dtype(np.int8),
}


@dataclass(frozen=True)
class Rebuild:
    """How a column of a compact shard is completed at read time: ``kind`` ``mask_len``
    (attention mask from ``input_length``), ``mask_seg`` (from segment ids), ``dec_labels``
    (decoder-only labels from ids and lengths) or ``ignore`` (-100 put back into stored labels),
    from the stored columns ``sources``; ``width`` of its rows."""

    name: str
    kind: str
    sources: tuple[str, ...]
    width: int


_UNSIGNED = {pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32}
_NARROW = {**_UNSIGNED, pa.int32(): np.int32}


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


def rebuilds(schema: pa.Schema) -> dict[str, Rebuild]:
    """The columns of a shard schema that are rebuilt or completed at read time (none for the
    default format)."""
    out: dict[str, Rebuild] = {}
    if "input_ids" not in schema.names:
        return out
    ids = schema.field("input_ids")
    meta = ids.metadata or {}
    info = ragged_info(ids)
    width = info[0] if info else ids.type.list_size
    seg = meta.get(MASK_KEY, b"").decode()
    for d in meta.get(DERIVED_KEY, b"").decode().split(","):
        if d == "attention_mask":
            src: tuple[str, ...] = (seg,) if seg else ("input_length",)
            out[d] = Rebuild(d, "mask_seg" if seg else "mask_len", src, width)
        elif d == "labels":
            src = ("input_ids", "input_length", "target_length")
            out[d] = Rebuild(d, "dec_labels", src, width)
    if "labels" in schema.names:
        lab = schema.field("labels")
        ign = (lab.metadata or {}).get(IGNORE_KEY)
        if ign:
            out["labels"] = Rebuild("labels", "ignore", tuple(ign.decode().split(",")), width)
    return out


def rebuild(r: Rebuild, a: Mapping[str, np.ndarray], out: np.ndarray) -> np.ndarray:
    """Write column ``r.name`` into ``out`` (``[n, r.width]``, any integer dtype) from the
    arrays ``a`` (the default format's columns ``r.sources``; for ``ignore``, ``out`` already
    holds the stored labels)."""
    if r.kind == "mask_seg":
        np.greater(a[r.sources[0]], 0, out=out, casting="unsafe")
        return out
    if r.kind == "ignore":
        drop = a[r.sources[0]] == 0
        if len(r.sources) > 1:
            drop |= a[r.sources[1]] != 0
        np.copyto(out, IGNORE_INDEX, where=drop)
        return out
    pos = np.arange(out.shape[1])[None, :]
    il = a["input_length"][:, None]
    if r.kind == "mask_len":
        np.less(pos, il, out=out, casting="unsafe")
        return out
    if r.kind == "dec_labels":
        keep = (pos >= il - a["target_length"][:, None]) & (pos < il)
        out[...] = IGNORE_INDEX
        np.copyto(out, a["input_ids"], where=keep, casting="unsafe")
        return out
    raise ValueError(f"unknown rebuild {r.kind!r}")


def logical_dtype(f: pa.Field) -> np.dtype[Any] | None:
    """The dtype readers get for a compact column (None: the stored one)."""
    if ragged_info(f) is not None:
        return LOGICAL_DTYPES[f.name]
    d = (f.metadata or {}).get(DTYPE_KEY)
    return np.dtype(d.decode()) if d else None


def ragged_info(f: pa.Field) -> tuple[int, int] | None:
    """``(width, fill)`` of a compact ragged column, None for any other field."""
    if not pa.types.is_list(f.type) or not f.metadata or WIDTH_KEY not in f.metadata:
        return None
    return int(f.metadata[WIDTH_KEY]), int(f.metadata[FILL_KEY])


def compact_packed_schema(
    lengths: Lengths, max_segs: int, vocab_size: int, pad_id: int
) -> pa.Schema:
    """Compact packed rows: ids and labels in :func:`id_type` (labels' -100 rebuilt from the
    segment ids, and decoder-only the prefix mask), segment ids in uint8 (uint16 above 255
    segments), positions in uint16, no ``attention_mask`` (segment id > 0); the rest as
    :func:`packed_schema`."""
    W, V = row_widths(lengths)
    enc = lengths.layout == "encoder-decoder"
    idt = id_type(vocab_size)
    segt = pa.uint8() if max_segs < 1 << 8 else pa.uint16()
    post = pa.uint16() if max(W, V) <= 1 << 16 else pa.int32()
    seg = "encoder_segment_ids" if enc else "segment_ids"
    i32 = {DTYPE_KEY: b"int32"}
    fields: list[pa.Field] = []
    for f in packed_schema(lengths, max_segs):
        n, w = f.name, getattr(f.type, "list_size", 0)
        if n == "attention_mask":
            continue
        if n == "input_ids":
            meta = {**i32, DERIVED_KEY: b"attention_mask", MASK_KEY: seg.encode()}
            f = pa.field(n, pa.list_(idt, w), nullable=False, metadata=meta)
        elif n == "labels":
            ign = b"decoder_segment_ids" if enc else b"segment_ids,prefix_mask"
            f = pa.field(n, pa.list_(idt, w), nullable=False, metadata={**i32, IGNORE_KEY: ign})
        elif n in ("encoder_segment_ids", "decoder_segment_ids", "segment_ids"):
            f = pa.field(n, pa.list_(segt, w), nullable=False, metadata=i32)
        elif n in ("encoder_positions", "decoder_positions", "positions"):
            f = pa.field(n, pa.list_(post, w), nullable=False, metadata=i32)
        fields.append(f)
    return pa.schema(fields)


def compact_packed_record_batch(
    packed: PackedRows, lengths: Lengths, source_file: int, vocab_size: int, pad_id: int
) -> pa.RecordBatch:
    """The record batch of :func:`compact_packed_schema` (the packed arrays, narrowed)."""
    K = packed.source_row.shape[1]
    sch = compact_packed_schema(lengths, K, vocab_size, pad_id)
    full = packed_record_batch(packed, lengths, source_file)
    arrays: list[pa.Array] = []
    for f in sch:
        if (
            pa.types.is_fixed_size_list(f.type)
            and f.type.value_type != full.schema.field(f.name).type.value_type
        ):
            v = packed.columns[f.name]
            if f.name == "labels":
                v = np.where(v == IGNORE_INDEX, 0, v)
            arrays.append(_narrow_fixed(v, f.type.value_type))
        else:
            arrays.append(full.column(f.name))
    return pa.RecordBatch.from_arrays(arrays, schema=sch)


def _narrow_fixed(v: np.ndarray, t: pa.DataType) -> pa.Array:
    a = np.ascontiguousarray(v.astype(_NARROW[t]))
    vals = pa.Array.from_buffers(t, a.size, [None, pa.py_buffer(a)])
    return pa.FixedSizeListArray.from_arrays(vals, v.shape[1])


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


def logical_order(names: list[str]) -> list[str]:
    """The column order of the default format for the columns ``names`` (compact + derived)."""
    first = [c for c in ("input_ids", "labels", "attention_mask") if c in names]
    return first + [c for c in names if c not in first]

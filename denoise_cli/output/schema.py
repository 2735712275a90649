"""Row formats: the Arrow schemas of unpacked and packed rows and the record batches built
from numpy rows (zero-copy: each column wraps its numpy buffer).

Unpacked (one example per row): ``input_ids`` / ``labels`` / ``attention_mask`` as
``fixed_size_list`` of the row widths, decoder-only ``prefix_length``, then ``input_length``,
``target_length``, ``denoiser``, ``source_file``, ``example_index``, ``token_offset``. Packed
(``prepare --pack``): the same token columns plus segment ids, positions and per-segment
metadata lists of width ``K``. The README's "Output" section and docs/packing.md describe the
columns; :func:`shard_schema` is the schema a manifest implies. The names of the ``denoiser``
values travel with the data as schema metadata (:func:`with_components`), kept by both formats.
See docs/architecture.md.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import Lengths
from ..rows.base import Rows, row_widths
from ..rows.packing import PackedRows

#: schema metadata keys: the denoiser names as a JSON list (position = the value of the
#: ``denoiser`` / ``segment_denoiser`` columns) and the manifest's component table (JSON)
META_DENOISER_NAMES = b"denoise.denoiser_names"
META_COMPONENTS = b"denoise.components"


def shard_schema(m: dict[str, Any]) -> pa.Schema:
    """The schema of every shard of the dataset whose manifest is ``m`` (with its metadata)."""
    lengths = Lengths.from_dict(m["lengths"])
    if m.get("packing"):
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

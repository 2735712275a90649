"""Parquet input: the text column of a ``*.parquet`` file, streamed row group by row group.

Only the text column is read (``--text-key``; a dotted path selects a field of a struct column).
The file is decoded in record batches of about ``batch_chars`` characters, so memory does not
grow with the file or the row group size. Every row is a record, classified exactly like a
JSON record (``missing_text``, ``text_not_string``, ``empty``, ``too_long``, ``invalid_utf8``
for a binary column). Resume skips whole row groups through the footer's row counts. An
unreadable file, corrupt footer or bad page is a per-file error: rows decoded before it are
kept and ``on_error="fail"`` raises :class:`~denoise_cli.errors.InputError`. ``row_groups=(a, b)``
reads groups ``a..b-1`` only, as a file of its own (one unit of a large file, ``source.units``).
The module depends
on nothing of the JSON reader: :func:`iter_parquet` fills any counters object with the
:class:`Counters` fields and yields ``(texts, record_end)`` pairs. Details: docs/input.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from .fs import is_url, open_remote

__all__ = ["Counters", "column_path", "iter_parquet"]

READ_BUFFER = 1 << 20  # bytes of column data buffered per read
MAX_BATCH_ROWS = 8192


class Counters(Protocol):
    """The per-file counters :func:`iter_parquet` updates (``read.FileStats`` has them)."""

    records: int
    docs: int
    chars: int
    bytes_read: int
    skipped: dict[str, int]
    error: str | None


def column_path(schema: pa.Schema, keys: list[str]) -> tuple[str, int] | None:
    """The column to project for a dotted text key, and how many of its keys lie below the
    projected column's top level (to dig out of struct values); ``None`` when the schema has no
    such path (every row is then ``missing_text``)."""
    if keys[0] not in schema.names:
        return None
    t = schema.field(keys[0]).type
    for k in keys[1:]:
        if not pa.types.is_struct(t) or t.get_field_index(k) < 0:
            return None
        t = t.field(k).type
    return ".".join(keys), len(keys) - 1


def _dig(v: Any, keys: list[str]) -> Any:
    for k in keys:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def _open(path: str, storage_options: Mapping[str, Any] | None) -> Any:
    if is_url(path):
        return open_remote(path, storage_options)
    return pa.OSFile(path, "rb")


def iter_parquet(
    path: str,
    *,
    keys: list[str],
    stats: Counters,
    on_error: Literal["skip", "fail"] = "skip",
    start_record: int = 0,
    batch_chars: int = 1 << 20,
    max_doc_chars: int = 0,
    size: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    row_groups: tuple[int, int] | None = None,
    stop_record: int | None = None,
) -> Iterator[tuple[list[str], int]]:
    """Yield ``(texts, record_end)`` for the Parquet file at ``path`` (local or URL).

    Same contract as the JSON reader's batches: records before ``start_record`` are skipped
    without touching ``stats``; ``record_end`` is the index of the next row; the last pair
    (possibly with no texts) carries the final ``record_end``. ``size`` (the file's size) makes
    ``stats.bytes_read`` reach it at a clean end. ``row_groups=(a, b)``: only those row groups,
    counted as the whole file (records, bytes; ``size`` is then theirs). ``stop_record``,
    if given, ends the file (or unit) before that row.
    """
    fail = on_error == "fail"
    skipped = stats.skipped
    rec = start_record
    texts: list[str] = []
    nchars = 0
    src: Any = None
    pf: pq.ParquetFile | None = None

    def file_error(where: str, reason: str, e: BaseException) -> InputError:
        detail = " ".join(str(e).split())[:300] or type(e).__name__
        stats.error = f"{path}: {detail} ({where}, {rec} records read before it)"
        return InputError(path, where, reason, detail)

    try:
        try:
            src = _open(path, storage_options)
        except OSError as e:
            err = file_error("byte offset 0", "unreadable", e)
            yield texts, rec
            if fail:
                raise err from None
            return
        try:
            pf = pq.ParquetFile(
                src, buffer_size=READ_BUFFER, pre_buffer=False, page_checksum_verification=True
            )
            md = pf.metadata
            lo, hi = row_groups if row_groups is not None else (0, md.num_row_groups)
            if not 0 <= lo <= hi <= md.num_row_groups:
                raise ValueError(f"row groups {lo}..{hi} not in a file of {md.num_row_groups}")
            rg_rows = [md.row_group(i).num_rows for i in range(lo, hi)]
            target = column_path(pf.schema_arrow, keys)
        except Exception as e:
            err = file_error("footer", "corrupt_parquet", e)
            yield texts, rec
            if fail:
                raise err from None
            return
        total = sum(rg_rows)
        if stop_record is not None:
            total = min(total, stop_record)
        rec = min(rec, total)  # as for JSON: a resume point past the end reads nothing
        if target is None:
            n = total - rec
            if n and fail:
                yield texts, rec
                cols = ", ".join(pf.schema_arrow.names)
                raise InputError(
                    path, f"row {rec + 1}", "missing_text", f"no column {'.'.join(keys)!r} ({cols})"
                )
            if n:
                skipped["missing_text"] = skipped.get("missing_text", 0) + n
                stats.records += n
            stats.bytes_read = max(stats.bytes_read, size)
            yield texts, total
            return
        col, depth = target
        sub = keys[1:]
        # skip whole row groups, then rows inside the first one read
        first, before = 0, 0
        while first < len(rg_rows) and before + rg_rows[first] <= rec:
            before += rg_rows[first]
            first += 1
        skip = rec - before
        ends: list[tuple[int, int]] = []  # (row end, bytes of the file up to that row group)
        row_end = byte_end = 0
        text_bytes = 0
        for i, n in enumerate(rg_rows):
            rg = md.row_group(lo + i)
            row_end += n
            byte_end += sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
            ends.append((row_end, byte_end))
            for j in range(rg.num_columns):
                c = rg.column(j)
                if c.path_in_schema == col or c.path_in_schema.startswith(col + "."):
                    text_bytes += c.total_uncompressed_size
        per_row = max(1, text_bytes // max(1, total))
        batch_rows = max(1, min(MAX_BATCH_ROWS, batch_chars // per_row))
        reading = lo + first  # the row group being decoded

        def decoded(pf: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
            # one reader per row group: a batch never spans two, so a bad page loses at most
            # the rows of one batch and its row group is known
            nonlocal reading
            for i in range(first, len(rg_rows)):
                reading = lo + i
                yield from pf.iter_batches(
                    batch_size=batch_rows, row_groups=[lo + i], columns=[col], use_threads=False
                )

        batches = decoded(pf)
        rg_next = first  # the first row group whose end is not yet reached (progress)
        while True:
            try:
                batch = next(batches, None)
            except Exception as e:
                where = f"row group {reading}"
                err = file_error(where, "corrupt_parquet", e)
                yield texts, rec
                if fail:
                    raise err from None
                return
            if batch is None:
                break
            values = batch.column(0).to_pylist()
            if skip:
                k = min(skip, len(values))
                values = values[k:]
                skip -= k
            values = values[: max(0, total - rec)]
            if depth:
                values = [_dig(v, sub) for v in values]
            for v in values:
                rec += 1
                stats.records += 1
                reason = ""
                if type(v) is bytes:
                    try:
                        v = v.decode("utf-8")
                    except UnicodeDecodeError:
                        reason = "invalid_utf8"
                if reason:
                    pass
                elif v is None:
                    reason = "missing_text"
                elif type(v) is not str:
                    reason = "text_not_string"
                elif not v or v.isspace():
                    reason = "empty"
                elif max_doc_chars and len(v) > max_doc_chars:
                    reason = "too_long"
                else:
                    n = len(v)
                    texts.append(v)
                    nchars += n
                    stats.docs += 1
                    stats.chars += n
                    if nchars >= batch_chars:
                        yield texts, rec
                        texts, nchars = [], 0
                    continue
                skipped[reason] = skipped.get(reason, 0) + 1
                if fail:
                    if texts:
                        yield texts, rec - 1
                        texts = []
                    raise InputError(path, f"row {rec}", reason)
            if rec >= total:
                break
            while rg_next < len(ends) and ends[rg_next][0] <= rec:
                stats.bytes_read = max(stats.bytes_read, ends[rg_next][1])
                rg_next += 1
        stats.bytes_read = max(stats.bytes_read, size)
        yield texts, rec
    finally:
        if pf is not None:
            pf.close()
        if src is not None:
            src.close()

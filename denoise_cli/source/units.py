"""Units of work: a large Parquet file split into blocks of row groups, each read as a file.

A Parquet file larger than the config's ``unit_bytes`` is cut into consecutive blocks of whole
row groups of about ``unit_bytes`` compressed bytes each (:func:`plan_units`, from the footer's
row-group sizes only), so the cut depends on the file and the config, never on the worker
count. Each block is an :class:`InputUnit`: an ``InputFile`` of its own for the rest of the
pipeline (its own token stream, file tail, resume records and shards), whose random streams are
keyed by (file name, row groups) (:func:`stream_key`). Files at or below the budget, a file of
one row group and every JSON lines file stay one unit keyed by the name alone, so their
examples are those of a run without splitting.

A unit's resume fingerprint is the file's footer plus the byte range of its row groups
(:func:`hash_unit`): cheap, and together with the footer (which holds every page's position
and size) any edit of the unit's bytes is seen.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow.parquet as pq

from ..errors import ConfigError
from ..rows.chunk import file_key
from .decompress import open_input
from .discover import InputFile
from .fingerprint import SourceDigest, hash_stream
from .read import DocBatch, FileStats, iter_batches

__all__ = [
    "InputUnit",
    "hash_unit",
    "iter_unit",
    "plan_units",
    "split_inputs",
    "stream_key",
    "unit_from_entry",
    "unit_of",
    "unit_sha256",
    "whole_size",
    "with_unit",
]

FOOTER_THREADS = 16  # footers of large files read at once when planning units


@dataclass(frozen=True)
class InputUnit(InputFile):
    """Row groups ``row_groups[0] .. row_groups[1]-1`` of a Parquet file, unit ``unit`` of it.
    ``size`` is the compressed size of those row groups; ``file_size`` the whole file's."""

    unit: int = 0
    row_groups: tuple[int, int] = (0, 0)
    file_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``unit`` entry of a file (see :func:`unit_from_entry`)."""
        return {"index": self.unit, "row_groups": list(self.row_groups), "bytes": self.size}


def plan_units(group_bytes: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive blocks ``(a, b)`` of row groups, each adding up to at most ``budget`` bytes
    unless one row group alone is larger (a block is never empty)."""
    out: list[tuple[int, int]] = []
    a, acc = 0, 0
    for i, n in enumerate(group_bytes):
        if i > a and acc + n > budget:
            out.append((a, i))
            a, acc = i, 0
        acc += n
    if group_bytes:
        out.append((a, len(group_bytes)))
    return out


def _group_bytes(md: Any) -> list[int]:
    return [
        sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
        for rg in (md.row_group(i) for i in range(md.num_row_groups))
    ]


def _footer_sizes(f: InputFile) -> list[int] | None:
    """The compressed bytes of each row group of a Parquet file; None when unreadable."""
    try:
        with open_input(f) as fh:
            return _group_bytes(pq.ParquetFile(fh).metadata)
    except Exception:
        return None


def split_inputs(files: Sequence[InputFile], unit_bytes: int) -> list[InputFile]:
    """The units of work of ``files``: every Parquet file above ``unit_bytes`` (0: never) whose
    footer gives more than one block becomes its :class:`InputUnit` s; the rest stay as they
    are. A footer that cannot be read leaves the file whole (the reader reports it). Footers
    are read by a few threads (object-store latency)."""
    big = [
        i
        for i, f in enumerate(files)
        if unit_bytes and f.compression == "parquet" and f.size > unit_bytes
    ]
    if not big:
        return list(files)
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(big))) as ex:
        footers = dict(zip(big, ex.map(lambda i: _footer_sizes(files[i]), big), strict=True))
    out: list[InputFile] = []
    for i, f in enumerate(files):
        sizes = footers.get(i)
        blocks = plan_units(sizes, unit_bytes) if sizes else []
        if len(blocks) <= 1:
            out.append(f)
            continue
        for u, (a, b) in enumerate(blocks):
            out.append(
                InputUnit(
                    path=f.path,
                    name=f.name,
                    size=sum(sizes[a:b]) if sizes else 0,
                    compression=f.compression,
                    storage_options=f.storage_options,
                    unit=u,
                    row_groups=(a, b),
                    file_size=f.size,
                )
            )
    return out


def unit_of(f: InputFile, entry: Mapping[str, Any]) -> InputUnit:
    """The unit a manifest's ``unit`` entry names in file ``f`` (``verify --source``)."""
    try:
        u = int(entry["index"])
        a, b = (int(x) for x in entry["row_groups"])
        nbytes = int(entry["bytes"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"bad unit entry {dict(entry)!r}") from None
    if u < 0 or not 0 <= a < b:
        raise ConfigError(f"bad unit entry {dict(entry)!r}")
    return InputUnit(
        path=f.path,
        name=f.name,
        size=nbytes,
        compression=f.compression,
        storage_options=f.storage_options,
        unit=u,
        row_groups=(a, b),
        file_size=f.size,
    )


def unit_from_entry(f: InputFile, entry: Mapping[str, Any] | None) -> InputFile:
    """``f`` itself, or its unit when a manifest file entry has a ``unit``."""
    return f if entry is None else unit_of(f, entry)


def stream_key(f: InputFile) -> int:
    """The key of a unit's random streams: the file name's, or for a unit of a split file the
    name's together with its row groups."""
    if isinstance(f, InputUnit):
        a, b = f.row_groups
        return file_key(f"{f.name}\0row groups {a}-{b}")
    return file_key(f.name)


def whole_size(f: InputFile) -> int:
    """The size of the file a unit belongs to."""
    return f.file_size if isinstance(f, InputUnit) else f.size


def hash_unit(f: InputUnit, digest: SourceDigest) -> None:
    """Feed the file's footer and the bytes of the unit's row groups into ``digest`` (an
    unreadable file or footer is left to the reader)."""
    try:
        with open_input(f) as fh:
            fh.seek(f.file_size - 8)
            tail = fh.read(8)
            if len(tail) != 8 or tail[4:] != b"PAR1":
                return
            footer = struct.unpack("<i", tail[:4])[0] + 8
            fh.seek(f.file_size - footer)
            hash_stream(fh, digest, footer)
            fh.seek(f.file_size - footer)
            md = pq.ParquetFile(fh).metadata
            a, b = f.row_groups
            lo, hi = f.file_size, 0
            for i in range(a, min(b, md.num_row_groups)):
                rg = md.row_group(i)
                for j in range(rg.num_columns):
                    c = rg.column(j)
                    start = c.data_page_offset
                    if c.has_dictionary_page and c.dictionary_page_offset:
                        start = min(start, c.dictionary_page_offset)
                    lo, hi = min(lo, start), max(hi, start + c.total_compressed_size)
            if lo < hi:
                fh.seek(lo)
                hash_stream(fh, digest, hi - lo)
    except Exception:
        return


def unit_sha256(f: InputUnit) -> tuple[int, str]:
    """(bytes, sha256) of what :func:`hash_unit` reads of the file now."""
    d = SourceDigest()
    hash_unit(f, d)
    return d.count, d.hexdigest()


def iter_unit(
    f: InputUnit,
    *,
    text_key: str,
    on_error: Literal["skip", "fail"] = "skip",
    stats: FileStats,
    start_record: int = 0,
    batch_chars: int = 1 << 20,
    max_doc_chars: int = 0,
    digest: SourceDigest | None = None,
    stop_record: int | None = None,
) -> Iterator[DocBatch]:
    """The documents of one unit, in the batches of ``read.iter_batches`` (records counted
    from the unit's first row; ``stop_record``: end before that row of the unit)."""
    if digest is not None:
        hash_unit(f, digest)  # the footer and its own row groups, not the whole file
    yield from iter_batches(
        f,
        text_key=text_key,
        on_error=on_error,
        stats=stats,
        start_record=start_record,
        batch_chars=batch_chars,
        max_doc_chars=max_doc_chars,
        stop_record=stop_record,
        row_groups=f.row_groups,
    )


def with_unit(f: InputFile, rec: dict[str, Any]) -> dict[str, Any]:
    """A file record with the whole file's size and, for a unit, its ``unit`` entry."""
    rec["size"] = whole_size(f)
    if isinstance(f, InputUnit):
        rec["unit"] = f.to_dict()
    return rec

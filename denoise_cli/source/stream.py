"""The one read -> encode -> join loop: an input file as a token stream.

``prepare`` (per worker) and ``verify --source`` both turn a file into tokens here, so they
cannot drift apart: read records (:mod:`.read`; a unit of a split Parquet file through
:mod:`.units`), encode them (:mod:`.tokenize`), account for documents that held a reserved id,
and join the documents with the separator. The stream is then cut into chunks by
``rows.chunk``. :func:`prefix_stops` resolves ``--limit-docs`` / ``--limit-tokens`` into the
record each input file stops before; a :class:`SplitFilter` keeps the documents of one held-out
split (``--split``), chosen before they are encoded. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .discover import InputFile
from .fingerprint import SourceDigest
from .read import DocBatch, FileStats, iter_batches
from .tokenize import Encoder
from .units import InputUnit, iter_unit


@dataclass
class StreamPiece:
    """Tokens ``[t0, t0 + len(tokens))`` of a file's stream, read up to record ``record_end``."""

    tokens: np.ndarray
    t0: int
    record_end: int
    docs: int  # documents read for this piece (for progress)
    nbytes: int  # input bytes consumed since the previous piece (for progress)
    reserved_replaced: int  # reserved ids replaced by unk in this piece


_M64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = x ^ (x >> np.uint64(31))
    return out


def split_of(
    seed: int, key: int, doc_index: np.ndarray, bounds: Sequence[float] | np.ndarray
) -> np.ndarray:
    """The split of each document: a hash of (seed, file key, document index) as a uniform
    number in [0, 1), against the cumulative fractions ``bounds`` (the last is 1)."""
    with np.errstate(over="ignore"):
        h = splitmix64(np.full(1, seed & _M64, np.uint64))
        h = splitmix64(h ^ np.uint64(key & _M64))
        h = splitmix64(h ^ np.asarray(doc_index, dtype=np.uint64))
    u = (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    idx: np.ndarray = np.searchsorted(np.asarray(bounds[:-1], np.float64), u, side="right")
    return idx


@dataclass(frozen=True)
class SplitFilter:
    """Keep the documents of split ``which`` of a file (``key``: ``rows.chunk.file_key``)."""

    seed: int
    key: int
    fractions: tuple[float, ...]
    which: int

    def keep(self, first: int, n: int) -> np.ndarray:
        """Which of the documents ``first .. first + n - 1`` of the file belong to the split."""
        bounds = np.cumsum(self.fractions)
        bounds[-1] = 1.0
        mask: np.ndarray = (
            split_of(self.seed, self.key, np.arange(first, first + n), bounds) == self.which
        )
        return mask


def join_documents(values: np.ndarray, offsets: np.ndarray, separator: int | None) -> np.ndarray:
    """Flat document tokens -> one stream, with ``separator`` after every non-empty document."""
    if separator is None or len(offsets) <= 1:
        return values
    # np.insert needs one bool per output token, not int64 index arrays per token (a 30 M token
    # document would need ~720 MB of temporaries that way)
    ends = offsets[1:][np.diff(offsets) > 0]
    out: np.ndarray = np.insert(np.asarray(values, dtype=np.int32), ends, np.int32(separator))
    return out


def token_stream(
    f: InputFile,
    encoder: Encoder,
    *,
    stats: FileStats,
    text_key: str,
    on_error: Literal["skip", "fail"],
    separator: int | None,
    max_doc_chars: int = 0,
    start_record: int = 0,
    t0: int = 0,
    digest: SourceDigest | None = None,
    stop_record: int | None = None,
    select: SplitFilter | None = None,
    doc0: int = 0,
) -> Iterator[StreamPiece]:
    """The token stream of ``f`` from record ``start_record`` (token position ``t0``) up to
    record ``stop_record`` (None: the end).
    Documents dropped for a reserved id move from ``stats.docs`` to
    ``stats.skipped["reserved_token"]``. ``digest``, if given, receives every raw byte read.
    ``select`` keeps one split's documents (``doc0``: the file's documents before
    ``start_record``); the others move to ``stats.skipped["other_split"]``."""
    last_bytes = stats.bytes_read
    t = t0
    # a unit of a split Parquet file is read as a file of its own (source.units)
    reader: Callable[..., Iterator[DocBatch]] = (
        iter_unit if isinstance(f, InputUnit) else iter_batches
    )
    for batch in reader(
        f,
        text_key=text_key,
        on_error=on_error,
        stats=stats,
        start_record=start_record,
        max_doc_chars=max_doc_chars,
        digest=digest,
        stop_record=stop_record,
    ):
        ndocs = len(batch.texts)
        if select is not None and ndocs:
            mask = select.keep(doc0, ndocs)
            doc0 += ndocs
            other = ndocs - int(mask.sum())
            if other:
                batch.texts[:] = [t for t, k in zip(batch.texts, mask.tolist(), strict=True) if k]
                stats.skipped["other_split"] = stats.skipped.get("other_split", 0) + other
                stats.docs -= other
        values, offsets, counts = encoder.encode(batch.texts)
        batch.texts.clear()  # a huge document's text is not needed past this point
        if counts.get("reserved_token"):
            n = counts["reserved_token"]
            stats.skipped["reserved_token"] = stats.skipped.get("reserved_token", 0) + n
            stats.docs -= n
        tokens = join_documents(values, offsets, separator)
        del values, offsets
        yield StreamPiece(
            tokens,
            t,
            batch.record_end,
            ndocs,
            stats.bytes_read - last_bytes,
            counts.get("reserved_replaced", 0),
        )
        t += len(tokens)
        del tokens  # the consumer holds them as long as it needs
        last_bytes = stats.bytes_read


def _stream_len(encoder: Encoder, texts: list[str], separator: int | None) -> int:
    """How many stream tokens ``texts`` become (documents dropped for a reserved id: none)."""
    values, offsets, _ = encoder.encode(texts)
    seps = int(np.count_nonzero(np.diff(offsets) > 0)) if separator is not None else 0
    return len(values) + seps


def prefix_stops(
    files: Sequence[InputFile],
    *,
    docs: int = 0,
    tokens: int = 0,
    encoder: Encoder | None = None,
    text_key: str,
    max_doc_chars: int = 0,
    separator: int | None = None,
) -> list[int | None]:
    """``--limit-docs`` / ``--limit-tokens``: per input file (in the given order) the record
    it stops before (None: the whole file; 0: none of it). With ``docs`` the first ``docs``
    documents are taken; with ``tokens`` (needs ``encoder``) the shortest prefix of whole
    documents whose stream (separators included) holds at least ``tokens`` tokens. Files are
    read in order in this process (and, for ``tokens``, their documents tokenized once more) up
    to the limit; the read batch that reaches it is re-read document by document to find the
    exact record."""
    limit = docs or tokens
    if not limit or (tokens and encoder is None):
        return [None] * len(files)

    def count(texts: list[str]) -> int:
        if docs:
            return len(texts)
        assert encoder is not None
        return _stream_len(encoder, texts, separator) if texts else 0

    left = limit
    stops: list[int | None] = []
    for f in files:
        if left <= 0:
            stops.append(0)
            continue
        stop: int | None = None
        start = 0
        # a unit of a split Parquet file is read as a file of its own (source.units)
        reader: Callable[..., Iterator[DocBatch]] = (
            iter_unit if isinstance(f, InputUnit) else iter_batches
        )
        for batch in reader(f, text_key=text_key, stats=FileStats(), max_doc_chars=max_doc_chars):
            n = count(batch.texts)
            if n < left:
                left -= n
                start = batch.record_end
                continue
            # the limit is reached in this batch: find its record, one document at a time
            for one in reader(
                f,
                text_key=text_key,
                stats=FileStats(),
                max_doc_chars=max_doc_chars,
                start_record=start,
                stop_record=batch.record_end,
                batch_chars=1,
            ):
                left -= count(one.texts)
                if left <= 0:
                    stop = one.record_end
                    break
            break
        stops.append(stop)
    return stops

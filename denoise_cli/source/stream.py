"""The one read -> encode -> join loop: an input file as a token stream.

``prepare`` (per worker) and ``verify --source`` both turn a file into tokens here, so they
cannot drift apart: read records (:mod:`.read`), encode them (:mod:`.tokenize`), account for
documents that held a reserved id, and join the documents with the separator. The stream is
then cut into chunks by ``rows.chunk``. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .discover import InputFile
from .fingerprint import SourceDigest
from .read import FileStats, iter_batches
from .tokenize import Encoder


@dataclass
class StreamPiece:
    """Tokens ``[t0, t0 + len(tokens))`` of a file's stream, read up to record ``record_end``."""

    tokens: np.ndarray
    t0: int
    record_end: int
    docs: int  # documents read for this piece (for progress)
    nbytes: int  # input bytes consumed since the previous piece (for progress)
    reserved_replaced: int  # reserved ids replaced by unk in this piece


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
) -> Iterator[StreamPiece]:
    """The token stream of ``f`` from record ``start_record`` (token position ``t0``).
    Documents dropped for a reserved id move from ``stats.docs`` to
    ``stats.skipped["reserved_token"]``. ``digest``, if given, receives every raw byte read."""
    last_bytes = stats.bytes_read
    t = t0
    for batch in iter_batches(
        f,
        text_key=text_key,
        on_error=on_error,
        stats=stats,
        start_record=start_record,
        max_doc_chars=max_doc_chars,
        digest=digest,
    ):
        values, offsets, counts = encoder.encode(batch.texts)
        ndocs = len(batch.texts)
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

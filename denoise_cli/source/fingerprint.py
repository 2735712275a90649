"""Content fingerprints of input files, for resuming safely after an input was edited.

The reader feeds every raw (still compressed) byte it takes from a file into a
:class:`SourceDigest`; each commit record stores how many bytes were consumed and their
SHA-256. A resumed file is first checked with :func:`prefix_sha256` over that many bytes: if the
prefix differs, the file changed since its parts were committed and is redone from the start
(never mixed). Cost: one SHA-256 pass over the compressed input while reading, plus one over the
consumed prefix of each file being resumed (``benchmarks/README_prepare.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import IO

_CHUNK = 1 << 20


class SourceDigest:
    """SHA-256 and count of the raw bytes of one file, in the order a reader consumed them."""

    __slots__ = ("_h", "count")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.count = 0

    def update(self, data: bytes) -> None:
        self._h.update(data)
        self.count += len(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def hash_stream(fh: IO[bytes], digest: SourceDigest, nbytes: int = -1) -> bool:
    """Feed ``nbytes`` bytes of ``fh`` (all of it when -1) into ``digest``; False when the
    stream ends first."""
    left = nbytes
    while left:
        b = fh.read(_CHUNK if left < 0 else min(left, _CHUNK))
        if not b:
            return left < 0
        digest.update(b)
        if left > 0:
            left -= len(b)
    return True


def prefix_sha256(open_fn: Callable[[], IO[bytes]], nbytes: int) -> str | None:
    """SHA-256 of the first ``nbytes`` bytes of the file ``open_fn`` opens; None when the file
    is shorter or unreadable (so it cannot match a recorded prefix)."""
    d = SourceDigest()
    try:
        with open_fn() as fh:
            if not hash_stream(fh, d, nbytes):
                return None
    except OSError:
        return None
    return d.hexdigest()

"""Packing: one file's token stream -> groups of raw chunks, one mixture component per chunk.

Documents are concatenated (with an EOS between them by default) into one token stream per
input file. The stream is cut into *groups* of ``G`` consecutive chunks. For group ``g`` a
generator seeded from ``SeedSequence([seed, file_key, g, epoch])`` first draws the ``G``
components (one per chunk, probability = weight), which fixes every chunk's raw length; the
group is cut as soon as the stream holds that many tokens, and the same generator then draws
the masks. So every example depends only on (seed, input file, its position in the file's
stream) - never on read batch sizes, worker counts or machines.

At the end of a file, the chunks of the pending group that still fit are emitted in order; the
remaining tokens (fewer than the next chunk needs) are the file's *tail*, counted and reported.

The packer is resumable: after any group it can hand out its state (next group index, stream
offset of the buffer, the un-chunked tokens it holds), and a packer built from that state
continues with byte-identical groups.

Cost: one ``concatenate`` of the carried tokens per pushed batch (a few MB), negligible next to
tokenization.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .config import ComponentPlan
from .corrupt import draw_components


def file_key(name: str) -> int:
    """Stable 64-bit key of an input file's name (its identity in the random streams)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def group_rng(seed: int, key: int, group: int, epoch: int = 0) -> np.random.Generator:
    """The one generator of a group: SeedSequence([seed, file_key, group, epoch])."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, key, group, epoch])))


@dataclass
class Group:
    """A group of chunks ready to corrupt. ``stream[starts[i] : starts[i] + raw_length]`` is
    chunk ``i``; ``rng`` has already drawn ``components`` and continues with the masks."""

    index: int
    stream: np.ndarray
    starts: np.ndarray  # int64, into ``stream``
    components: np.ndarray  # int8
    rng: np.random.Generator
    first_example: int  # index of chunk 0 within the file
    token_offset: np.ndarray  # int64 [n] offset of each chunk in the file's token stream


@dataclass
class PackerState:
    next_group: int
    offset: int  # stream offset of carry[0]
    carry: np.ndarray  # int32 tokens not yet chunked


class Packer:
    def __init__(
        self,
        plans: Sequence[ComponentPlan],
        probabilities: np.ndarray,
        group_size: int,
        seed: int,
        key: int,
        epoch: int = 0,
        state: PackerState | None = None,
    ) -> None:
        self._raw = np.array([c.raw_length for c in plans], dtype=np.int64)
        self._p = np.asarray(probabilities, dtype=np.float64)
        self._g = group_size
        self._seed, self._key, self._epoch = seed, key, epoch
        st = state or PackerState(0, 0, np.zeros(0, np.int32))
        self._next = st.next_group
        self._offset = st.offset
        self._buf = np.asarray(st.carry, dtype=np.int32)
        self._draw()

    def _draw(self) -> None:
        self._rng = group_rng(self._seed, self._key, self._next, self._epoch)
        self._comps = draw_components(self._rng, self._p, self._g)
        self._ends = np.cumsum(self._raw[self._comps])

    def state(self) -> PackerState:
        return PackerState(self._next, self._offset, self._buf.copy())

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _cut(self, n: int) -> Group:
        starts = np.empty(n, dtype=np.int64)
        starts[0] = 0
        starts[1:] = self._ends[: n - 1]
        used = int(self._ends[n - 1])
        stream = self._buf[:used]
        grp = Group(
            index=self._next,
            stream=stream,
            starts=starts,
            components=self._comps[:n],
            rng=self._rng,
            first_example=self._next * self._g,
            token_offset=self._offset + starts,
        )
        self._buf = self._buf[used:]
        self._offset += used
        self._next += 1
        self._draw()
        return grp

    def push(self, tokens: np.ndarray) -> Iterator[Group]:
        """Add tokens; yield every group that is now complete. After each yield, :meth:`state`
        describes the packer as if it had just cut that group."""
        if len(tokens):
            self._buf = np.concatenate([self._buf, tokens.astype(np.int32, copy=False)])
        while len(self._buf) >= self._ends[-1]:
            yield self._cut(self._g)

    def finish(self) -> tuple[Group | None, int]:
        """End of stream: the chunks of the pending group that fit, and the tail token count."""
        k = int(np.searchsorted(self._ends, len(self._buf), side="right"))
        grp = self._cut(k) if k else None
        tail = len(self._buf)
        self._offset += tail
        self._buf = self._buf[:0]
        return grp, tail


def join_documents(values: np.ndarray, offsets: np.ndarray, separator: int | None) -> np.ndarray:
    """Flat document tokens -> one stream, with ``separator`` after every non-empty document."""
    if separator is None or len(offsets) <= 1:
        return values
    # np.insert needs one bool per output token, not int64 index arrays per token (a 30 M token
    # document would need ~720 MB of temporaries that way)
    ends = offsets[1:][np.diff(offsets) > 0]
    out: np.ndarray = np.insert(np.asarray(values, dtype=np.int32), ends, np.int32(separator))
    return out

"""Vectorized noise masks: T5 random spans, and prefix-LM split points.

Pure functions of ``(batch, length, parameters, np.random.Generator)``; no global RNG, no
per-row Python loops. Random spans (T5's ``random_spans_noise_mask`` for a whole batch): per row
of length ``L``, ``n`` noise tokens in ``s`` spans (``plan.span_counts``); the ``L-n`` non-noise
and the ``n`` noise tokens are each split uniformly at random into ``s`` positive parts, and
segments alternate non-noise, noise, ..., so the first token is never noise. A uniform
composition of ``m`` items into ``k`` parts is a uniform ``(k-1)``-subset of the ``m-1`` gaps:
every row draws ``m-1`` uniform keys, ``np.partition`` finds each row's ``(k-1)``-th smallest and
a comparison marks the keys below it as segment starts (rows with tied keys, probability
~1e-11, are redone exactly with ``argpartition``); a ``cumsum`` turns the starts into the mask.
Figures: ``benchmarks/bench_corrupt.py`` and benchmarks/README.md.
"""

from __future__ import annotations

import numpy as np

from ..plan import s_prefix_min, span_counts


def random_segment_starts(
    rng: np.random.Generator, batch: int, num_items: int, num_segments: int
) -> np.ndarray:
    """Boolean ``[batch, num_items]``: True where a segment starts, for a uniform random split of
    ``num_items`` items into ``num_segments`` positive parts (item 0 always starts one)."""
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} positive parts")
    starts = np.zeros((batch, num_items), dtype=bool)
    starts[:, 0] = True
    k = num_segments - 1
    if k == 0 or batch == 0:
        return starts
    gaps = num_items - 1  # a start can be at items 1..num_items-1
    if k == gaps:
        starts[:, 1:] = True
        return starts
    keys = rng.random((batch, gaps))
    # the k smallest keys of each row: everything <= the row's k-th smallest value
    # (np.partition on values is ~2x faster than argpartition + a scatter)
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]
    chosen = keys <= kth
    tied = np.flatnonzero(chosen.sum(axis=1) != k)  # equal float64 keys: ~1e-11 per row
    if len(tied):
        idx = np.argpartition(keys[tied], k - 1, axis=1)[:, :k]
        chosen[tied] = False
        chosen[np.repeat(tied, k), idx.ravel()] = True
    starts[:, 1:] = chosen
    return starts


def _segment_lengths(starts: np.ndarray, num_segments: int) -> np.ndarray:
    """Lengths ``[batch, num_segments]`` of the segments marked by ``starts``."""
    b, m = starts.shape
    cols = np.nonzero(starts)[1].reshape(b, num_segments)  # row-major: sorted within each row
    ends = np.empty_like(cols)
    ends[:, :-1] = cols[:, 1:]
    ends[:, -1] = m
    return ends - cols


def random_spans_noise_mask(
    rng: np.random.Generator, batch: int, length: int, rate: float, mean_span: float
) -> np.ndarray:
    """Boolean noise mask ``[batch, length]`` with exactly T5's counts and distribution."""
    n, s = span_counts(length, rate, mean_span)
    nonnoise = length - n
    if s > nonnoise:
        raise ValueError(f"{s} spans need at least {s} non-noise tokens, have {nonnoise}")
    noise_len = _segment_lengths(random_segment_starts(rng, batch, n, s), s)
    keep_len = _segment_lengths(random_segment_starts(rng, batch, nonnoise, s), s)
    # interleave: keep_0, noise_0, keep_1, noise_1, ... ; boundaries are cumulative sums
    seg = np.empty((batch, 2 * s), dtype=np.int64)
    seg[:, 0::2] = keep_len
    seg[:, 1::2] = noise_len
    bounds = np.cumsum(seg, axis=1)[:, :-1]  # start of every segment after the first
    toggles = np.zeros((batch, length), dtype=np.int8)
    rows = np.repeat(np.arange(batch), 2 * s - 1)
    toggles[rows, bounds.ravel()] = 1
    return (np.cumsum(toggles, axis=1, dtype=np.int32) & 1).astype(bool)


def random_prefix_lengths(
    rng: np.random.Generator, batch: int, length: int, rate: float
) -> np.ndarray:
    """Prefix sizes ``[batch]`` of the S denoiser: uniform on
    ``[max(1, rint((1-2r)(L-1))), L-1]`` (``r=0.5`` is T5's ``prefix_lm``: uniform on
    ``[1, L-1]``)."""
    lo = s_prefix_min(length, rate)
    return rng.integers(lo, length, size=batch, dtype=np.int64)  # high is exclusive: L-1 max

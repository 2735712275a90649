"""Vectorized noise masks: T5 random spans, and prefix-LM split points.

Pure functions of ``(batch, length, parameters, np.random.Generator)``; no global RNG, no
per-row Python loops. Random spans (T5's ``random_spans_noise_mask`` for a whole batch): per row
of length ``L``, ``n`` noise tokens in ``s`` spans (``plan.span_counts``); the ``L-n`` non-noise
and the ``n`` noise tokens are each split uniformly at random into ``s`` positive parts, and
segments alternate non-noise, noise, ..., so the first token is never noise. A uniform
composition of ``m`` items into ``k`` parts is a uniform ``(k-1)``-subset of the ``m-1`` gaps:
every row draws ``m-1`` uniform keys, ``np.partition`` finds each row's ``(k-1)``-th smallest and
a comparison marks the keys below it as segment starts (rows with tied keys, probability
~1e-11, are redone exactly with ``argpartition``); ``flatnonzero`` gives their columns. The
span denoiser turns the columns into the mask (``rows.denoisers.span``).
Figures: ``benchmarks/bench_corrupt.py`` and benchmarks/README.md.
"""

from __future__ import annotations

import numpy as np


def random_segment_cols(
    rng: np.random.Generator, batch: int, num_items: int, num_segments: int
) -> np.ndarray:
    """Int64 ``[batch, num_segments]``: the item where each segment starts (0 first, then
    increasing), for a uniform random split of ``num_items`` items into ``num_segments``
    positive parts. Draws exactly what :func:`random_segment_starts` draws."""
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot split {num_items} items into {num_segments} positive parts")
    cols = np.zeros((batch, num_segments), dtype=np.int64)
    k = num_segments - 1
    if k == 0 or batch == 0:
        return cols
    gaps = num_items - 1  # a start can be at items 1..num_items-1
    if k == gaps:
        cols[:, 1:] = np.arange(1, num_items)
        return cols
    keys = rng.random((batch, gaps))
    # the k smallest keys of each row: everything <= the row's k-th smallest value
    # (np.partition on values is ~2x faster than argpartition + a scatter)
    kth = np.partition(keys, k - 1, axis=1)[:, k - 1 : k]
    chosen = keys <= kth
    flat = np.flatnonzero(chosen)  # every row has >= k; exactly k unless keys tie
    if len(flat) != batch * k:  # equal float64 keys: ~1e-11 per row
        tied = np.flatnonzero(chosen.sum(axis=1) != k)
        idx = np.argpartition(keys[tied], k - 1, axis=1)[:, :k]
        chosen[tied] = False
        chosen[np.repeat(tied, k), idx.ravel()] = True
        flat = np.flatnonzero(chosen)
    # row-major: sorted within each row
    cols[:, 1:] = flat.reshape(batch, k) - (np.arange(batch, dtype=np.int64) * gaps - 1)[:, None]
    return cols


def random_segment_starts(
    rng: np.random.Generator, batch: int, num_items: int, num_segments: int
) -> np.ndarray:
    """Boolean ``[batch, num_items]``: True where a segment starts, for a uniform random split of
    ``num_items`` items into ``num_segments`` positive parts (item 0 always starts one)."""
    cols = random_segment_cols(rng, batch, num_items, num_segments)
    starts = np.zeros((batch, num_items), dtype=bool)
    starts[np.arange(batch)[:, None], cols] = True
    return starts

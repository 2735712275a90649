"""The span denoiser's fast path (segment columns, the packed prefix-XOR noise mask, the
sentinels put at the segment starts) against the plain forms it replaces: the same draws and
the same rows, bit for bit, including masks that cross 64-bit word and row boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from denoise_cli.rows.denoisers.span import (
    random_span_starts,
    random_spans_noise_mask,
    span_corrupt,
    span_corrupt_at,
    span_counts,
)
from denoise_cli.rows.masks import random_segment_cols, random_segment_starts


def _mask_from_lengths(keep: np.ndarray, noise: np.ndarray, length: int) -> np.ndarray:
    """The obvious noise mask: a loop over rows and spans."""
    b, s = keep.shape
    mask = np.zeros((b, length), dtype=bool)
    for r in range(b):
        for k in range(s):
            end = keep[r, k + 1] if k + 1 < s else length
            mask[r, noise[r, k] : end] = True
    return mask


@pytest.mark.parametrize(("m", "k"), [(1, 1), (2, 2), (5, 3), (64, 9), (383, 127), (90, 89)])
@pytest.mark.parametrize("batch", [0, 1, 7, 33])
def test_segment_cols_are_the_starts(m: int, k: int, batch: int) -> None:
    for seed in range(5):
        cols = random_segment_cols(np.random.default_rng(seed), batch, m, k)
        starts = random_segment_starts(np.random.default_rng(seed), batch, m, k)
        assert cols.shape == (batch, k)
        for r in range(batch):
            assert np.flatnonzero(starts[r]).tolist() == cols[r].tolist()


@pytest.mark.parametrize("length", [2, 3, 31, 63, 64, 65, 127, 128, 129, 567, 765, 1004])
@pytest.mark.parametrize(("rate", "mean"), [(0.15, 3.0), (0.5, 3.0), (0.5, 1.0), (0.3, 64.0)])
@pytest.mark.parametrize("batch", [0, 1, 3, 64, 65])
def test_noise_mask_and_rows_equal_the_plain_forms(
    length: int, rate: float, mean: float, batch: int
) -> None:
    n, s = span_counts(length, rate, mean)
    if s > length - n:
        pytest.skip("no valid split")
    seed = length * 1000 + batch
    keep, noise = random_span_starts(np.random.default_rng(seed), batch, length, rate, mean)
    mask = random_spans_noise_mask(np.random.default_rng(seed), batch, length, rate, mean)
    assert mask.shape == (batch, length) and mask.dtype == bool
    assert np.array_equal(mask, _mask_from_lengths(keep, noise, length))
    assert (mask.sum(axis=1) == n).all()
    tokens = np.random.default_rng(seed + 1).integers(0, 50_000, (batch, length), dtype=np.int32)
    sentinels = np.arange(60_000, 60_000 + max(s, 1), dtype=np.int32)
    a = span_corrupt(tokens, mask, sentinels)
    b = span_corrupt_at(tokens, keep, noise, sentinels)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def test_span_corrupt_at_needs_enough_sentinels() -> None:
    keep, noise = random_span_starts(np.random.default_rng(0), 2, 100, 0.5, 3.0)
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt_at(np.zeros((2, 100), np.int32), keep, noise, np.arange(3, dtype=np.int32))

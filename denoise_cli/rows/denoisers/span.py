"""R and X denoisers (span corruption, T5's ``random_spans_noise_mask``): a raw chunk of ``L``
tokens loses ``n`` noise tokens in ``s`` spans; inputs keep the rest with sentinel ``k`` in place
of span ``k``, targets are ``sentinel k + span k`` for every span. Built without loops: every
row has exactly ``s`` span starts. docs/architecture.md ("rows")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import Denoiser, Lengths
from ...errors import ConfigError
from ..base import IGNORE_INDEX, Rows, SpecialIds
from ..masks import random_segment_starts, segment_lengths
from .base import DenoiserKind, KindPlan


def span_counts(
    length: int | np.ndarray, rate: float | np.ndarray, mean_span: float | np.ndarray
) -> tuple[Any, Any]:
    """(noise tokens, noise spans) for a raw length, exactly as T5's ``random_spans_noise_mask``:
    ``n = clamp(rint(L*r), 1, L-1)``, ``s = max(rint(n/mu), 1)`` (round half to even). Any
    argument may be an array (element-wise, broadcast; e.g. one length, rate and mean span per
    row); ints come back only when ``length`` is a scalar."""
    L = np.asarray(length, dtype=np.int64)
    n = np.clip(np.rint(L * rate).astype(np.int64), 1, np.maximum(L - 1, 1))
    s = np.maximum(np.rint(n / mean_span).astype(np.int64), 1)
    if np.ndim(length) == 0:
        return int(n), int(s)
    return n, s


def random_spans_noise_mask(
    rng: np.random.Generator, batch: int, length: int, rate: float, mean_span: float
) -> np.ndarray:
    """Boolean noise mask ``[batch, length]`` with exactly T5's counts and distribution."""
    n, s = span_counts(length, rate, mean_span)
    nonnoise = length - n
    if s > nonnoise:
        raise ValueError(f"{s} spans need at least {s} non-noise tokens, have {nonnoise}")
    noise_len = segment_lengths(random_segment_starts(rng, batch, n, s), s)
    keep_len = segment_lengths(random_segment_starts(rng, batch, nonnoise, s), s)
    # interleave: keep_0, noise_0, keep_1, noise_1, ... ; boundaries are cumulative sums
    seg = np.empty((batch, 2 * s), dtype=np.int64)
    seg[:, 0::2] = keep_len
    seg[:, 1::2] = noise_len
    bounds = np.cumsum(seg, axis=1)[:, :-1]  # start of every segment after the first
    toggles = np.zeros((batch, length), dtype=np.int8)
    rows = np.repeat(np.arange(batch), 2 * s - 1)
    toggles[rows, bounds.ravel()] = 1
    return (np.cumsum(toggles, axis=1, dtype=np.int32) & 1).astype(bool)


def span_corrupt(
    tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``[B, L-n+s]`` and targets ``[B, n+s]`` for rows that share ``n`` and ``s``."""
    b, length = tokens.shape
    if b == 0:
        return tokens[:, :0], tokens[:, :0]
    prev = np.zeros_like(mask)
    prev[:, 1:] = mask[:, :-1]
    span_start = mask & ~prev
    s = int(span_start[0].sum())
    n = int(mask[0].sum())
    if s > len(sentinels):
        raise ValueError(f"{s} spans need {s} sentinels, only {len(sentinels)} available")
    sent = np.tile(sentinels[:s].astype(tokens.dtype), b)
    keep_start = ~mask & (prev | _first_col(b, length))  # start of every non-noise segment
    vals = tokens.copy()
    vals[span_start] = sent
    inputs = vals[~mask | span_start].reshape(b, length - n + s)
    vals = tokens.copy()
    vals[keep_start] = sent
    targets = vals[mask | keep_start].reshape(b, n + s)
    return inputs, targets


def _first_col(b: int, length: int) -> np.ndarray:
    first = np.zeros((b, length), dtype=bool)
    first[:, 0] = True
    return first


def _assemble_fixed(
    b: int,
    mode_id: int | None,
    inputs: np.ndarray,
    targets: np.ndarray,
    special: SpecialIds,
    lengths: Lengths,
) -> Rows:
    """Rows whose inputs/targets have the same width in every row (R/X)."""
    m = 0 if mode_id is None else 1
    wi, wt = inputs.shape[1], targets.shape[1]
    ones = np.ones(b, dtype=np.int32)
    if lengths.layout == "encoder-decoder":
        ids = np.full((b, lengths.inputs_length), special.pad, dtype=np.int32)
        if mode_id is not None:
            ids[:, 0] = mode_id
        ids[:, m : m + wi] = inputs
        ids[:, m + wi] = special.eos
        lab = np.full((b, lengths.targets_length), IGNORE_INDEX, dtype=np.int32)
        lab[:, :wt] = targets
        lab[:, wt] = special.eos
        ilen, tlen, plen = m + wi + 1, wt + 1, m + wi
    else:
        ids = np.full((b, lengths.seq_length), special.pad, dtype=np.int32)
        if mode_id is not None:
            ids[:, 0] = mode_id
        ids[:, m : m + wi] = inputs
        ids[:, m + wi : m + wi + wt] = targets
        ids[:, m + wi + wt] = special.eos
        lab = np.full((b, lengths.seq_length), IGNORE_INDEX, dtype=np.int32)
        lab[:, m + wi : m + wi + wt + 1] = ids[:, m + wi : m + wi + wt + 1]
        ilen, tlen, plen = m + wi + wt + 1, wt + 1, m + wi
    att = np.zeros(ids.shape, dtype=np.int8)
    att[:, :ilen] = 1
    return Rows(ids, lab, att, ones * ilen, ones * tlen, ones * plen)


class SpanKind(DenoiserKind):
    """R (regular) and X (extreme) span corruption: ``mean_span`` and ``rate``."""

    uses_sentinels = True

    def fits(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> bool:
        n, s = span_counts(L, d.rate, d.mean_span)
        if lengths.layout == "encoder-decoder":
            return bool(
                m + L - n + s + 1 <= lengths.inputs_length and n + s + 1 <= lengths.targets_length
            )
        return bool(m + L + 2 * s + 1 <= lengths.seq_length)

    def plan(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> KindPlan:
        n, s = span_counts(L, d.rate, d.mean_span)
        if s > L - n:
            raise ConfigError(
                f"{d.name}: at raw length {L} it masks {n} tokens in {s} spans but only {L - n} "
                "tokens remain to separate them; lower the rate or raise the mean span"
            )
        if lengths.layout == "encoder-decoder":
            inp, tgt = m + L - n + s + 1, n + s + 1
        else:
            inp, tgt = m + L + 2 * s + 1, n + s + 1
        return KindPlan(n, s, 0, 0, inp, tgt, float(inp), float(tgt))

    def min_example(self, c: Any, layout: str) -> tuple[int, int]:
        return c.input_length, c.target_length  # exact: every span row has the same lengths

    def corrupt(
        self,
        tokens: np.ndarray,
        d: Denoiser,
        mode_id: int | None,
        special: SpecialIds,
        lengths: Lengths,
        rng: np.random.Generator,
    ) -> Rows:
        b, L = tokens.shape
        mask = random_spans_noise_mask(rng, b, L, d.rate, d.mean_span)
        inputs, targets = span_corrupt(tokens, mask, special.sentinels)
        return _assemble_fixed(b, mode_id, inputs, targets, special, lengths)


SPAN = SpanKind()

"""Denoisers: raw token chunks -> fixed-shape model rows, for a whole batch at once.

R/X (span corruption): inputs keep the non-noise tokens and replace noise span ``k`` by
sentinel ``k``; targets are ``sentinel k + span k`` for every span (built without loops: every
row has exactly ``s`` span starts). S (prefix-LM): inputs = prefix, targets = the rest. Then the
layout: encoder-decoder ``input_ids [I] = [mode] inputs EOS pad...``, ``labels [T] = targets EOS
-100...``; decoder-only ``input_ids [S] = [mode] inputs targets EOS pad...`` with labels on
``targets EOS`` and ``prefix_length`` for a prefix-LM mask. :func:`corrupt_mixture` applies a
mixture to a group of chunks, each drawn for one component. docs/architecture.md ("rows")
describes the rows in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import Lengths
from ..plan import ComponentPlan
from .masks import random_prefix_lengths, random_spans_noise_mask

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the denoisers write. ``sentinels[k]`` is the id of ``<extra_id_k>``."""

    eos: int
    pad: int
    sentinels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    mode: dict[str, int] = field(default_factory=dict)


@dataclass
class Rows:
    """A batch of output rows (numpy arrays, one row per example)."""

    input_ids: np.ndarray  # int32 [B, I] or [B, S]
    labels: np.ndarray  # int32 [B, T] or [B, S]
    attention_mask: np.ndarray  # int8  [B, I] or [B, S]
    input_length: np.ndarray  # int32 [B] real tokens in input_ids
    target_length: np.ndarray  # int32 [B] tokens with a label (targets + EOS)
    prefix_length: np.ndarray  # int32 [B] decoder-only: mode + inputs; enc-dec: inputs w/o EOS


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


def _assemble_prefix(
    tokens: np.ndarray, p: np.ndarray, mode_id: int | None, special: SpecialIds, lengths: Lengths
) -> Rows:
    """Rows of the S denoiser: prefix ``tokens[:, :p]`` -> suffix ``tokens[:, p:]``."""
    b, L = tokens.shape
    m = 0 if mode_id is None else 1
    rows = np.arange(b)
    p32 = p.astype(np.int32)
    if lengths.layout == "encoder-decoder":
        I, T = lengths.inputs_length, lengths.targets_length
        ids = np.full((b, I), special.pad, dtype=np.int32)
        if mode_id is not None:
            ids[:, 0] = mode_id
        col = np.arange(I)[None, :]
        ids[:, m : m + L] = tokens
        ids[col >= (m + p)[:, None]] = special.pad
        ids[rows, m + p] = special.eos
        idx = p[:, None] + np.arange(T)[None, :]
        tok = np.take_along_axis(tokens, np.minimum(idx, L - 1), axis=1)
        lab = np.where(idx < L, tok, IGNORE_INDEX).astype(np.int32)
        lab[rows, L - p] = special.eos
        ilen = m + p32 + 1
        tlen = (L - p32 + 1).astype(np.int32)
        plen = m + p32
    else:
        Sx = lengths.seq_length
        ids = np.full((b, Sx), special.pad, dtype=np.int32)
        if mode_id is not None:
            ids[:, 0] = mode_id
        ids[:, m : m + L] = tokens
        ids[:, m + L] = special.eos
        col = np.arange(Sx)[None, :]
        lab = np.where((col >= (m + p)[:, None]) & (col <= m + L), ids, IGNORE_INDEX).astype(
            np.int32
        )
        ilen = np.full(b, m + L + 1, dtype=np.int32)
        tlen = (L - p32 + 1).astype(np.int32)
        plen = m + p32
    att = (np.arange(ids.shape[1])[None, :] < ilen[:, None]).astype(np.int8)
    return Rows(ids, lab, att, ilen.astype(np.int32), tlen, plen.astype(np.int32))


def corrupt_component(
    tokens: np.ndarray,
    comp: ComponentPlan,
    special: SpecialIds,
    lengths: Lengths,
    rng: np.random.Generator,
) -> Rows:
    """Apply one component to a batch of raw chunks ``[B, comp.raw_length]``."""
    b, L = tokens.shape
    if L != comp.raw_length:
        raise ValueError(f"{comp.name} expects raw chunks of {comp.raw_length} tokens, got {L}")
    mode_id = special.mode[comp.mode_token] if comp.mode_token is not None else None
    d = comp.denoiser
    if d.is_span:
        mask = random_spans_noise_mask(rng, b, L, d.rate, d.mean_span)
        inputs, targets = span_corrupt(tokens, mask, special.sentinels)
        return _assemble_fixed(b, mode_id, inputs, targets, special, lengths)
    p = random_prefix_lengths(rng, b, L, d.rate)
    return _assemble_prefix(tokens, p, mode_id, special, lengths)


def row_widths(lengths: Lengths) -> tuple[int, int]:
    if lengths.layout == "encoder-decoder":
        return lengths.inputs_length, lengths.targets_length
    return lengths.seq_length, lengths.seq_length


def draw_components(rng: np.random.Generator, probabilities: np.ndarray, count: int) -> np.ndarray:
    """``count`` i.i.d. component ids (int8) with the given probabilities (inverse CDF)."""
    cdf = np.cumsum(probabilities)
    cdf /= cdf[-1]
    u = rng.random(count)
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int8)


def corrupt_mixture(
    stream: np.ndarray,
    starts: np.ndarray,
    components: np.ndarray,
    plans: Sequence[ComponentPlan],
    special: SpecialIds,
    lengths: Lengths,
    rng: np.random.Generator,
) -> Rows:
    """Corrupt a group of chunks. Chunk ``i`` is ``stream[starts[i] : starts[i] + L_c]`` with
    ``c = components[i]``. Components are processed in index order with the one generator, so
    the result depends only on (stream, starts, components, rng state)."""
    g = len(starts)
    wi, wt = row_widths(lengths)
    out = Rows(
        np.empty((g, wi), dtype=np.int32),
        np.empty((g, wt), dtype=np.int32),
        np.empty((g, wi), dtype=np.int8),
        np.empty(g, dtype=np.int32),
        np.empty(g, dtype=np.int32),
        np.empty(g, dtype=np.int32),
    )
    for c, comp in enumerate(plans):
        idx = np.flatnonzero(components == c)
        if len(idx) == 0:
            continue
        L = comp.raw_length
        chunk = stream[starts[idx][:, None] + np.arange(L)[None, :]]
        r = corrupt_component(chunk, comp, special, lengths, rng)
        out.input_ids[idx] = r.input_ids
        out.labels[idx] = r.labels
        out.attention_mask[idx] = r.attention_mask
        out.input_length[idx] = r.input_length
        out.target_length[idx] = r.target_length
        out.prefix_length[idx] = r.prefix_length
    return out

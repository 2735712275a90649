"""Applying a mixture: raw token chunks -> fixed-shape model rows, for a whole batch at once.

Each chunk was drawn for one component (:func:`draw_components`); :func:`corrupt_mixture` runs
the components in index order with one generator, each through its kind's corruption
(``rows.denoisers``: span corruption for R/X, prefix-LM for S), so the rows depend only on the
stream, the chunk starts, the drawn components and the generator. The rows
(``rows.base.Rows``) and their layouts: docs/architecture.md ("rows").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import Lengths
from .base import Rows, SpecialIds, row_widths
from .denoisers import kind_of
from .plan import ComponentPlan


def corrupt_component(
    tokens: np.ndarray,
    comp: ComponentPlan,
    special: SpecialIds,
    lengths: Lengths,
    rng: np.random.Generator,
) -> Rows:
    """Apply one component to a batch of raw chunks ``[B, comp.raw_length]``."""
    L = tokens.shape[1]
    if L != comp.raw_length:
        raise ValueError(f"{comp.name} expects raw chunks of {comp.raw_length} tokens, got {L}")
    mode_id = special.mode[comp.mode_token] if comp.mode_token is not None else None
    return kind_of(comp.denoiser).corrupt(tokens, comp.denoiser, mode_id, special, lengths, rng)


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
        # a row-wise copy out of a strided view (no [B, L] index array)
        chunk = np.lib.stride_tricks.sliding_window_view(stream, L)[starts[idx]]
        r = corrupt_component(chunk, comp, special, lengths, rng)
        out.input_ids[idx] = r.input_ids
        out.labels[idx] = r.labels
        out.attention_mask[idx] = r.attention_mask
        out.input_length[idx] = r.input_length
        out.target_length[idx] = r.target_length
        out.prefix_length[idx] = r.prefix_length
    return out

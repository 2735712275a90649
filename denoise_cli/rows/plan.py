"""Length budgeting: each component's raw chunk length, span counts, sentinels needed and the
efficiency figures, derived from a mixture and the row lengths (never configured).

A span denoiser (R/X) with rate ``r`` and mean span ``mu`` masks ``n = clamp(rint(L*r), 1, L-1)``
of ``L`` raw tokens in ``s = max(rint(n/mu), 1)`` spans; encoder-decoder inputs are
``[mode] + (L-n) + s + EOS`` and targets ``s + n + EOS`` (decoder-only: ``mode + L + 2s + 1``).
The S (prefix-LM) denoiser keeps a prefix uniform on ``[max(1, rint((1-2r)(L-1))), L-1]``.
Each component gets the largest ``L`` that fits (a binary search: every count is monotone in
``L``); with ``inputs_length=512`` and no mode token this is T5's ``random_spans_helper``.
Packed outputs plan examples at a 1/k budget (``config.example_lengths``); the bounds here say
how full packed rows can get. See docs/architecture.md and docs/packing.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ..config import FLAGS, Denoiser, Layout, Lengths, Mixture, PrepareConfig
from ..errors import ConfigError
from .denoisers import kind_of


@dataclass(frozen=True)
class ComponentPlan:
    """Derived lengths of one component for the chosen layout (all counts in tokens)."""

    index: int
    denoiser: Denoiser
    probability: float
    mode_token: str | None
    raw_length: int
    noise_tokens: int  # R/X: masked tokens per row; S: 0
    spans: int  # R/X: spans = sentinels per row; S: 0
    prefix_min: int  # S only (0 for R/X)
    prefix_max: int
    input_length: int  # max real tokens in inputs (enc-dec) or in the whole sequence (dec-only)
    target_length: int  # max real tokens in targets (enc-dec); loss tokens (dec-only)
    mean_input_tokens: float
    mean_target_tokens: float

    @property
    def name(self) -> str:
        return self.denoiser.name

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["denoiser"] = self.denoiser.name
        return d


def _mode_len(mix: Mixture) -> int:
    return 1 if mix.mode_tokens else 0


def _fits(d: Denoiser, L: int, m: int, lengths: Lengths) -> bool:
    return L >= 2 and kind_of(d).fits(d, L, m, lengths)


def _largest_fit(d: Denoiser, m: int, lengths: Lengths) -> int:
    hi_bound = 4 * max(lengths.inputs_length + lengths.targets_length, lengths.seq_length) + 8
    if not _fits(d, 2, m, lengths):
        return 0
    lo, hi = 2, hi_bound  # invariant: fits(lo), not fits(hi)
    if _fits(d, hi, m, lengths):
        raise ConfigError(f"{d.name}: no upper bound on the raw length (internal error)")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _fits(d, mid, m, lengths):
            lo = mid
        else:
            hi = mid
    return lo


def plan(mixture: Mixture, lengths: Lengths) -> tuple[ComponentPlan, ...]:
    """Derive every component's raw chunk length and the resulting input/target lengths.

    Raises :class:`ConfigError` when a component cannot fit even the smallest chunk, or needs
    more noise spans than it has non-noise tokens to separate them.
    """
    m = _mode_len(mixture)
    out: list[ComponentPlan] = []
    for i, (d, p) in enumerate(zip(mixture.denoisers, mixture.probabilities, strict=False)):
        L = _largest_fit(d, m, lengths)
        if L < 2:
            budget = (
                f"{FLAGS['inputs_length']} {lengths.inputs_length}, "
                f"{FLAGS['targets_length']} {lengths.targets_length}"
                if lengths.layout == "encoder-decoder"
                else f"{FLAGS['seq_length']} {lengths.seq_length}"
            )
            raise ConfigError(f"{d.name}: {budget} is too small for even one span/split")
        mode = d.resolved_mode_token() if mixture.mode_tokens else None
        k = kind_of(d).plan(d, L, m, lengths)
        out.append(
            ComponentPlan(
                i,
                d,
                float(p),
                mode,
                L,
                k.noise_tokens,
                k.spans,
                k.prefix_min,
                k.prefix_max,
                k.input_length,
                k.target_length,
                k.mean_input_tokens,
                k.mean_target_tokens,
            )
        )
    return tuple(out)


def sentinels_needed(plans: Sequence[ComponentPlan]) -> int:
    return max((c.spans for c in plans), default=0)


def largest_length_for_sentinels(mixture: Mixture, lengths: Lengths, available: int) -> int:
    """The largest ``-I`` (encoder-decoder; ``-S`` decoder-only), other lengths unchanged, whose
    plan needs at most ``available`` sentinels; 0 when even the smallest length needs more."""
    key = "inputs_length" if lengths.layout == "encoder-decoder" else "seq_length"

    def need(v: int) -> int | None:
        try:
            sized = (
                replace(lengths, inputs_length=v)
                if key == "inputs_length"
                else replace(lengths, seq_length=v)
            )
            return sentinels_needed(plan(mixture, sized))
        except ConfigError:
            return None  # too small for some component: treat as "does not fit"

    lo, hi = 3, getattr(lengths, key)  # invariant: hi does not fit (the caller checked)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        n = need(mid)
        if n is not None and n <= available:
            lo = mid
        else:
            hi = mid
    return lo if lo >= 4 else 0


def expected_efficiency(plans: Sequence[ComponentPlan], lengths: Lengths) -> dict[str, float]:
    """Expected fraction of token slots holding real tokens (inputs, targets, overall)."""
    p = np.array([c.probability for c in plans])
    mi = float(p @ np.array([c.mean_input_tokens for c in plans]))
    mt = float(p @ np.array([c.mean_target_tokens for c in plans]))
    if lengths.layout == "encoder-decoder":
        I, T = lengths.inputs_length, lengths.targets_length
        return {"inputs": mi / I, "targets": mt / T, "overall": (mi + mt) / (I + T)}
    return {"sequence": mi / lengths.seq_length, "overall": mi / lengths.seq_length}


def _min_example(c: ComponentPlan, layout: Layout) -> tuple[int, int]:
    """Smallest (input tokens, target tokens) a component's example can have."""
    return kind_of(c.denoiser).min_example(c, layout)


def max_segments(plans: Sequence[ComponentPlan], lengths: Lengths) -> int:
    """Segments per row ``K`` (the width of the per-segment lists): the most examples planned by
    ``plans`` (at the example budget) that can share a row of ``lengths`` (the real rows)."""
    mins = [_min_example(c, lengths.layout) for c in plans]
    if lengths.layout == "encoder-decoder":
        k = min(
            lengths.inputs_length // min(a for a, _ in mins),
            lengths.targets_length // min(b for _, b in mins),
        )
    else:
        k = lengths.seq_length // min(a for a, _ in mins)
    return max(k, 1)


def mixture_ratio(plans: Sequence[ComponentPlan]) -> float:
    """Expected target tokens per input token over the mixture (encoder-decoder plans):
    ``E[targets] / E[inputs]`` with the components' probabilities."""
    p = np.array([c.probability for c in plans], dtype=np.float64)
    mi = float(p @ np.array([c.mean_input_tokens for c in plans]))
    mt = float(p @ np.array([c.mean_target_tokens for c in plans]))
    return mt / mi


def efficiency_bound(plans: Sequence[ComponentPlan], lengths: Lengths) -> dict[str, float]:
    """Upper bound on packed token efficiency (real tokens / slots) from the ratio argument.

    Every packed example brings ``rho = E[targets]/E[inputs]`` target tokens per input token in
    aggregate, and a row holds at most ``I`` input and ``T`` target tokens, so over many rows
    inputs <= min(1, T / (rho I)) and targets <= min(1, rho I / T). ``plans`` are the plans of
    the examples (at the example budget), ``lengths`` the packed rows. Granularity (whole
    examples of few distinct sizes) can make the true optimum lower; see docs/packing.md."""
    if lengths.layout == "decoder-only":
        return {"sequence": 1.0, "overall": 1.0}
    rho = mixture_ratio(plans)
    I, T = lengths.inputs_length, lengths.targets_length
    ei = min(1.0, T / (rho * I))
    et = min(1.0, rho * I / T)
    return {"ratio": rho, "inputs": ei, "targets": et, "overall": (ei * I + et * T) / (I + T)}


def targets_length_window(
    plans: Sequence[ComponentPlan], inputs_length: int, efficiency: float = 0.98
) -> tuple[int, int]:
    """Integer targets lengths ``T`` for which the ratio bound allows ``>= efficiency`` on both
    sides with rows of ``inputs_length``: ``efficiency * rho * I <= T <= rho * I / efficiency``
    (empty, lo > hi, when ``efficiency`` is 1 and ``rho * I`` is not an integer). Only valid
    while the example plans do not depend on ``T`` (targets budget <= T)."""
    rho = mixture_ratio(plans)
    return math.ceil(efficiency * rho * inputs_length - 1e-9), math.floor(
        rho * inputs_length / efficiency + 1e-9
    )


def plans_for(cfg: PrepareConfig) -> tuple[ComponentPlan, ...]:
    """The component plans of a prepare config (at its example lengths)."""
    return plan(cfg.mixture, cfg.example_lengths)


#: bytes per row of the per-example columns every unpacked row carries (input_length,
#: target_length, denoiser, source_file, example_index, token_offset)
_META_BYTES = 4 + 4 + 1 + 4 + 8 + 8


def disk_estimate(
    plans: Sequence[ComponentPlan], lengths: Lengths, *, compact: bool, id_bytes: int
) -> dict[str, float]:
    """Expected shard bytes of an unpacked Arrow output per row and per raw input token, for one
    epoch (``--epochs K`` writes K corruptions: K times as much). Default rows: int32 ids and
    labels and an int8 mask over the full widths; compact rows: ``id_bytes`` per real token plus
    4-byte list offsets, no mask. Arrow framing (a few hundred bytes per record batch) is left
    out; Parquet is compressed and not estimated."""
    p = np.array([c.probability for c in plans])
    raw = float(p @ np.array([c.raw_length for c in plans]))
    mi = float(p @ np.array([c.mean_input_tokens for c in plans]))
    mt = float(p @ np.array([c.mean_target_tokens for c in plans]))
    enc = lengths.layout == "encoder-decoder"
    meta = _META_BYTES + (0 if enc else 4)  # decoder-only: prefix_length
    if enc:
        wi, wt = lengths.inputs_length, lengths.targets_length
        row = 4.0 * (wi + wt) + wi
        real = mi + mt
    else:
        wi = wt = lengths.seq_length
        row = 9.0 * wi
        real = mi
    if compact:
        row = id_bytes * real + 4 * (2 if enc else 1)
    row += meta
    return {"bytes_per_row": row, "bytes_per_raw_token": row / max(raw, 1.0)}

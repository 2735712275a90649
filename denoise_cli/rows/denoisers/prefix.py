"""The S denoiser (prefix-LM): a raw chunk of ``L`` tokens is split after a prefix uniform on
``[max(1, rint((1-2r)(L-1))), L-1]`` (``r = 0.5`` is T5's ``prefix_lm``); inputs are the prefix,
targets the rest, no sentinel. docs/architecture.md ("rows")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import Denoiser, Lengths
from ..base import IGNORE_INDEX, Rows, SpecialIds
from .base import DenoiserKind, KindPlan


def s_prefix_min(length: int, rate: float) -> int:
    """Smallest prefix length of the S denoiser on a raw chunk of ``length`` tokens."""
    return max(1, round((1.0 - 2.0 * rate) * (length - 1)))


def random_prefix_lengths(
    rng: np.random.Generator, batch: int, length: int, rate: float
) -> np.ndarray:
    """Prefix sizes ``[batch]`` of the S denoiser: uniform on
    ``[max(1, rint((1-2r)(L-1))), L-1]`` (``r=0.5`` is T5's ``prefix_lm``: uniform on
    ``[1, L-1]``)."""
    lo = s_prefix_min(length, rate)
    return rng.integers(lo, length, size=batch, dtype=np.int64)  # high is exclusive: L-1 max


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
        ilen = m + p32 + 1
        # inputs: [mode] prefix EOS pad...; copyto(where=) instead of a boolean assignment
        att = np.arange(I)[None, :] < ilen[:, None]
        ids = np.full((b, I), special.pad, dtype=np.int32)
        if mode_id is not None:
            ids[:, 0] = mode_id
        np.copyto(ids[:, m : m + L], tokens, where=att[:, m : m + L])
        ids[rows, m + p] = special.eos
        # targets: row r is tokens[r, p_r:] EOS -100...: a window of width T at p_r over the
        # row followed by -100s (a row-wise copy from a strided view, no index arrays)
        ext = np.full((b, L + T), IGNORE_INDEX, dtype=np.int32)
        ext[:, :L] = tokens
        if b:
            windows = np.lib.stride_tricks.sliding_window_view(ext.ravel(), T)
            lab = windows[rows * (L + T) + p]
        else:
            lab = ext[:, :T].copy()
        lab[rows, L - p] = special.eos
        tlen = (L - p32 + 1).astype(np.int32)
        plen = m + p32
        return Rows(ids, lab, att.view(np.int8), ilen.astype(np.int32), tlen, plen.astype(np.int32))
    Sx = lengths.seq_length
    ids = np.full((b, Sx), special.pad, dtype=np.int32)
    if mode_id is not None:
        ids[:, 0] = mode_id
    ids[:, m : m + L] = tokens
    ids[:, m + L] = special.eos
    # labels: ids on [m + p, m + L] (suffix and EOS), -100 elsewhere
    lab = np.full((b, Sx), IGNORE_INDEX, dtype=np.int32)
    text = slice(m, m + L + 1)
    suffix = np.arange(m, m + L + 1)[None, :] >= (m + p)[:, None]
    np.copyto(lab[:, text], ids[:, text], where=suffix)
    ilen = np.full(b, m + L + 1, dtype=np.int32)
    tlen = (L - p32 + 1).astype(np.int32)
    plen = m + p32
    att = np.zeros((b, Sx), dtype=np.int8)
    att[:, : m + L + 1] = 1
    return Rows(ids, lab, att, ilen, tlen, plen.astype(np.int32))


class PrefixKind(DenoiserKind):
    """S: prefix-LM with ``rate <= 0.5``."""

    uses_sentinels = False

    def fits(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> bool:
        if lengths.layout == "encoder-decoder":
            lo = s_prefix_min(L, d.rate)
            return m + L <= lengths.inputs_length and L - lo + 1 <= lengths.targets_length
        return m + L + 1 <= lengths.seq_length

    def plan(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> KindPlan:
        lo, hi = s_prefix_min(L, d.rate), L - 1
        mean_p = (lo + hi) / 2.0
        if lengths.layout == "encoder-decoder":
            inp, tgt = m + L, L - lo + 1
            mi, mt = m + mean_p + 1, L - mean_p + 1
        else:
            inp, tgt = m + L + 1, L - lo + 1
            mi, mt = float(inp), L - mean_p + 1
        return KindPlan(0, 0, lo, hi, inp, tgt, mi, mt)

    def min_example(self, c: Any, layout: str) -> tuple[int, int]:
        if layout == "decoder-only":
            return c.input_length, c.target_length  # m + L + 1 whatever the split
        m = 0 if c.mode_token is None else 1
        return m + c.prefix_min + 1, c.raw_length - c.prefix_max + 1

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
        p = random_prefix_lengths(rng, b, L, d.rate)
        return _assemble_prefix(tokens, p, mode_id, special, lengths)


PREFIX = PrefixKind()

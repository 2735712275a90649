"""The S denoiser (prefix-LM): a raw chunk of ``L`` tokens is split after a prefix uniform on
``[max(1, rint((1-2r)(L-1))), L-1]`` (``r = 0.5`` is T5's ``prefix_lm``); inputs are the prefix,
targets the rest, no sentinel. Read back (``check/``): the split follows from the length columns
and the chunk is the prefix followed by the targets. docs/architecture.md ("rows")."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...config import Denoiser, Lengths
from ..base import IGNORE_INDEX, Rows, SpecialIds
from .base import ComponentParams, DenoiserKind, ExpectedLengths, KindPlan, RowsView


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
    no_sentinels_because = "S rows split once and have no sentinels"

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

    def expected_lengths(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        pl: np.ndarray | None,
        enc_dec: bool,
    ) -> ExpectedLengths:
        """The split ``p`` is read from ``input_length`` (encoder-decoder: ``mode + p + EOS``)
        or ``prefix_length`` (``mode + p``); the targets are the other ``L - p`` tokens + EOS."""
        m, L = c.mode, c.raw
        if enc_dec:
            p = il - m - 1
            exp_il, exp_pl = il, None
        else:
            assert pl is not None
            p = pl - m
            exp_il, exp_pl = np.full(len(il), m + L + 1, dtype=np.int64), pl
        bad = (p < c.prefix_min) | (p > c.prefix_max)
        return ExpectedLengths(exp_il, L - p + 1, exp_pl, p, bad)

    def split_problem(self, c: ComponentParams, split: int, il: int) -> str:
        return (
            f"{c.name}: prefix of {split} tokens outside [{c.prefix_min}, "
            f"{c.prefix_max}] (input_length {il})"
        )

    def target_length_note(self, c: ComponentParams, split: int) -> str:
        return f" (raw {c.raw} - prefix {split} + EOS)"

    def invert(
        self, c: ComponentParams, v: RowsView, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        ids, lab = v.input_ids, v.labels
        L = c.raw
        col = np.arange(L)[None, :]
        if v.enc_dec:
            p = v.input_length[idx].astype(np.int64) - c.mode - 1
            head = ids[idx, c.mode : c.mode + L]
            wt = lab.shape[1]
            tail = np.take_along_axis(lab[idx], np.clip(col - p[:, None], 0, wt - 1), axis=1)
            return np.where(col < p[:, None], head, tail), col >= p[:, None]
        assert v.prefix_length is not None
        p = v.prefix_length[idx].astype(np.int64) - c.mode
        return ids[idx, c.mode : c.mode + L].copy(), col >= p[:, None]

    def row_counts(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        sentinels: np.ndarray,
        enc_dec: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The targets (all but EOS) are the "noise"; no spans."""
        noise = tl - 1
        raw = il - c.mode - 1 + tl - 1 if enc_dec else il - c.mode - 1
        return raw, noise, np.zeros_like(il)


PREFIX = PrefixKind()

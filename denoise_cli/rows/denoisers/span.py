"""R and X denoisers (span corruption, T5's ``random_spans_noise_mask``): a raw chunk of ``L``
tokens loses ``n`` noise tokens in ``s`` spans; inputs keep the rest with sentinel ``k`` in place
of span ``k``, targets are ``sentinel k + span k`` for every span. Built without loops: every
row has exactly ``s`` span starts. Read back (``check/``): exactly ``s`` sentinels in order in
inputs and targets, and a scatter that merges the two into the raw chunk.
docs/architecture.md ("rows", "verify")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ...config import Denoiser, Lengths
from ...errors import ConfigError
from ..base import IGNORE_INDEX, Rows, SpecialIds
from ..masks import random_segment_cols
from .base import ComponentParams, DenoiserKind, ExpectedLengths, KindPlan, RowsView


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


def random_span_starts(
    rng: np.random.Generator, batch: int, length: int, rate: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray]:
    """Where the segments of T5's noise mask start, ``(keep, noise)``, each int64
    ``[batch, s]``: non-noise segment ``k`` starts at ``keep[:, k]`` (``keep[:, 0] = 0``) and
    noise span ``k`` at ``noise[:, k]``; segments alternate non-noise, noise, ..., and the row
    ends with noise. The noise items are split first, then the non-noise ones, each by
    :func:`~denoise_cli.rows.masks.random_segment_cols`."""
    n, s = span_counts(length, rate, mean_span)
    nonnoise = length - n
    if s > nonnoise:
        raise ValueError(f"{s} spans need at least {s} non-noise tokens, have {nonnoise}")
    cn = random_segment_cols(rng, batch, n, s)  # noise items before span k
    ck = random_segment_cols(rng, batch, nonnoise, s)  # non-noise items before segment k
    keep = ck + cn
    noise = np.empty_like(keep)
    noise[:, :-1] = ck[:, 1:] + cn[:, :-1]
    noise[:, -1] = nonnoise + cn[:, -1]
    return keep, noise


def random_spans_noise_mask(
    rng: np.random.Generator, batch: int, length: int, rate: float, mean_span: float
) -> np.ndarray:
    """Boolean noise mask ``[batch, length]`` with exactly T5's counts and distribution."""
    keep, noise = random_span_starts(rng, batch, length, rate, mean_span)
    return _noise_mask(keep, noise, length).reshape(batch, length)


def _noise_mask(keep: np.ndarray, noise: np.ndarray, length: int) -> np.ndarray:
    """The flat noise mask ``[batch * length]`` of segment starts: the running parity of a
    toggle where each segment but the first starts (a row ends with noise, so a row start
    toggles back to non-noise). The parity is a prefix XOR over the toggles packed into 64-bit
    words (six shifts within a word, then each word's carry), ~3x faster than ``np.cumsum``."""
    b = len(keep)
    size = b * length
    toggles = np.zeros(-(-size // 64) * 64, dtype=bool)
    base = (np.arange(b, dtype=np.int64) * length)[:, None]
    toggles[(noise + base).ravel()] = True
    toggles[(keep + base).ravel()[1:]] = True
    x = np.packbits(toggles, bitorder="little").view("<u8")  # item j of a word is bit j
    for shift in (1, 2, 4, 8, 16, 32):
        x ^= x << np.uint64(shift)
    carry = np.bitwise_xor.accumulate(x >> np.uint64(63))  # parity up to the end of each word
    x[1:] ^= np.uint64(0) - carry[:-1]  # all ones where the words before hold an odd count
    return np.unpackbits(x.view(np.uint8), bitorder="little")[:size].view(bool)


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


def span_corrupt_at(
    tokens: np.ndarray, keep: np.ndarray, noise: np.ndarray, sentinels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`span_corrupt` from the segment starts of :func:`random_span_starts`: the same
    inputs ``[B, L-n+s]`` and targets ``[B, n+s]``, with the sentinels put at the starts
    directly (no shifted masks) and ``np.compress`` for the gathers."""
    b, length = tokens.shape
    s = keep.shape[1]
    if b == 0:
        return tokens[:, :0], tokens[:, :0]
    if s > len(sentinels):
        raise ValueError(f"{s} spans need {s} sentinels, only {len(sentinels)} available")
    n = length + int(keep[0].sum()) - int(noise[0].sum())  # noise tokens in a row
    mask = _noise_mask(keep, noise, length)
    base = (np.arange(b, dtype=np.int64) * length)[:, None]
    at_noise, at_keep = (noise + base).ravel(), (keep + base).ravel()
    sent = np.tile(sentinels[:s].astype(tokens.dtype), b)
    flat = tokens.ravel()
    vals = flat.copy()
    # inputs: the non-noise tokens, and sentinel k on the first token of span k
    vals[at_noise] = sent
    sel = ~mask
    sel[at_noise] = True
    inputs = np.compress(sel, vals).reshape(b, length - n + s)
    # targets: sentinel k on the first token of non-noise segment k, then span k
    vals[at_noise] = flat[at_noise]
    vals[at_keep] = sent
    sel = mask.copy()
    sel[at_keep] = True
    targets = np.compress(sel, vals).reshape(b, n + s)
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
        keep, noise = random_span_starts(rng, b, L, d.rate, d.mean_span)
        inputs, targets = span_corrupt_at(tokens, keep, noise, special.sentinels)
        return _assemble_fixed(b, mode_id, inputs, targets, special, lengths)

    def expected_lengths(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        pl: np.ndarray | None,
        enc_dec: bool,
    ) -> ExpectedLengths:
        m, L, nz, sp = c.mode, c.raw, c.noise, c.spans
        n = len(il)

        def full(x: int) -> np.ndarray:
            return np.full(n, x, dtype=np.int64)

        if enc_dec:
            exp_il, exp_pl = full(m + L - nz + sp + 1), None
        else:
            exp_il, exp_pl = full(m + L + 2 * sp + 1), full(m + L - nz + sp)
        return ExpectedLengths(exp_il, full(nz + sp + 1), exp_pl, full(0), np.zeros(n, bool))

    def input_length_note(self, c: ComponentParams, split: int, enc_dec: bool) -> str:
        if not enc_dec:
            return ""
        return f" (mode {c.mode} + raw {c.raw} - noise {c.noise} + {c.spans} sentinels + EOS)"

    def target_length_note(self, c: ComponentParams, split: int) -> str:
        return f" (noise {c.noise} + {c.spans} sentinels + EOS)"

    def structure_problems(
        self, c: ComponentParams, v: RowsView, idx: np.ndarray
    ) -> list[tuple[int, str]]:
        """Sentinels ``0..s-1`` in order in the inputs and in the targets, the inputs ending with
        the last one, the targets starting with sentinel 0, no empty kept segment or span."""
        _, _, ci, ct, i0, t0 = regions(c, v, idx)
        tname = "input_ids" if not v.enc_dec else "labels"
        k, S0, tok, sentinels = c.spans, v.sent0, v.tok, v.sentinels
        out: list[tuple[int, str]] = []
        si, st = ci >= S0, ct >= S0
        ni, nt = si.sum(axis=1), st.sum(axis=1)
        bad = (ni != k) | (nt != k)
        for j in np.flatnonzero(bad):
            out.append(
                (
                    int(idx[j]),
                    f"{c.name}: {ni[j]} sentinels in the inputs and {nt[j]} in the "
                    f"targets, its parameters give {k} spans",
                )
            )
        good = np.flatnonzero(~bad)
        if not len(good):
            return out
        ci, ct, si, st = ci[good], ct[good], si[good], st[good]
        b = len(good)
        ipos = np.nonzero(si)[1].reshape(b, k)
        tpos = np.nonzero(st)[1].reshape(b, k)
        want = np.arange(k)
        ik = np.take_along_axis(ci, ipos, axis=1) - S0
        tk = np.take_along_axis(ct, tpos, axis=1) - S0
        wi_c, wt_c = ci.shape[1], ct.shape[1]
        checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
            (
                (ik != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in input_ids: column {i0 + ipos[j][_first(ik[j] != want)]} "
                    f"holds {tok(sentinels[ik[j][_first(ik[j] != want)]])} where "
                    f"{tok(sentinels[_first(ik[j] != want)])} belongs"
                ),
            ),
            (
                (tk != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in {tname}: column {t0 + tpos[j][_first(tk[j] != want)]} "
                    f"holds {tok(sentinels[tk[j][_first(tk[j] != want)]])} where "
                    f"{tok(sentinels[_first(tk[j] != want)])} belongs"
                ),
            ),
            (
                ipos[:, -1] != wi_c - 1,
                lambda j: (
                    f"{c.name}: the inputs do not end with the last sentinel (input_ids[{i0 + wi_c - 1}])"
                ),
            ),
            (
                tpos[:, 0] != 0,
                lambda j: f"{c.name}: the targets do not start with sentinel 0 ({tname}[{t0}])",
            ),
            (
                (ipos[:, 0] == 0) | (np.diff(ipos, axis=1) == 1).any(axis=1),
                lambda j: (
                    f"{c.name}: empty kept segment before sentinel "
                    f"{_first(np.diff(np.concatenate([[-1], ipos[j]])) == 1)} in input_ids"
                ),
            ),
            (
                (np.diff(tpos, axis=1) == 1).any(axis=1) | (tpos[:, -1] == wt_c - 1),
                lambda j: (
                    f"{c.name}: empty noise span after sentinel "
                    f"{_first(np.diff(np.concatenate([tpos[j], [wt_c]])) == 1)} in {tname}"
                ),
            ),
        ]
        flagged = np.zeros(b, dtype=bool)
        for bad_j, describe in checks:
            bad_j = bad_j & ~flagged
            for j in np.flatnonzero(bad_j):
                out.append((int(idx[good[j]]), describe(int(j))))
            flagged |= bad_j
        return out

    def invert(
        self, c: ComponentParams, v: RowsView, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A scatter: kept token ``j`` of input segment ``g`` and noise token ``j`` of span ``g``
        go to their chunk positions, computed from the sentinel positions."""
        inp, tgt, ci, ct, _, _ = regions(c, v, idx)
        b, L, k = len(idx), c.raw, c.spans
        si, st = ci >= v.sent0, ct >= v.sent0
        ipos = np.nonzero(si)[1].reshape(b, k)
        tpos = np.nonzero(st)[1].reshape(b, k)
        kk = np.arange(k)
        # kept token at input column j of segment g: j - g + (noise before segment g = tpos_g - g)
        seg = np.cumsum(si, axis=1)
        pos_i = (
            np.arange(inp.shape[1])[None, :]
            - seg
            + np.take_along_axis(tpos - kk, np.minimum(seg, k - 1), axis=1)
        )
        # noise token at target column j of span g: j - g - 1 + (kept through segment g = ipos_g - g)
        spn = np.cumsum(st, axis=1) - 1
        pos_t = (
            np.arange(tgt.shape[1])[None, :]
            - spn
            - 1
            + np.take_along_axis(ipos - kk, np.maximum(spn, 0), axis=1)
        )
        out = np.empty((b, L), dtype=inp.dtype)
        noise = np.zeros((b, L), dtype=bool)
        ri, rt = np.nonzero(~si), np.nonzero(~st)
        out[ri[0], pos_i[~si]] = inp[~si]
        out[rt[0], pos_t[~st]] = tgt[~st]
        noise[rt[0], pos_t[~st]] = True
        return out, noise

    def row_counts(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        sentinels: np.ndarray,
        enc_dec: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``s`` sentinels in the inputs (decoder-only: ``2s``, the targets are in
        ``input_ids`` too); ``n = target_length - 1 - s``; the raw chunk is the kept tokens
        plus ``n``."""
        s = sentinels if enc_dec else sentinels // 2
        noise = tl - 1 - s
        raw = il - c.mode - 1 - s + noise if enc_dec else il - c.mode - 1 - 2 * s
        return raw, noise, s


def regions(
    c: ComponentParams, v: RowsView, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Inputs and targets of span rows ``idx`` (fixed widths), their classes, and the column
    where each starts in its array."""
    wi_c = c.raw - c.noise + c.spans
    wt_c = c.noise + c.spans
    i0 = c.mode
    ids, lab = v.input_ids, v.labels
    inp = ids[idx, i0 : i0 + wi_c]
    ci = v.code[idx, i0 : i0 + wi_c] if v.code is not None else v.classes(inp)
    if v.enc_dec:
        t0 = 0
        tgt = lab[idx, :wt_c]
        ct = v.lcode[idx, :wt_c] if v.lcode is not None else v.classes(tgt)
    else:
        t0 = i0 + wi_c
        tgt = ids[idx, t0 : t0 + wt_c]
        ct = v.code[idx, t0 : t0 + wt_c] if v.code is not None else v.classes(tgt)
    return inp, tgt, ci, ct, i0, t0


def _first(mask_row: np.ndarray) -> int:
    """The first True column of a boolean row."""
    return int(np.flatnonzero(mask_row)[0])


SPAN = SpanKind()

"""Vectorized checks of the rows of one record batch (``verify`` step 2) and the rebuild of
each row's raw chunk from its inputs and targets (step 3); packed rows get their segment
structure checked first (:func:`packed_checks`). numpy over the ``[n, W]`` columns plus one
lookup-table gather that turns ids into classes; see docs/architecture.md ("verify").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .spec import IGNORE, MODE, OTHER, PAD, SENT0, Component, OutputSpec


def first_col(mask_row: np.ndarray) -> int:
    """The first True column of a boolean row."""
    return int(np.flatnonzero(mask_row)[0])


def _expected_side(
    seglen: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From per-segment lengths ``[R, K]`` (0 = none): (the segments fit ``width`` ``[R]``,
    expected segment ids ``[R, width]``, expected positions, real-token mask, total)."""
    R, K = seglen.shape
    sl = np.maximum(seglen.astype(np.int64), 0)
    tot = sl.sum(axis=1)
    fits = tot <= width
    sl = np.where(fits[:, None], sl, 0)
    real = np.arange(width)[None, :] < np.where(fits, tot, 0)[:, None]
    flat = sl.ravel()
    segno = np.repeat(np.tile(np.arange(1, K + 1, dtype=np.int32), R), flat)
    starts = np.cumsum(flat) - flat
    pos = np.arange(int(flat.sum()), dtype=np.int64) - np.repeat(starts, flat)
    es = np.zeros((R, width), dtype=np.int32)
    es[real] = segno
    ep = np.zeros((R, width), dtype=np.int32)
    ep[real] = pos
    return fits, es, ep, real, tot


def packed_checks(
    a: dict[str, np.ndarray], spec: OutputSpec, limit: int
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Structure of packed rows: ``num_segments`` in ``1..K``; per-segment lengths within the
    example budget and metadata set exactly on the first ``num_segments`` slots; segments in
    example order; on each side, segment ids ``1..k`` in contiguous runs of the segment lengths
    and 0 only on the padding at the end, positions restarting at 0 per segment, pad / -100 on
    the padding, ``attention_mask == (segment ids > 0)``, row lengths = sums of the segment
    lengths; decoder-only ``prefix_mask`` = each segment's first ``prefix_length`` tokens.
    Returns (row, message) and the mask of rows that pass (only those can be unpacked)."""
    s = spec
    W, V = s.packed_widths
    K = s.max_segments
    C = len(s.comps)
    ns = a["num_segments"].astype(np.int64)
    n = len(ns)
    ok = np.ones(n, dtype=bool)
    msgs: list[tuple[int, str]] = []

    def flag(bad: Any, describe: Callable[[int], str]) -> None:
        bad = np.asarray(bad, dtype=bool) & ok
        if bad.any():
            for r in np.flatnonzero(bad)[:limit]:
                msgs.append((int(r), describe(int(r))))
            ok[bad] = False

    flag(
        (ns < 1) | (ns > K),
        lambda r: f"num_segments {ns[r]} outside 1..{K} (the manifest's packing.max_segments)",
    )
    valid = np.arange(K)[None, :] < np.where(ok, ns, 0)[:, None]
    sil = a["segment_input_length"].astype(np.int64)
    stl = a["segment_target_length"].astype(np.int64)
    den = a["segment_denoiser"].astype(np.int64)
    ex, off = a["segment_example_index"], a["segment_token_offset"]
    spl = a["segment_prefix_length"].astype(np.int64) if not s.enc_dec else None
    bad_seg = valid & (
        (sil < 1) | (sil > s.wi) | (stl < 1) | (stl > s.wt) | (den < 0) | (den >= C) | (ex < 0)
    )
    bad_seg |= valid & (off < 0)
    if spl is not None:
        bad_seg |= valid & ((spl < 0) | (spl > sil))

    def seg_desc(r: int) -> str:
        j = first_col(bad_seg[r])
        return (
            f"segment {j + 1}: input/target length {sil[r, j]}/{stl[r, j]}"
            + (f", prefix_length {spl[r, j]}" if spl is not None else "")
            + f", denoiser {den[r, j]}, example_index {ex[r, j]}, token_offset {off[r, j]} "
            f"(lengths must be in 1..{s.wi}/1..{s.wt}, the example budget; denoiser 0..{C - 1})"
        )

    flag(bad_seg.any(axis=1), seg_desc)
    empty = ~valid & ((sil != 0) | (stl != 0) | (den != -1) | (ex != -1) | (off != -1))
    if spl is not None:
        empty |= ~valid & (spl != 0)
    flag(
        empty.any(axis=1),
        lambda r: (
            f"segment slot {first_col(empty[r]) + 1} is beyond num_segments {ns[r]} but not empty "
            "(lengths 0, metadata -1)"
        ),
    )
    order = valid[:, 1:] & (ex[:, 1:] <= ex[:, :-1])
    flag(
        order.any(axis=1),
        lambda r: (
            f"segment {first_col(order[r]) + 2} holds example {ex[r, first_col(order[r]) + 1]} "
            f"after example {ex[r, first_col(order[r])]} (segments are numbered in example order)"
        ),
    )
    okv = ok[:, None] & valid

    def mismatch(
        bad: np.ndarray, got: np.ndarray, col: str, tail: Callable[[int, int], str]
    ) -> None:
        flag(
            bad.any(axis=1),
            lambda r: (
                f"{col}[{first_col(bad[r])}] is {got[r, first_col(bad[r])]}"
                + tail(r, first_col(bad[r]))
            ),
        )

    def side(
        segc: str, posc: str, sl: np.ndarray, width: int, tokc: str, fill: int, lenc: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fits, es, ep, real, tot = _expected_side(sl, width)
        flag(
            ~fits,
            lambda r: f"the segments hold {tot[r]} tokens of {tokc}, the row has {width} slots",
        )
        seg, pos, tok = a[segc], a[posc], a[tokc]
        rl = a[lenc].astype(np.int64)
        flag(rl != tot, lambda r: f"{lenc} {rl[r]}, the segment lengths add up to {tot[r]}")
        mismatch(
            seg != es,
            seg,
            segc,
            lambda r, j: (
                f", expected {es[r, j]} (segment ids 1..num_segments in contiguous runs of the "
                "segment lengths, 0 only on the padding at the end)"
            ),
        )
        mismatch(
            pos != ep,
            pos,
            posc,
            lambda r, j: (
                f", expected {ep[r, j]} (positions restart at 0 in every segment, 0 on the padding)"
            ),
        )
        mismatch(
            ~real & (tok != fill),
            tok,
            tokc,
            lambda r, j: f" on the padding after the segments, not {fill}",
        )
        return real, ep, fits

    sil0 = np.where(okv, sil, 0)
    real, ep, fits = side(
        "encoder_segment_ids" if s.enc_dec else "segment_ids",
        "encoder_positions" if s.enc_dec else "positions",
        sil0,
        W,
        "input_ids",
        s.pad,
        "input_length",
    )
    segname = "encoder_segment_ids" if s.enc_dec else "segment_ids"
    att = a["attention_mask"]
    mismatch(att != real, att, "attention_mask", lambda r, j: f", not ({segname} > 0)")
    if s.enc_dec:
        stl0 = np.where(okv, stl, 0)
        side(
            "decoder_segment_ids",
            "decoder_positions",
            stl0,
            V,
            "labels",
            IGNORE,
            "target_length",
        )
    elif spl is not None:
        lab = a["labels"]
        mismatch(~real & (lab != IGNORE), lab, "labels", lambda r, j: " on the padding, not -100")
        ptok = np.zeros(real.shape, dtype=np.int64)
        ptok[real] = np.repeat(
            np.where(okv, spl, 0).ravel(), np.where(fits[:, None], sil0, 0).ravel()
        )
        pmask = a["prefix_mask"]
        mismatch(
            pmask != (real & (ep < ptok)),
            pmask,
            "prefix_mask",
            lambda r, j: ", expected 1 exactly on each segment's first prefix_length tokens",
        )
        tl = a["target_length"].astype(np.int64)
        tsum = np.where(okv, stl, 0).sum(axis=1)
        flag(
            tl != tsum,
            lambda r: f"target_length {tl[r]}, the segment target lengths add up to {tsum[r]}",
        )
    return sorted(msgs), ok


class RowChecker:
    """Vectorized checks of one record batch; see the module docstring (step 2)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.s = spec
        self.isspan = np.array([c.span for c in spec.comps], dtype=bool)
        self.m = spec.table("mode")
        self.mode_id = spec.table("mode_id")
        self.raw = spec.table("raw")
        self.noise = spec.table("noise")
        self.spans = spec.table("spans")
        self.pmin = spec.table("prefix_min")
        self.pmax = spec.table("prefix_max")

    def check(
        self, a: dict[str, np.ndarray], limit: int
    ) -> tuple[list[tuple[int, str]], np.ndarray]:
        """(row, message) for up to ``limit`` rows per check, and the mask of rows that pass."""
        s = self.s
        ids, lab, att = a["input_ids"], a["labels"], a["attention_mask"]
        il, tl, den = (
            a["input_length"].astype(np.int64),
            a["target_length"].astype(np.int64),
            a["denoiser"],
        )
        pl = a["prefix_length"].astype(np.int64) if "prefix_length" in a else None
        n = len(den)
        ok = np.ones(n, dtype=bool)
        msgs: list[tuple[int, str]] = []

        def flag(bad: Any, describe: Callable[[int], str]) -> None:
            bad = np.asarray(bad, dtype=bool) & ok
            if bad.any():
                for r in np.flatnonzero(bad)[:limit]:
                    msgs.append((int(r), describe(int(r))))
                ok[bad] = False

        C = len(s.comps)
        flag(
            (den < 0) | (den >= C),
            lambda r: f"denoiser {den[r]} is not a mixture component (0..{C - 1})",
        )
        dc = np.where(ok, den, 0).astype(np.int64)
        comp = s.comps

        flag(
            (ids.view(np.uint32) >= s.vocab).any(axis=1),
            lambda r: (
                f"input_ids column {first_col(ids[r].view(np.uint32) >= s.vocab)} holds "
                f"{ids[r][first_col(ids[r].view(np.uint32) >= s.vocab)]}, outside the vocabulary "
                f"of {s.vocab:,} (manifest tokenizer.vocab_size)"
            ),
        )
        lbad = (lab != IGNORE) & (lab.view(np.uint32) >= s.vocab)
        flag(
            lbad.any(axis=1),
            lambda r: (
                f"labels column {first_col(lbad[r])} holds {lab[r][first_col(lbad[r])]}, neither -100 "
                f"nor within the vocabulary of {s.vocab:,}"
            ),
        )
        bad_len = (il < 1) | (il > s.wi) | (tl < 1) | (tl > s.wt)
        if pl is not None:
            bad_len |= (pl < 0) | (pl > il)
        flag(
            bad_len,
            lambda r: (
                f"input_length {il[r]} / target_length {tl[r]}"
                + (f" / prefix_length {pl[r]}" if pl is not None else "")
                + f" outside the row widths {s.wi}/{s.wt}"
            ),
        )
        ilc = np.clip(il, 1, s.wi)[:, None]
        tlc = np.clip(tl, 1, s.wt)[:, None]
        col = np.arange(s.wi)[None, :]
        real = col < ilc
        abad = (att != 0) != real
        flag(
            abad.any(axis=1),
            lambda r: (
                f"attention_mask[{first_col(abad[r])}] is {att[r][first_col(abad[r])]}, expected "
                f"{int(first_col(abad[r]) < il[r])} (input_length {il[r]})"
            ),
        )
        pbad = (ids != s.pad) & ~real
        flag(
            pbad.any(axis=1),
            lambda r: (
                f"padding only at the end: input_ids[{first_col(pbad[r])}] is "
                f"{s.tok(ids[r][first_col(pbad[r])])} after input_length {il[r]}"
            ),
        )
        if s.enc_dec:
            colt = np.arange(s.wt)[None, :]
            ign = lab == IGNORE
            lbad2 = ign != (colt >= tlc)
            flag(
                lbad2.any(axis=1),
                lambda r: (
                    f"labels[{first_col(lbad2[r])}] is {lab[r][first_col(lbad2[r])]}: -100 must be "
                    f"exactly from target_length {tl[r]} on"
                ),
            )
        else:
            assert pl is not None
            want = np.where((col >= pl[:, None]) & real, ids, IGNORE)
            lbad2 = lab != want
            flag(
                lbad2.any(axis=1),
                lambda r: (
                    f"labels[{first_col(lbad2[r])}] is {lab[r][first_col(lbad2[r])]}, expected "
                    f"{want[r][first_col(lbad2[r])]} (labels = input_ids on [prefix_length "
                    f"{pl[r]}, input_length {il[r]}), -100 elsewhere)"
                ),
            )

        # lengths the component's parameters dictate
        m, L, nz, sp = self.m[dc], self.raw[dc], self.noise[dc], self.spans[dc]
        span = self.isspan[dc]
        if s.enc_dec:
            p = il - m - 1
            exp_il = np.where(span, m + L - nz + sp + 1, il)
            exp_tl = np.where(span, nz + sp + 1, L - p + 1)
            exp_pl = None
        else:
            assert pl is not None
            p = pl - m
            exp_il = np.where(span, m + L + 2 * sp + 1, m + L + 1)
            exp_tl = np.where(span, nz + sp + 1, L - p + 1)
            exp_pl = np.where(span, m + L - nz + sp, pl)
        pbad_s = ~span & ((p < self.pmin[dc]) | (p > self.pmax[dc]))
        flag(
            pbad_s,
            lambda r: (
                f"{comp[dc[r]].name}: prefix of {p[r]} tokens outside [{comp[dc[r]].prefix_min}, "
                f"{comp[dc[r]].prefix_max}] (input_length {il[r]})"
            ),
        )
        flag(
            il != exp_il,
            lambda r: (
                f"{comp[dc[r]].name}: input_length {il[r]}, its parameters give {exp_il[r]}"
                + (
                    f" (mode {m[r]} + raw {L[r]} - noise {nz[r]} + {sp[r]} sentinels + EOS)"
                    if span[r] and s.enc_dec
                    else ""
                )
            ),
        )
        flag(
            tl != exp_tl,
            lambda r: (
                f"{comp[dc[r]].name}: target_length {tl[r]}, its parameters give {exp_tl[r]}"
                + (
                    f" (noise {nz[r]} + {sp[r]} sentinels + EOS)"
                    if span[r]
                    else f" (raw {L[r]} - prefix {p[r]} + EOS)"
                )
            ),
        )
        if exp_pl is not None:
            assert pl is not None
            flag(
                pl != exp_pl,
                lambda r: (
                    f"{comp[dc[r]].name}: prefix_length {pl[r]}, its parameters give {exp_pl[r]}"
                ),
            )

        # mode token first, EOS last
        mid = self.mode_id[dc]
        flag(
            (m == 1) & (ids[:, 0] != mid),
            lambda r: (
                f"input_ids[0] is {s.tok(ids[r, 0])}, {comp[dc[r]].name} rows start with "
                f"{comp[dc[r]].mode_token}"
            ),
        )
        rows = np.arange(n)
        last = ids[rows, np.clip(il, 1, s.wi) - 1]
        flag(
            last != s.eos,
            lambda r: f"input_ids[{il[r] - 1}] (last real token) is {s.tok(last[r])}, not EOS",
        )
        if s.enc_dec:
            lastt = lab[rows, np.clip(tl, 1, s.wt) - 1]
            flag(
                lastt != s.eos,
                lambda r: f"labels[{tl[r] - 1}] (last target) is {s.tok(lastt[r])}, not EOS",
            )

        # classes of the ids inside the text
        code = np.take(s.lut, ids, mode="clip")
        inside = (col >= m[:, None]) & (col < ilc - 1)
        obad = (code == OTHER) & inside
        flag(
            obad.any(axis=1),
            lambda r: (
                f"input_ids[{first_col(obad[r])}] is {s.tok(ids[r][first_col(obad[r])])}, a "
                "special token of the tokenizer, where only text may stand"
            ),
        )
        rbad = ((code == PAD) | (code == MODE)) & inside
        flag(
            rbad.any(axis=1),
            lambda r: (
                f"input_ids[{first_col(rbad[r])}] is {s.tok(ids[r][first_col(rbad[r])])} inside the "
                f"row's tokens (pad and mode tokens only belong at the end / in column 0)"
            ),
        )
        sent_in = (code >= SENT0) & inside
        lcode: np.ndarray | None = None
        if s.enc_dec:
            lcode = np.take(s.lut, lab, mode="clip")
            linside = np.arange(s.wt)[None, :] < tlc - 1
            lobad = (lcode == OTHER) & linside
            flag(
                lobad.any(axis=1),
                lambda r: (
                    f"labels[{first_col(lobad[r])}] is {s.tok(lab[r][first_col(lobad[r])])}, a "
                    "special token of the tokenizer, where only text may stand"
                ),
            )
            lrbad = ((lcode == PAD) | (lcode == MODE)) & linside
            flag(
                lrbad.any(axis=1),
                lambda r: (
                    f"labels[{first_col(lrbad[r])}] is {s.tok(lab[r][first_col(lrbad[r])])} inside the targets"
                ),
            )
            sent_t = (lcode >= SENT0) & linside
            has_sent = sent_in.any(axis=1) | sent_t.any(axis=1)
        else:
            has_sent = sent_in.any(axis=1)
        flag(
            ~span & has_sent,
            lambda r: (
                f"{comp[dc[r]].name} row holds sentinel "
                f"{s.tok(ids[r][first_col(sent_in[r])] if sent_in[r].any() else lab[r][first_col(sent_t[r])])}"
                " (S rows split once and have no sentinels)"
            ),
        )

        # span rows: sentinels 0..s-1 in order in the inputs and in the targets, no empty part
        for c in comp:
            if not c.span:
                continue
            idx = np.flatnonzero(ok & (dc == c.index))
            if not len(idx):
                continue
            for r, msg in self._span_structure(c, ids, lab, code, lcode, idx)[:limit]:
                if ok[r]:
                    msgs.append((r, msg))
                    ok[r] = False
        return sorted(msgs), ok

    def regions(
        self,
        c: Component,
        ids: np.ndarray,
        lab: np.ndarray,
        idx: np.ndarray,
        code: np.ndarray | None = None,
        lcode: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Inputs and targets of span rows ``idx`` (fixed widths), their classes, and the column
        where each starts in its array."""
        s = self.s
        wi_c = c.raw - c.noise + c.spans
        wt_c = c.noise + c.spans
        i0 = c.mode
        inp = ids[idx, i0 : i0 + wi_c]
        ci = code[idx, i0 : i0 + wi_c] if code is not None else np.take(s.lut, inp, mode="clip")
        if s.enc_dec:
            t0 = 0
            tgt = lab[idx, :wt_c]
            ct = lcode[idx, :wt_c] if lcode is not None else np.take(s.lut, tgt, mode="clip")
        else:
            t0 = i0 + wi_c
            tgt = ids[idx, t0 : t0 + wt_c]
            ct = code[idx, t0 : t0 + wt_c] if code is not None else np.take(s.lut, tgt, mode="clip")
        return inp, tgt, ci, ct, i0, t0

    def _span_structure(
        self,
        c: Component,
        ids: np.ndarray,
        lab: np.ndarray,
        code: np.ndarray,
        lcode: np.ndarray | None,
        idx: np.ndarray,
    ) -> list[tuple[int, str]]:
        s = self.s
        _, _, ci, ct, i0, t0 = self.regions(c, ids, lab, idx, code, lcode)
        tname = "input_ids" if not s.enc_dec else "labels"
        k = c.spans
        out: list[tuple[int, str]] = []
        si, st = ci >= SENT0, ct >= SENT0
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
        ik = np.take_along_axis(ci, ipos, axis=1) - SENT0
        tk = np.take_along_axis(ct, tpos, axis=1) - SENT0
        wi_c, wt_c = ci.shape[1], ct.shape[1]
        checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
            (
                (ik != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in input_ids: column {i0 + ipos[j][first_col(ik[j] != want)]} "
                    f"holds {s.tok(s.sentinels[ik[j][first_col(ik[j] != want)]])} where "
                    f"{s.tok(s.sentinels[first_col(ik[j] != want)])} belongs"
                ),
            ),
            (
                (tk != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in {tname}: column {t0 + tpos[j][first_col(tk[j] != want)]} "
                    f"holds {s.tok(s.sentinels[tk[j][first_col(tk[j] != want)]])} where "
                    f"{s.tok(s.sentinels[first_col(tk[j] != want)])} belongs"
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
                    f"{first_col(np.diff(np.concatenate([[-1], ipos[j]])) == 1)} in input_ids"
                ),
            ),
            (
                (np.diff(tpos, axis=1) == 1).any(axis=1) | (tpos[:, -1] == wt_c - 1),
                lambda j: (
                    f"{c.name}: empty noise span after sentinel "
                    f"{first_col(np.diff(np.concatenate([tpos[j], [wt_c]])) == 1)} in {tname}"
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

    def rebuild(
        self, a: dict[str, np.ndarray], idx: np.ndarray, c: Component
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw chunks ``[len(idx), raw]`` of valid rows ``idx`` of component ``c``, and the
        noise/target mask (True where the token came from the targets)."""
        s = self.s
        ids, lab = a["input_ids"], a["labels"]
        b, L = len(idx), c.raw
        col = np.arange(L)[None, :]
        if not c.span:
            if s.enc_dec:
                p = a["input_length"][idx].astype(np.int64) - c.mode - 1
                head = ids[idx, c.mode : c.mode + L]
                wt = lab.shape[1]
                tail = np.take_along_axis(lab[idx], np.clip(col - p[:, None], 0, wt - 1), axis=1)
                return np.where(col < p[:, None], head, tail), col >= p[:, None]
            p = a["prefix_length"][idx].astype(np.int64) - c.mode
            return ids[idx, c.mode : c.mode + L].copy(), col >= p[:, None]
        inp, tgt, ci, ct, _, _ = self.regions(c, ids, lab, idx)
        k = c.spans
        si, st = ci >= SENT0, ct >= SENT0
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

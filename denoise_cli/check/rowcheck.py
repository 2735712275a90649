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

"""Vectorized checks of the rows of one record batch (``verify`` step 2) and the rebuild of
each row's raw chunk from its inputs and targets (step 3); packed rows get their segment
structure checked first (:func:`packed_checks`). numpy over the ``[n, W]`` columns plus one
lookup-table gather that turns ids into classes. What depends on the denoiser kind (the lengths
its parameters dictate, the layout of its tokens, the inversion) is asked of the component's
``rows.denoisers`` kind; nothing here knows span from prefix rows. See docs/architecture.md
("verify").
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
        #: per component: whether its kind writes sentinels at all
        self.sentinels = np.array([c.kind.uses_sentinels for c in spec.comps], dtype=bool)
        self.m = spec.table("mode")
        self.mode_id = spec.table("mode_id")
        self.raw = spec.table("raw")

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

        # lengths the component's parameters dictate (its kind says which)
        m = self.m[dc]
        exp_il, exp_tl = il.copy(), tl.copy()
        exp_pl = pl.copy() if pl is not None else None
        split = np.zeros(n, dtype=np.int64)
        bad_split = np.zeros(n, dtype=bool)
        for c in comp:
            i = np.flatnonzero(dc == c.index)
            if not len(i):
                continue
            e = c.kind.expected_lengths(
                c, il[i], tl[i], pl[i] if pl is not None else None, s.enc_dec
            )
            exp_il[i], exp_tl[i], split[i], bad_split[i] = (
                e.input_length,
                e.target_length,
                e.split,
                e.bad_split,
            )
            if exp_pl is not None and e.prefix_length is not None:
                exp_pl[i] = e.prefix_length
        flag(bad_split, lambda r: comp[dc[r]].kind.split_problem(comp[dc[r]], split[r], il[r]))
        flag(
            il != exp_il,
            lambda r: (
                f"{comp[dc[r]].name}: input_length {il[r]}, its parameters give {exp_il[r]}"
                + comp[dc[r]].kind.input_length_note(comp[dc[r]], split[r], s.enc_dec)
            ),
        )
        flag(
            tl != exp_tl,
            lambda r: (
                f"{comp[dc[r]].name}: target_length {tl[r]}, its parameters give {exp_tl[r]}"
                + comp[dc[r]].kind.target_length_note(comp[dc[r]], split[r])
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
            ~self.sentinels[dc] & has_sent,
            lambda r: (
                f"{comp[dc[r]].name} row holds sentinel "
                f"{s.tok(ids[r][first_col(sent_in[r])] if sent_in[r].any() else lab[r][first_col(sent_t[r])])}"
                f" ({comp[dc[r]].kind.no_sentinels_because})"
            ),
        )

        # the layout of the tokens each kind writes (span rows: sentinels 0..s-1 in order in the
        # inputs and in the targets, no empty part)
        v = s.view(a, code, lcode)
        for c in comp:
            idx = np.flatnonzero(ok & (dc == c.index))
            if not len(idx):
                continue
            for r, msg in c.kind.structure_problems(c, v, idx)[:limit]:
                if ok[r]:
                    msgs.append((r, msg))
                    ok[r] = False
        return sorted(msgs), ok

    def rebuild(
        self, a: dict[str, np.ndarray], idx: np.ndarray, c: Component
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw chunks ``[len(idx), raw]`` of valid rows ``idx`` of component ``c``, and the
        noise/target mask (True where the token came from the targets): its kind's inversion."""
        return c.kind.invert(c, self.s.view(a), idx)

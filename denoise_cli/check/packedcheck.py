"""Structure checks of packed rows (``verify`` step 2 for ``prepare --pack`` outputs): segment
counts, per-segment metadata, segment ids in contiguous runs, positions restarting at 0, padding,
masks and row lengths; only the rows that pass are unpacked into examples for the row checks
(:mod:`.rowcheck`). See docs/architecture.md ("verify")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .rowcheck import first_col
from .spec import IGNORE, OutputSpec


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

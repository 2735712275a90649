"""What ``check/`` asks a denoiser kind (``rows.denoisers``: expected lengths, structure checks,
inversion, stats counts), vectorized over the rows of one component, against rows built one at
a time by the slow references of ``tests/reference.py`` (which import nothing of the package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import reference as ref

from denoise_cli.rows.denoisers import KINDS
from denoise_cli.rows.denoisers.base import RowsView

EOS, PAD, MODE, S0ID = 500, 501, 502, 600  # text ids are < 500; sentinel k is 600 + k
SENT0 = 16  # class of sentinel 0 in the lookup table below
LUT = np.zeros(700, dtype=np.int16)
LUT[EOS], LUT[PAD], LUT[MODE] = 1, 2, 3
LUT[S0ID:] = SENT0 + np.arange(700 - S0ID)
SENTINELS = np.arange(S0ID, 700)


@dataclass(frozen=True)
class Comp:
    name: str
    mode: int
    raw: int
    noise: int
    spans: int
    prefix_min: int
    prefix_max: int
    index: int = 0


def _view(rows: list[dict[str, Any]], enc_dec: bool) -> RowsView:
    def col(k: str) -> np.ndarray:
        return np.array([r[k] for r in rows], dtype=np.int64)

    return RowsView(
        enc_dec,
        col("input_ids").astype(np.int32),
        col("labels").astype(np.int32),
        col("input_length"),
        None if enc_dec else col("prefix_length"),
        lambda a: np.take(LUT, a, mode="clip"),
        SENT0,
        lambda i: f"id {i}",
        SENTINELS,
    )


def _rows(
    letter: str, layout: str, mode: bool, L: int, seed: int, b: int = 40
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray, np.ndarray, Comp]:
    """``b`` rows of one component built by the references; their chunks, noise masks, the
    spans per row and the component."""
    rng = np.random.default_rng(seed)
    rate, mu = {"R": (0.15, 3.0), "X": (0.5, 3.0), "S": (0.25, 0.0)}[letter]
    n, s = ref.span_counts_ref(L, rate, mu) if letter != "S" else (0, 0)
    pmin = ref.prefix_min_ref(L, rate) if letter == "S" else 0
    c = Comp(letter, int(mode), L, n, s, pmin, L - 1 if letter == "S" else 0)
    rows, chunks, masks, spans = [], [], [], []
    for _ in range(b):
        tokens = [int(t) for t in rng.integers(0, 500, L)]
        if letter == "S":
            p = ref.prefix_length_ref(rng, L, rate)
            mask = [i >= p for i in range(L)]
            inputs, targets = ref.prefix_split_ref(tokens, p)
        else:
            mask = ref.noise_mask_ref(rng, L, rate, mu)
            inputs, targets = ref.span_corrupt_ref(tokens, mask, list(SENTINELS))
        row = ref.assemble_row_ref(
            inputs, targets, MODE if mode else None, EOS, PAD, layout, L + 8, L + 8, 2 * L + 8
        )
        rows.append(row)
        chunks.append(tokens)
        masks.append(mask)
        spans.append(sum(m and (i == 0 or not mask[i - 1]) for i, m in enumerate(mask)))
    return rows, np.array(chunks), np.array(masks), np.array(spans), c


CASES = [
    (k, layout, mode, L)
    for k in "RXS"
    for layout in ("encoder-decoder", "decoder-only")
    for mode in (False, True)
    for L in (7, 64)
]


@pytest.mark.parametrize(("letter", "layout", "mode", "L"), CASES)
def test_kind_reads_back_reference_rows(letter: str, layout: str, mode: bool, L: int) -> None:
    kind = KINDS[letter]
    enc = layout == "encoder-decoder"
    rows, chunks, masks, spans, c = _rows(letter, layout, mode, L, seed=L + 3 * mode)
    v = _view(rows, enc)
    idx = np.arange(len(rows))
    il = v.input_length
    tl = np.array([r["target_length"] for r in rows], dtype=np.int64)
    pl = v.prefix_length
    # the inversion gives back the chunk and the noise mask
    got, noise = kind.invert(c, v, idx)
    assert (got == chunks).all() and (noise == masks).all()
    # a subset of rows, in another order
    sub = idx[::-3]
    got, noise = kind.invert(c, v, sub)
    assert (got == chunks[sub]).all() and (noise == masks[sub]).all()
    # the lengths the parameters dictate are those of the reference rows
    e = kind.expected_lengths(c, il, tl, pl, enc)
    assert (e.input_length == il).all() and (e.target_length == tl).all()
    assert not e.bad_split.any()
    if enc:
        assert e.prefix_length is None
    else:
        assert pl is not None and e.prefix_length is not None
        assert (e.prefix_length == pl).all()
    # stats' counts: raw chunk, noise (targets) tokens and spans of every row
    sent = np.array([sum(x >= S0ID for x in r["input_ids"]) for r in rows], dtype=np.int64)
    raw, nz, sp = kind.row_counts(c, il, tl, sent, enc)
    assert (raw == L).all()
    assert (nz == masks.sum(axis=1)).all()
    assert (sp == (spans if kind.uses_sentinels else 0)).all()
    # well-formed rows have no structure problem
    assert kind.structure_problems(c, v, idx) == []


@pytest.mark.parametrize("layout", ["encoder-decoder", "decoder-only"])
def test_span_structure_problems_name_the_broken_rows(layout: str) -> None:
    enc = layout == "encoder-decoder"
    rows, _, _, _, c = _rows("X", layout, True, 64, seed=5, b=6)
    ids = [list(r["input_ids"]) for r in rows]
    # row 1: sentinels 0 and 1 swapped in the inputs; row 4: a sentinel replaced by text
    # (the inputs: before prefix_length; decoder-only rows hold the targets in input_ids too)
    end = [int(r["prefix_length"]) for r in rows]
    j0, j1 = (i for i, x in enumerate(ids[1][: end[1]]) if x in (S0ID, S0ID + 1))
    ids[1][j0], ids[1][j1] = ids[1][j1], ids[1][j0]
    j = next(i for i, x in enumerate(ids[4][: end[4]]) if x == S0ID + 2)
    ids[4][j] = 7
    for r, new in zip(rows, ids, strict=True):
        r["input_ids"] = new
    probs = KINDS["X"].structure_problems(c, _view(rows, enc), np.arange(6))
    assert [r for r, _ in probs] == [4, 1]  # count problems first, then the order
    assert "sentinels in the inputs" in probs[0][1]
    assert f"sentinels out of order in input_ids: column {j0}" in probs[1][1]


def test_prefix_split_outside_its_range_is_flagged() -> None:
    rows, _, _, _, c = _rows("S", "encoder-decoder", False, 64, seed=1, b=3)
    v = _view(rows, True)
    tl = np.array([r["target_length"] for r in rows], dtype=np.int64)
    il = v.input_length.copy()
    il[2] = c.prefix_min  # a prefix one token shorter than allowed (+ EOS)
    e = KINDS["S"].expected_lengths(c, il, tl, None, True)
    assert e.bad_split.tolist() == [False, False, True]
    assert KINDS["S"].split_problem(c, int(e.split[2]), int(il[2])) == (
        f"S: prefix of {c.prefix_min - 1} tokens outside [{c.prefix_min}, {c.prefix_max}] "
        f"(input_length {il[2]})"
    )

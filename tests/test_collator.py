"""The on-the-fly collator: exact T5 semantics per row against the slow references, ragged rows,
reproducibility, the seed package's deviations side by side, and offline/on-the-fly equivalence.

Tests that run ``text-denoising`` (the seed) skip when it is not installed; it is in the
``test`` and ``bench`` extras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reference import (
    IGNORE,
    all_valid_masks_ref,
    assemble_row_ref,
    chi2_gof,
    chi2_two_sample,
    histogram,
    part_length_pmf,
    prefix_min_ref,
    span_corrupt_ref,
    span_counts_ref,
)

from denoise_cli.config import PRESETS, Denoiser, Lengths, Mixture, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, InputError
from denoise_cli.load.collator import DataCollatorForUL2, concat_ids, seed_mixture
from denoise_cli.load.collator_corrupt import (
    RowPlan,
    choose_gaps,
    corrupt_ragged,
    paired_compositions,
    ragged_compositions,
    ragged_span_masks,
    row_runs,
    source_room,
    uint32_keys,
)

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "data" / "t5-tiny-tokenizer.json"
SAMPLE = ROOT / "examples" / "sample"
EOS, PAD = 1, 0
SENT = np.arange(125, 25, -1, dtype=np.int64)  # <extra_id_0> = 125 ... <extra_id_99> = 26


@pytest.fixture(scope="module")
def tok() -> Any:
    tr = pytest.importorskip("transformers")
    return tr.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER), eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _rows(rng: np.random.Generator, lengths: list[int]) -> np.ndarray:
    w = max(lengths)
    t = np.full((len(lengths), w), PAD, dtype=np.int64)
    for i, n in enumerate(lengths):
        t[i, :n] = rng.integers(3, 26, size=n)
    return t


def _plan(kinds: list[Denoiser], mode: int = -1) -> RowPlan:
    return RowPlan(
        np.array([d.is_span for d in kinds]),
        np.array([d.rate for d in kinds], dtype=np.float64),
        np.array([d.mean_span if d.is_span else 1.0 for d in kinds], dtype=np.float64),
        np.full(len(kinds), mode, dtype=np.int64),
    )


# --------------------------------------------------------------------------- exact semantics


@pytest.mark.parametrize("mode", [-1, 127])
def test_ragged_rows_match_the_per_row_reference(mode: int) -> None:
    rng = np.random.default_rng(0)
    dens = [
        Denoiser("R", 0.15, 3),
        Denoiser("X", 0.5, 32),
        Denoiser("X", 0.2, 64),
        Denoiser("S", 0.25),
    ]
    for trial in range(30):
        b = 9
        lengths = rng.integers(2, 300, size=b).tolist()
        kinds = [dens[i] for i in rng.integers(0, len(dens), size=b)]
        tokens = _rows(rng, lengths)
        out = corrupt_ragged(tokens, np.array(lengths), _plan(kinds, mode), SENT, EOS, PAD, rng)
        wi, wt = out.input_ids.shape[1], out.labels.shape[1]
        for i, (L, d) in enumerate(zip(lengths, kinds, strict=True)):
            mask = out.noise_mask[i].tolist()
            assert not any(mask[L:]), "padding masked"
            row = tokens[i, :L].tolist()
            if d.is_span:
                n, s = span_counts_ref(L, d.rate, d.mean_span)
                assert sum(mask) == n
                runs = sum(1 for j in range(L) if mask[j] and (j == 0 or not mask[j - 1]))
                assert runs == s and not mask[0] and mask[L - 1], (trial, i)
                inp, tgt = span_corrupt_ref(row, mask[:L], SENT.tolist())
            else:
                p = L - sum(mask)
                assert mask[:L] == [False] * p + [True] * (L - p)
                assert prefix_min_ref(L, d.rate) <= p <= L - 1
                inp, tgt = row[:p], row[p:]
            ref = assemble_row_ref(
                inp, tgt, None if mode < 0 else mode, EOS, PAD, "encoder-decoder", wi, wt
            )
            assert out.input_ids[i].tolist() == ref["input_ids"], (trial, i)
            assert out.labels[i].tolist() == ref["labels"], (trial, i)
            assert int(out.input_length[i]) == ref["input_length"]


def test_ragged_masks_are_exactly_uniform_over_valid_masks() -> None:
    """Rows of different lengths in one call: each length's masks follow T5's distribution."""
    rng = np.random.default_rng(1)
    lengths = np.array([9, 8, 7] * 4000)
    rate, mu = 0.5, 2.0
    n, s = np.array([span_counts_ref(int(L), rate, mu) for L in lengths]).T
    masks = ragged_span_masks(rng, lengths, n, s, 9)
    weights = 1 << np.arange(9)
    for L in (9, 8, 7):
        codes = masks[lengths == L] @ weights
        p, df, pval = chi2_gof(histogram(codes), all_valid_masks_ref(L, rate, mu))
        assert df > 2 and pval > 1e-4, (L, p, df, pval)


def test_ragged_compositions_part_lengths() -> None:
    rng = np.random.default_rng(2)
    m = np.array([12, 7, 30, 5] * 3000)
    k = np.array([4, 1, 6, 5] * 3000)
    parts = ragged_compositions(rng, m, k)
    assert len(parts) == k.sum()
    offs = np.concatenate([[0], np.cumsum(k)])
    sums = np.add.reduceat(parts, offs[:-1])
    assert (sums == m).all() and (parts >= 1).all()
    for row, (mm, kk) in enumerate(zip(m[:4], k[:4], strict=True)):
        firsts = parts[offs[row::4][: len(m) // 4]]  # the first part of every such row
        if kk in (1, mm):  # one part of m, or m parts of 1
            assert (firsts == mm // kk).all()
            continue
        _, df, pval = chi2_gof(histogram(firsts), part_length_pmf(int(mm), int(kk)))
        assert df >= 2 and pval > 1e-4, (mm, kk, df, pval)


def test_tied_keys_are_redrawn() -> None:
    """A row whose threshold key is tied is drawn again (exact rejection), not broken by index."""
    real = np.random.default_rng(6)

    class FirstDrawTied:
        calls = 0

        def integers(self, *a: Any, **kw: Any) -> np.ndarray:
            FirstDrawTied.calls += 1
            out = real.integers(*a, **kw)
            if FirstDrawTied.calls == 1:
                out[1] = 7  # every key of row 1 equal
            return out

    m, cuts = np.array([10, 12, 6]), np.array([3, 4, 2])
    chosen = choose_gaps(FirstDrawTied(), m, cuts)  # type: ignore[arg-type]
    assert FirstDrawTied.calls == 2
    assert chosen.sum(axis=1).tolist() == cuts.tolist()
    assert not chosen[0, 9:].any() and not chosen[2, 5:].any()


@pytest.mark.parametrize("pre", [0, 1, 2, 3])
def test_uint32_keys_are_numpys_integers_bit_for_bit(pre: int) -> None:
    """The raw-PCG64 fast path gives numpy's keys and leaves the stream where numpy would, with
    a half-word buffered before (odd pre-draw) or not, and for odd counts (numpy's path)."""
    for seed in range(3):
        for b, w in ((4, 6), (3, 5), (32, 433), (1, 1)):
            a, r = np.random.default_rng(seed), np.random.default_rng(seed)
            a.integers(0, 2**32, size=pre, dtype=np.uint32)
            r.integers(0, 2**32, size=pre, dtype=np.uint32)
            got = uint32_keys(a, b, w)
            want = r.integers(0, 2**32, size=(b, w), dtype=np.uint32)
            assert got.dtype == np.uint32 and got.shape == (b, w)
            assert (got == want).all(), (seed, b, w)
            assert (
                a.integers(0, 2**32, size=3, dtype=np.uint32).tolist()
                == r.integers(0, 2**32, size=3, dtype=np.uint32).tolist()
            )
            assert a.random() == r.random()


def test_paired_compositions_equal_two_calls() -> None:
    """One pass over both blocks = the two ragged_compositions calls it replaces (same keys,
    same stream position), including rows of one part and blocks of different widths."""
    gen = np.random.default_rng(9)
    for trial in range(40):
        b = int(gen.integers(1, 12))
        k = gen.integers(1, 9, size=b) if trial % 5 else np.ones(b, dtype=np.int64)
        m1 = k + gen.integers(0, 40, size=b)
        m2 = k + gen.integers(0, 300, size=b)
        a, r = np.random.default_rng(trial), np.random.default_rng(trial)
        p1, p2 = paired_compositions(a, m1, m2, k)
        assert p1.tolist() == ragged_compositions(r, m1, k).tolist()
        assert p2.tolist() == ragged_compositions(r, m2, k).tolist()
        assert a.random() == r.random()
    with pytest.raises(ValueError):
        paired_compositions(np.random.default_rng(0), np.array([3]), np.array([1]), np.array([2]))


@pytest.mark.parametrize("mode", [-1, 127])
def test_room_behind_the_tokens_gives_the_same_batch(mode: int) -> None:
    """corrupt_ragged writing its sources behind the tokens (the collator's path) = copying
    them; a buffer that is not the tokens' own, or too short, is not written to."""
    gen = np.random.default_rng(11)
    dens = [Denoiser("R", 0.15, 3), Denoiser("X", 0.5, 4), Denoiser("S", 0.25)]
    for trial in range(10):
        lengths = gen.integers(2, 60, size=7).tolist()
        kinds = [dens[i] for i in gen.integers(0, 3, size=7)]
        plain = _rows(gen, lengths)
        b, w = plain.shape
        room = np.empty(b * w + source_room(b, w, len(SENT), 8), dtype=np.int64)
        room[: b * w] = plain.ravel()
        tokens = room[: b * w].reshape(b, w)
        args = (np.array(lengths), _plan(kinds, mode), SENT, EOS, PAD)
        want = corrupt_ragged(plain, *args, np.random.default_rng(trial), 8)
        got = corrupt_ragged(tokens, *args, np.random.default_rng(trial), 8, room=room)
        assert (want.input_ids == got.input_ids).all() and (want.labels == got.labels).all()
        assert (tokens == plain).all()
        other = np.full(b * w + source_room(b, w, len(SENT), 8), 7, dtype=np.int64)
        short = room[: b * w + 3].copy()
        for buf in (other, short):
            keep = buf.copy()
            got = corrupt_ragged(
                buf[: b * w].reshape(b, w) if buf is short else plain,
                *args,
                np.random.default_rng(trial),
                8,
                room=buf,
            )
            assert (want.input_ids == got.input_ids).all()
            assert (buf == keep).all()


def test_concat_ids_packs_lists_and_falls_back() -> None:
    rows = [[3, 4, 5], [], [2**40, 0]]
    out = np.empty(5, dtype=np.int64)
    concat_ids(rows, out)
    assert out.tolist() == [3, 4, 5, 2**40, 0]
    mixed = [[np.int64(3), 4], [5.0, 6.0]]  # floats: struct refuses, fromiter converts
    out = np.empty(4, dtype=np.int64)
    concat_ids(mixed, out)
    assert out.tolist() == [3, 4, 5, 6]


def test_row_runs() -> None:
    got = row_runs(np.array([0, 3, 5]), 5)
    assert got.dtype == np.int64
    assert got.tolist() == [[0] * 5, [1, 1, 1, 0, 0], [1] * 5]


def test_collator_glue(tok: Any) -> None:
    """Keys, shifted decoder inputs, attention masks, trailing EOS handled, pad_to_multiple_of."""
    rng = np.random.default_rng(3)
    ex = [{"input_ids": [*rng.integers(3, 26, size=n).tolist(), EOS]} for n in (40, 7, 90)]
    c = DataCollatorForUL2(tok, seed=0, return_tensors="np", pad_to_multiple_of=8)
    b = c(ex)
    assert set(b) == {
        "input_ids",
        "attention_mask",
        "labels",
        "decoder_input_ids",
        "decoder_attention_mask",
    }
    assert b["input_ids"].shape[1] % 8 == 0 and b["labels"].shape[1] % 8 == 0
    for i in range(3):
        real = int(b["attention_mask"][i].sum())
        assert (b["attention_mask"][i, :real] == 1).all()
        assert b["input_ids"][i, real - 1] == EOS and (b["input_ids"][i, real:] == PAD).all()
        assert EOS not in b["input_ids"][i, : real - 1].tolist()  # the example's EOS was not masked
        lab = b["labels"][i]
        t = int((lab != IGNORE).sum())
        assert lab[t - 1] == EOS and (lab[t:] == IGNORE).all()
        assert b["decoder_input_ids"][i, 0] == PAD  # no BOS: T5's decoder start (pad)
        assert b["decoder_input_ids"][i, 1 : t + 1].tolist() == lab[:t].tolist()
        assert b["decoder_attention_mask"][i].tolist() == [1] * min(t + 1, lab.shape[0]) + [0] * (
            lab.shape[0] - t - 1
        )
    pt = c(ex, return_tensors="pt")
    assert str(pt["input_ids"].dtype) == "torch.int64"


def test_attention_mask_marks_padding_in_pre_padded_examples(tok: Any) -> None:
    c = DataCollatorForUL2(tok, seed=0, return_tensors="np", mixture="R(3,0.5)")
    ids = [5, 6, 7, 8, 9, 10, EOS, PAD, PAD, PAD]
    b = c([{"input_ids": ids, "attention_mask": [1] * 7 + [0] * 3}] * 50)
    # 6 real tokens, 3 noise: pads never reach inputs or labels
    assert (b["attention_mask"].sum(axis=1) == 6 - 3 + 1 + 1).all()
    assert not np.isin(b["labels"], [PAD]).any()
    real_inputs = b["input_ids"][b["attention_mask"] == 1]
    assert not np.isin(real_inputs, [PAD]).any()


def test_seeded_and_reproducible(tok: Any) -> None:
    ex = [{"input_ids": list(range(3, 3 + n))} for n in (20, 22, 24, 26)] * 4
    a = DataCollatorForUL2(tok, seed=7, return_tensors="np")
    b = DataCollatorForUL2(tok, seed=7, return_tensors="np")
    c = DataCollatorForUL2(tok, seed=8, return_tensors="np")
    a1, a2, b1, b2, c1 = a(ex), a(ex), b(ex), b(ex), c(ex)
    for k in a1:
        assert (a1[k] == b1[k]).all() and (a2[k] == b2[k]).all()
    assert any(a1[k].shape != a2[k].shape or (a1[k] != a2[k]).any() for k in a1)
    assert any(a1[k].shape != c1[k].shape or (a1[k] != c1[k]).any() for k in a1)


@pytest.mark.parametrize("fmt", ["numpy", "torch", "tuple"])
def test_row_formats_give_the_same_batch(tok: Any, fmt: str) -> None:
    rng = np.random.default_rng(4)
    rows = [rng.integers(3, 26, size=n).tolist() for n in (30, 12, 50)]
    conv: dict[str, Any] = {
        "numpy": lambda r: np.asarray(r, dtype=np.int32),
        "torch": lambda r: pytest.importorskip("torch").tensor(r),
        "tuple": tuple,
    }
    want = DataCollatorForUL2(tok, seed=5, return_tensors="np")([{"input_ids": r} for r in rows])
    got = DataCollatorForUL2(tok, seed=5, return_tensors="np")(
        [{"input_ids": conv[fmt](r)} for r in rows]
    )
    for k in want:
        assert (want[k] == got[k]).all(), k


def test_dataloader_workers_get_distinct_streams(tok: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    ex = [{"input_ids": list(range(3, 60))}] * 16
    outs = []
    for wseed in (11, 12, 11):
        c = DataCollatorForUL2(tok, seed=0, return_tensors="np")
        info = type("I", (), {"seed": wseed, "id": 0})()
        monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda info=info: info)
        outs.append(c(ex)["labels"])
    assert outs[0].shape != outs[1].shape or (outs[0] != outs[1]).any()
    assert (outs[0] == outs[2]).all()


def test_seed_defaults_are_the_text_denoising_preset() -> None:
    mine, preset = seed_mixture(), PRESETS["text-denoising"]
    key = lambda mx: sorted(  # noqa: E731
        (d.name, round(float(p), 12)) for d, p in zip(mx.denoisers, mx.probabilities, strict=True)
    )
    assert key(mine) == key(preset)
    only_x = seed_mixture(r_denoising=False, s_denoising=False, x_probability=1.0)
    assert key(only_x) == [("X(32,0.5)", 0.5), ("X(64,0.2)", 0.5)]


def test_configuration_errors(tok: Any) -> None:
    with pytest.raises(ConfigError, match="mode token"):
        DataCollatorForUL2(tok, mode_tokens=True)
    with pytest.raises(ConfigError, match="sentinel"):
        DataCollatorForUL2(tok, sentinel_template="<nope_{}>")
    with pytest.raises(ConfigError, match="all of R, S and X"):
        DataCollatorForUL2(tok, r_denoising=False, s_denoising=False, x_denoising=False)
    # S only needs no sentinels
    DataCollatorForUL2(tok, r_denoising=False, x_denoising=False, sentinel_template="<nope_{}>")


def test_input_errors(tok: Any) -> None:
    c = DataCollatorForUL2(tok, seed=0, return_tensors="np")
    with pytest.raises(InputError, match="at least 2"):
        c([{"input_ids": [5, 6, 7]}, {"input_ids": [5, EOS]}])
    with pytest.raises(InputError, match="sentinels"):  # 2100 tokens at R(3,.15): 105 spans
        DataCollatorForUL2(tok, mixture="R(3,0.15)")([{"input_ids": [5] * 2100}])


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, denoise_cli, denoise_cli.load.collator; "
        "assert denoise_cli.DataCollatorForUL2 is denoise_cli.load.collator.DataCollatorForUL2; "
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


# --------------------------------------------------------------------------- vs the seed package


@pytest.fixture(scope="module")
def seed_pkg() -> Any:
    return pytest.importorskip("text_denoising")


@pytest.fixture(scope="module")
def tok_bos(tok: Any) -> Any:
    """The seed takes its decoder start from bos_token_id; give it one (pad, as T5) to run."""
    tr = pytest.importorskip("transformers")
    return tr.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER),
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<pad>",
    )


def _spans_in_labels(lab: np.ndarray, sentinel_ids: set[int]) -> list[int]:
    """Lengths of the noise spans written in one label row (sentinel, tokens, sentinel...)."""
    out: list[int] = []
    for t in lab[lab != IGNORE][:-1].tolist():  # up to the final EOS
        if t in sentinel_ids:
            out.append(0)
        elif out:
            out[-1] += 1
    return out


def test_deviation_seed_crashes_without_bos_ours_uses_pad(seed_pkg: Any, tok: Any) -> None:
    ex = [{"input_ids": list(range(3, 40))}] * 4
    with pytest.raises(Exception):  # noqa: B017 - the seed writes None into a tensor
        seed_pkg.DataCollatorForUL2(tok)(ex)
    b = DataCollatorForUL2(tok, seed=0)(ex)
    assert (b["decoder_input_ids"][:, 0] == PAD).all()


def test_deviation_x_configs_are_or_ed_by_the_seed(seed_pkg: Any, tok_bos: Any) -> None:
    """Seed: every X row ORs the (32,.5) and (64,.2) masks -> ~60% noise. Ours: one config per
    row -> exactly 256 or 102 noise tokens of 511."""
    ex = [
        {"input_ids": [*np.random.default_rng(i).integers(3, 26, 511).tolist(), EOS]}
        for i in range(32)
    ]
    seed = seed_pkg.DataCollatorForUL2(
        tok_bos, r_denoising=False, s_denoising=False, x_probability=1.0
    )
    ours = DataCollatorForUL2(
        tok_bos, r_denoising=False, s_denoising=False, x_probability=1.0, seed=0
    )
    sents = set(SENT.tolist())
    seed_noise = [sum(_spans_in_labels(r, sents)) for r in seed(ex)["labels"].numpy()]
    our_noise = [sum(_spans_in_labels(r, sents)) for r in ours(ex)["labels"].numpy()]
    assert np.mean(seed_noise) > 0.55 * 512  # union of a 50% and a 20% mask
    assert set(our_noise) <= {256, 102}  # rint(511*.5), rint(511*.2): one component per row


def test_deviation_seed_masks_padding(seed_pkg: Any, tok_bos: Any) -> None:
    """A short row next to a long one: the seed draws its mask over the padded width, so
    sentinels and noise fall on padding (and the real row gets far fewer than 15% masked)."""
    rng = np.random.default_rng(0)
    ex = [
        {"input_ids": [*rng.integers(3, 26, 20).tolist(), EOS]},
        {"input_ids": [*rng.integers(3, 26, 400).tolist(), EOS]},
    ]
    seed = seed_pkg.DataCollatorForUL2(
        tok_bos, s_denoising=False, x_denoising=False, r_probability=1.0
    )
    ours = DataCollatorForUL2(
        tok_bos, s_denoising=False, x_denoising=False, r_probability=1.0, seed=0
    )
    sents = set(SENT.tolist())
    seed_spans = [len(_spans_in_labels(seed(ex)["labels"][0].numpy(), sents)) for _ in range(20)]
    ours_spans = [len(_spans_in_labels(ours(ex)["labels"][0].numpy(), sents)) for _ in range(20)]
    assert max(seed_spans) > 3  # 401-token mask: ~20 spans, several on the short row's padding
    assert set(ours_spans) == {span_counts_ref(20, 0.15, 3)[1]}  # 20 real tokens: 1 span


def test_deviation_seed_sentinels_collide_past_100(seed_pkg: Any, tok_bos: Any) -> None:
    """105 spans: the seed writes len(tokenizer)-101... = ordinary pieces as 'sentinels'."""
    ex = [{"input_ids": [*np.random.default_rng(0).integers(3, 10, 2099).tolist(), EOS]}]
    seed = seed_pkg.DataCollatorForUL2(
        tok_bos, s_denoising=False, x_denoising=False, r_probability=1.0
    )
    ids = seed(ex)["input_ids"][0].numpy()
    assert np.isin(np.arange(21, 26), ids).any()  # 126-101 .. 126-105: regular pieces
    with pytest.raises(InputError, match="sentinels"):
        DataCollatorForUL2(tok_bos, s_denoising=False, x_denoising=False, r_probability=1.0)(ex)


def test_deviation_seed_s_split_is_fixed_and_eos_misplaced(seed_pkg: Any, tok_bos: Any) -> None:
    """Seed S: always split at L//2; on a padded row EOS lands at the padded end, after -100s.
    Ours: prefix drawn per example, EOS right after the targets."""
    rng = np.random.default_rng(0)
    ex = [
        {"input_ids": [*rng.integers(3, 26, 39).tolist(), EOS]},
        {"input_ids": [*rng.integers(3, 26, 99).tolist(), EOS]},
    ]
    kw: dict[str, Any] = {"r_denoising": False, "x_denoising": False, "s_probability": 1.0}
    seed = seed_pkg.DataCollatorForUL2(tok_bos, **kw)
    lab = seed(ex)["labels"][0].numpy()
    real = np.flatnonzero(lab != IGNORE)
    assert lab[real[-1]] == EOS and real[-1] > real[-2] + 1  # a hole of -100 before the EOS
    seed_t = {int((seed(ex)["labels"][0] != IGNORE).sum()) for _ in range(10)}
    assert len(seed_t) == 1
    ours = DataCollatorForUL2(tok_bos, seed=0, **kw)
    ours_t = set()
    for _ in range(10):
        lab = ours(ex)["labels"][0].numpy()
        t = int((lab != IGNORE).sum())
        assert lab[t - 1] == EOS and (lab[:t] != IGNORE).all()
        ours_t.add(t)
    assert len(ours_t) > 3


# --------------------------------------------------------------------------- offline == on the fly


def _label_stats(labels: np.ndarray, sents: set[int]) -> dict[str, list[int]]:
    spans = [_spans_in_labels(r, sents) for r in labels]
    return {
        "target_tokens": [int((r != IGNORE).sum()) for r in labels],
        "spans": [len(x) for x in spans],
        "span_length": [v for x in spans for v in x],
    }


def test_offline_text_denoising_equals_the_collator(tmp_path: Path, tok: Any) -> None:
    """``prepare --mixture text-denoising`` and the collator on the fly: same component shares,
    and per component the same distributions of target lengths, span counts and span lengths
    (two-sample chi-square, each p > 1e-4)."""
    from denoise_cli import open_dataset
    from denoise_cli.prepare.run import prepare
    from denoise_cli.rows.plan import plan

    lengths = Lengths("encoder-decoder", 64, 64)
    mix = load_mixture("text-denoising", mode_tokens=False)
    cfg = PrepareConfig(mixture=mix, lengths=lengths)
    prepare(
        [str(SAMPLE)],
        str(tmp_path / "out"),
        cfg,
        tokenizer=str(TOKENIZER),
        workers=1,
        progress=False,
    )
    ds = open_dataset(tmp_path / "out")
    rows = ds[np.arange(len(ds))]
    comp_off = rows["denoiser"].astype(int)
    assert len(comp_off) > 2000
    # shares: the collator's draws over as many examples
    coll = DataCollatorForUL2(tok, seed=0, return_tensors="np")
    comp_on: list[int] = []
    ex = [{"input_ids": list(range(3, 60))}] * 256
    while len(comp_on) < len(comp_off):
        coll.numpy_call(ex)
        comp_on.extend(coll.last_components.tolist())
    names_on = [coll.mixture.denoisers[c].name for c in comp_on]
    names_off = [mix.denoisers[c].name for c in comp_off]
    idx = {n: i for i, n in enumerate(sorted(set(names_on) | set(names_off)))}
    _, _, p = chi2_two_sample(
        histogram([idx[n] for n in names_off]), histogram([idx[n] for n in names_on])
    )
    assert p > 1e-4, p
    # per component: the collator fed chunks of that component's raw length
    sents = set(SENT.tolist())
    rng = np.random.default_rng(0)
    for cp in plan(mix, lengths):
        sel = comp_off == cp.index
        off = _label_stats(rows["labels"][sel], sents)
        one = DataCollatorForUL2(
            tok, seed=cp.index, return_tensors="np", mixture=Mixture("one", (cp.denoiser,), False)
        )
        chunks = [
            {"input_ids": rng.integers(3, 26, cp.raw_length).tolist()}
            for _ in range(int(sel.sum()))
        ]
        on = _label_stats(one(chunks)["labels"], sents)
        for key in off:
            if len(set(off[key]) | set(on[key])) < 2:
                assert off[key] == on[key] or set(off[key]) == set(on[key]), (cp.name, key)
                continue
            _, _, p = chi2_two_sample(histogram(off[key]), histogram(on[key]))
            assert p > 1e-4, (cp.name, key, p)


# --------------------------------------------------------------------------- the seed's recipe


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["on-the-fly", "offline"])
def test_pretrain_example_loss_falls_in_both_modes(mode: str, tmp_path: Path) -> None:
    """examples/pretrain_t5_jsonl_zst.py, tiny model on one core: the loss ends well below both
    its start and a uniform guess over the vocabulary (ln 126 = 4.84)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    losses = tmp_path / "losses.json"
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "pretrain_t5_jsonl_zst.py"),
        "--mode",
        mode,
        "--steps",
        "120",
        "--log-every",
        "40",
        "--losses-json",
        str(losses),
        *(["--out", str(tmp_path / "prepared")] if mode == "offline" else []),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tokens/s" in r.stdout and "done: 120 steps" in r.stdout
    got = json.loads(losses.read_text())
    first, last = float(np.mean(got[:10])), float(np.mean(got[-10:]))
    assert last < 0.7 * first and last < 0.75 * np.log(126), (first, last)


def test_deviation_seed_inputs_lose_their_eos(seed_pkg: Any, tok_bos: Any) -> None:
    """T5 masks always end with noise, so the seed (mask over the whole row, EOS included)
    always hides the example's EOS in the last span: its inputs never end with EOS, and it
    returns no attention_mask. Ours: EOS kept out of the noise, appended to inputs and targets."""
    rng = np.random.default_rng(0)
    ex = [{"input_ids": [*rng.integers(3, 26, 99).tolist(), EOS]} for _ in range(8)]
    kw: dict[str, Any] = {"s_denoising": False, "x_denoising": False, "r_probability": 1.0}
    seed_out = seed_pkg.DataCollatorForUL2(tok_bos, **kw)(ex)
    assert "attention_mask" not in seed_out
    sents = set(SENT.tolist())
    for row in seed_out["input_ids"].numpy():
        real = row[row != PAD]
        assert real[-1] in sents and EOS not in real.tolist()
    ours = DataCollatorForUL2(tok_bos, seed=0, **kw)(ex)
    for row, am in zip(ours["input_ids"].numpy(), ours["attention_mask"].numpy(), strict=True):
        real = row[am == 1]
        assert real[-1] == EOS and real[-2] in sents


def test_deviation_seed_sentinels_assume_they_are_the_last_ids(seed_pkg: Any) -> None:
    """The seed computes sentinel k as len(tokenizer)-1-k: one token added after the sentinels
    (here a mode token) and every 'sentinel' is off by one. Ours looks them up by name."""
    tr = pytest.importorskip("transformers")
    tk = tr.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER),
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<pad>",
    )
    tk.add_tokens(["[NLU]"], special_tokens=True)  # id 126
    ex = [{"input_ids": [*np.random.default_rng(0).integers(3, 26, 99).tolist(), EOS]}]
    kw: dict[str, Any] = {"s_denoising": False, "x_denoising": False, "r_probability": 1.0}
    seed_ids = seed_pkg.DataCollatorForUL2(tk, **kw)(ex)["input_ids"][0].numpy()
    assert 126 in seed_ids.tolist()  # '[NLU]' where <extra_id_0> (125) belongs
    ours = DataCollatorForUL2(tk, seed=0, **kw)(ex)["input_ids"][0].numpy()
    assert 126 not in ours.tolist() and 125 in ours.tolist()


@pytest.mark.slow
def test_hf_trainer_with_the_collator(tok: Any, tmp_path: Path) -> None:
    """Drop-in: a ``datasets`` Dataset of tokenized texts (lists of ids) into ``Seq2SeqTrainer``
    with ``data_collator=DataCollatorForUL2(...)``; the model gets the collator's five keys."""
    pytest.importorskip("torch")
    datasets = pytest.importorskip("datasets")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    rng = np.random.default_rng(0)
    texts = [
        " ".join(["hello world", "the sea"][i % 2] for i in range(n))
        for n in rng.integers(5, 30, 64)
    ]
    train = datasets.Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"]), batched=True, remove_columns=["text"]
    )
    config = transformers.T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    model = transformers.T5ForConditionalGeneration(config)
    seen: list[list[str]] = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(kw)), with_kwargs=True)
    args = transformers.Seq2SeqTrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=3,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = transformers.Seq2SeqTrainer(
        model=model, args=args, train_dataset=train, data_collator=DataCollatorForUL2(tok, seed=0)
    )
    result = trainer.train()
    assert result.global_step == 3
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    assert set(seen[0]) - {"num_items_in_batch"} == {
        "input_ids",
        "attention_mask",
        "labels",
        "decoder_input_ids",
        "decoder_attention_mask",
    }

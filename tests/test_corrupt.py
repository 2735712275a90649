"""Denoisers (denoise_cli.corrupt): every preset component, both layouts, several lengths.

Two independent kinds of check on every row:

1. structure, from the row alone: inputs + targets reconstruct the raw chunk, sentinels in
   order, mode token, EOS, padding, attention mask, labels, lengths columns;
2. exact equality with the plain per-row reference (tests/reference.py) built from the same
   mask / prefix split, re-derived by calling the mask function with an identically seeded
   generator.

Sentinel ids are a random permutation of ids above the text range (NOT ``vocab-1-k``), and
eos / pad / mode ids are distinct, so any confusion between them shows.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

from denoise_cli.config import PRESETS, Lengths, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.rows.base import IGNORE_INDEX, Rows, SpecialIds, row_widths
from denoise_cli.rows.corrupt import corrupt_component, corrupt_mixture, draw_components
from denoise_cli.rows.denoisers.prefix import random_prefix_lengths
from denoise_cli.rows.denoisers.span import random_spans_noise_mask, span_corrupt
from denoise_cli.rows.plan import ComponentPlan, plan

VOCAB = 1000  # text tokens are 0..VOCAB-1


def make_special(seed: int = 0, n_sentinels: int = 200) -> SpecialIds:
    ids = np.random.default_rng(seed).permutation(np.arange(VOCAB, VOCAB + 500))
    sentinels = ids[:n_sentinels].astype(np.int32)
    rest = [int(x) for x in ids[n_sentinels : n_sentinels + 5]]
    return SpecialIds(
        eos=rest[0],
        pad=rest[1],
        sentinels=sentinels,
        mode={"[NLU]": rest[2], "[NLG]": rest[3], "[S2S]": rest[4]},
    )


SPECIAL = make_special()
assert not np.array_equal(SPECIAL.sentinels[:5], VOCAB + 499 - np.arange(5))  # not vocab-1-k

ENC_DEC = {
    "ed512": Lengths("encoder-decoder", inputs_length=512, targets_length=512),
    "ed128": Lengths("encoder-decoder", inputs_length=128, targets_length=128),
    "ed256x64": Lengths("encoder-decoder", inputs_length=256, targets_length=64),
}
DEC_ONLY = {
    "do1024": Lengths("decoder-only", seq_length=1024),
    "do256": Lengths("decoder-only", seq_length=256),
}
ALL_LENGTHS = {**ENC_DEC, **DEC_ONLY}

CASES = [
    (preset, lname, ci)
    for preset, mix in PRESETS.items()
    for lname in ALL_LENGTHS
    for ci in range(len(mix.denoisers))
]

SEEDS = 6
BATCH = 8


# --------------------------------------------------------------------------- row decoding


def decode_row(
    rows: Rows, i: int, lengths: Lengths, special: SpecialIds
) -> tuple[int | None, list[int], list[int]]:
    """(mode id or None, inputs, targets) of row ``i``, checking the layout invariants."""
    ids = rows.input_ids[i].tolist()
    lab = rows.labels[i].tolist()
    att = rows.attention_mask[i].tolist()
    ilen = int(rows.input_length[i])
    tlen = int(rows.target_length[i])
    plen = int(rows.prefix_length[i])
    modes = set(special.mode.values())
    # attention_mask == 1 exactly on the real tokens, which come first; pad only after them
    assert att == [1] * ilen + [0] * (len(ids) - ilen), i
    assert all(x == special.pad for x in ids[ilen:]), i
    assert ids[ilen - 1] == special.eos, i
    if special.eos >= VOCAB:  # EOS is not a text token here: it must occur exactly once
        assert special.eos not in ids[: ilen - 1] and special.pad not in ids[:ilen], i
    mode = ids[0] if ids[0] in modes else None
    m = 0 if mode is None else 1
    assert not any(x in modes for x in ids[m:ilen]), "mode id only in column 0"
    if lengths.layout == "encoder-decoder":
        assert len(ids) == lengths.inputs_length and len(lab) == lengths.targets_length
        inputs = ids[m : ilen - 1]
        # labels: targets + EOS then -100 exactly on the padding
        assert all(x != IGNORE_INDEX for x in lab[:tlen]), i
        assert all(x == IGNORE_INDEX for x in lab[tlen:]), i
        assert lab[tlen - 1] == special.eos
        targets = lab[: tlen - 1]
        assert plen == m + len(inputs)
    else:
        assert len(ids) == len(lab) == lengths.seq_length
        inputs = ids[m:plen]
        targets = ids[plen : ilen - 1]
        # labels: -100 on mode + inputs and on padding; equal to the ids on targets + EOS
        assert all(x == IGNORE_INDEX for x in lab[:plen]), i
        assert lab[plen:ilen] == ids[plen:ilen], i
        assert all(x == IGNORE_INDEX for x in lab[ilen:]), i
        assert tlen == ilen - plen
    assert tlen == len(targets) + 1
    return mode, inputs, targets


def reconstruct_spans(
    inputs: list[int], targets: list[int], sentinels: list[int]
) -> tuple[list[int], int]:
    """Undo span corruption; check sentinel k appears in order 0..s-1 in inputs and targets.
    Returns (original tokens, number of spans)."""
    sent_pos = {v: k for k, v in enumerate(sentinels)}
    in_s = [sent_pos[x] for x in inputs if x in sent_pos]
    tg_s = [sent_pos[x] for x in targets if x in sent_pos]
    s = len(in_s)
    assert in_s == list(range(s)), in_s[:10]
    assert tg_s == list(range(s)), tg_s[:10]
    assert s >= 1 and targets[0] == sentinels[0]
    # split targets into span bodies
    bodies: list[list[int]] = []
    for x in targets:
        if x in sent_pos:
            bodies.append([])
        else:
            bodies[-1].append(x)
    assert all(len(b) >= 1 for b in bodies), "empty span"
    out: list[int] = []
    for x in inputs:
        if x in sent_pos:
            out.extend(bodies[sent_pos[x]])
        else:
            out.append(x)
    return out, s


def check_rows(
    rows: Rows, tokens: np.ndarray, comp: ComponentPlan, lengths: Lengths, special: SpecialIds
) -> None:
    b = tokens.shape[0]
    wi, wt = row_widths(lengths)
    assert rows.input_ids.shape == (b, wi) and rows.input_ids.dtype == np.int32
    assert rows.labels.shape == (b, wt) and rows.labels.dtype == np.int32
    assert rows.attention_mask.shape == (b, wi) and rows.attention_mask.dtype == np.int8
    for col in (rows.input_length, rows.target_length, rows.prefix_length):
        assert col.shape == (b,) and col.dtype == np.int32
    sentinels = special.sentinels.tolist()
    expect_mode = special.mode[comp.mode_token] if comp.mode_token is not None else None
    budget_in = lengths.inputs_length if lengths.layout == "encoder-decoder" else lengths.seq_length
    budget_t = lengths.targets_length if lengths.layout == "encoder-decoder" else lengths.seq_length
    for i in range(b):
        mode, inputs, targets = decode_row(rows, i, lengths, special)
        assert mode == expect_mode, "every row starts with its mode token (when on)"
        original = tokens[i].tolist()
        assert rows.input_length[i] <= min(budget_in, comp.input_length)
        assert rows.target_length[i] <= min(budget_t, comp.target_length)
        if comp.denoiser.is_span:
            rebuilt, s = reconstruct_spans(inputs, targets, sentinels)
            assert rebuilt == original
            assert s == comp.spans
            assert len(targets) - s == comp.noise_tokens
            assert inputs[-1] == sentinels[s - 1], "mask ends with noise"
            # span rows have exactly the planned lengths (no padding in enc-dec inputs)
            assert rows.input_length[i] == comp.input_length
            assert rows.target_length[i] == comp.target_length
        else:
            assert not any(x in set(sentinels) for x in inputs + targets)
            assert inputs + targets == original
            assert comp.prefix_min <= len(inputs) <= comp.prefix_max


def reference_rows(
    tokens: np.ndarray, comp: ComponentPlan, lengths: Lengths, special: SpecialIds, seed: int
) -> list[dict[str, object]]:
    """Per-row reference rows from the mask/prefix re-derived with an identically seeded
    generator (the engine draws it first, from the generator it is given)."""
    b, L = tokens.shape
    rng = np.random.default_rng(seed)
    d = comp.denoiser
    mode_id = special.mode[comp.mode_token] if comp.mode_token is not None else None
    sentinels = special.sentinels.tolist()
    out = []
    if d.is_span:
        mask = random_spans_noise_mask(rng, b, L, d.rate, d.mean_span)
        for i in range(b):
            inputs, targets = ref.span_corrupt_ref(tokens[i].tolist(), mask[i].tolist(), sentinels)
            out.append(_assemble(inputs, targets, mode_id, special, lengths))
    else:
        p = random_prefix_lengths(rng, b, L, d.rate)
        for i in range(b):
            inputs, targets = ref.prefix_split_ref(tokens[i].tolist(), int(p[i]))
            out.append(_assemble(inputs, targets, mode_id, special, lengths))
    return out


def _assemble(
    inputs: list[int],
    targets: list[int],
    mode_id: int | None,
    special: SpecialIds,
    lengths: Lengths,
) -> dict[str, object]:
    return ref.assemble_row_ref(
        inputs, targets, mode_id, special.eos, special.pad, lengths.layout,
        lengths.inputs_length, lengths.targets_length, lengths.seq_length,
    )  # fmt: skip


def compare_with_reference(rows: Rows, expected: list[dict[str, object]]) -> None:
    for i, e in enumerate(expected):
        assert rows.input_ids[i].tolist() == e["input_ids"], i
        assert rows.labels[i].tolist() == e["labels"], i
        assert rows.attention_mask[i].tolist() == e["attention_mask"], i
        assert int(rows.input_length[i]) == e["input_length"], i
        assert int(rows.target_length[i]) == e["target_length"], i
        assert int(rows.prefix_length[i]) == e["prefix_length"], i


def rows_equal(a: Rows, b: Rows) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
        for f in (
            "input_ids",
            "labels",
            "attention_mask",
            "input_length",
            "target_length",
            "prefix_length",
        )
    )


# --------------------------------------------------------------------------- every component


@pytest.mark.parametrize(
    ("preset", "lname", "ci"), CASES, ids=[f"{p}-{ln}-{c}" for p, ln, c in CASES]
)
def test_component_rows(preset: str, lname: str, ci: int) -> None:
    lengths = ALL_LENGTHS[lname]
    comp = plan(PRESETS[preset], lengths)[ci]
    L = comp.raw_length
    for seed in range(SEEDS):
        tokens = np.random.default_rng(10_000 + seed).integers(0, VOCAB, (BATCH, L), dtype=np.int32)
        rows = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(seed))
        check_rows(rows, tokens, comp, lengths, SPECIAL)
        compare_with_reference(rows, reference_rows(tokens, comp, lengths, SPECIAL, seed))


@pytest.mark.parametrize("layout", ["encoder-decoder", "decoder-only"])
def test_special_ids_inside_text(layout: str) -> None:
    """pad = 0 and eos = 1 also occur as ordinary text tokens (e.g. EOS between documents):
    only input_length / attention_mask say where the real tokens end; compare with the
    reference exactly."""
    special = SpecialIds(eos=1, pad=0, sentinels=SPECIAL.sentinels, mode=SPECIAL.mode)
    lengths = Lengths(layout, inputs_length=512, targets_length=512, seq_length=1024)
    for comp in plan(PRESETS["ul2"], lengths):
        tokens = np.random.default_rng(1).integers(0, 4, (BATCH, comp.raw_length), dtype=np.int32)
        rows = corrupt_component(tokens, comp, special, lengths, np.random.default_rng(2))
        compare_with_reference(rows, reference_rows(tokens, comp, lengths, special, 2))
        for i in range(BATCH):
            assert rows.attention_mask[i].sum() == rows.input_length[i]


def test_t5_without_mode_tokens_matches_t5_shapes() -> None:
    lengths = ENC_DEC["ed256x64"]
    (comp,) = plan(PRESETS["t5"], lengths)
    assert comp.mode_token is None
    tokens = np.random.default_rng(0).integers(0, VOCAB, (64, comp.raw_length), dtype=np.int32)
    rows = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(0))
    check_rows(rows, tokens, comp, lengths, SPECIAL)
    assert (rows.input_length == comp.input_length).all()
    assert not np.isin(rows.input_ids[:, 0], list(SPECIAL.mode.values())).any()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_lengths_too_small_raise_config_error(preset: str) -> None:
    with pytest.raises(ConfigError):
        plan(PRESETS[preset], Lengths("decoder-only", seq_length=4))


def test_too_few_sentinels_raises() -> None:
    lengths = ENC_DEC["ed512"]
    comp = next(c for c in plan(PRESETS["ul2"], lengths) if c.name == "X(3,0.5)")
    assert comp.spans == 127
    special = make_special(n_sentinels=100)
    tokens = np.zeros((2, comp.raw_length), dtype=np.int32)
    with pytest.raises(ValueError, match="sentinel"):
        corrupt_component(tokens, comp, special, lengths, np.random.default_rng(0))


def test_wrong_raw_length_raises() -> None:
    lengths = ENC_DEC["ed512"]
    (comp,) = plan(PRESETS["t5"], lengths)
    with pytest.raises(ValueError, match="expects raw chunks"):
        corrupt_component(
            np.zeros((2, 100), np.int32), comp, SPECIAL, lengths, np.random.default_rng(0)
        )


def test_span_corrupt_empty_batch() -> None:
    inputs, targets = span_corrupt(
        np.zeros((0, 10), np.int32), np.zeros((0, 10), bool), SPECIAL.sentinels
    )
    assert inputs.shape[0] == 0 and targets.shape[0] == 0


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("lname", ["ed512", "do1024"])
def test_determinism(lname: str) -> None:
    lengths = ALL_LENGTHS[lname]
    for comp in plan(PRESETS["ul2"], lengths):
        tokens = np.random.default_rng(0).integers(0, VOCAB, (16, comp.raw_length), dtype=np.int32)
        a = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(42))
        b = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(42))
        c = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(43))
        assert rows_equal(a, b)
        if comp.spans == 1:
            # one noise span and one non-noise segment: T5's mask is then always the suffix
            # (e.g. X(64,.15) at raw 599: rint(90/64) = 1), so there is nothing random
            assert rows_equal(a, c), comp.name
            continue
        assert not rows_equal(a, c), comp.name  # (decoder-only S rows differ in labels only)
        # the generator state is what matters: continuing a generator gives new draws
        g = np.random.default_rng(42)
        first = corrupt_component(tokens, comp, SPECIAL, lengths, g)
        second = corrupt_component(tokens, comp, SPECIAL, lengths, g)
        assert rows_equal(first, a) and not rows_equal(first, second)


# --------------------------------------------------------------------------- mixtures


def make_group(
    plans: tuple[ComponentPlan, ...], components: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A stream and chunk starts: chunks laid out back to back, in order, with random gaps."""
    rng = np.random.default_rng(seed)
    lens = np.array([plans[c].raw_length for c in components], dtype=np.int64)
    gaps = rng.integers(0, 5, len(components))
    starts = (
        np.cumsum(np.concatenate([[0], lens[:-1] + gaps[:-1]]))
        if len(components)
        else np.zeros(0, np.int64)
    )
    total = int(starts[-1] + lens[-1]) if len(components) else 1
    stream = rng.integers(0, VOCAB, total, dtype=np.int32)
    return stream, starts.astype(np.int64)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_draw_components_frequencies(preset: str) -> None:
    probs = PRESETS[preset].probabilities
    n = 400_000
    comps = draw_components(np.random.default_rng(7), probs, n)
    assert comps.dtype == np.int8 and comps.shape == (n,)
    counts = np.bincount(comps, minlength=len(probs))
    assert len(counts) == len(probs)
    sigma = np.sqrt(n * probs * (1 - probs))
    assert (np.abs(counts - n * probs) <= 5 * sigma).all(), (counts, n * probs)


def test_draw_components_zero_weight_never_drawn() -> None:
    probs = np.array([0.0, 0.3, 0.0, 0.7, 0.0])
    comps = draw_components(np.random.default_rng(1), probs, 100_000)
    assert set(np.unique(comps).tolist()) == {1, 3}
    assert abs((comps == 3).mean() - 0.7) < 5 * np.sqrt(0.21 / 100_000)


@pytest.mark.parametrize("lname", ["ed512", "do1024", "ed256x64"])
def test_corrupt_mixture_rows_in_chunk_order(lname: str) -> None:
    lengths = ALL_LENGTHS[lname]
    mix = PRESETS["ul2"]
    plans = plan(mix, lengths)
    g = 150
    components = draw_components(np.random.default_rng(3), mix.probabilities, g)
    stream, starts = make_group(plans, components, 4)
    rows = corrupt_mixture(
        stream, starts, components, plans, SPECIAL, lengths, np.random.default_rng(5)
    )
    mode_ids = {c.index: SPECIAL.mode[c.mode_token] for c in plans if c.mode_token}
    for i in range(g):
        c = int(components[i])
        comp = plans[c]
        chunk = stream[starts[i] : starts[i] + comp.raw_length]
        one = Rows(*(getattr(rows, f)[i : i + 1] for f in Rows.__dataclass_fields__))
        check_rows(one, chunk[None, :], comp, lengths, SPECIAL)
        assert rows.input_ids[i, 0] == mode_ids[c]
    # same as applying each component in index order with the one generator
    rng = np.random.default_rng(5)
    for c, comp in enumerate(plans):
        idx = np.flatnonzero(components == c)
        if len(idx) == 0:
            continue
        chunk = np.stack([stream[s : s + comp.raw_length] for s in starts[idx]])
        r = corrupt_component(chunk, comp, SPECIAL, lengths, rng)
        assert np.array_equal(rows.input_ids[idx], r.input_ids)
        assert np.array_equal(rows.labels[idx], r.labels)
        assert np.array_equal(rows.prefix_length[idx], r.prefix_length)
    # deterministic
    again = corrupt_mixture(
        stream, starts, components, plans, SPECIAL, lengths, np.random.default_rng(5)
    )
    assert rows_equal(rows, again)


def test_corrupt_mixture_component_frequencies_in_rows() -> None:
    """Rows produced by corrupt_mixture carry their component (mode token + lengths) with the
    mixture's frequencies."""
    lengths = ENC_DEC["ed512"]
    mix = PRESETS["ul2"]
    plans = plan(mix, lengths)
    sig = {}
    for c in plans:  # (mode id, input_length, target_length) identifies a span component
        sig.setdefault((SPECIAL.mode[c.mode_token], c.input_length, c.target_length), c.index)
    total = np.zeros(len(plans), dtype=np.int64)
    n = 0
    for seed in range(4):
        g = 4000
        components = draw_components(np.random.default_rng(100 + seed), mix.probabilities, g)
        stream, starts = make_group(plans, components, seed)
        rows = corrupt_mixture(
            stream, starts, components, plans, SPECIAL, lengths, np.random.default_rng(seed)
        )
        s_mode = SPECIAL.mode["[S2S]"]
        for i in range(g):
            m = int(rows.input_ids[i, 0])
            if m == s_mode:
                got = next(c.index for c in plans if not c.denoiser.is_span)
            else:
                got = sig[(m, int(rows.input_length[i]), int(rows.target_length[i]))]
            assert got == components[i]
        total += np.bincount(components, minlength=len(plans))
        n += g
    p = mix.probabilities
    assert (np.abs(total - n * p) <= 5 * np.sqrt(n * p * (1 - p))).all()


def test_union_spec_is_a_mixture_not_an_or() -> None:
    """'(3,.15) U (8,.15)' as a two-component mixture: each row's noise count and span count are
    exactly those of ONE component (the text-denoising package ORs the two masks)."""
    mix = load_mixture("R(3,0.15);R(8,0.15)")
    lengths = ENC_DEC["ed512"]
    plans = plan(mix, lengths)
    expected = {c.index: (c.raw_length, c.noise_tokens, c.spans) for c in plans}
    assert expected == {0: (567, 85, 28), 1: (587, 88, 11)}
    g = 2000
    components = draw_components(np.random.default_rng(0), mix.probabilities, g)
    stream, starts = make_group(plans, components, 1)
    rows = corrupt_mixture(
        stream, starts, components, plans, SPECIAL, lengths, np.random.default_rng(2)
    )
    is_sent = np.isin(rows.labels, SPECIAL.sentinels)
    spans = is_sent.sum(axis=1)
    noise = rows.target_length - 1 - spans
    kept = (
        rows.input_length - 2 - np.isin(rows.input_ids, SPECIAL.sentinels).sum(axis=1)
    )  # - mode - EOS
    for i in range(g):
        raw, n, s = expected[int(components[i])]
        assert (int(noise[i]), int(spans[i]), int(kept[i]) + int(noise[i])) == (n, s, raw), i
    assert {(int(a), int(b)) for a, b in zip(noise, spans, strict=True)} == {(85, 28), (88, 11)}
    assert 0.45 < (components == 0).mean() < 0.55


def test_corrupt_mixture_edge_groups() -> None:
    lengths = ENC_DEC["ed128"]
    plans = plan(PRESETS["ul2"], lengths)
    empty = corrupt_mixture(
        np.zeros(10, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8), plans, SPECIAL, lengths,
        np.random.default_rng(0),
    )  # fmt: skip
    assert empty.input_ids.shape == (0, 128) and empty.labels.shape == (0, 128)
    # a group that draws only one component
    components = np.full(20, 3, dtype=np.int8)
    stream, starts = make_group(plans, components, 0)
    rows = corrupt_mixture(
        stream, starts, components, plans, SPECIAL, lengths, np.random.default_rng(0)
    )
    for i in range(20):
        one = Rows(*(getattr(rows, f)[i : i + 1] for f in Rows.__dataclass_fields__))
        check_rows(
            one,
            stream[starts[i] : starts[i] + plans[3].raw_length][None],
            plans[3],
            lengths,
            SPECIAL,
        )


# --------------------------------------------------------------------------- the checks can fail


def _mutations(lengths: Lengths) -> list[tuple[str, object]]:
    def swap_sentinels(r: Rows) -> None:
        s0, s1 = SPECIAL.sentinels[0], SPECIAL.sentinels[1]
        arr = r.labels if lengths.layout == "encoder-decoder" else r.input_ids
        row = arr[0]
        a, b = np.flatnonzero(row == s0)[-1], np.flatnonzero(row == s1)[-1]
        row[a], row[b] = s1, s0

    def att_off(r: Rows) -> None:
        r.attention_mask[0, r.input_length[0] - 1] = 0

    def label_past_end(r: Rows) -> None:
        r.labels[0, -1] = 5

    def id_past_end(r: Rows) -> None:
        r.input_ids[0, r.input_length[0]] = 5

    def short_length(r: Rows) -> None:
        r.input_length[0] -= 1

    def wrong_prefix(r: Rows) -> None:
        r.prefix_length[0] += 1

    def changed_token(r: Rows) -> None:
        r.input_ids[0, 3] = (r.input_ids[0, 3] + 1) % VOCAB

    def label_on_input(r: Rows) -> None:
        if lengths.layout == "decoder-only":
            r.labels[0, 2] = r.input_ids[0, 2]
        else:
            r.labels[0, 2] = IGNORE_INDEX

    def rows_swapped(r: Rows) -> None:
        for f in ("input_ids", "labels"):
            getattr(r, f)[[0, 1]] = getattr(r, f)[[1, 0]]

    return [
        (f.__name__, f)
        for f in (
            swap_sentinels,
            att_off,
            label_past_end,
            id_past_end,
            short_length,
            wrong_prefix,
            changed_token,
            label_on_input,
            rows_swapped,
        )
    ]


@pytest.mark.parametrize(("lname", "ci"), [("ed256x64", 3), ("do1024", 0)])
def test_checks_reject_corrupted_rows(lname: str, ci: int) -> None:
    """Every deliberate corruption of a correct batch is caught by both the structural checks
    and the reference comparison."""
    lengths = ALL_LENGTHS[lname]
    comp = plan(PRESETS["ul2"], lengths)[ci]  # X(3,.5) / R(3,.15): rows with padding
    assert comp.spans > 1 and comp.input_length < row_widths(lengths)[0]
    tokens = np.random.default_rng(0).integers(0, VOCAB, (4, comp.raw_length), dtype=np.int32)
    good = corrupt_component(tokens, comp, SPECIAL, lengths, np.random.default_rng(1))
    expected = reference_rows(tokens, comp, lengths, SPECIAL, 1)
    check_rows(good, tokens, comp, lengths, SPECIAL)
    compare_with_reference(good, expected)
    for name, mutate in _mutations(lengths):
        bad = Rows(*(getattr(good, f).copy() for f in Rows.__dataclass_fields__))
        mutate(bad)  # type: ignore[operator]
        with pytest.raises(AssertionError):
            check_rows(bad, tokens, comp, lengths, SPECIAL)
        with pytest.raises(AssertionError):
            compare_with_reference(bad, expected)
        assert name

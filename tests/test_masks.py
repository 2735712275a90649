"""Vectorized masks (denoise_cli.masks) against exact counts, exact distributions and the plain
per-row reference in tests/reference.py.

Statistical tests use fixed seeds, so they are deterministic; thresholds are p-values computed
with ``reference.chi2_sf`` (the chi-square survival function implemented with ``math``; scipy is
not a dependency), which is itself checked against hard-coded critical values below.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import reference as ref

from denoise_cli.rows.denoisers.prefix import random_prefix_lengths, s_prefix_min
from denoise_cli.rows.denoisers.span import random_spans_noise_mask, span_counts
from denoise_cli.rows.masks import random_segment_starts

ALPHA = 1e-4  # fixed seeds: a correct sampler fails one of these with probability ~1e-4 each


def spans_of(mask: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(non-noise lengths, noise lengths) ``[B, s]`` of masks that start with non-noise, end
    with noise and alternate ``2s`` runs (asserted)."""
    b, L = mask.shape
    change = mask[:, 1:] != mask[:, :-1]
    per_row = change.sum(axis=1)
    assert (per_row == 2 * s - 1).all(), np.unique(per_row)
    cols = np.nonzero(change)[1].reshape(b, 2 * s - 1) + 1
    edges = np.concatenate([np.zeros((b, 1), np.int64), cols, np.full((b, 1), L)], axis=1)
    segs = np.diff(edges, axis=1)
    return segs[:, 0::2], segs[:, 1::2]


def mask_codes(mask: np.ndarray) -> np.ndarray:
    weights = 1 << np.arange(mask.shape[1], dtype=np.int64)
    return mask.astype(np.int64) @ weights


# --------------------------------------------------------------------------- the stats helper


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841459, 1, 0.05),
        (6.634897, 1, 0.01),
        (18.307038, 10, 0.05),
        (29.588298, 10, 0.001),
        (37.566235, 20, 0.01),
        (124.342113, 100, 0.05),
        (149.449300, 100, 0.001),
    ],
)
def test_chi2_sf_matches_table(x: float, df: int, p: float) -> None:
    assert ref.chi2_sf(x, df) == pytest.approx(p, rel=1e-4)


def test_chi2_sf_edges() -> None:
    assert ref.chi2_sf(0.0, 3) == 1.0
    assert ref.chi2_sf(1e4, 3) < 1e-300 or ref.chi2_sf(1e4, 3) == 0.0
    # monotone decreasing in x
    vals = [ref.chi2_sf(x, 7) for x in np.linspace(0.1, 40, 50)]
    assert all(a > b for a, b in itertools.pairwise(vals))


# --------------------------------------------------------------------------- counts

COUNT_CASES = [
    # (L, mu, r)                       what it exercises
    (2, 3.0, 0.15),  # smallest row: n clamps to 1 = L-1
    (2, 1.0, 0.5),
    (3, 1.0, 0.3),  # n=1, s=1
    (10, 3.0, 0.01),  # r tiny: rint(0.1)=0 -> n clamps to 1
    (10, 20.0, 0.97),  # r large: rint(9.7)=10 -> n clamps to L-1=9, one span
    (20, 50.0, 0.5),  # mu bigger than n: s = max(rint(0.2), 1) = 1
    (20, 1.0, 0.3),  # mu = 1: every noise token its own span
    (100, 1.0, 0.5),  # mu = 1, s == non-noise: fully alternating mask
    (101, 1.0, 0.5),
    (5, 2.5, 0.5),  # half-to-even: rint(2.5) = 2 (floor(x+.5) would give 3)
    (7, 1.0, 0.4),  # rint(2.8)=3 noise, 3 spans, 4 non-noise
    (50, 4.0, 0.2),  # n=10, rint(2.5)=2 spans (half to even)
    (30, 4.0, 0.2),  # n=6, rint(1.5)=2 spans
    (568, 3.0, 0.15),
    (587, 8.0, 0.15),
    (765, 3.0, 0.5),
    (1004, 64.0, 0.5),
    (599, 64.0, 0.15),
]


def test_span_counts_matches_reference_on_grid() -> None:
    for L in [*range(2, 120), 511, 566, 567, 568, 588, 765, 766, 990, 1006]:
        for r in (0.01, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 0.9, 0.99):
            for mu in (1.0, 1.5, 2.0, 2.5, 3.0, 8.0, 32.0, 64.0):
                assert span_counts(L, r, mu) == ref.span_counts_ref(L, r, mu), (L, r, mu)
    # array form agrees with the scalar form
    Ls = np.arange(2, 300)
    n, s = span_counts(Ls, 0.5, 3.0)
    assert [(int(a), int(b)) for a, b in zip(n, s, strict=True)] == [
        ref.span_counts_ref(int(L), 0.5, 3.0) for L in Ls
    ]


def test_span_counts_per_row_arrays_match_reference() -> None:
    """One length, rate and mean span per row (the collator's use) agrees with the scalar
    reference row by row, including half-way cases and the clamps at 1 and L-1."""
    rng = np.random.default_rng(0)
    Ls = np.concatenate([np.arange(2, 60), rng.integers(2, 5000, 2000), [50, 30, 5, 7]])
    rates = np.concatenate(
        [rng.choice([0.01, 0.15, 0.2, 0.25, 0.5, 0.99], len(Ls) - 4), [0.2, 0.2, 0.5, 0.5]]
    )
    mus = np.concatenate(
        [rng.choice([1.0, 1.5, 2.5, 3.0, 4.0, 32.0, 64.0], len(Ls) - 4), [4.0, 4.0, 1.0, 100.0]]
    )
    n, s = span_counts(Ls, rates, mus)
    got = [(int(a), int(b)) for a, b in zip(n, s, strict=True)]
    want = [
        ref.span_counts_ref(int(L), float(r), float(mu))
        for L, r, mu in zip(Ls, rates, mus, strict=True)
    ]
    assert got == want


def test_span_counts_round_half_to_even() -> None:
    assert span_counts(5, 0.5, 1.0)[0] == 2  # 2.5 -> 2
    assert span_counts(7, 0.5, 100.0)[0] == 4  # 3.5 -> 4
    assert span_counts(50, 0.2, 4.0) == (10, 2)  # 10/4 = 2.5 -> 2
    assert span_counts(30, 0.2, 4.0) == (6, 2)  # 6/4 = 1.5 -> 2


@pytest.mark.parametrize(("L", "mu", "r"), COUNT_CASES)
def test_noise_mask_exact_counts_over_seeds(L: int, mu: float, r: float) -> None:
    n, s = ref.span_counts_ref(L, r, mu)
    assert s <= L - n, "case must be valid"
    for seed in range(200):
        rng = np.random.default_rng(seed)
        mask = random_spans_noise_mask(rng, 8, L, r, mu)
        assert mask.shape == (8, L)
        assert mask.dtype == np.bool_
        assert (mask.sum(axis=1) == n).all(), (seed, mask.sum(axis=1))
        starts = mask & ~np.concatenate([np.zeros((8, 1), bool), mask[:, :-1]], axis=1)
        assert (starts.sum(axis=1) == s).all(), (seed, starts.sum(axis=1))
        assert not mask[:, 0].any(), "first token must never be noise"
        assert mask[:, -1].all(), "last segment is noise (non-noise first, s of each)"


def test_noise_mask_rows_differ_and_mu1_alternates() -> None:
    rng = np.random.default_rng(3)
    mask = random_spans_noise_mask(rng, 4, 100, 0.5, 1.0)  # n = s = 50 = non-noise
    expect = np.arange(100) % 2 == 1
    assert (mask == expect).all()
    rng = np.random.default_rng(3)
    mask = random_spans_noise_mask(rng, 64, 568, 0.15, 3.0)
    assert len({row.tobytes() for row in mask}) == 64


def test_noise_mask_too_many_spans_raises() -> None:
    # L=7, r=.5: rint(3.5) = 4 noise in 4 spans, only 3 non-noise tokens to separate them
    assert ref.span_counts_ref(7, 0.5, 1.0) == (4, 4)
    with pytest.raises(ValueError, match="spans"):
        random_spans_noise_mask(np.random.default_rng(0), 2, 7, 0.5, 1.0)


def test_noise_mask_empty_batch() -> None:
    mask = random_spans_noise_mask(np.random.default_rng(0), 0, 568, 0.15, 3.0)
    assert mask.shape == (0, 568)


def test_noise_mask_determinism() -> None:
    a = random_spans_noise_mask(np.random.default_rng(123), 32, 568, 0.15, 3.0)
    b = random_spans_noise_mask(np.random.default_rng(123), 32, 568, 0.15, 3.0)
    c = random_spans_noise_mask(np.random.default_rng(124), 32, 568, 0.15, 3.0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------- segment starts


@pytest.mark.parametrize(
    ("m", "k"),
    [(1, 1), (2, 1), (2, 2), (5, 1), (5, 2), (5, 4), (5, 5), (40, 13), (483, 28), (90, 89)],
)
def test_segment_starts_exact_k_segments(m: int, k: int) -> None:
    for seed in range(200):
        starts = random_segment_starts(np.random.default_rng(seed), 6, m, k)
        assert starts.shape == (6, m)
        assert starts[:, 0].all()
        assert (starts.sum(axis=1) == k).all()
        # segment lengths: differences of start positions (and m) are all >= 1 by construction
        # of a boolean vector; check they add up to m with k parts
        for row in starts:
            pos = [*np.flatnonzero(row).tolist(), m]
            lens = [pos[i + 1] - pos[i] for i in range(k)]
            assert min(lens) >= 1 and sum(lens) == m and len(lens) == k


@pytest.mark.parametrize(("m", "k"), [(3, 0), (3, 4), (0, 1)])
def test_segment_starts_invalid(m: int, k: int) -> None:
    with pytest.raises(ValueError):
        random_segment_starts(np.random.default_rng(0), 2, m, k)


def test_segment_starts_uniform_subsets() -> None:
    m, k = 7, 3  # C(6, 2) = 15 equally likely splits
    starts = random_segment_starts(np.random.default_rng(11), 60_000, m, k)
    comps = ref.all_compositions(m, k)
    code_of = {}
    for comp in comps:
        pos = np.cumsum((0, *comp[:-1]))
        v = np.zeros(m, bool)
        v[pos] = True
        code_of[int(mask_codes(v[None, :])[0])] = comp
    obs = ref.histogram(mask_codes(starts))
    stat, df, p = ref.chi2_gof(obs, dict.fromkeys(code_of, 1 / len(comps)))
    assert df == 14
    assert p > ALPHA, (stat, df, p)


# --------------------------------------------------------------------------- exact distribution

DIST_CASES = [
    (8, 2.0, 0.5),  # n=4, s=2: 3*3 = 9 masks
    (10, 1.5, 0.3),  # n=3, s=2, 7 non-noise: 2*6 = 12 masks
    (9, 1.0, 0.4),  # n=4 (rint 3.6), s=4, 5 non-noise: 1*4 = 4 masks
    (11, 3.0, 0.5),  # n=6 (rint 5.5), s=2: 5*4 = 20 masks
    (12, 2.0, 0.5),  # n=6, s=3: 10*10 = 100 masks
]


def _multinomial_composition_sampler(
    rng: np.random.Generator, L: int, r: float, mu: float
) -> list[bool]:
    """A plausible but WRONG sampler (1 + multinomial parts): not uniform over compositions.
    Used only to show the chi-square check has the power to reject a biased sampler."""
    n, s = ref.span_counts_ref(L, r, mu)
    noise = 1 + rng.multinomial(n - s, [1 / s] * s)
    keep = 1 + rng.multinomial(L - n - s, [1 / s] * s)
    return ref.mask_from_parts_ref(keep.tolist(), noise.tolist())


@pytest.mark.parametrize(("L", "mu", "r"), DIST_CASES)
def test_noise_mask_distribution_is_exact(L: int, mu: float, r: float) -> None:
    exact = ref.all_valid_masks_ref(L, r, mu)
    rng = np.random.default_rng(20240 + L)
    mask = random_spans_noise_mask(rng, 100_000, L, r, mu)
    obs = ref.histogram(mask_codes(mask))
    assert set(obs) <= set(exact), "sampled a mask outside the T5 support"
    assert set(obs) == set(exact), "some valid masks never came up"
    stat, df, p = ref.chi2_gof(obs, exact)
    assert df == len(exact) - 1
    assert p > ALPHA, (stat, df, p)


@pytest.mark.parametrize(("L", "mu", "r"), DIST_CASES)
def test_reference_sampler_distribution_is_exact(L: int, mu: float, r: float) -> None:
    """The reference itself matches the exact distribution (so comparing against it means
    something)."""
    exact = ref.all_valid_masks_ref(L, r, mu)
    rng = np.random.default_rng(7 + L)
    codes = []
    for _ in range(20 * len(exact) + 400):
        m = ref.noise_mask_ref(rng, L, r, mu)
        codes.append(sum(1 << i for i, b in enumerate(m) if b))
    obs = ref.histogram(codes)
    assert set(obs) <= set(exact)
    _, _, p = ref.chi2_gof(obs, exact)
    assert p > ALPHA


def test_chi2_check_rejects_biased_sampler() -> None:
    """Power check: the same test at the same sample size rejects a non-uniform sampler."""
    L, mu, r = 12, 2.0, 0.5
    exact = ref.all_valid_masks_ref(L, r, mu)
    rng = np.random.default_rng(5)
    codes = []
    for _ in range(20_000):
        m = _multinomial_composition_sampler(rng, L, r, mu)
        codes.append(sum(1 << i for i, b in enumerate(m) if b))
    _, _, p = ref.chi2_gof(ref.histogram(codes), exact)
    assert p < 1e-12


# --------------------------------------------------------------------------- span length histograms

HIST_CASES = [(568, 3.0, 0.15), (300, 8.0, 0.5), (120, 1.5, 0.3)]


@pytest.mark.parametrize(("L", "mu", "r"), HIST_CASES)
def test_span_length_histograms_vectorized_vs_reference(L: int, mu: float, r: float) -> None:
    """Two-sample chi-square of span lengths, vectorized vs reference (different seeds). One
    noise span and one non-noise segment per row, at index ``row % s``, so observations are
    independent and every position is covered. Each is also tested against the exact marginal
    ``P(part = j) = C(m-j-1, k-2) / C(m-1, k-1)``."""
    n, s = ref.span_counts_ref(L, r, mu)
    B_vec, B_ref = 30_000, 3_000
    keep_v, noise_v = spans_of(
        random_spans_noise_mask(np.random.default_rng(99), B_vec, L, r, mu), s
    )
    pick_v = np.arange(B_vec) % s
    hv_noise = ref.histogram(noise_v[np.arange(B_vec), pick_v])
    hv_keep = ref.histogram(keep_v[np.arange(B_vec), pick_v])

    rng = np.random.default_rng(1234)
    ref_noise, ref_keep = [], []
    for i in range(B_ref):
        keep_parts, noise_parts = ref.span_lengths_ref(rng, L, r, mu)
        ref_noise.append(noise_parts[i % s])
        ref_keep.append(keep_parts[i % s])
    hr_noise, hr_keep = ref.histogram(ref_noise), ref.histogram(ref_keep)

    for hv, hr, m in ((hv_noise, hr_noise, n), (hv_keep, hr_keep, L - n)):
        stat, df, p = ref.chi2_two_sample(hv, hr)
        assert p > ALPHA, ("two-sample", stat, df, p)
        pmf = ref.part_length_pmf(m, s)
        for h in (hv, hr):
            stat, df, p = ref.chi2_gof(h, pmf)
            assert p > ALPHA, ("vs exact marginal", stat, df, p)

    # every position has the same mean length n/s (and (L-n)/s): no positional bias
    for arr, mean in ((noise_v, n / s), (keep_v, (L - n) / s)):
        sd = arr.std(axis=0, ddof=1).max()
        se = max(sd, 1e-9) / math.sqrt(B_vec)
        assert np.abs(arr.mean(axis=0) - mean).max() < 6 * se


def test_two_sample_check_rejects_different_distributions() -> None:
    """Power check for the two-sample statistic: mu=3 vs mu=4 lengths are told apart."""
    L, r = 568, 0.15
    _, s3 = ref.span_counts_ref(L, r, 3.0)
    _, s4 = ref.span_counts_ref(L, r, 4.0)
    _, a = spans_of(random_spans_noise_mask(np.random.default_rng(1), 3000, L, r, 3.0), s3)
    _, b = spans_of(random_spans_noise_mask(np.random.default_rng(2), 3000, L, r, 4.0), s4)
    _, _, p = ref.chi2_two_sample(ref.histogram(a[:, 0]), ref.histogram(b[:, 0]))
    assert p < 1e-6


# --------------------------------------------------------------------------- prefix lengths


def test_prefix_min_matches_reference() -> None:
    for L in range(2, 1100):
        for r in (0.05, 0.1, 0.25, 0.3, 0.4, 0.5):
            assert s_prefix_min(L, r) == ref.prefix_min_ref(L, r), (L, r)
    # half to even: (1 - .5) * 567 = 283.5 -> 284; (1 - .5) * 569 = 284.5 -> 284
    assert s_prefix_min(568, 0.25) == 284
    assert s_prefix_min(570, 0.25) == 284


@pytest.mark.parametrize(("L", "r"), [(568, 0.25), (511, 0.25), (60, 0.25), (40, 0.5), (1022, 0.5)])
def test_prefix_lengths_uniform(L: int, r: float) -> None:
    lo, hi = ref.prefix_min_ref(L, r), L - 1
    if r == 0.5:
        assert lo == 1
    p = random_prefix_lengths(np.random.default_rng(L), 200_000, L, r)
    assert p.shape == (200_000,)
    assert p.min() == lo and p.max() == hi, (p.min(), p.max(), lo, hi)
    counts = np.bincount(p - lo, minlength=hi - lo + 1)
    assert len(counts) == hi - lo + 1
    k = hi - lo + 1
    stat, df, pv = ref.chi2_gof(counts.tolist(), [1 / k] * k)
    assert pv > ALPHA, (stat, df, pv)


def test_prefix_lengths_smallest_rows() -> None:
    assert (random_prefix_lengths(np.random.default_rng(0), 100, 2, 0.25) == 1).all()
    assert (random_prefix_lengths(np.random.default_rng(0), 100, 2, 0.5) == 1).all()
    p = random_prefix_lengths(np.random.default_rng(0), 1000, 3, 0.5)
    assert set(p.tolist()) == {1, 2}


def test_prefix_lengths_determinism() -> None:
    a = random_prefix_lengths(np.random.default_rng(5), 100, 568, 0.25)
    b = random_prefix_lengths(np.random.default_rng(5), 100, 568, 0.25)
    c = random_prefix_lengths(np.random.default_rng(6), 100, 568, 0.25)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_segment_starts_exact_even_with_tied_keys() -> None:
    """Tied float keys (practically impossible with float64) take the argpartition fallback:
    still exactly k segments per row."""
    from denoise_cli.rows.masks import random_segment_starts

    class Coarse:
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)

        def random(self, shape: tuple[int, int]) -> np.ndarray:
            return np.round(self.rng.random(shape), 1)  # only 11 distinct values: many ties

    for items, segs in ((50, 7), (20, 19), (30, 2)):
        st = random_segment_starts(Coarse(), 64, items, segs)  # type: ignore[arg-type]
        assert (st.sum(axis=1) == segs).all() and st[:, 0].all()

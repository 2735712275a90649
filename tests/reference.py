"""Slow, plainly written per-row references for the vectorized engine.

Everything here is written from the T5 / UL2 descriptions with Python loops and lists, one row at
a time, and deliberately does NOT import or call anything from ``denoise_cli.masks`` or
``denoise_cli.corrupt`` (the code under test). Only plain data (``Lengths`` fields, ids) goes in.

- :func:`span_counts_ref`: ``n = clamp(round_half_even(L*r), 1, L-1)``,
  ``s = max(round_half_even(n/mu), 1)``.
- :func:`random_composition_ref`: a uniform random split of ``m`` items into ``k`` positive
  parts: ``k-1`` distinct cut points chosen uniformly from ``1..m-1``, sorted.
- :func:`noise_mask_ref`: T5's ``random_spans_noise_mask`` for one row (non-noise first,
  alternating, so the mask starts with non-noise and ends with noise).
- :func:`span_corrupt_ref`: inputs = non-noise tokens with noise span ``k`` replaced by sentinel
  ``k``; targets = ``sentinel k + span k tokens`` for ``k = 0..s-1``.
- :func:`prefix_length_ref`: the S split, uniform on ``[max(1, round((1-2r)(L-1))), L-1]``.
- :func:`assemble_row_ref`: the two row layouts (encoder-decoder / decoder-only) for one row.
- :func:`random_spans_helper_ref`: T5's ``random_spans_helper`` (linear scan, with its "minor
  hack" for ``r == 0.5``), and :func:`largest_raw_length_ref`, a brute-force scan of every raw
  length against the input *and* target budgets (plus an optional mode token).

Python's built-in ``round`` on a float rounds half to even, like ``tf.round`` / ``np.rint``.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

IGNORE = -100


# --------------------------------------------------------------------------- counts


def span_counts_ref(length: int, rate: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) for one row of ``length`` tokens."""
    noise = round(length * rate)  # half to even
    if noise < 1:
        noise = 1
    if noise > length - 1:
        noise = length - 1
    spans = round(noise / mean_span)
    if spans < 1:
        spans = 1
    return noise, spans


def prefix_min_ref(length: int, rate: float) -> int:
    lo = round((1.0 - 2.0 * rate) * (length - 1))
    return max(1, lo)


# --------------------------------------------------------------------------- sampling


def random_composition_ref(rng: np.random.Generator, m: int, k: int) -> list[int]:
    """Uniform random composition of ``m`` into ``k`` positive parts."""
    if not 1 <= k <= m:
        raise ValueError(f"cannot split {m} items into {k} positive parts")
    if k == 1:
        return [m]
    cuts = rng.choice(np.arange(1, m), size=k - 1, replace=False)
    cuts = sorted(int(c) for c in cuts)
    bounds = [0, *cuts, m]
    parts = []
    for i in range(k):
        parts.append(bounds[i + 1] - bounds[i])
    return parts


def span_lengths_ref(
    rng: np.random.Generator, length: int, rate: float, mean_span: float
) -> tuple[list[int], list[int]]:
    """(non-noise segment lengths, noise span lengths), each of length ``s``."""
    noise, spans = span_counts_ref(length, rate, mean_span)
    nonnoise = length - noise
    noise_parts = random_composition_ref(rng, noise, spans)
    keep_parts = random_composition_ref(rng, nonnoise, spans)
    return keep_parts, noise_parts


def mask_from_parts_ref(keep_parts: list[int], noise_parts: list[int]) -> list[bool]:
    mask: list[bool] = []
    for keep, noise in zip(keep_parts, noise_parts, strict=True):
        for _ in range(keep):
            mask.append(False)
        for _ in range(noise):
            mask.append(True)
    return mask


def noise_mask_ref(
    rng: np.random.Generator, length: int, rate: float, mean_span: float
) -> list[bool]:
    """One row of T5's random-spans noise mask."""
    keep_parts, noise_parts = span_lengths_ref(rng, length, rate, mean_span)
    mask = mask_from_parts_ref(keep_parts, noise_parts)
    assert len(mask) == length
    return mask


def prefix_length_ref(rng: np.random.Generator, length: int, rate: float) -> int:
    lo = prefix_min_ref(length, rate)
    hi = length - 1
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------- exact distributions


def count_compositions(m: int, k: int) -> int:
    """Number of compositions of ``m`` into ``k`` positive parts: C(m-1, k-1)."""
    return math.comb(m - 1, k - 1)


def all_valid_masks_ref(length: int, rate: float, mean_span: float) -> dict[int, float]:
    """Exact distribution of the random-spans mask for a small ``length``, by brute force over
    all ``2**length`` boolean vectors. Key: ``sum(mask[i] << i)``; value: probability.

    A vector is possible iff it starts with non-noise, has exactly ``n`` noise tokens in exactly
    ``s`` runs and ends with noise (non-noise first, ``s`` of each alternating). The two
    compositions are independent and uniform, and a valid mask determines both, so every valid
    mask has probability ``1 / (C(n-1, s-1) * C(L-n-1, s-1))``.
    """
    noise, spans = span_counts_ref(length, rate, mean_span)
    total = count_compositions(noise, spans) * count_compositions(length - noise, spans)
    out: dict[int, float] = {}
    for code in range(2**length):
        bits = [(code >> i) & 1 == 1 for i in range(length)]
        if bits[0] or not bits[-1]:
            continue
        if sum(bits) != noise:
            continue
        runs = 0
        for i in range(length):
            if bits[i] and (i == 0 or not bits[i - 1]):
                runs += 1
        if runs != spans:
            continue
        out[code] = 1.0 / total
    assert len(out) == total, (len(out), total)
    return out


def part_length_pmf(m: int, k: int) -> dict[int, float]:
    """Marginal distribution of one part of a uniform composition of ``m`` into ``k`` parts:
    ``P(part = j) = C(m-j-1, k-2) / C(m-1, k-1)`` (``k >= 2``)."""
    if k == 1:
        return {m: 1.0}
    total = math.comb(m - 1, k - 1)
    return {j: math.comb(m - j - 1, k - 2) / total for j in range(1, m - k + 2)}


# --------------------------------------------------------------------------- corruption


def span_corrupt_ref(
    tokens: list[int], mask: list[bool], sentinels: list[int]
) -> tuple[list[int], list[int]]:
    """Inputs and targets of one row (no mode token, no EOS)."""
    inputs: list[int] = []
    targets: list[int] = []
    k = -1
    for i in range(len(tokens)):
        starts_span = mask[i] and (i == 0 or not mask[i - 1])
        if starts_span:
            k += 1
            inputs.append(sentinels[k])
            targets.append(sentinels[k])
        if mask[i]:
            targets.append(tokens[i])
        else:
            inputs.append(tokens[i])
    return inputs, targets


def prefix_split_ref(tokens: list[int], prefix: int) -> tuple[list[int], list[int]]:
    return list(tokens[:prefix]), list(tokens[prefix:])


def assemble_row_ref(
    inputs: list[int],
    targets: list[int],
    mode_id: int | None,
    eos: int,
    pad: int,
    layout: str,
    inputs_length: int = 0,
    targets_length: int = 0,
    seq_length: int = 0,
) -> dict[str, object]:
    """One output row as plain lists.

    encoder-decoder: ``input_ids = [mode] inputs EOS pad...``, ``labels = targets EOS -100...``.
    decoder-only: ``input_ids = [mode] inputs targets EOS pad...``; labels are the ids on
    ``targets EOS`` and -100 elsewhere; ``prefix_length = mode + inputs``.
    """
    head = [] if mode_id is None else [mode_id]
    if layout == "encoder-decoder":
        real = [*head, *inputs, eos]
        lab_real = [*targets, eos]
        if len(real) > inputs_length or len(lab_real) > targets_length:
            raise ValueError("row does not fit")
        ids = real + [pad] * (inputs_length - len(real))
        labels = lab_real + [IGNORE] * (targets_length - len(lab_real))
        input_length = len(real)
    else:
        real = [*head, *inputs, *targets, eos]
        if len(real) > seq_length:
            raise ValueError("row does not fit")
        ids = real + [pad] * (seq_length - len(real))
        labels = []
        for i in range(seq_length):
            if len(head) + len(inputs) <= i < len(real):
                labels.append(ids[i])
            else:
                labels.append(IGNORE)
        input_length = len(real)
    attention = [1 if i < input_length else 0 for i in range(len(ids))]
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": attention,
        "input_length": input_length,
        "target_length": len(targets) + 1,
        "prefix_length": len(head) + len(inputs),
    }


# --------------------------------------------------------------------------- length budgeting


def random_spans_helper_ref(
    inputs_length: int,
    noise_density: float,
    mean_noise_span_length: float,
    extra_tokens_per_span_inputs: int = 1,
    extra_tokens_per_span_targets: int = 1,
) -> tuple[int, int]:
    """T5's ``random_spans_helper``: (raw tokens length, targets length), as in
    ``t5/data/preprocessors.py``, including its "minor hack" for ``noise_density == 0.5``."""

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise_tokens = round(tokens_length * noise_density)  # int(round(.)) in T5
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        num_noise_spans = round(num_noise_tokens / mean_noise_span_length)
        return (
            num_nonnoise_tokens + num_noise_spans * extra_tokens_per_span_inputs + 1,
            num_noise_tokens + num_noise_spans * extra_tokens_per_span_targets + 1,
        )

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def span_row_lengths_ref(
    length: int, rate: float, mean_span: float, mode: int
) -> tuple[int, int, int]:
    """(encoder inputs, targets, decoder-only sequence) real token counts of a span row."""
    noise, spans = span_counts_ref(length, rate, mean_span)
    inputs = mode + (length - noise) + spans + 1
    targets = noise + spans + 1
    seq = mode + (length - noise + spans) + (noise + spans) + 1
    return inputs, targets, seq


def largest_raw_length_ref(
    kind: str,
    rate: float,
    mean_span: float,
    mode: int,
    layout: str,
    inputs_length: int = 0,
    targets_length: int = 0,
    seq_length: int = 0,
) -> int:
    """Largest raw length whose rows fit the budget, by checking every length from 2 up to a
    bound past which nothing can fit (0 if none fits). No monotonicity assumed."""
    if layout == "encoder-decoder":
        if kind == "S":
            bound = inputs_length + 2
        else:
            # inputs >= L - (L*r + 1/2) + 2, so L <= I / (1 - r) for anything that fits
            bound = int(inputs_length / (1.0 - rate)) + 4
    else:
        bound = seq_length + 2
    best = 0
    for L in range(2, bound + 1):
        if kind == "S":
            lo = prefix_min_ref(L, rate)
            if layout == "encoder-decoder":
                # inputs: [mode] prefix EOS with prefix <= L-1; targets: (L - prefix) + EOS
                ok = mode + (L - 1) + 1 <= inputs_length and (L - lo) + 1 <= targets_length
            else:
                ok = mode + L + 1 <= seq_length
        else:
            inp, tgt, seq = span_row_lengths_ref(L, rate, mean_span, mode)
            if layout == "encoder-decoder":
                ok = inp <= inputs_length and tgt <= targets_length
            else:
                ok = seq <= seq_length
        if ok:
            best = L
    return best


# --------------------------------------------------------------------------- statistics


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution, ``Q(df/2, x/2)``, implemented with the
    regularized incomplete gamma function (series for ``x < a+1``, Lentz continued fraction
    otherwise, as in Numerical Recipes ``gammq``). Good to ~1e-12 relative for our ranges."""
    if x <= 0:
        return 1.0
    a = df / 2.0
    z = x / 2.0
    log_pref = -z + a * math.log(z) - math.lgamma(a)
    if z < a + 1.0:
        term = 1.0 / a
        total = term
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_pref))
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(log_pref) * h


def chi2_gof(
    observed: dict[int, int] | list[int],
    expected_probs: dict[int, float] | list[float],
    min_expected: float = 5.0,
) -> tuple[float, int, float]:
    """Pearson goodness of fit. Cells with expected count below ``min_expected`` are pooled
    into one cell. Returns (statistic, degrees of freedom, p-value). Observations outside the
    support of ``expected_probs`` make the p-value 0."""
    if isinstance(observed, list):
        observed = dict(enumerate(observed))
    if isinstance(expected_probs, list):
        expected_probs = dict(enumerate(expected_probs))
    n = sum(observed.values())
    if any(k not in expected_probs and v > 0 for k, v in observed.items()):
        return math.inf, 0, 0.0
    cells_o: list[float] = []
    cells_e: list[float] = []
    pool_o = 0.0
    pool_e = 0.0
    for k, p in expected_probs.items():
        e = n * p
        o = observed.get(k, 0)
        if e < min_expected:
            pool_o += o
            pool_e += e
        else:
            cells_o.append(o)
            cells_e.append(e)
    if pool_e > 0:
        cells_o.append(pool_o)
        cells_e.append(pool_e)
    stat = sum((o - e) ** 2 / e for o, e in zip(cells_o, cells_e, strict=True))
    df = len(cells_o) - 1
    return stat, df, chi2_sf(stat, df)


def chi2_two_sample(
    a: dict[int, int], b: dict[int, int], min_count: int = 10
) -> tuple[float, int, float]:
    """Two-sample chi-square test of homogeneity for two histograms (possibly of different
    totals). Bins whose combined count is below ``min_count`` are pooled. Returns (statistic,
    degrees of freedom, p-value)."""
    na = sum(a.values())
    nb = sum(b.values())
    keys = sorted(set(a) | set(b))
    bins: list[tuple[int, int]] = []
    pool = [0, 0]
    for k in keys:
        x, y = a.get(k, 0), b.get(k, 0)
        if x + y < min_count:
            pool[0] += x
            pool[1] += y
        else:
            bins.append((x, y))
    if pool[0] + pool[1] > 0:
        bins.append((pool[0], pool[1]))
    ka = math.sqrt(nb / na)
    kb = math.sqrt(na / nb)
    stat = sum((ka * x - kb * y) ** 2 / (x + y) for x, y in bins)
    df = len(bins) - 1
    return stat, df, chi2_sf(stat, df)


def histogram(values: object) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in np.asarray(values).ravel().tolist():
        out[v] = out.get(v, 0) + 1
    return out


def all_compositions(m: int, k: int) -> list[tuple[int, ...]]:
    """Every composition of ``m`` into ``k`` positive parts (for tiny ``m``)."""
    out = []
    for cuts in combinations(range(1, m), k - 1):
        b = [0, *cuts, m]
        out.append(tuple(b[i + 1] - b[i] for i in range(k)))
    return out

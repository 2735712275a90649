"""The vectorized corruption behind :class:`~denoise_cli.load.collator.DataCollatorForUL2`: rows
of different real lengths, each with its own denoiser, corrupted in one pass (pure numpy, an
explicit ``np.random.Generator``).

Span counts are T5's (:func:`denoise_cli.rows.denoisers.span.span_counts`) on each row's real
length. The two uniform compositions of every span row are drawn at once (the ``k-1``
smallest of ``m-1`` i.i.d. uint32 keys per row via one ``np.sort`` on a padded array, missing
slots keyed highest, exact rejection on a tied threshold); each output row is then a run of
segments (kept tokens, sentinel, target tokens, EOS, padding), and ``input_ids``/``labels``
are each one ``np.repeat`` of segment offsets and one ``take``. No Python loop runs over rows.
Figures: benchmarks/README_collator.md.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..rows.denoisers.span import span_counts

IGNORE_INDEX = -100


@dataclass(frozen=True)
class RowPlan:
    """Per-row parameters of one batch (all arrays ``[B]``), for :func:`corrupt_ragged`."""

    is_span: np.ndarray  # bool
    rate: np.ndarray  # float64
    mean_span: np.ndarray  # float64 (unused for S rows)
    mode_id: np.ndarray  # int64, -1: no mode token


def uint32_keys(rng: np.random.Generator, b: int, w: int) -> np.ndarray:
    """``rng.integers(0, 2**32, size=(b, w), dtype=np.uint32)``, bit for bit. With PCG64 (the
    default), an even count and no half-word buffered, numpy draws each 64-bit output as its
    low then its high 32 bits, so the raw outputs viewed as little-endian uint32 are the same
    keys (~2x faster: no per-value call)."""
    bg = getattr(rng, "bit_generator", None)
    if (
        (b * w) % 2 == 0
        and type(bg) is np.random.PCG64
        and sys.byteorder == "little"
        and not bg.state["has_uint32"]
    ):
        raw: np.ndarray = bg.random_raw((b * w) // 2)
        return raw.view(np.uint32).reshape(b, w)
    return rng.integers(0, 2**32, size=(b, w), dtype=np.uint32)


def choose_gaps(rng: np.random.Generator, m: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Boolean ``[B, max(m)-1]``: row ``i`` marks a uniformly random ``cuts[i]``-subset of its
    first ``m[i]-1`` gaps (no other column).

    The ``cuts`` smallest of i.i.d. uniform uint32 keys (a 32-bit sort is ~5x faster than a
    float64 one here). A row whose threshold key is tied (chance ~1e-7) is redrawn with fresh
    keys: the tie event does not depend on where the keys sit, so conditioning on its absence
    keeps every subset equally likely (exact rejection sampling)."""
    b = len(m)
    w = max(int(m.max()) - 1, 0) if b else 0
    if w == 0 or not cuts.any():
        return np.zeros((b, w), dtype=bool)
    return _smallest_keys(rng, uint32_keys(rng, b, w), m, cuts)


def _smallest_keys(
    rng: np.random.Generator, keys: np.ndarray, m: np.ndarray, cuts: np.ndarray
) -> np.ndarray:
    """:func:`choose_gaps` on drawn ``keys`` (overwritten): tied rows are drawn again."""
    b, w = keys.shape
    keys[np.arange(w)[None, :] >= (m - 1)[:, None]] = np.uint32(2**32 - 1)  # gaps it lacks
    thr = np.sort(keys, axis=1)[np.arange(b), np.maximum(cuts - 1, 0)]
    chosen: np.ndarray = (keys <= thr[:, None]) & (cuts > 0)[:, None]
    tied = np.flatnonzero(np.count_nonzero(chosen, axis=1) != cuts)
    if len(tied):
        chosen[tied] = False
        chosen[tied, : int(m[tied].max()) - 1] = choose_gaps(rng, m[tied], cuts[tied])
    return chosen


def _parts(chosen: np.ndarray, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Part lengths (flat, row after row) of the compositions whose parts start at item 0 and
    after each gap ``chosen`` marks (``k[i] - 1`` per row)."""
    b, w = chosen.shape
    first = np.cumsum(k) - k  # where each row's parts begin in the flat output
    cols = np.zeros(int(k.sum()), dtype=np.int64)
    later = np.ones(len(cols), dtype=bool)
    later[first] = False
    # row-major: sorted within each row (1-D flatnonzero: ~2x faster than 2-D)
    cols[later] = np.flatnonzero(chosen) - np.repeat(np.arange(0, b * w, w), k - 1) + 1
    ends = np.empty_like(cols)
    ends[:-1] = cols[1:]
    ends[first + k - 1] = m
    return ends - cols


def ragged_compositions(rng: np.random.Generator, m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Uniform random compositions of ``m[i]`` items into ``k[i]`` positive parts, for every row
    at once (a part starts at item 0 and after each gap :func:`choose_gaps` picks). Returns the
    part lengths flattened row after row (``k.sum()`` values)."""
    if len(m) == 0:
        return np.zeros(0, dtype=np.int64)
    if (k < 1).any() or (k > m).any():
        raise ValueError("every row needs 1 <= parts <= items")
    return _parts(choose_gaps(rng, m, k - 1), m, k)


def paired_compositions(
    rng: np.random.Generator, m1: np.ndarray, m2: np.ndarray, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(ragged_compositions(rng, m1, k), ragged_compositions(rng, m2, k))`` from the same
    keys, drawn in the same order, with one pass (sort, threshold, scan) over both blocks
    stacked. Only in the ~1e-7 event of a tied threshold does the redraw come later in the
    stream than it would in two calls (same distribution, exact rejection either way)."""
    b = len(k)
    if b == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if (k < 1).any() or (k > m1).any() or (k > m2).any():
        raise ValueError("every row needs 1 <= parts <= items")
    cuts = k - 1
    w1, w2 = int(m1.max()) - 1, int(m2.max()) - 1
    m = np.concatenate([m1, m2])
    kk = np.concatenate([k, k])
    if not cuts.any():  # one part per row: no gap to choose, nothing drawn
        chosen = np.zeros((2 * b, max(w1, w2)), dtype=bool)
    else:  # some row has k >= 2, so w1, w2 >= 1: both blocks are drawn, as in two calls
        keys = np.empty((2 * b, max(w1, w2)), dtype=np.uint32)
        keys[:b, :w1] = uint32_keys(rng, b, w1)
        keys[b:, :w2] = uint32_keys(rng, b, w2)
        chosen = _smallest_keys(rng, keys, m, np.concatenate([cuts, cuts]))
    parts = _parts(chosen, m, kk)
    n1 = int(k.sum())
    return parts[:n1], parts[n1:]


def ragged_span_masks(
    rng: np.random.Generator, lengths: np.ndarray, n: np.ndarray, s: np.ndarray, width: int
) -> np.ndarray:
    """Boolean noise masks ``[B, width]`` (False past each row's length): row ``i`` has
    ``n[i]`` noise tokens in ``s[i]`` spans, non-noise first, both compositions uniform."""
    b = len(lengths)
    mask = np.zeros((b, width), dtype=bool)
    if b == 0:
        return mask
    noise = ragged_compositions(rng, n, s)
    keep = ragged_compositions(rng, lengths - n, s)
    seg = np.stack([keep, noise], axis=1).ravel()  # keep_0 noise_0 keep_1 ... row after row
    flags = np.zeros(len(seg), dtype=bool)
    flags[1::2] = True
    mask[np.arange(width)[None, :] < lengths[:, None]] = np.repeat(flags, seg)
    return mask


@dataclass
class Corrupted:
    """Output of :func:`corrupt_ragged` (numpy, int64): real lengths and padded arrays."""

    input_ids: np.ndarray  # [B, I] pad after input_length
    labels: np.ndarray  # [B, T] IGNORE_INDEX after target_length
    input_length: np.ndarray  # [B]
    target_length: np.ndarray  # [B]
    #: [B, W] span rows: the mask; S rows: the target positions (None unless asked for)
    noise_mask: np.ndarray | None


def corrupt_ragged(
    tokens: np.ndarray,
    lengths: np.ndarray,
    rows: RowPlan,
    sentinels: np.ndarray,
    eos: int,
    pad: int,
    rng: np.random.Generator,
    multiple_of: int = 1,
    *,
    with_mask: bool = True,
    room: np.ndarray | None = None,
) -> Corrupted:
    """Corrupt rows of different real lengths (``tokens[i, :lengths[i]]``), each with its own
    denoiser. Encoder-decoder layout: ``input_ids = [mode] inputs EOS pad...``, ``labels =
    targets EOS -100...``, padded to the batch's longest (rounded up to ``multiple_of``).
    Either every row has a mode token or none has.

    Every row is ``s`` (kept, target) part pairs (an S row: one pair, prefix and suffix), so
    both outputs are runs of a few hundred segments (kept tokens, sentinel, target tokens, EOS,
    padding); one ``np.repeat`` of per-segment offsets plus an ``arange`` gives each output
    position its source in ``[tokens, sentinels, modes, EOS, pad..., -100...]``, and one
    ``take`` fills the padded array. No ``[B, W]`` mask is built unless ``with_mask``.

    ``room``: optional int64 buffer whose head IS ``tokens`` (same memory, row-major) with at
    least :func:`source_room` slots behind it; the sources are then written there in place of
    a copy of the tokens."""
    b, width = tokens.shape
    L = lengths.astype(np.int64)
    if b == 0:
        raise InputError("batch", "size 0", "empty_batch")
    if L.min() < 2:
        i = int(np.argmin(L))
        raise _bad(
            i,
            "too_short",
            f"{int(L[i])} real token(s); UL2 needs at least 2 (filter out empty and one-token "
            "examples, e.g. dataset.filter(lambda e: len(e['input_ids']) > 2))",
        )
    m = int(rows.mode_id[0] >= 0)
    if (rows.mode_id.min() >= 0) != (rows.mode_id.max() >= 0):
        raise ValueError("either every row has a mode token or none has")
    sp = rows.is_span
    span_rows = np.flatnonzero(sp)
    pre_rows = np.flatnonzero(~sp)
    parts = np.ones(b, dtype=np.int64)  # (kept, target) pairs per row
    n_all = np.empty(b, dtype=np.int64)  # target tokens per row (noise; S: the suffix)
    keep = noise = p = np.zeros(0, dtype=np.int64)
    if len(span_rows):  # T5 counts per row, then the compositions
        Ls = L[span_rows]
        n, s = span_counts(Ls, rows.rate[span_rows], rows.mean_span[span_rows])
        bad = np.flatnonzero(s > Ls - n)
        if len(bad):
            i = int(span_rows[bad[0]])
            raise _bad(
                i,
                "too_many_spans",
                f"{int(n[bad[0]])} noise tokens in {int(s[bad[0]])} spans leave too few of its "
                f"{int(L[i])} tokens to separate them",
            )
        if int(s.max()) > len(sentinels):
            i = int(span_rows[int(np.argmax(s))])
            raise _bad(
                i,
                "too_few_sentinels",
                f"{int(L[i])} tokens need {int(s.max())} sentinels; the tokenizer has "
                f"{len(sentinels)}. Truncate examples (e.g. tokenizer(..., truncation=True, "
                "max_length=...)) or add more sentinel tokens",
            )
        noise, keep = paired_compositions(rng, n, Ls - n, s)
        parts[span_rows] = s
        n_all[span_rows] = n
    if len(pre_rows):  # S: prefix uniform on [max(1, rint((1-2r)(L-1))), L-1]
        Lp = L[pre_rows]
        lo = np.maximum(np.rint((1.0 - 2.0 * rows.rate[pre_rows]) * (Lp - 1)).astype(np.int64), 1)
        p = rng.integers(lo, Lp)  # high exclusive: at most L-1
        n_all[pre_rows] = Lp - p
    # part lengths as dense [B, smax] (zero past a row's parts), rows in batch order
    smax = int(parts.max())
    sel = np.arange(smax)[None, :] < parts[:, None]
    span_part = np.repeat(sp, parts)
    kf = np.empty(len(span_part), dtype=np.int64)
    nf = np.empty_like(kf)
    kf[span_part], nf[span_part] = keep, noise
    kf[~span_part], nf[~span_part] = p, n_all[pre_rows]
    K = np.zeros((b, smax), dtype=np.int64)
    N = np.zeros_like(K)
    K[sel], N[sel] = kf, nf
    sl = (sel & sp[:, None]).astype(np.int64)  # one sentinel per part of a span row
    n_sent = parts * sp
    in_cnt = L - n_all + n_sent  # inputs without mode and EOS
    t_cnt = n_all + n_sent  # targets without EOS
    wi = _round_up(int(in_cnt.max()) + m + 1, multiple_of)
    wt = _round_up(int(t_cnt.max()) + 1, multiple_of)
    seg = K + N
    kstart = np.cumsum(seg, axis=1) - seg + (np.arange(b) * width)[:, None]
    # sources: tokens | sentinels | one mode slot per row | EOS | wi pads | wt IGNORE_INDEX
    t0 = b * width
    m0 = t0 + len(sentinels)
    e0 = m0 + b
    p0 = e0 + 1
    need = p0 + wi + wt
    if (
        room is not None
        and room.dtype == np.int64
        and room.ndim == 1
        and len(room) >= need
        and tokens.dtype == np.int64
        and tokens.flags.c_contiguous
        and tokens.ctypes.data == room.ctypes.data
    ):
        src = room[:need]  # tokens already at its head: write the rest behind them
    else:
        src = np.empty(need, dtype=np.int64)
        src[:t0] = tokens.reshape(-1)
    src[t0:m0] = sentinels
    src[m0:e0] = rows.mode_id
    src[e0] = eos
    src[p0 : p0 + wi] = pad
    src[p0 + wi :] = IGNORE_INDEX
    sent_src = t0 + np.arange(smax)
    # inputs: [mode] kept_0 sentinel_0 ... kept_{s-1} sentinel_{s-1} EOS pad...
    c = 2 * smax + 3
    ln = np.empty((b, c), dtype=np.int64)
    at = np.empty((b, c), dtype=np.int64)
    ln[:, 0], at[:, 0] = m, m0 + np.arange(b)
    ln[:, 1:-2:2], at[:, 1:-2:2] = K, kstart
    ln[:, 2:-2:2], at[:, 2:-2:2] = sl, sent_src
    ln[:, -2], at[:, -2] = 1, e0
    ln[:, -1], at[:, -1] = wi - m - in_cnt - 1, p0
    ids = src.take(_gather_index(ln, at, wi)).reshape(b, wi)
    # labels: sentinel_0 target_0 ... sentinel_{s-1} target_{s-1} EOS -100...
    c = 2 * smax + 2
    ln = np.empty((b, c), dtype=np.int64)
    at = np.empty((b, c), dtype=np.int64)
    ln[:, 0:-2:2], at[:, 0:-2:2] = sl, sent_src
    ln[:, 1:-2:2], at[:, 1:-2:2] = N, kstart + K
    ln[:, -2], at[:, -2] = 1, e0
    ln[:, -1], at[:, -1] = wt - t_cnt - 1, p0 + wi
    lab = src.take(_gather_index(ln, at, wt)).reshape(b, wt)
    mask = None
    if with_mask:  # kept F, target T, ..., padding F
        runs = np.zeros((b, 2 * smax + 1), dtype=np.int64)
        runs[:, 0:-1:2], runs[:, 1:-1:2], runs[:, -1] = K, N, width - L
        flags = np.zeros(runs.shape, dtype=bool)
        flags[:, 1:-1:2] = True
        mask = np.repeat(flags.ravel(), runs.ravel()).reshape(b, width)
    return Corrupted(ids, lab, m + in_cnt + 1, t_cnt + 1, mask)


def source_room(b: int, width: int, n_sentinels: int, multiple_of: int = 1) -> int:
    """Slots :func:`corrupt_ragged` needs behind ``b x width`` tokens in its ``room`` (inputs
    are at most ``width + 2`` long with mode and EOS, targets at most ``width + 1``)."""
    return (
        n_sentinels + b + 1 + _round_up(width + 2, multiple_of) + _round_up(width + 1, multiple_of)
    )


def _gather_index(lengths: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Source index of every position of a ``[B, width]`` output made of segments (row ``i``'s
    segment ``j`` copies ``lengths[i, j]`` consecutive sources from ``starts[i, j]``; each row's
    lengths sum to ``width``)."""
    out0 = np.cumsum(lengths, axis=1) - lengths + (np.arange(len(lengths)) * width)[:, None]
    idx = np.repeat((starts - out0).ravel(), lengths.ravel())
    idx += _arange(len(idx))
    return idx


_ARANGE = np.arange(0)


def _arange(n: int) -> np.ndarray:
    """``np.arange(n)`` as a read-only view of one cached array (grown on demand): saves
    allocating and filling it twice per batch."""
    global _ARANGE
    if len(_ARANGE) < n:
        _ARANGE = np.arange(max(n, 2 * len(_ARANGE)))
        _ARANGE.flags.writeable = False
    return _ARANGE[:n]


def row_runs(lengths: np.ndarray, width: int) -> np.ndarray:
    """int64 ``[B, width]``: 1 on each row's first ``lengths[i]`` positions, 0 after (one
    ``np.repeat``, no boolean temporary)."""
    b = len(lengths)
    runs = np.empty((b, 2), dtype=np.int64)
    runs[:, 0] = lengths
    runs[:, 1] = width - runs[:, 0]
    return np.repeat(np.tile(np.array([1, 0], dtype=np.int64), b), runs.ravel()).reshape(b, width)


def _bad(i: int, reason: str, detail: str) -> InputError:
    return InputError("batch", f"example {i}", reason, detail)


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k if k > 1 else x


def shift_labels(
    labels: np.ndarray, decoder_start: int, pad: int, label_pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """(decoder_input_ids, decoder_attention_mask) exactly as the seed derives them: labels
    shifted right behind ``decoder_start``; positions whose shifted label is ``label_pad`` get
    ``pad`` and attention 0."""
    shifted = np.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start
    ignored = shifted == label_pad
    attend = np.logical_not(ignored, out=np.empty(labels.shape, dtype=np.int64))
    np.copyto(shifted, pad, where=ignored)
    return shifted, attend

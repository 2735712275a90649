"""Packing: several whole examples per fixed-shape row, marked with segment ids (``1..k``,
0 = padding) and positions that restart in every segment, as T5X / seqio do.

Examples are planned at a smaller budget (``config.example_lengths``); :func:`pack_rows` packs
one group of them into rows of the real lengths (row assignment :func:`assign_rows`: first fit
in several orders, a bounded ejection search when both sides bind, then component mixing so
that rows hold as many distinct components as unpacked rows would), :func:`unpack_rows`
recovers the examples. Pure numpy on integer keys with a fixed seed: the rows depend only on
the group. The row format (columns) is ``output.schema``; attention helpers for trainers are
in ``load.attention``. docs/packing.md describes the format, what a trainer must do, the
algorithm (``ALGORITHM``) and its measured figures (``benchmarks/bench_packing.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import PACK_ALGORITHM, Layout, Lengths
from .base import IGNORE_INDEX, Rows, row_widths

NO_SEGMENT = -1  # padding of the per-segment metadata lists
DEFAULT_WINDOW = 32  # open rows first fit looks at
EJECT_MAX_FAIL = 4  # ejection search: failed attempts in a row before it stops
EJECT_MAX_ROUNDS = 8  # insert + swap rounds per attempt
EJECT_WORK = 100  # candidate moves looked at per example, at most (bounds the cost)
MIX_ROUNDS = 32  # rounds of feasible random swaps between rows (component mixing)
#: Recorded in the manifest and the config fingerprint (defined in config: see PACK_ALGORITHM).
ALGORITHM = PACK_ALGORITHM


# --------------------------------------------------------------------------- planning


# --------------------------------------------------------------------------- assignment


def _first_fit(
    order: Sequence[int],
    a: list[int],
    b: list[int],
    cap_a: int,
    cap_b: int,
    k_max: int,
    window: int,
    out: list[int],
) -> int:
    """First fit of ``order``'s examples over the ``window`` most recently opened rows that can
    still take something; writes each example's row into ``out``; returns the row count."""
    a_min, b_min = min(a), min(b)
    open_rows: list[list[int]] = []  # [row, free a, free b, free slots]
    n_rows = 0
    for i in order:
        x, y = a[i], b[i]
        j = 0
        for j, r in enumerate(open_rows):  # noqa: B007 (j is used after the loop)
            if r[1] >= x and r[2] >= y:
                break
        else:
            if len(open_rows) == window:
                del open_rows[0]
            open_rows.append([n_rows, cap_a, cap_b, k_max])
            j = len(open_rows) - 1
            n_rows += 1
        r = open_rows[j]
        out[i] = r[0]
        r[1] -= x
        r[2] -= y
        r[3] -= 1
        if r[1] < a_min or r[2] < b_min or r[3] == 0:
            del open_rows[j]
    return n_rows


def _balanced_order(
    a: np.ndarray, b: np.ndarray, cap_a: int, cap_b: int, light_by_excess: bool
) -> list[int]:
    """Target-heavy and input-heavy examples interleaved so that every prefix of the order has
    about the group's ratio of target to input tokens (integer keys: exact and portable).

    ``d_i = b_i * sum(a) - a_i * sum(b)`` is example ``i``'s excess of targets over the group's
    ratio. Heavy examples (``d > 0``) are sorted by decreasing size; light ones are kept in group
    order (or sorted by decreasing ``|d|``); the two lists are merged taking a heavy example
    whenever the running sum of ``d`` is <= 0."""
    sa, sb = int(a.sum()), int(b.sum())
    d = b * sa - a * sb
    size = a * cap_b + b * cap_a
    heavy = np.flatnonzero(d > 0)
    light = np.flatnonzero(d <= 0)
    hl = heavy[np.argsort(-size[heavy], kind="stable")].tolist()
    if light_by_excess:
        light = light[np.argsort(d[light], kind="stable")]  # most negative first
    ll = light.tolist()
    dl = d.tolist()
    out: list[int] = []
    s = i = j = 0
    while i < len(hl) or j < len(ll):
        if j >= len(ll) or (s <= 0 and i < len(hl)):
            k = hl[i]
            i += 1
        else:
            k = ll[j]
            j += 1
        out.append(k)
        s += dl[k]
    return out


def assign_rows(
    a: np.ndarray,
    b: np.ndarray | None,
    cap_a: int,
    cap_b: int,
    max_segs: int,
    *,
    window: int = DEFAULT_WINDOW,
    improve: bool = True,
    mix_rounds: int = MIX_ROUNDS,
) -> tuple[np.ndarray, int]:
    """Assign examples of sizes ``a`` (and ``b``: second dimension, ``None`` for 1-D) to rows of
    capacity ``cap_a`` (``cap_b``) holding at most ``max_segs`` examples.

    Returns ``(row of each example (int64), number of rows)``; every row is non-empty and row ids
    are in order of creation. Deterministic: a pure function of the arguments. ``improve``
    (2-D only) runs the ejection search of :func:`_eject` after first fit; it never adds rows."""
    a = np.asarray(a, dtype=np.int64)
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    two_d = b is not None
    bb = np.zeros(n, dtype=np.int64) if b is None else np.asarray(b, dtype=np.int64)
    if max_segs < 1 or window < 1:
        raise ValueError("max_segs and window must be >= 1")
    if (a < 0).any() or (bb < 0).any() or int(a.max()) > cap_a or int(bb.max()) > cap_b:
        raise ValueError("an example is larger than the row")
    lower = max(
        -(-int(a.sum()) // cap_a), -(-int(bb.sum()) // cap_b) if two_d else 0, -(-n // max_segs)
    )
    al, bl = a.tolist(), bb.tolist()
    size = a * cap_b + bb * cap_a
    # Orders: "decreasing" (first fit decreasing) is best when one side binds (the other needs
    # < 0.65 of its rows, e.g. encoder-decoder with I = T); the two balanced orders are best
    # when both sides bind, where decreasing is poor and slow (its window fills with rows that
    # are full on one side only). Measured in benchmarks/bench_packing.py.
    need_a, need_b = int(a.sum()) * cap_b, int(bb.sum()) * cap_a
    one_side = not two_d or min(need_a, need_b) * 100 < 65 * max(need_a, need_b)
    # "stream" (group order) comes first and wins every tie: its rows hold examples in the order
    # the stream made them, i.e. independent component draws, while the size-sorted orders put
    # examples of one size (= one component) together, which makes the mixture of a batch of
    # rows lumpier than the mixture of the same number of unpacked examples. For decoder-only
    # presets it reaches the bound (examples are all about S / factor long).
    kinds = ["stream"] + (["decreasing"] if one_side else [])
    if two_d:
        kinds += ["balanced", "balanced-excess"]
    best: list[int] = []
    best_rows = 0
    for kind in kinds:
        if kind == "stream":
            order: Sequence[int] = range(n)
        elif kind == "decreasing":
            order = np.argsort(-size, kind="stable").tolist()
        else:
            order = _balanced_order(a, bb, cap_a, cap_b, light_by_excess=kind != "balanced")
        out = [0] * n
        rows = _first_fit(order, al, bl, cap_a, cap_b, max_segs, window, out)
        if not best or rows < best_rows:
            best, best_rows = out, rows
        if best_rows <= lower:
            break
    # The search pays off only where first fit leaves rows to take: more than 1% above the bound
    # (at T = 312 / 200 first fit is within 1-2 rows of it and the search gained < 0.05 points
    # for 3x the cost).
    if improve and two_d and not one_side and best_rows - lower > best_rows // 100:
        best, best_rows = _eject(al, bl, cap_a, cap_b, max_segs, best, best_rows, lower)
    row = np.array(best, dtype=np.int64)
    if mix_rounds:
        row = mix_rows(row, best_rows, a, bb, cap_a, cap_b, mix_rounds)
    return row, best_rows


def mix_rows(
    row: np.ndarray,
    n_rows: int,
    a: np.ndarray,
    b: np.ndarray,
    cap_a: int,
    cap_b: int,
    rounds: int,
) -> np.ndarray:
    """Swap examples between rows wherever both rows still fit: ``rounds`` vectorized rounds, each
    pairing the rows at random and trying to swap one random example of each pair (a generator
    with a fixed seed: a pure function of the arguments).

    The size-sorted orders put examples of one size, i.e. one mixture component, into the same
    rows (at I = T = 512 about 2.5x fewer distinct components per row than independent examples
    would have), which makes a batch of rows a lumpier sample of the mixture than the same
    examples unpacked. One-for-one swaps keep every row's example count and feasibility, so the
    number of rows (the efficiency) is unchanged."""
    if len(row) < 2 or n_rows < 2:
        return row
    row = row.copy()
    slots = np.argsort(row, kind="stable")  # each row's examples are contiguous in ``slots``
    counts = np.bincount(row, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    free_a = cap_a - np.bincount(row, weights=a, minlength=n_rows).astype(np.int64)
    free_b = cap_b - np.bincount(row, weights=b, minlength=n_rows).astype(np.int64)
    rng = np.random.default_rng(0x5EED)
    h = n_rows // 2
    for _ in range(rounds):
        pr = rng.permutation(n_rows)
        r1, r2 = pr[:h], pr[h : 2 * h]
        s1 = starts[r1] + (rng.random(h) * counts[r1]).astype(np.int64)
        s2 = starts[r2] + (rng.random(h) * counts[r2]).astype(np.int64)
        x, y = slots[s1], slots[s2]
        da, db = a[y] - a[x], b[y] - b[x]  # what row r1 gains (and r2 loses) by the swap
        ok = (free_a[r1] >= da) & (free_b[r1] >= db) & (free_a[r2] >= -da) & (free_b[r2] >= -db)
        s1, s2, x, y, r1, r2, da, db = s1[ok], s2[ok], x[ok], y[ok], r1[ok], r2[ok], da[ok], db[ok]
        slots[s1], slots[s2] = y, x
        row[x], row[y] = r2, r1
        free_a[r1] -= da
        free_b[r1] -= db
        free_a[r2] += da
        free_b[r2] += db
    return row


def _subsets(
    items: list[int], a: list[int], b: list[int], s: list[int]
) -> list[tuple[int, int, int, tuple[int, ...]]]:
    """``(s, a, b, members)`` of every 1- and 2-element subset of ``items``, one per distinct
    ``(a, b, size)`` (the first in ``items`` order), sorted (integer keys, then member ids)."""
    seen: dict[tuple[int, int, int], tuple[int, int, int, tuple[int, ...]]] = {}
    for x, i in enumerate(items):
        seen.setdefault((a[i], b[i], 1), (s[i], a[i], b[i], (i,)))
        for j in items[x + 1 :]:
            key = (a[i] + a[j], b[i] + b[j], 2)
            seen.setdefault(key, (s[i] + s[j], key[0], key[1], (i, j)))
    return sorted(seen.values())


def _eject(
    a: list[int],
    b: list[int],
    cap_a: int,
    cap_b: int,
    k_max: int,
    row_of: list[int],
    n_rows: int,
    lower: int,
    max_fail: int = EJECT_MAX_FAIL,
    max_rounds: int = EJECT_MAX_ROUNDS,
    work_per_example: int = EJECT_WORK,
) -> tuple[list[int], int]:
    """Fewer rows for a 2-D assignment by ejection: empty the least-filled row (fill
    ``a * cap_b + b * cap_a``, ties by row id) into a pool and repair with :func:`_repair`. A
    repair that places the whole pool removes the row; a failed one is undone and the row is
    skipped until the next success. Stops after ``max_fail`` failures in a row, at ``lower`` rows
    or when about ``work_per_example * n`` candidate moves have been looked at (linear in the
    group). Only ever removes rows; the survivors keep their relative order (creation order)."""
    n = len(a)
    s = [a[i] * cap_b + b[i] * cap_a for i in range(n)]
    rows: list[list[int]] = [[] for _ in range(n_rows)]
    for i, r in enumerate(row_of):
        rows[r].append(i)
    fa = [cap_a - sum(a[i] for i in it) for it in rows]
    fb = [cap_b - sum(b[i] for i in it) for it in rows]
    live = [True] * n_rows
    n_live = n_rows
    skip: set[int] = set()
    cache: dict[int, list[tuple[int, int, int, tuple[int, ...]]]] = {}
    budget = [work_per_example * n]
    fails = 0
    while fails < max_fail and n_live > lower and budget[0] > 0:
        cand = [
            (fa[r] * cap_b + fb[r] * cap_a, -r) for r in range(n_rows) if live[r] and r not in skip
        ]
        if not cand:
            break
        v = -max(cand)[1]  # most free space = least filled; ties: lowest row id
        saved: dict[int, tuple[list[int], int, int]] = {v: (rows[v], fa[v], fb[v])}
        pool, rows[v], live[v] = list(rows[v]), [], False
        cache.pop(v, None)
        if _repair(pool, rows, fa, fb, a, b, s, k_max, live, saved, cache, max_rounds, budget):
            n_live -= 1
            skip.clear()
            fails = 0
        else:
            for r, (it, x, y) in saved.items():
                rows[r], fa[r], fb[r] = it, x, y
                cache.pop(r, None)
            live[v] = True
            skip.add(v)
            fails += 1
    out = [0] * n
    k = 0
    for r in range(n_rows):
        if live[r]:
            for i in rows[r]:
                out[i] = k
            k += 1
    return out, k


def _repair(
    pool: list[int],
    rows: list[list[int]],
    fa: list[int],
    fb: list[int],
    a: list[int],
    b: list[int],
    s: list[int],
    k_max: int,
    live: list[bool],
    saved: dict[int, tuple[list[int], int, int]],
    cache: dict[int, list[tuple[int, int, int, tuple[int, ...]]]],
    max_rounds: int,
    budget: list[int],
) -> bool:
    """Place every example of ``pool`` into the live rows, or return False (``saved`` holds the
    original state of every row touched, for the caller to undo).

    Each round inserts what fits directly (largest ``s`` first, into the row it leaves with the
    least free tokens, ties by row id), then passes over the rows once trying swaps: replace 1-2
    examples of the row by 1-2 pool examples of strictly larger total ``s`` that fit (per row the
    largest gain; ties by the sorted integer keys). A swap moves volume from the pool into the
    rows, so the pool shrinks and gets easier to place; no swap in a pass means failure."""
    order = [r for r in range(len(rows)) if live[r]]

    def touch(r: int) -> None:
        if r not in saved:
            saved[r] = (list(rows[r]), fa[r], fb[r])
        cache.pop(r, None)

    for _ in range(max_rounds):
        pool.sort(key=lambda i: (-s[i], i))
        rest = []
        for x in pool:
            xa, xb = a[x], b[x]
            best, best_v = -1, 0
            for r in order:
                if fa[r] >= xa and fb[r] >= xb and len(rows[r]) < k_max:
                    v = fa[r] - xa + fb[r] - xb
                    if best < 0 or v < best_v:
                        best, best_v = r, v
            if best < 0:
                rest.append(x)
            else:
                touch(best)
                rows[best].append(x)
                fa[best] -= xa
                fb[best] -= xb
        pool[:] = rest
        if not pool:
            return True
        budget[0] -= len(order) * (len(pool) + 1)
        if budget[0] <= 0:
            return False
        qopts = _subsets(pool, a, b, s)[::-1]  # largest s first
        moved = False
        for r in order:
            it = rows[r]
            sopts = cache.get(r)
            if sopts is None:
                sopts = cache[r] = _subsets(it, a, b, s)
            room0, far, fbr = k_max - len(it), fa[r], fb[r]
            move: tuple[tuple[int, ...], tuple[int, ...]] | None = None
            gain = 0
            for ss, sa, sb, out_ in sopts:
                ca, cb, room = far + sa, fbr + sb, room0 + len(out_)
                for qs, qa, qb, in_ in qopts:
                    if qs - ss <= gain:
                        break
                    if qa <= ca and qb <= cb and len(in_) <= room:
                        move, gain = (out_, in_), qs - ss
                        break
            budget[0] -= len(sopts)
            if move is None:
                if budget[0] <= 0:
                    return False
                continue
            touch(r)
            for y in move[0]:
                it.remove(y)
                fa[r] += a[y]
                fb[r] += b[y]
                pool.append(y)
            for q in move[1]:
                pool.remove(q)
                it.append(q)
                fa[r] -= a[q]
                fb[r] -= b[q]
            moved = True
            qopts = _subsets(pool, a, b, s)[::-1]
        if not moved or budget[0] <= 0:
            return False
    return False


# --------------------------------------------------------------------------- packing


@dataclass
class PackedRows:
    """Packed rows of one group. ``columns`` maps each Arrow column name of
    :func:`packed_schema` (except ``source_file``) to its numpy array (``[R, width]`` or
    ``[R]``), in schema order. ``source_row[r, j]`` is the index, in the unpacked group, of the
    example in segment ``j + 1`` of row ``r`` (-1 = none)."""

    layout: Layout
    columns: dict[str, np.ndarray]
    source_row: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.source_row)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


def _side(
    src: np.ndarray,
    o: np.ndarray,
    lens: np.ndarray,
    slot: np.ndarray,
    totals: np.ndarray,
    width: int,
    fill: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One side of the packed rows from examples ``o`` (sorted by row, then segment) with
    lengths ``lens``: ``(tokens, segment ids, positions, real-token mask, position within each
    example of every real token)``. Segments are contiguous and padding is at the end of a row,
    so the real slots of ``[R, width]`` in row-major order are exactly the examples' tokens in
    ``o`` order: one boolean-mask assignment per array, no index arithmetic."""
    R = len(totals)
    real = np.arange(width)[None, :] < totals[:, None]
    it = np.int32 if int(lens.sum()) < 2**31 else np.int64
    cum = (np.cumsum(lens) - lens).astype(it)
    within = np.arange(int(lens.sum()), dtype=it) - np.repeat(cum, lens)
    tok = np.full((R, width), fill, dtype=np.int32)
    tok[real] = _gather(src, o, lens)
    seg = np.zeros((R, width), dtype=np.int32)
    seg[real] = np.repeat((slot + 1).astype(np.int32), lens)
    pos = np.zeros((R, width), dtype=np.int32)
    pos[real] = within
    return tok, seg, pos, real, within


def _gather(src: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``src[idx[i], :lens[i]]`` over ``i`` (one boolean gather)."""
    sub = src[idx]
    out: np.ndarray = sub[np.arange(sub.shape[1])[None, :] < lens[:, None]]
    return out


def pack_rows(
    rows: Rows,
    lengths: Lengths,
    *,
    pad_id: int,
    max_segs: int,
    denoiser: np.ndarray,
    example_index: np.ndarray,
    token_offset: np.ndarray,
    window: int = DEFAULT_WINDOW,
    improve: bool = True,
) -> PackedRows:
    """Pack one group of unpacked examples into rows of ``lengths``.

    ``rows`` are the group's examples as :func:`~denoise_cli.corrupt.corrupt_mixture` returns
    them (any widths, typically those of :func:`example_lengths`): example ``i`` is
    ``input_ids[i, :input_length[i]]`` and, encoder-decoder, ``labels[i, :target_length[i]]``;
    decoder-only, ``labels[i, :input_length[i]]`` with ``prefix_length[i]``. ``denoiser``,
    ``example_index`` and ``token_offset`` are per-example metadata copied into the per-segment
    lists; ``max_segs`` is ``K`` (:func:`max_segments`), ``pad_id`` the tokenizer's pad id.
    ``window`` and ``improve`` are passed to :func:`assign_rows` (``improve=False``: first fit
    only, the assignment of denoise <= 0.x; for comparisons)."""
    enc_dec = lengths.layout == "encoder-decoder"
    W, V = row_widths(lengths)
    n = len(rows.input_length)
    a = rows.input_length.astype(np.int64)
    b = rows.target_length.astype(np.int64)
    meta = [np.asarray(x) for x in (denoiser, example_index, token_offset)]
    if any(len(x) != n for x in meta):
        raise ValueError("denoiser, example_index and token_offset need one entry per example")
    if n and (a.min() < 1 or a.max() > min(W, rows.input_ids.shape[1])):
        raise ValueError(f"input lengths must be in [1, {W}] (the packed row)")
    if enc_dec and n and (b.min() < 1 or b.max() > min(V, rows.labels.shape[1])):
        raise ValueError(f"target lengths must be in [1, {V}] (the packed row)")
    if not enc_dec and n and (rows.labels[:, 0] != IGNORE_INDEX).any():
        raise ValueError("decoder-only examples must not have a label on their first token")

    row, R = assign_rows(
        a, b if enc_dec else None, W, V if enc_dec else 1, max_segs, window=window, improve=improve
    )
    # Canonical order: rows by their first (smallest) example index, segments by example index.
    o = np.argsort(row, kind="stable")
    firsts = np.flatnonzero(np.diff(row[o], prepend=-1))  # first segment of each row, by id
    rank = np.empty(R, dtype=np.int64)
    rank[np.argsort(o[firsts], kind="stable")] = np.arange(R)
    row = rank[row]
    o = np.argsort(row, kind="stable")
    r = row[o]
    counts = np.bincount(r, minlength=R)
    first = np.cumsum(counts) - counts  # index in o of each row's first segment
    slot = np.arange(n, dtype=np.int64) - first[r]
    ao = a[o]

    cols: dict[str, np.ndarray] = {}
    tot_a = np.add.reduceat(ao, first) if n else ao
    ids, seg, pos, real, within = _side(rows.input_ids, o, ao, slot, tot_a, W, pad_id)
    if enc_dec:
        bo = b[o]
        tot_b = np.add.reduceat(bo, first) if n else bo
        lab, dseg, dpos, _, _ = _side(rows.labels, o, bo, slot, tot_b, V, IGNORE_INDEX)
        cols.update(
            input_ids=ids, labels=lab, attention_mask=real.astype(np.int8),
            encoder_segment_ids=seg, encoder_positions=pos,
            decoder_segment_ids=dseg, decoder_positions=dpos,
        )  # fmt: skip
    else:
        lab = np.full((R, W), IGNORE_INDEX, dtype=np.int32)
        lab[real] = _gather(rows.labels, o, ao)
        pre = np.zeros((R, W), dtype=np.int8)
        pl = rows.prefix_length[o].astype(within.dtype)
        pre[real] = within < np.repeat(pl, ao)
        cols.update(
            input_ids=ids, labels=lab, attention_mask=real.astype(np.int8),
            segment_ids=seg, positions=pos, prefix_mask=pre,
        )  # fmt: skip

    K = max_segs

    def per_segment(values: np.ndarray, dtype: type[np.generic], fill: int) -> np.ndarray:
        out = np.full((R, K), fill, dtype=dtype)
        out[r, slot] = values
        return out

    seg_in = per_segment(ao, np.int32, 0)
    seg_tg = per_segment(b[o], np.int32, 0)
    cols["num_segments"] = counts.astype(np.int32)
    cols["input_length"] = seg_in.sum(axis=1, dtype=np.int32)
    cols["target_length"] = seg_tg.sum(axis=1, dtype=np.int32)  # labelled tokens
    cols["segment_denoiser"] = per_segment(meta[0][o], np.int8, NO_SEGMENT)
    cols["segment_example_index"] = per_segment(meta[1][o], np.int64, NO_SEGMENT)
    cols["segment_token_offset"] = per_segment(meta[2][o], np.int64, NO_SEGMENT)
    cols["segment_input_length"] = seg_in
    cols["segment_target_length"] = seg_tg
    if not enc_dec:
        cols["segment_prefix_length"] = per_segment(rows.prefix_length[o], np.int32, 0)
    source = per_segment(o, np.int32, NO_SEGMENT)
    return PackedRows(lengths.layout, cols, source)


# --------------------------------------------------------------------------- readers / trainers


def unpack_rows(columns: Mapping[str, np.ndarray], lengths: Lengths, pad_id: int) -> Rows:
    """The examples of packed rows (a dict of packed columns, e.g. ``PackedRows.columns`` or a
    loaded batch) as unpacked :class:`Rows` of ``lengths`` (the example budget), in
    (row, segment) order; match them to their origin with ``segment_example_index``."""
    enc_dec = "encoder_segment_ids" in columns
    seg = columns["encoder_segment_ids" if enc_dec else "segment_ids"]
    W, V = row_widths(lengths)
    ns = np.asarray(columns["num_segments"]).astype(np.int64)
    n = int(ns.sum())
    valid = np.arange(columns["segment_input_length"].shape[1])[None, :] < ns[:, None]
    ilen = columns["segment_input_length"][valid].astype(np.int32)
    tlen = columns["segment_target_length"][valid].astype(np.int32)
    out_ids = np.full((n, W), pad_id, dtype=np.int32)
    out_lab = np.full((n, V), IGNORE_INDEX, dtype=np.int32)
    tok = seg > 0  # row-major order of real tokens = (row, segment, position) order
    mask = np.arange(W)[None, :] < ilen[:, None]
    out_ids[mask] = columns["input_ids"][tok]
    if enc_dec:
        dtok = columns["decoder_segment_ids"] > 0
        out_lab[np.arange(V)[None, :] < tlen[:, None]] = columns["labels"][dtok]
        plen = ilen - 1
    else:
        out_lab[mask] = columns["labels"][tok]
        plen = columns["segment_prefix_length"][valid].astype(np.int32)
    att = mask.astype(np.int8)
    return Rows(out_ids, out_lab, att, ilen, tlen, plen)

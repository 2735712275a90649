"""Benchmark: token efficiency and cost of packing (denoise_cli/rows/packing.py). Not a test.

Single-threaded (BLAS/OpenMP pinned to one thread before numpy is imported). One random int32
token stream is consumed front to back, in groups of ``--group`` chunks exactly as the pipeline
cuts them (components drawn per group, one generator per group), once per configuration:

1. **unpacked**: examples planned for the real rows, one per row (what ``prepare`` writes now);
2. **packed**: examples planned with ``example_lengths(lengths, factor)``, every group packed
   with ``pack_rows`` into rows of the real lengths.

Token efficiency = real tokens / slots (encoder-decoder: inputs, targets and overall =
(inputs + targets) / (I + T); decoder-only: real tokens / S). Printed side by side, with the
ratio bound (``efficiency_bound``) and, for encoder-decoder, a sweep of the targets length T at
I=512 around the ratio-balanced ``T = rho * I``. Packing time is process CPU time of
``pack_rows`` (+ ``packed_record_batch``) per 1M raw tokens, next to the corruption time of the
same groups. ``--lp`` adds the LP (fractional cutting-stock) bound of one group, i.e. what an
optimal packer could reach with these example sizes; it needs scipy and ~1 min per case.

Usage::

    python benchmarks/bench_packing.py                       # ul2 + ul2r, 2M raw tokens
    python benchmarks/bench_packing.py --presets ul2 --tokens 4000000 --lp
    python benchmarks/bench_packing.py --points ul2:4:304 ul2r:8:194 [--first-fit-only]
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "RAYON_NUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from denoise_cli.config import PRESETS, Lengths, example_lengths  # noqa: E402
from denoise_cli.output import schema as S  # noqa: E402
from denoise_cli.rows import packing as P  # noqa: E402
from denoise_cli.rows.base import Rows, SpecialIds  # noqa: E402
from denoise_cli.rows.corrupt import corrupt_mixture, draw_components  # noqa: E402
from denoise_cli.rows.plan import (  # noqa: E402
    ComponentPlan,
    efficiency_bound,
    max_segments,
    mixture_ratio,
    plan,
    targets_length_window,
)

VOCAB = 32_000
TARGET = 0.98
IMPROVE = [True]  # --first-fit-only sets False (the ejection search of assign_rows off)


def make_special(n_sentinels: int) -> SpecialIds:
    ids = np.random.default_rng(0).permutation(np.arange(VOCAB, VOCAB + n_sentinels + 8))
    return SpecialIds(
        eos=int(ids[-1]),
        pad=int(ids[-2]),
        sentinels=ids[:n_sentinels].astype(np.int32),
        mode={"[NLU]": int(ids[-3]), "[NLG]": int(ids[-4]), "[S2S]": int(ids[-5])},
    )


@dataclass
class Corrupted:
    """The groups of one plan over the stream."""

    plans: tuple[ComponentPlan, ...]
    groups: list[tuple[Rows, np.ndarray, np.ndarray]]  # rows, components, token offsets
    raw_tokens: int
    corrupt_cpu: float
    special: SpecialIds


def corrupt_stream(
    stream: np.ndarray, preset: str, ex_lengths: Lengths, group: int, seed: int
) -> Corrupted:
    mix = PRESETS[preset]
    plans = plan(mix, ex_lengths)
    special = make_special(max(1, max(c.spans for c in plans)))
    raw = np.array([c.raw_length for c in plans], dtype=np.int64)
    pos, gi, used, cpu = 0, 0, 0, 0.0
    out: list[tuple[Rows, np.ndarray, np.ndarray]] = []
    while True:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, gi])))
        comps = draw_components(rng, mix.probabilities, group)
        ends = np.cumsum(raw[comps])
        keep = int(np.searchsorted(ends, len(stream) - pos, side="right"))
        if keep == 0:
            break
        comps, ends = comps[:keep], ends[:keep]
        starts = ends - raw[comps]
        piece = stream[pos : pos + int(ends[-1])]
        c0 = time.process_time()
        rows = corrupt_mixture(piece, starts, comps, plans, special, ex_lengths, rng)
        cpu += time.process_time() - c0
        out.append((rows, comps, pos + starts))
        used += int(ends[-1])
        pos += int(ends[-1])
        gi += 1
        if keep < group:
            break
    return Corrupted(plans, out, used, cpu, special)


def unpacked_efficiency(c: Corrupted, lengths: Lengths) -> dict[str, float]:
    n = sum(len(r.input_length) for r, _, _ in c.groups)
    si = sum(int(r.input_length.sum()) for r, _, _ in c.groups)
    st = sum(int(r.target_length.sum()) for r, _, _ in c.groups)
    return _eff(si, st, n, lengths)


def _eff(si: int, st: int, rows: int, lengths: Lengths) -> dict[str, float]:
    if lengths.layout == "encoder-decoder":
        I, T = lengths.inputs_length, lengths.targets_length
        return {"inputs": si / (rows * I), "targets": st / (rows * T),
                "overall": (si + st) / (rows * (I + T)), "rows": rows}  # fmt: skip
    S = lengths.seq_length
    return {"overall": si / (rows * S), "loss": st / (rows * S), "rows": rows}


def mixing(segment_denoiser: np.ndarray, comps: np.ndarray) -> tuple[float, float]:
    """Sum over rows of the distinct components in the row, and of its expectation if the row's
    ``k`` examples were independent draws from the group's component frequencies
    (``sum_c 1 - (1 - p_c)^k``). Their ratio is 1 when rows mix components like independent
    examples do, and lower when packing puts examples of one component together."""
    p = np.bincount(comps) / len(comps)
    seg = segment_denoiser.astype(np.int64)
    k = (seg >= 0).sum(1)
    present = np.zeros((len(seg), len(p)), dtype=bool)
    r, j = np.nonzero(seg >= 0)
    present[r, seg[r, j]] = True
    exp = (1.0 - (1.0 - p[None, :]) ** k[:, None]).sum(1)
    return float(present.sum()), float(exp.sum())


def pack_all(c: Corrupted, lengths: Lengths, window: int, arrow: bool = True) -> dict[str, Any]:
    K = max_segments(c.plans, lengths)
    rows_total, si, st, cpu, cpu_arrow = 0, 0, 0, 0.0, 0.0
    distinct, expected = 0.0, 0.0
    for rows, comps, offsets in c.groups:
        n = len(comps)
        t0 = time.process_time()
        packed = P.pack_rows(rows, lengths, pad_id=c.special.pad, max_segs=K, denoiser=comps,
                             example_index=np.arange(n), token_offset=offsets, window=window,
                             improve=IMPROVE[0])  # fmt: skip
        t1 = time.process_time()
        if arrow:
            S.packed_record_batch(packed, lengths, source_file=0)
        cpu += t1 - t0
        cpu_arrow += time.process_time() - t1
        rows_total += packed.num_rows
        d, e_ = mixing(packed["segment_denoiser"], comps)
        distinct += d
        expected += e_
        si += int(packed["input_length"].sum())
        st += int(packed["target_length"].sum())
    e = _eff(si, st, rows_total, lengths)
    examples = sum(len(g[1]) for g in c.groups)
    e.update(K=K, per_row=examples / max(rows_total, 1), mix=distinct / max(expected, 1e-9),
             pack_ms=1e3 * cpu / c.raw_tokens * 1e6, arrow_ms=1e3 * cpu_arrow / c.raw_tokens * 1e6,
             corrupt_ms=1e3 * c.corrupt_cpu / c.raw_tokens * 1e6)  # fmt: skip
    return e


# --------------------------------------------------------------------------- optional LP bound


def lp_bound(a: np.ndarray, b: np.ndarray, I: int, T: int, max_iter: int = 400) -> float | None:
    """Fewest rows (fractional) any packing of these examples needs: the LP relaxation of the
    cutting-stock problem, by column generation (bounded 2-D knapsack pricing). None without
    scipy."""
    try:
        from scipy.optimize import linprog  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    pairs, dem = np.unique(np.stack([a, b], 1), axis=0, return_counts=True)
    types = [(int(x), int(y)) for x, y in pairs]
    pats: list[np.ndarray] = []
    for t, (x, y) in enumerate(types):
        p = np.zeros(len(types), dtype=np.int64)
        p[t] = min(I // x, T // max(y, 1), dem[t])
        pats.append(p)
    fun = float("nan")
    for _ in range(max_iter):
        A = np.array(pats).T
        r = linprog(np.ones(len(pats)), A_ub=-A, b_ub=-dem, bounds=(0, None), method="highs")
        fun = float(r.fun)
        pi = -r.ineqlin.marginals
        dp = np.zeros((I + 1, T + 1))
        keep: list[tuple[int, np.ndarray]] = []
        for t, (x, y) in enumerate(types):
            if pi[t] <= 1e-12:
                continue
            for _ in range(int(min(dem[t], I // x, T // max(y, 1)))):
                cand = np.full_like(dp, -1.0)
                cand[x:, y:] = dp[: I + 1 - x, : T + 1 - y] + pi[t]
                take = cand > dp + 1e-12
                dp = np.where(take, cand, dp)
                keep.append((t, take))
        if dp[I, T] <= 1 + 1e-7:
            break
        i, j = I, T
        pat = np.zeros(len(types), dtype=np.int64)
        for t, take in reversed(keep):
            if take[i, j]:
                pat[t] += 1
                i -= types[t][0]
                j -= types[t][1]
        pats.append(pat)
    return fun


# --------------------------------------------------------------------------- report


def pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def header(cols: list[str]) -> None:
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in cols) + "|")


def row(cells: list[str]) -> None:
    print("| " + " | ".join(cells) + " |")


def enc_dec_report(stream: np.ndarray, preset: str, args: argparse.Namespace) -> None:
    I = args.inputs_length
    L = Lengths("encoder-decoder", I, args.targets_length)
    print(f"\n## {preset}: encoder-decoder I={I} T={args.targets_length}\n")
    un = corrupt_stream(stream, preset, L, args.group, args.seed)
    ue = unpacked_efficiency(un, L)
    rho_full = mixture_ratio(un.plans)
    bound = efficiency_bound(un.plans, L)
    cols = ["what", "rows", "ex/row", "inputs", "targets", "overall", "mix", "pack ms/1M"]
    header([*cols, "corrupt ms/1M"])
    row(["unpacked (plan at I, T)", str(ue["rows"]), "1.00", pct(ue["inputs"]), pct(ue["targets"]),
         pct(ue["overall"]), "-", "-", f"{1e9 * un.corrupt_cpu / un.raw_tokens:.1f}"])  # fmt: skip
    cache: dict[tuple[int, int], Corrupted] = {}
    rhos = {}
    for f in args.factors:
        exL = example_lengths(L, f)
        c = cache.setdefault((exL.inputs_length, exL.targets_length),
                             corrupt_stream(stream, preset, exL, args.group, args.seed))  # fmt: skip
        e = pack_all(c, L, args.window)
        rhos[f] = mixture_ratio(c.plans)
        row([f"packed, factor {f} (examples {exL.inputs_length}/{exL.targets_length}, K={e['K']})",
             str(e["rows"]), f"{e['per_row']:.2f}", pct(e["inputs"]), pct(e["targets"]),
             pct(e["overall"]), f"{e['mix']:.2f}",
             f"{e['pack_ms']:.1f} (+{e['arrow_ms']:.1f} arrow)", f"{e['corrupt_ms']:.1f}"])  # fmt: skip
    print()
    lo, hi = targets_length_window(un.plans, I, TARGET)
    print(f"ratio argument: rho = E[targets]/E[inputs] = {rho_full:.4f} (plan at I=T={I}); "
          + ", ".join(f"factor {f}: {r:.4f}" for f, r in rhos.items()))  # fmt: skip
    print(f"  packing fills at most the encoder, so at I={I}, T={args.targets_length}: inputs <= "
          f"{pct(bound['inputs'])}, targets <= {pct(bound['targets'])}, overall <= "
          f"{pct(bound['overall'])} -> target {pct(TARGET)} "
          f"{'reachable' if bound['overall'] >= TARGET else 'UNREACHABLE (provably)'}")  # fmt: skip
    print(
        f"  >= {pct(TARGET)} on both sides needs {TARGET:g}*rho*I <= T <= rho*I/{TARGET:g}: "
        f"T in [{lo}, {hi}] (rho at I=T={I})"
    )
    for f, r in rhos.items():
        lo_f, hi_f = (int(np.ceil(TARGET * r * I)), int(np.floor(r * I / TARGET)))
        print(f"    factor {f}: T in [{lo_f}, {hi_f}]")

    if not args.sweep:
        return
    print(
        f"\n### T sweep at I={I} (same stream; best overall marked *, best min(inputs, targets) +)\n"
    )
    header(["factor", "T", "unpacked in/tg/all", "ratio bound all", "packed inputs", "packed targets",
            "packed overall", "pack ms/1M"])  # fmt: skip
    for f in args.sweep_factors:
        r = rhos.get(f) or mixture_ratio(plan(PRESETS[preset], example_lengths(L, f)))
        center = r * I
        Ts = sorted({int(8 * round(x / 8)) for x in np.linspace(0.94 * center, 1.25 * center, 9)})
        Ts = [t for t in Ts if t >= 4]
        results = []
        for T in Ts:
            LT = Lengths("encoder-decoder", I, T)
            exL = example_lengths(LT, f)
            key = (exL.inputs_length, exL.targets_length)
            if key not in cache:
                cache[key] = corrupt_stream(stream, preset, exL, args.group, args.seed)
            e = pack_all(cache[key], LT, args.window, arrow=False)
            u = unpacked_efficiency(corrupt_stream(stream, preset, LT, args.group, args.seed), LT)
            b = efficiency_bound(cache[key].plans, LT)
            results.append((T, e, u, b))
        best_all = max(results, key=lambda z: z[1]["overall"])[0]
        best_min = max(results, key=lambda z: min(z[1]["inputs"], z[1]["targets"]))[0]
        for T, e, u, b in results:
            mark = ("*" if T == best_all else "") + ("+" if T == best_min else "")
            row([str(f), f"{T}{mark}",
                 f"{100 * u['inputs']:.1f}/{100 * u['targets']:.1f}/{100 * u['overall']:.1f}",
                 pct(b["overall"]), pct(e["inputs"]), pct(e["targets"]), pct(e["overall"]),
                 f"{e['pack_ms']:.1f}"])  # fmt: skip
        if args.lp:
            for T in sorted({best_all, best_min, round(center)}):
                if not lp_report(stream, preset, f, I, T, args, cache):
                    break


def lp_report(
    stream: np.ndarray,
    preset: str,
    f: int,
    I: int,
    T: int,
    args: argparse.Namespace,
    cache: dict[tuple[int, int], Corrupted],
) -> bool:
    """Print the LP bound of the first group at (factor f, I, T) next to this packer's rows."""
    LT = Lengths("encoder-decoder", I, T)
    exL = example_lengths(LT, f)
    key = (exL.inputs_length, exL.targets_length)
    if key not in cache:
        cache[key] = corrupt_stream(stream, preset, exL, args.group, args.seed)
    c = cache[key]
    rows0, comps0, offs0 = c.groups[0]
    a, bb = rows0.input_length.astype(np.int64), rows0.target_length.astype(np.int64)
    t0 = time.perf_counter()
    rows_lp = lp_bound(a, bb, I, T)
    if rows_lp is None:
        print("  (LP bound skipped: scipy is not importable)")
        return False
    packed = P.pack_rows(rows0, LT, pad_id=c.special.pad, max_segs=max_segments(c.plans, LT),
                         denoiser=comps0, example_index=np.arange(len(a)),
                         token_offset=offs0, improve=IMPROVE[0])  # fmt: skip
    R = packed.num_rows
    print(f"  LP bound {preset}, factor {f}, I={I}, T={T}, first group ({len(a)} examples): >= "
          f"{rows_lp:.1f} rows -> inputs <= {pct(a.sum() / (rows_lp * I))}, targets <= "
          f"{pct(bb.sum() / (rows_lp * T))}, overall <= "
          f"{pct((a.sum() + bb.sum()) / (rows_lp * (I + T)))}; this packer: {R} rows = "
          f"{pct(a.sum() / (R * I))} / {pct(bb.sum() / (R * T))} / "
          f"{pct((a.sum() + bb.sum()) / (R * (I + T)))} ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    return True


def dec_only_report(stream: np.ndarray, preset: str, args: argparse.Namespace) -> None:
    L = Lengths("decoder-only", seq_length=args.seq_length)
    print(f"\n## {preset}: decoder-only S={args.seq_length}\n")
    un = corrupt_stream(stream, preset, L, args.group, args.seed)
    ue = unpacked_efficiency(un, L)
    header(
        [
            "what",
            "rows",
            "ex/row",
            "tokens/slots",
            "loss tokens/slots",
            "mix",
            "pack ms/1M",
            "corrupt ms/1M",
        ]
    )
    row(["unpacked (plan at S)", str(ue["rows"]), "1.00", pct(ue["overall"]), pct(ue["loss"]), "-", "-",
         f"{1e9 * un.corrupt_cpu / un.raw_tokens:.1f}"])  # fmt: skip
    for f in args.factors:
        exL = example_lengths(L, f)
        c = corrupt_stream(stream, preset, exL, args.group, args.seed)
        e = pack_all(c, L, args.window)
        row([f"packed, factor {f} (examples {exL.seq_length}, K={e['K']})", str(e["rows"]),
             f"{e['per_row']:.2f}", pct(e["overall"]), pct(e["loss"]), f"{e['mix']:.2f}",
             f"{e['pack_ms']:.1f} (+{e['arrow_ms']:.1f} arrow)", f"{e['corrupt_ms']:.1f}"])  # fmt: skip


def window_report(stream: np.ndarray, args: argparse.Namespace) -> None:
    """Efficiency vs speed of the first-fit window (ul2, factor 4, I=512, T=512 and T~rho*I)."""
    print("\n## first-fit window: efficiency vs cost (ul2, factor 4)\n")
    header(["T", "window", "overall", "pack ms/1M"])
    for T in (args.targets_length, 304):
        L = Lengths("encoder-decoder", args.inputs_length, T)
        c = corrupt_stream(stream, "ul2", example_lengths(L, 4), args.group, args.seed)
        for w in (1, 4, 16, 32, 128):
            e = pack_all(c, L, w, arrow=False)
            row([str(T), str(w), pct(e["overall"]), f"{e['pack_ms']:.1f}"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presets", nargs="+", default=["ul2", "ul2r"], choices=sorted(PRESETS))
    ap.add_argument("--inputs-length", type=int, default=512)
    ap.add_argument("--targets-length", type=int, default=512)
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--factors", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--sweep-factors", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--no-sweep", dest="sweep", action="store_false")
    ap.add_argument("--tokens", type=int, default=2_000_000, help="raw tokens per configuration")
    ap.add_argument("--group", type=int, default=1024, help="chunks per group (the pipeline's)")
    ap.add_argument("--window", type=int, default=P.DEFAULT_WINDOW)
    ap.add_argument("--windows", action="store_true", help="also report efficiency vs window")
    ap.add_argument("--lp", action="store_true", help="LP bound of one group (scipy; slow)")
    ap.add_argument(
        "--lp-at",
        nargs="*",
        default=[],
        metavar="PRESET:FACTOR:T",
        help="only print LP bounds at these points (I = --inputs-length), e.g. ul2:8:302",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--first-fit-only",
        action="store_true",
        help="pack with first fit only (assign_rows(improve=False)), for before/after comparisons",
    )
    ap.add_argument(
        "--points",
        nargs="*",
        default=[],
        metavar="PRESET:FACTOR:T",
        help="only print packed efficiency and cost over the whole stream at these points",
    )
    args = ap.parse_args()
    IMPROVE[0] = not args.first_fit_only

    stream = np.random.default_rng(args.seed).integers(0, VOCAB, args.tokens, dtype=np.int32)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# denoise packing benchmark: presets={args.presets}, {args.tokens} raw tokens per "
          f"configuration, group={args.group}, window={args.window}")  # fmt: skip
    print(f"# python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"single thread; load average (1 min) {load:.2f} on {os.cpu_count()} cores")  # fmt: skip
    print("# times are process CPU ms per 1M raw tokens; tokenization costs ~1000 ms per 1M tokens")
    if args.points:
        header(["preset", "factor", "T", "rows", "inputs", "targets", "overall", "mix",
                "pack ms/1M"])  # fmt: skip
        for spec in args.points:
            preset, f, T = spec.split(":")
            LT = Lengths("encoder-decoder", args.inputs_length, int(T))
            c = corrupt_stream(stream, preset, example_lengths(LT, int(f)), args.group, args.seed)
            e = pack_all(c, LT, args.window, arrow=False)
            row([preset, f, T, str(e["rows"]), pct(e["inputs"]), pct(e["targets"]),
                 pct(e["overall"]), f"{e['mix']:.2f}", f"{e['pack_ms']:.1f}"])  # fmt: skip
        return
    if args.lp_at:
        for spec in args.lp_at:
            preset, f, T = spec.split(":")
            lp_report(stream, preset, int(f), args.inputs_length, int(T), args, {})
        return
    for preset in args.presets:
        enc_dec_report(stream, preset, args)
        dec_only_report(stream, preset, args)
    if args.windows:
        window_report(stream, args)


if __name__ == "__main__":
    main()

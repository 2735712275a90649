"""Benchmark: the whole corruption step (component draw, gather, masks, row assembly).

Not a test. Single-threaded on purpose (BLAS/OpenMP pinned to one thread before numpy is
imported), so every figure is per core. Compares, in one run:

0. every component alone (``corrupt_component``: masks and rows, chunks already cut) on
   batches of ``round(group x probability)`` chunks, the size it gets in a group of the
   pipeline, cut at random places of a **real** token stream (``--corpus``: the first
   documents of a ``.jsonl.zst`` file tokenized with the embedded GPT-2; random ids when it is
   absent); the **median** over ``--repeats`` batches, by process CPU time;
1. the vectorized engine: ``draw_components`` + ``corrupt_mixture`` over groups of chunks cut
   from the same token stream (the same calls the pipeline makes per group);
2. the plain per-row reference in ``tests/reference.py`` (Python loops) on a smaller slice of
   the same stream; its rate is extrapolated per raw token;
3. the ``text-denoising`` package's ``DataCollatorForUL2`` if it can be imported; if only its
   numpy mask function can be imported (the collator needs torch + transformers), that mask
   alone is timed per row as a lower bound on the package's cost; otherwise it is skipped.

Usage::

    python benchmarks/bench_corrupt.py                    # ul2, I=T=512, 1M raw tokens
    python benchmarks/bench_corrupt.py --corpus ../shared/corpus/en-prose/00.jsonl.zst
    python benchmarks/bench_corrupt.py --tokens 2000000 --layout decoder-only --seq-length 1024
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
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from denoise_cli.config import PRESETS, Lengths  # noqa: E402
from denoise_cli.rows.base import SpecialIds  # noqa: E402
from denoise_cli.rows.corrupt import (  # noqa: E402
    corrupt_component,
    corrupt_mixture,
    draw_components,
)
from denoise_cli.rows.plan import ComponentPlan, plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import reference as ref  # noqa: E402

TARGET = 30e6  # raw tokens/s per core, every component (median) and the whole step
DEFAULT_CORPUS = (
    Path(__file__).resolve().parent.parent.parent / "shared/corpus/en-prose/00.jsonl.zst"
)
VOCAB = 32_000


def make_special(n_sentinels: int) -> SpecialIds:
    ids = np.random.default_rng(0).permutation(np.arange(VOCAB, VOCAB + n_sentinels + 8))
    return SpecialIds(
        eos=int(ids[-1]),
        pad=int(ids[-2]),
        sentinels=ids[:n_sentinels].astype(np.int32),
        mode={"[NLU]": int(ids[-3]), "[NLG]": int(ids[-4]), "[S2S]": int(ids[-5])},
    )


def run_engine(
    stream: np.ndarray,
    plans: tuple[ComponentPlan, ...],
    probs: np.ndarray,
    special: SpecialIds,
    lengths: Lengths,
    group: int,
    seed: int,
) -> tuple[int, int]:
    """Corrupt ``stream`` front to back in groups of ``group`` chunks. Returns (raw tokens
    consumed, rows)."""
    rng = np.random.default_rng(seed)
    raw = np.array([c.raw_length for c in plans], dtype=np.int64)
    pos, used, rows = 0, 0, 0
    n = len(stream)
    while True:
        comps = draw_components(rng, probs, group)
        lens = raw[comps]
        ends = pos + np.cumsum(lens)
        keep = int(np.searchsorted(ends, n, side="right"))  # chunks that fit in the stream
        if keep == 0:
            break
        comps, lens = comps[:keep], lens[:keep]
        starts = ends[:keep] - lens
        corrupt_mixture(stream, starts, comps, plans, special, lengths, rng)
        used += int(lens.sum())
        rows += keep
        pos = int(ends[keep - 1])
        if keep < group:
            break
    return used, rows


def real_tokens(path: str, count: int) -> np.ndarray | None:
    """The token stream (documents + EOS) of the first documents of ``path``, tokenized with the
    embedded GPT-2, cut to ``count`` tokens (repeated if the file is shorter); None if absent."""
    from denoise_cli.source.read import FileStats, find_inputs, iter_batches
    from denoise_cli.source.tokenize import Encoder, load_tokenizer_json

    if not Path(path).is_file():
        return None
    enc = Encoder(load_tokenizer_json(None)[0], np.zeros(0, np.int32), None)
    pieces, total = [], 0
    for batch in iter_batches(find_inputs([path])[0], stats=FileStats()):
        ids, offsets, _ = enc.encode(batch.texts)
        for d in range(len(offsets) - 1):
            pieces.append(ids[offsets[d] : offsets[d + 1]])
            pieces.append(np.array([50256], np.int32))
        total += len(ids) + len(offsets) - 1
        if total >= count:
            break
    stream = np.concatenate(pieces)
    return np.resize(stream, count).astype(np.int32)


def component_rates(
    stream: np.ndarray,
    plans: tuple[ComponentPlan, ...],
    probs: np.ndarray,
    special: SpecialIds,
    lengths: Lengths,
    group: int,
    repeats: int,
    seed: int,
) -> list[tuple[str, int, float, float]]:
    """Per component: (name, batch rows, median, min) raw tokens per CPU-second of
    ``corrupt_component`` over ``repeats`` batches cut at random places of ``stream``."""
    out = []
    rng = np.random.default_rng(seed)
    for comp in plans:
        b = max(1, round(group * float(probs[comp.index])))
        L = comp.raw_length
        rates = []
        for r in range(repeats + 1):
            starts = rng.integers(0, len(stream) - L, b)
            chunk = stream[starts[:, None] + np.arange(L)[None, :]]
            c0 = time.process_time()
            corrupt_component(chunk, comp, special, lengths, rng)
            dt = time.process_time() - c0
            if r:  # the first batch warms caches and allocations up
                rates.append(b * L / max(dt, 1e-9))
        out.append((comp.name, b, float(np.median(rates)), float(min(rates))))
    return out


def run_reference(
    stream: np.ndarray,
    plans: tuple[ComponentPlan, ...],
    probs: np.ndarray,
    special: SpecialIds,
    lengths: Lengths,
    seed: int,
) -> tuple[int, int]:
    """The plain per-row reference over ``stream``: draw, cut, mask, corrupt, assemble."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(probs).tolist()
    sentinels = special.sentinels.tolist()
    tokens = stream.tolist()
    pos, used, rows = 0, 0, 0
    while True:
        u = rng.random() * cdf[-1]
        c = next(i for i, x in enumerate(cdf) if u < x)
        comp = plans[c]
        L = comp.raw_length
        if pos + L > len(tokens):
            break
        chunk = tokens[pos : pos + L]
        d = comp.denoiser
        if d.is_span:
            mask = ref.noise_mask_ref(rng, L, d.rate, d.mean_span)
            inputs, targets = ref.span_corrupt_ref(chunk, mask, sentinels)
        else:
            inputs, targets = ref.prefix_split_ref(chunk, ref.prefix_length_ref(rng, L, d.rate))
        mode_id = special.mode[comp.mode_token] if comp.mode_token else None
        ref.assemble_row_ref(
            inputs,
            targets,
            mode_id,
            special.eos,
            special.pad,
            lengths.layout,
            lengths.inputs_length,
            lengths.targets_length,
            lengths.seq_length,
        )
        pos += L
        used += L
        rows += 1
    return used, rows


def text_denoising_runner(
    plans: tuple[ComponentPlan, ...], probs: np.ndarray, rows: int
) -> tuple[str, Callable[[], int] | None]:
    """(label, callable returning raw tokens processed) for the text-denoising package, or
    (message, None) when it cannot be imported."""
    try:
        from text_denoising.collate_fn import DataCollatorForUL2  # type: ignore[import-not-found]
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from transformers import PreTrainedTokenizerFast  # type: ignore[import-not-found]
    except Exception as e:  # ImportError, or torch/transformers failing to import
        collator_error = f"{type(e).__name__}: {e}"
    else:
        vocab = {f"t{i}": i for i in range(VOCAB)}
        for k, name in enumerate(["<pad>", "</s>", "<s>", "<unk>"]):
            vocab[name] = VOCAB + k
        for k in range(200):  # the package uses len(tokenizer) - k as sentinel k
            vocab[f"<extra_id_{k}>"] = VOCAB + 4 + k
        tok = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
            pad_token="<pad>",
            eos_token="</s>",
            bos_token="<s>",
            unk_token="<unk>",
        )
        collator = DataCollatorForUL2(tokenizer=tok)  # its defaults = our text-denoising preset
        width = 512  # the package masks the padded batch width; feed 512-token examples
        rng = np.random.default_rng(0)
        examples = [
            {"input_ids": rng.integers(0, VOCAB, width).tolist()} for _ in range(min(rows, 256))
        ]

        def run_collator() -> int:
            done = 0
            for i in range(0, len(examples), 32):
                batch = examples[i : i + 32]
                collator(batch)
                done += len(batch) * width
            return done

        return "text-denoising DataCollatorForUL2 (512/row, batch 32)", run_collator
    # The package's __init__ imports the collator (torch); load its numpy-only utils.py by path.
    try:
        import importlib.util

        spec = importlib.util.find_spec("text_denoising")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("text_denoising is not installed")
        utils_path = Path(next(iter(spec.submodule_search_locations))) / "utils.py"
        uspec = importlib.util.spec_from_file_location("_td_utils", utils_path)
        if uspec is None or uspec.loader is None:
            raise ImportError(f"cannot load {utils_path}")
        td_utils = importlib.util.module_from_spec(uspec)
        uspec.loader.exec_module(td_utils)
        td_mask = td_utils.random_spans_noise_mask
    except Exception as e:
        return f"text-denoising: not importable ({type(e).__name__}: {e}); skipped", None

    span_plans = [c for c in plans if c.denoiser.is_span]
    w = np.array([probs[c.index] for c in span_plans])
    rng = np.random.default_rng(0)
    picks = rng.choice(len(span_plans), size=rows, p=w / w.sum())

    def run_masks() -> int:
        done = 0
        for i in picks:
            c = span_plans[int(i)]
            td_mask(c.raw_length, c.denoiser.mean_span, c.denoiser.rate)
            done += c.raw_length
        return done

    print(f"# text-denoising collator not importable ({collator_error.splitlines()[0][:80]}),")
    print("# timing only its per-row numpy mask function on our span components (lower bound)")
    return "text-denoising random_spans_noise_mask only", run_masks


def median_of(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(median wall seconds, median process CPU seconds, last result) over ``repeats`` runs."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus)), out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="ul2", choices=sorted(PRESETS))
    ap.add_argument(
        "--layout", default="encoder-decoder", choices=["encoder-decoder", "decoder-only"]
    )
    ap.add_argument("--inputs-length", type=int, default=512)
    ap.add_argument("--targets-length", type=int, default=512)
    ap.add_argument("--seq-length", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=1_048_576, help="raw tokens for the engine")
    ap.add_argument("--ref-tokens", type=int, default=65_536, help="raw tokens for the reference")
    ap.add_argument("--td-rows", type=int, default=256, help="rows for text-denoising")
    ap.add_argument("--group", type=int, default=1024, help="chunks per corrupt_mixture call")
    ap.add_argument("--repeats", type=int, default=5, help="runs of the engine (median)")
    ap.add_argument(
        "--component-repeats", type=int, default=41, help="batches per component (median)"
    )
    ap.add_argument(
        "--corpus",
        default=str(DEFAULT_CORPUS),
        help="a .jsonl.zst file whose first documents give real tokens (default: %(default)s)",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    lengths = Lengths(
        args.layout,
        inputs_length=args.inputs_length,
        targets_length=args.targets_length,
        seq_length=args.seq_length,
    )
    mix = PRESETS[args.preset]
    plans = plan(mix, lengths)
    probs = mix.probabilities
    special = make_special(max(1, max(c.spans for c in plans)))
    real = real_tokens(args.corpus, args.tokens)
    if real is None:
        print(f"# {args.corpus} not found: random token ids instead of real ones")
        stream = np.random.default_rng(args.seed).integers(0, VOCAB, args.tokens, dtype=np.int32)
    else:
        stream = real

    print(f"# denoise corruption benchmark: preset={args.preset} {lengths.to_dict()}")
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"single thread (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}), group={args.group}"
    )
    print("# components: " + ", ".join(f"{c.name}->{c.raw_length}" for c in plans))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# load average (1 min) before the run: {load:.2f} on {os.cpu_count()} cores")

    print(f"# tokens: {'real, ' + Path(args.corpus).name if real is not None else 'random'}")
    comps = component_rates(
        stream, plans, probs, special, lengths, args.group, args.component_repeats, args.seed
    )
    print()
    print(
        f"| {'component':<12} | {'rows/batch':>10} | {'median raw tok/s (cpu)':>22} | {'slowest batch':>13} |"
    )
    print(f"|{'-' * 14}|{'-' * 12}|{'-' * 24}|{'-' * 15}|")
    for name, b, med, low in comps:
        print(f"| {name:<12} | {b:>10} | {med / 1e6:>20.1f} M | {low / 1e6:>11.1f} M |")
    worst = min(comps, key=lambda c: c[2])
    print(
        f"slowest component {worst[0]}: {worst[2] / 1e6:.1f} M raw tokens/s per core (median of "
        f"{args.component_repeats}); target >= {TARGET / 1e6:.0f} M: "
        f"{'MET' if worst[2] >= TARGET else 'NOT MET'}"
    )

    results: list[tuple[str, float, float, str]] = []  # (what, tokens/s wall, tokens/s cpu, note)
    run_engine(stream[: min(len(stream), 200_000)], plans, probs, special, lengths, args.group, 1)
    wall, cpu, (used, rows) = median_of(
        lambda: run_engine(stream, plans, probs, special, lengths, args.group, args.seed),
        args.repeats,
    )
    results.append(
        (
            "engine: draw_components + corrupt_mixture",
            used / wall,
            used / cpu,
            f"{used} tokens, {rows} rows, median of {args.repeats}",
        )
    )

    ref_stream = stream[: args.ref_tokens]
    wall, cpu, (used_r, rows_r) = median_of(
        lambda: run_reference(ref_stream, plans, probs, special, lengths, args.seed), 1
    )
    results.append(
        (
            "plain per-row reference (tests/reference.py)",
            used_r / wall,
            used_r / cpu,
            f"{used_r} tokens, {rows_r} rows; extrapolated per token",
        )
    )

    label, fn = text_denoising_runner(plans, probs, args.td_rows)
    if fn is None:
        print(f"# {label}")
    else:
        fn()  # warm-up (imports, first-call overheads)
        wall, cpu, used_t = median_of(fn, 1)
        results.append(
            (label, used_t / wall, used_t / cpu, f"{used_t} tokens; extrapolated per token")
        )

    # Ratios and the target use process CPU time: on a single thread that is the per-core work,
    # and unlike wall time it does not count time spent waiting for other processes' cores.
    engine_cpu = results[0][2]
    print()
    print(
        f"| {'what':<44} | {'raw tok/s (wall)':>16} | {'raw tok/s (cpu)':>15} "
        f"| {'engine is':>9} | notes"
    )
    print(f"|{'-' * 46}|{'-' * 18}|{'-' * 17}|{'-' * 11}|------")
    for name, rate, rate_cpu, note in results:
        print(
            f"| {name:<44} | {rate / 1e6:>14.2f} M | {rate_cpu / 1e6:>13.2f} M "
            f"| {engine_cpu / rate_cpu:>8.1f}x | {note}"
        )
    print()
    verdict = "MET" if engine_cpu >= TARGET else "NOT MET"
    print(
        f"target: >= {TARGET / 1e6:.0f} M raw tokens/s per core for the whole corruption step: "
        f"engine {engine_cpu / 1e6:.1f} M (cpu time; {results[0][1] / 1e6:.1f} M wall) -> {verdict}"
    )


if __name__ == "__main__":
    main()

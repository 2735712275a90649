"""Benchmark: ``prepare --epochs 4`` against ``--epochs 1`` on the same input, in one run.

Tokenization (the expensive stage) runs once per document and feeds every epoch's packer,
so K epochs should cost far less than K runs. Target: K=4 under 1.5x the wall time of K=1.

    python benchmarks/bench_epochs.py [--input DIR_OR_FILES...] [--workers N] [--repeat R]

Defaults to ``../shared/corpus/en-prose/00.jsonl.zst`` when present, else the bundled sample.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = REPO.parent / "shared" / "corpus" / "en-prose" / "00.jsonl.zst"
    ap.add_argument(
        "--input",
        nargs="+",
        default=[str(default if default.exists() else REPO / "examples" / "sample")],
    )
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting; the best is reported")
    args = ap.parse_args()

    results: dict[int, float] = {}
    tokens = 0
    for k in (1, args.epochs):
        best = float("inf")
        for _ in range(args.repeat):
            tmp = Path(tempfile.mkdtemp(prefix="bench-epochs-"))
            cfg = PrepareConfig(
                mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 512, 512), epochs=k
            )
            t0 = time.perf_counter()
            m = prepare(args.input, str(tmp / "out"), cfg, workers=args.workers, progress=False)
            best = min(best, time.perf_counter() - t0)
            tokens = m["totals"]["tokens"]
            shutil.rmtree(tmp)
        results[k] = best
    print(
        f"input: {' '.join(args.input)}  ({tokens:,} tokens, ul2, I=T=512, workers={args.workers}, best of {args.repeat})"
    )
    print(f"{'epochs':>8} {'wall s':>9} {'M tokens/s':>11} {'vs K=1':>8}")
    for k, t in results.items():
        print(f"{k:>8} {t:>9.2f} {tokens / t / 1e6:>11.3f} {t / results[1]:>7.2f}x")
    ratio = results[args.epochs] / results[1]
    print(
        f"target: K={args.epochs} under 1.5x of K=1 -> {'met' if ratio < 1.5 else 'NOT met'} ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()

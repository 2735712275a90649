"""CPU cost of one ``64 x 512`` batch: ``text-denoising``'s ``DataCollatorForUL2`` (the seed)
against :class:`denoise_cli.load.collator.DataCollatorForUL2`, same examples, same mixture settings
(the seed's defaults), interleaved A B A B so that machine load hits both alike.

    pip install '.[bench]'      # the seed package (benchmark-only dependency)
    python benchmarks/bench_collator.py --rounds 10

CPU seconds are ``time.process_time()`` of this (single-threaded: torch.set_num_threads(1))
process around each call; the ratio is of the medians. Recorded runs: benchmarks/README_collator.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "data" / "t5-tiny-tokenizer.json"


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=512, help="tokens per example (incl. EOS)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tokenizer", default=str(TOKENIZER), help="a tokenizer.json (T5 layout)")
    ap.add_argument("--ragged", action="store_true", help="lengths uniform in [length/2, length]")
    ap.add_argument(
        "--format",
        choices=["list", "numpy"],
        default="list",
        help="rows as Python lists (HF datasets' default, what Trainer passes) or int64 arrays",
    )
    ap.add_argument(
        "--no-attention-mask", action="store_true", help="rows without an attention_mask field"
    )
    args = ap.parse_args(argv)

    import torch
    from text_denoising import DataCollatorForUL2 as SeedCollator
    from transformers import PreTrainedTokenizerFast

    from denoise_cli.load.collator import DataCollatorForUL2

    torch.set_num_threads(1)
    # bos = pad: the seed takes its decoder start id from bos_token_id (T5 tokenizers have none)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=args.tokenizer,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<pad>",
    )
    rng = np.random.default_rng(0)
    vocab = len(tok)
    lo = args.length // 2 if args.ragged else args.length
    lens = rng.integers(lo, args.length + 1, size=args.batch)
    # regular pieces only (ids 3..vocab-101: below the sentinels) and a final EOS
    examples = [
        {"input_ids": [*rng.integers(3, vocab - 100, size=int(n) - 1).tolist(), tok.eos_token_id]}
        for n in lens
    ]
    if not args.no_attention_mask:  # what dataset.map(tokenizer) gives
        for e in examples:
            e["attention_mask"] = [1] * len(e["input_ids"])
    if args.format == "numpy":
        examples = [{k: np.asarray(v, dtype=np.int64) for k, v in e.items()} for e in examples]
    seed = SeedCollator(tok)
    ours = DataCollatorForUL2(tok, seed=0)
    seed(examples), ours(examples)  # warm up

    a: list[float] = []
    b: list[float] = []
    for _ in range(args.rounds):
        for fn, acc in ((seed, a), (ours, b)):
            t0 = time.process_time()
            fn(examples)
            acc.append(time.process_time() - t0)
    ma, mb = statistics.median(a), statistics.median(b)
    load = os.getloadavg()
    print(
        f"batch {args.batch} x {args.length}{' ragged' if args.ragged else ''}, rows as "
        f"{args.format}{'' if args.no_attention_mask else ' with attention_mask'}, vocabulary "
        f"{vocab}, {args.rounds} rounds A B A B"
    )
    print(
        f"seed text-denoising 0.1.1 : median {ma * 1e3:8.2f} ms CPU  (min {min(a) * 1e3:.2f}, max {max(a) * 1e3:.2f})"
    )
    print(
        f"denoise DataCollatorForUL2: median {mb * 1e3:8.2f} ms CPU  (min {min(b) * 1e3:.2f}, max {max(b) * 1e3:.2f})"
    )
    print(f"ratio (seed / ours, medians): {ma / mb:.1f}x")
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return {"seed": ma, "ours": mb, "ratio": ma / mb}


if __name__ == "__main__":
    main()

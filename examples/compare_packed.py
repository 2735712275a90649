"""Train the same tiny model on packed and on unpacked rows of the same examples and print the
two loss curves side by side.

``prepare --pack K`` at rows of ``(I, T)`` (or ``S``) writes exactly the examples that an
unpacked ``prepare`` at the example budget writes (``config.example_lengths``: ``I/K`` and
``min(T, I/K)``, or ``S/K``; same mixture, seed and input), several per row. This script checks
that the two outputs are such a pair, then runs ``examples/train_t5.py`` (encoder-decoder) or
``examples/train_decoder.py`` (decoder-only) on each with the same seed and learning rate, and the
same number of **examples per step**: the unpacked batch is the packed batch times the mean
number of examples per packed row. The loss is the mean over the batch's label tokens in both
cases, so with correct segment masks the curves agree up to the different shuffles of the
examples::

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-ed-tiny -I 64 -T 64 \\
        --tokenizer tests/data/t5-tiny-tokenizer.json
    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-pk -I 256 -T 160 --pack 4 \\
        --tokenizer tests/data/t5-tiny-tokenizer.json
    python examples/compare_packed.py --packed /tmp/ul2-pk --unpacked /tmp/ul2-ed-tiny

Prints per-window mean losses (packed, unpacked, difference), the slots each run processed and
its wall time. Recorded runs: ``examples/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from denoise_cli import open_dataset

HERE = Path(__file__).resolve().parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_pair(packed: dict[str, Any], unpacked: dict[str, Any]) -> str:
    """The layout, after checking that ``unpacked`` holds the examples ``packed`` packs."""
    if not packed.get("packing"):
        sys.exit("--packed: not a packed output (prepare --pack K)")
    if unpacked.get("packing"):
        sys.exit("--unpacked: is a packed output")
    ex = dict(packed["packing"]["example_lengths"])
    got = {k: v for k, v in unpacked["lengths"].items() if v is not None}
    if {k: v for k, v in ex.items() if v is not None} != got:
        sys.exit(
            f"--unpacked was prepared at {got}; the packed examples are planned at {ex}: "
            "prepare the unpacked output at those lengths"
        )
    for key in ("mixture", "seed", "layout"):
        if packed[key] != unpacked[key]:
            sys.exit(f"the two outputs differ in {key}: {packed[key]} vs {unpacked[key]}")
    return str(packed["layout"])


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packed", required=True, help="output of prepare --pack K")
    ap.add_argument("--unpacked", required=True, help="unpacked output at the example lengths")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8, help="packed rows per step")
    ap.add_argument("--window", type=int, default=20, help="steps per printed mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write both loss curves to this file")
    args = ap.parse_args(argv)

    p_ds, u_ds = open_dataset(args.packed), open_dataset(args.unpacked)
    layout = check_pair(p_ds.manifest, u_ds.manifest)
    per_row = len(u_ds) / len(p_ds)  # the same examples
    u_batch = max(1, round(args.batch_size * per_row))
    script = _load("train_t5" if layout == "encoder-decoder" else "train_decoder")
    common = ["--steps", str(args.steps), "--seed", str(args.seed), "--threads", str(args.threads)]
    common += ["--device", args.device, "--log-every", str(10 * args.window)]
    if layout == "decoder-only":  # the same GPT-2 (position table size) for both runs
        common += ["--n-positions", str(p_ds.manifest["lengths"]["seq_length"])]
    print(
        f"{layout}: packed {args.batch_size} rows/step x {per_row:.2f} examples/row = "
        f"{args.batch_size * per_row:.1f} examples/step; unpacked {u_batch} rows/step",
        flush=True,
    )
    curves: dict[str, list[float]] = {}
    secs: dict[str, float] = {}
    for name, data, bs in (
        ("packed", args.packed, args.batch_size),
        ("unpacked", args.unpacked, u_batch),
    ):
        print(f"--- {name}: {data}", flush=True)
        t0 = time.perf_counter()
        curves[name] = script.main(["--data", data, "--batch-size", str(bs), *common])
        secs[name] = time.perf_counter() - t0

    p, u = curves["packed"], curves["unpacked"]
    w = args.window
    print(f"\n{'steps':>11}  {'packed':>8}  {'unpacked':>8}  {'diff':>7}")
    worst = 0.0
    for s in range(0, len(p), w):
        mp, mu = sum(p[s : s + w]) / len(p[s : s + w]), sum(u[s : s + w]) / len(u[s : s + w])
        worst = max(worst, abs(mp - mu) / mu) if s >= w else worst
        print(f"{s + 1:5d}-{min(s + w, len(p)):5d}  {mp:8.4f}  {mu:8.4f}  {mp - mu:+7.4f}")
    print(
        f"largest relative gap of the window means after the first window: {100 * worst:.1f}%; "
        f"wall time packed {secs['packed']:.1f}s, unpacked {secs['unpacked']:.1f}s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(curves))
    return curves


if __name__ == "__main__":
    main()

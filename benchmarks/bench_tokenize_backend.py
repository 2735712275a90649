#!/usr/bin/env python
"""CPU-seconds per token: ``prepare --tokenizer-backend hf|fast`` against the bare engines.

Four kinds of run, each a fresh child process, interleaved A B C D / D C B A over several rounds
(this machine is small and shared: only ratios from the same invocation mean anything):

- ``bare-hf``: ``Tokenizer.from_str`` + ``encode_batch_fast(texts, add_special_tokens=False)``
  (single-threaded) on the pipeline's own batches (``read.iter_batches``) of the input files;
- ``bare-fast``: tiktoken ``encode_ordinary_batch(texts, num_threads=1)`` with the encoding
  ``fastengine`` builds from the same tokenizer.json, on the same batches (SentencePiece-style
  tokenizers: on the texts after the engine's text rule, ``fastsp.sp_text``, timed; the ranks
  are mapped to ids after the clock);
- ``prepare-hf`` / ``prepare-fast``: ``denoise prepare --mixture ul2 --tokenizer-backend X``
  (encoder-decoder I=T=512, ``--workers`` as given, quiet), end to end.

CPU is that of the whole process tree: this script makes itself a child subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)``), so forkserver workers, which are not children of the
``prepare`` process, are re-parented to it when orphaned; it waits for every descendant and
reads ``getrusage(RUSAGE_CHILDREN)`` before and after each run. For the bare engines the child
also reports the CPU of the encode calls alone (``time.process_time`` around them; reading and
engine build excluded): the goals below use that, the stricter baseline. Tokens per run are the
documents' tokens (identical for both engines, checked); ``prepare`` figures are per the same
document tokens.

Goals (issue 16): prepare-fast uses >= 3x fewer CPU-s per token than bare-hf, and reaches
>= 0.9 of bare-fast's tokens per CPU-second.

Usage (repository root)::

    python benchmarks/bench_tokenize_backend.py --input ../shared/corpus/en-prose \\
        --tokenizer ../shared/tokenizers/gpt2/tokenizer.json --rounds 3 --files 2

``--baseline DIR`` (a directory holding another revision's ``denoise_cli/``, e.g. from
``git archive``) adds ``prepare-fast@base`` / ``prepare-hf@base``, the same runs with that
revision on ``PYTHONPATH``, interleaved in the same rounds; ``--kinds`` picks the prepare kinds.
``--breakdown`` times the per-run pieces of a fast-backend ``prepare`` one by one instead.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["TOKENIZERS_PARALLELISM"] = "false"
REPO = Path(__file__).resolve().parent.parent
KINDS = ("bare-hf", "bare-fast", "prepare-hf", "prepare-fast")
PR_SET_CHILD_SUBREAPER = 36


def inputs_of(args: argparse.Namespace) -> list[str]:
    from denoise_cli.source.discover import find_inputs

    files = find_inputs([str(Path(args.input).resolve())])  # children run elsewhere
    if args.files:
        files = files[: args.files]
    return [f.path for f in files]


def child(args: argparse.Namespace) -> None:
    """One run; prints a JSON line."""
    kind = args.child
    files = args.inputs
    if kind.startswith("prepare"):
        out = Path(args.out).resolve()
        env = dict(os.environ)
        # ``python -m`` puts its working directory first on sys.path: run it from the root of
        # the revision it is to import (from the repository root, a baseline run imported the
        # repository's denoise_cli, not the baseline's: fixed 2026-12-01 18:45 UTC)
        root = str(REPO)
        if kind.endswith("@base"):  # the baseline revision's denoise_cli (--baseline DIR)
            root = args.baseline
            kind = kind[: -len("@base")]
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
        cmd = [
            sys.executable,
            "-m",
            "denoise_cli",
            "prepare",
            *files,
            str(out),
            "--mixture",
            "ul2",
            "--tokenizer",
            args.tokenizer,
            "--tokenizer-backend",
            kind.split("-")[1],
            "--workers",
            str(args.workers),
            "--quiet",
            "--overwrite",
        ]
        subprocess.run(cmd, check=True, env=env, cwd=root)
        m = json.loads((out / "denoise.json").read_text())
        print(
            json.dumps(
                {"manifest_tokens": m["totals"]["tokens"], "backend": m["tokenizer_backend"]}
            )
        )
        return
    import numpy as np
    import orjson

    from denoise_cli.source import fastengine, fastsp
    from denoise_cli.source.discover import find_inputs
    from denoise_cli.source.read import FileStats, iter_batches

    batches: list[list[str]] = []
    for f in find_inputs(files):
        for b in iter_batches(f, stats=FileStats()):
            if b.texts:
                batches.append(list(b.texts))
    text = Path(args.tokenizer).read_text(encoding="utf-8")
    if kind == "bare-hf":
        import tokenizers

        tok = tokenizers.Tokenizer.from_str(text)
        tok.encode_special_tokens = True
        t0 = time.process_time()
        n = 0
        digest = 0
        for texts in batches:
            encs = tok.encode_batch_fast(texts, add_special_tokens=False)
            n += sum(len(e.ids) for e in encs)
            digest ^= hash(tuple(encs[0].ids)) if encs else 0
        cpu = time.process_time() - t0
    else:
        d = orjson.loads(text)
        spec = fastengine.analyze(d)
        assert isinstance(spec, fastengine.FastSpec), spec
        engine = fastengine.build_engine(d, spec)
        sp = spec.kind == fastsp.KIND
        # SentencePiece-style: the engine's text rule and tiktoken; ranks -> ids after the clock
        enc = engine.enc if sp else engine
        t0 = time.process_time()
        out = []
        for texts in batches:
            if sp:
                texts = [fastsp.sp_text(t, spec) if t else t for t in texts]
            out.append(enc.encode_ordinary_batch(texts, num_threads=1))
        cpu = time.process_time() - t0
        n = 0
        digest = 0
        for ids in out:
            if sp:
                ids = [engine.ids(np.array(x, dtype=np.uint32)).tolist() for x in ids]
            n += sum(len(x) for x in ids)
            digest ^= hash(tuple(ids[0])) if ids else 0
    print(json.dumps({"encode_cpu": cpu, "tokens": n, "digest": digest}))


def reap_all() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def tree_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_one(args: argparse.Namespace, kind: str, inputs: list[str], out: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    before = tree_cpu()
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", kind, "--tokenizer", args.tokenizer]
    cmd += ["--workers", str(args.workers), "--out", str(out), "--inputs", *inputs]
    if args.baseline:
        cmd += ["--baseline", args.baseline]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    reap_all()  # orphaned descendants (forkserver, workers) were re-parented to us
    wall = time.perf_counter() - t0
    cpu = tree_cpu() - before
    if p.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{p.stderr}")
    res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    res.update(kind=kind, tree_cpu=cpu, wall=wall, load1=load)
    return res


def breakdown(args: argparse.Namespace, inputs: list[str]) -> None:
    """``--breakdown``: the per-run (fixed) pieces of ``prepare --tokenizer-backend fast``, each
    timed alone in this process or a fresh child (CPU-s, best of 5)."""
    import numpy as np
    import orjson

    from denoise_cli.config import TokenConfig, load_mixture
    from denoise_cli.source import fastbpe, fastengine
    from denoise_cli.source.discover import find_inputs
    from denoise_cli.source.read import FileStats, iter_batches
    from denoise_cli.source.tokenize import Encoder, build_tokenizer

    def child_cpu(code: str) -> float:
        best = float("inf")
        for _ in range(5):
            before = tree_cpu()
            subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
            best = min(best, tree_cpu() - before)
        return best

    def best_of(f: Any) -> tuple[float, Any]:
        best, out = float("inf"), None
        for _ in range(5):
            t0 = time.process_time()
            out = f()
            best = min(best, time.process_time() - t0)
        return best, out

    rows: list[tuple[str, float]] = [
        ("interpreter start (`python -c pass`)", child_cpu("pass")),
        (
            "main process imports (`cli`, `prepare.run`)",
            child_cpu("import denoise_cli.cli, denoise_cli.prepare.run"),
        ),
        (
            "forkserver imports (its preload modules)",
            child_cpu(
                "import denoise_cli.engines.procs, denoise_cli.prepare.worker, "
                "denoise_cli.engines.local"
            ),
        ),
    ]
    t, info = best_of(
        lambda: build_tokenizer(args.tokenizer, TokenConfig(), load_mixture("ul2"), 100)
    )
    rows.append(("`build_tokenizer` (HF build, special tokens, `to_str`)", t))
    t, d = best_of(lambda: orjson.loads(info.json))
    rows.append(("parse of the tokenizer JSON (orjson)", t))
    t, spec = best_of(lambda: fastengine.analyze(d))
    rows.append(("`fastengine.analyze`", t))
    t, enc = best_of(lambda: fastengine.build_engine(d, spec))
    rows.append(("`fastengine.build_engine` (ranks + `tiktoken.Encoding`)", t))
    batch = next(
        iter(iter_batches(find_inputs(inputs[:1])[0], stats=FileStats(), batch_chars=1 << 18))
    )
    texts = [*fastbpe.TORTURE_TEXTS, *(x[: 1 << 16] for x in batch.texts[:256])]
    hf = Encoder(info.json, np.zeros(0, np.int32), None, built=info.built)
    t, _ = best_of(lambda: hf.encode_lists(texts))
    chars = sum(map(len, texts))
    rows.append((f"self-check, HF encode ({len(texts)} texts, {chars:,} chars)", t))
    t, _ = best_of(lambda: fastengine.encode_texts(enc, spec, texts))
    rows.append(("self-check, tiktoken encode (the same texts)", t))
    print("| piece | CPU-s |\n|---|---:|")
    for name, v in rows:
        print(f"| {name} | {v:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", choices=[*KINDS, "prepare-hf@base", "prepare-fast@base"])
    ap.add_argument("--inputs", nargs="*", default=[])
    ap.add_argument("--out", default="")
    ap.add_argument("--input", help="input directory or file (the corpus)")
    ap.add_argument(
        "--tokenizer", help="a tokenizer.json with a fast engine (GPT-2's, Llama 2's, ...)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=0, help="first N input files (0 = all)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument(
        "--baseline",
        default="",
        help="a directory holding another revision's denoise_cli/ (e.g. from git archive): "
        "adds the kinds prepare-fast@base and prepare-hf@base, run with it on PYTHONPATH",
    )
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="instead of the runs: time the fixed (per-run) pieces of a fast-backend prepare",
    )
    ap.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="comma-separated kinds to run (bare-hf and bare-fast are always run)",
    )
    args = ap.parse_args()
    if args.tokenizer:
        args.tokenizer = str(Path(args.tokenizer).resolve())  # children run elsewhere
    sys.path.insert(0, str(REPO))
    if args.child:
        child(args)
        return
    if not args.input or not args.tokenizer:
        ap.error("--input and --tokenizer are required")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed")
    inputs = inputs_of(args)
    if args.breakdown:
        breakdown(args, inputs)
        return
    wanted = [k for k in args.kinds.split(",") if k]
    kinds = ("bare-hf", "bare-fast", *(k for k in wanted if k.startswith("prepare")))
    if args.baseline:
        args.baseline = str(Path(args.baseline).resolve())
        if not (Path(args.baseline) / "denoise_cli").is_dir():
            ap.error(f"--baseline {args.baseline} has no denoise_cli/")
        kinds += tuple(k + "@base" for k in kinds if k.startswith("prepare"))
    # as installed (pip compiles bytecode): every run reads cached .pyc files instead of
    # compiling denoise_cli anew (as PYTHONDONTWRITEBYTECODE would have it)
    import compileall

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for root in [REPO, *([Path(args.baseline)] if args.baseline else [])]:
        compileall.compile_dir(str(root / "denoise_cli"), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    print(f"inputs: {len(inputs)} file(s) from {args.input}; tokenizer {args.tokenizer}")
    print(f"workers {args.workers}, rounds {args.rounds}, cpu_count {os.cpu_count()}")
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else tuple(reversed(kinds))
            for kind in order:
                res = run_one(args, kind, inputs, tmp / kind)
                res["round"] = r
                runs.append(res)
                extra = f" encode {res['encode_cpu']:.2f}" if "encode_cpu" in res else ""
                print(
                    f"round {r} {kind:13s} tree cpu {res['tree_cpu']:7.2f} s{extra} "
                    f"wall {res['wall']:6.1f} s load1 {res['load1']:.2f}",
                    flush=True,
                )
            for kind in kinds:
                shutil.rmtree(tmp / kind, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    toks = {r["tokens"] for r in runs if "tokens" in r}
    digests = {r["digest"] for r in runs if "digest" in r}
    assert len(toks) == 1 and len(digests) == 1, (toks, digests)
    n = toks.pop()
    mt = {r["manifest_tokens"] for r in runs if "manifest_tokens" in r}
    used = {r["kind"]: r["backend"]["used"] for r in runs if "backend" in r}
    print(f"\ndocument tokens {n:,} (both engines); prepare stream tokens {sorted(mt)}")
    print(f"backends used: {used}")

    def cpu(kind: str, rnd: int) -> float:
        (r,) = [x for x in runs if x["kind"] == kind and x["round"] == rnd]
        return float(r["encode_cpu"] if kind.startswith("bare") else r["tree_cpu"])

    print(f"\n{'kind':17s} {'median CPU-s':>12s} {'tok/CPU-s':>12s}  (bare: encode only)")
    med = {}
    for k in kinds:
        med[k] = statistics.median(cpu(k, r) for r in range(args.rounds))
        print(f"{k:17s} {med[k]:12.2f} {n / med[k]:12,.0f}")
    for k in ("bare-hf", "bare-fast"):
        tree = statistics.median(x["tree_cpu"] for x in runs if x["kind"] == k)
        print(f"({k} whole process incl. reading and start-up: {tree:.2f} CPU-s)")
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    rounds = range(args.rounds)
    print("\nper round (same-round ratios), median:")
    for fast in ("prepare-fast", "prepare-fast@base"):
        if fast not in kinds:
            continue
        tag = " (baseline)" if fast.endswith("@base") else ""
        r1 = [cpu("bare-hf", r) / cpu(fast, r) for r in rounds]
        r2 = [cpu("bare-fast", r) / cpu(fast, r) for r in rounds]
        print(
            f"bare-hf CPU / {fast} CPU{tag}   {fmt(r1)}  median {statistics.median(r1):.2f}"
            "  (goal >= 3)"
        )
        print(
            f"{fast} / bare-fast tok/CPU{tag} {fmt(r2)}  median {statistics.median(r2):.2f}"
            "  (goal >= 0.9)"
        )
    for hf in ("prepare-hf", "prepare-hf@base"):
        if hf in kinds:
            r4 = [cpu("bare-hf", r) / cpu(hf, r) for r in rounds]
            print(f"{hf} / bare-hf tok/CPU     {fmt(r4)}  median {statistics.median(r4):.2f}")
    if "prepare-fast@base" in kinds:
        r5 = [cpu("prepare-fast@base", r) - cpu("prepare-fast", r) for r in rounds]
        print(f"prepare-fast CPU-s saved vs baseline {fmt(r5)}  median {statistics.median(r5):.2f}")
    loads = [x["load1"] for x in runs]
    print(
        f"load average (1 min) at run starts: min {min(loads):.2f} median {statistics.median(loads):.2f} max {max(loads):.2f}"
    )


if __name__ == "__main__":
    main()

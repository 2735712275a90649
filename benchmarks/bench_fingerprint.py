"""Benchmark: what the resume fingerprint (SHA-256 of the raw input bytes) costs, in CPU,
relative to the ``prepare`` run it protects.

The reader hashes every compressed byte once while reading; a resumed file is hashed once more
over its consumed prefix (at most the whole file). Both are measured here on the same files as
one in-process ``prepare(workers=1)`` (ul2, I = T = 512, embedded GPT-2 tokenizer), CPU time of
this process only (``time.process_time``), best of ``--repeat``.

    python benchmarks/bench_fingerprint.py [--input FILES...] [--repeat R]

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
from denoise_cli.source.fingerprint import SourceDigest, prefix_sha256

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = REPO.parent / "shared" / "corpus" / "en-prose" / "00.jsonl.zst"
    if not default.exists():
        default = REPO / "examples" / "sample" / "en-prose-00.jsonl.zst"
    ap.add_argument("--input", nargs="+", default=[str(default)])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 512, 512))
    size = sum(Path(p).stat().st_size for p in a.input)

    def hash_read() -> None:  # what the reader adds: one update per block read
        for p in a.input:
            d = SourceDigest()
            with open(p, "rb", buffering=0) as fh:
                while b := fh.read(1 << 20):
                    d.update(b)
            d.hexdigest()

    def hash_prefix() -> None:  # what a resume adds, worst case: the whole file
        for p in a.input:
            prefix_sha256(lambda p=p: open(p, "rb"), Path(p).stat().st_size)

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            prepare(a.input, str(Path(tmp) / "o"), cfg, workers=1, progress=False)
            shutil.rmtree(tmp, ignore_errors=True)

    def best(fn: object) -> float:
        ts = []
        for _ in range(a.repeat):
            t = time.process_time()
            fn()  # type: ignore[operator]
            ts.append(time.process_time() - t)
        return min(ts)

    t_run, t_read, t_prefix = best(run), best(hash_read), best(hash_prefix)
    print(f"input: {len(a.input)} file(s), {size / 1e6:.1f} MB compressed")
    print(f"prepare (workers=1), CPU s:            {t_run:.3f}")
    print(
        f"SHA-256 while reading, CPU s:          {t_read:.4f} ({100 * t_read / t_run:.2f}% of the run)"
    )
    print(f"resume prefix check (whole file), s:   {t_prefix:.4f} ({100 * t_prefix / t_run:.2f}%)")


if __name__ == "__main__":
    main()

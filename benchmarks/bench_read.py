#!/usr/bin/env python
"""Reading cost next to tokenization, in CPU-seconds of one worker, measured in the same run.

For each input set (Parquet files; the same documents as jsonl.zst) it times, in one process with
one thread (``TOKENIZERS_PARALLELISM=false``, pyarrow ``use_threads=False`` as the reader uses):

- ``read``: ``read.iter_batches`` over every file (what a worker does before tokenizing: for
  Parquet, footer + row-group decode of the projected text column + record classification; for
  jsonl.zst, zstd + line split + orjson), batches of ~1 MB as in the pipeline;
- ``tokenize``: ``tokenize.Encoder.encode`` (the pipeline's encoder) on exactly those batches;
- for Parquet, ``read, all columns``: the same row groups decoded with every column (what reading
  costs without projection; context only);
- with ``--s3``: the same files uploaded to a local S3 server (``moto_server``, a separate
  process, so its CPU is not counted) and read through ``s3://`` URLs (s3fs): the client-side CPU
  of an object-store read (HTTP, copies), not the network.

Each figure is ``time.process_time()`` (CPU seconds of this process), best of ``--repeat`` runs;
the ratio of interest is ``read / (read + tokenize)`` -- an upper bound on reading's share of a
worker's CPU, since corruption and writing (left out) only add to the denominator. Goal: <= 3 %.

Usage (from the repository root)::

    python benchmarks/bench_read.py                       # ../shared corpora, embedded GPT-2
    python benchmarks/bench_read.py --parquet DIR --jsonl A.jsonl.zst B.jsonl.zst --tokenizer T

See ``benchmarks/README_read.md`` for a recorded run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "corpus"
GOAL = 0.03

from denoise_cli.source.discover import InputFile, find_inputs  # noqa: E402
from denoise_cli.source.read import FileStats, iter_batches  # noqa: E402
from denoise_cli.source.tokenize import Encoder, load_tokenizer_json  # noqa: E402


def cpu(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best CPU time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def read_all(files: Sequence[InputFile]) -> list[list[str]]:
    batches = []
    for f in files:
        st = FileStats()
        batches += [b.texts for b in iter_batches(f, stats=st) if b.texts]
        if st.error:
            raise SystemExit(st.error)
    return batches


def read_all_columns(files: Sequence[InputFile]) -> int:
    import pyarrow.parquet as pq

    n = 0
    for f in files:
        pf = pq.ParquetFile(f.path, buffer_size=1 << 20, pre_buffer=False)
        for i in range(pf.num_row_groups):
            for b in pf.iter_batches(row_groups=[i], use_threads=False):
                n += len(b.column(0).to_pylist())
    return n


def measure(name: str, files: Sequence[InputFile], enc: Encoder, repeat: int) -> dict[str, Any]:
    t_read, batches = cpu(lambda: read_all(files), repeat)
    texts = sum(len(b) for b in batches)
    chars = sum(len(t) for b in batches for t in b)

    def tok() -> int:
        return sum(len(enc.encode(b)[0]) for b in batches)

    t_tok, tokens = cpu(tok, max(1, repeat // 2))
    row: dict[str, Any] = {
        "input": name,
        "files": len(files),
        "bytes": sum(f.size for f in files),
        "docs": texts,
        "chars": chars,
        "tokens": tokens,
        "read_cpu_s": round(t_read, 4),
        "tokenize_cpu_s": round(t_tok, 4),
        "read_share": round(t_read / (t_read + t_tok), 5),
    }
    if all(f.compression == "parquet" and "://" not in f.path for f in files):
        t_all, _ = cpu(lambda: read_all_columns(files), repeat)
        row["read_all_columns_cpu_s"] = round(t_all, 4)
    return row


def s3_copy(sets: dict[str, list[InputFile]]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start moto_server on a free 127.0.0.1 port, upload every file; (process, options)."""
    import s3fs

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    opts = {"key": "bench", "secret": "bench", "endpoint_url": f"http://127.0.0.1:{port}"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    for _ in range(100):
        try:
            fs.mkdir("bench")
            break
        except Exception:
            time.sleep(0.1)
    for name, files in sets.items():
        for f in files:
            fs.put_file(f.path, f"bench/{name}/{f.name}")
    return proc, opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parquet", nargs="+", default=[str(SHARED / "fineweb-style")])
    ap.add_argument(
        "--jsonl",
        nargs="+",
        default=[str(SHARED / "en-prose" / f"0{i}.jsonl.zst") for i in (2, 3)],
    )
    ap.add_argument("--tokenizer", default=None, help="as prepare --tokenizer (default: gpt2)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--s3", action="store_true", help="also read through a local S3 server")
    args = ap.parse_args()

    import numpy as np

    tok_json, source = load_tokenizer_json(args.tokenizer)
    enc = Encoder(tok_json, np.zeros(0, np.int32), None)
    enc.encode(["warm up"])
    sets = {"parquet": find_inputs(args.parquet), "jsonl.zst": find_inputs(args.jsonl)}
    rows = [measure(name, files, enc, args.repeat) for name, files in sets.items()]
    if args.s3:
        proc, opts = s3_copy(sets)
        try:
            for name in sets:
                remote = find_inputs([f"s3://bench/{name}/"], opts)
                rows.append(measure(f"{name} via s3://", remote, enc, args.repeat))
        finally:
            proc.terminate()
            proc.wait()
    print(
        json.dumps(
            {
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "python": platform.python_version(),
                "tokenizer": source,
                "goal_read_share": GOAL,
                "results": rows,
            },
            indent=2,
        )
    )
    bad = [r["input"] for r in rows if r["read_share"] > GOAL]
    print(f"read share <= {GOAL:.0%}: " + ("FAIL for " + ", ".join(bad) if bad else "ok"))


if __name__ == "__main__":
    main()

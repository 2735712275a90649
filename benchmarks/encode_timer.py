"""Benchmark helper (not a test): times ``encode_batch_fast`` inside ``prepare``'s processes.

Imported by ``bench_prepare.py --overhead`` in the process that runs ``prepare`` and, as a
forkserver preload, in the server its pool workers fork from. It wraps the tokenizer that
``Encoder.tokenizer`` returns (built first, so its build is not counted) in a proxy whose
``encode_batch_fast`` adds its CPU time to a per-process file under ``$BENCH_ENCODE_DIR``
(rewritten after every call, so a worker that ends without cleanup has reported already).
"""

from __future__ import annotations

import os
import time
from typing import Any

from denoise_cli.source import tokenize

_TOTAL = [0.0, 0]  # CPU seconds, tokens


class TimedTokenizer:
    """Proxy of a ``tokenizers.Tokenizer``: ``encode_batch_fast`` timed, the rest passed on."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok

    def encode_batch_fast(self, *a: Any, **k: Any) -> Any:
        c = time.process_time()
        out = self._tok.encode_batch_fast(*a, **k)
        _TOTAL[0] += time.process_time() - c
        _TOTAL[1] += sum(len(e) for e in out)
        d = os.environ.get("BENCH_ENCODE_DIR")
        if d:
            with open(os.path.join(d, str(os.getpid())), "w") as f:
                f.write(f"{_TOTAL[0]!r} {_TOTAL[1]}")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


_plain = tokenize.Encoder.tokenizer


def _timed(self: Any) -> Any:
    tok = _plain.fget(self)  # type: ignore[attr-defined]
    if not isinstance(tok, TimedTokenizer):
        tok = TimedTokenizer(tok)
        self._tok = tok
    return tok


tokenize.Encoder.tokenizer = property(_timed)  # type: ignore[method-assign,assignment]


def read_totals(d: str) -> tuple[float, int]:
    """(CPU seconds, tokens) of ``encode_batch_fast`` over every process that reported."""
    cpu, tokens = 0.0, 0
    for name in os.listdir(d):
        c, t = open(os.path.join(d, name)).read().split()
        cpu += float(c)
        tokens += int(t)
    return cpu, tokens

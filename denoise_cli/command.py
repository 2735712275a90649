"""The ``denoise`` console script's first module: what must be set before numpy loads, then
:func:`.cli.main`.

Every process of the command encodes, corrupts or writes on one thread: ``prepare``'s workers
are one process per core and nothing calls BLAS on large matrices. OpenBLAS, which numpy loads,
starts a thread pool as big as the machine in every process anyway; on this project's machines
that start costs ~0.08 CPU-s per process (benchmarks/README_prepare.md) and, in a pool of
workers, would oversubscribe the cores it was sized for. So the command asks for one BLAS
thread unless the user set ``OPENBLAS_NUM_THREADS`` (their value wins; the workers inherit it).
Library callers (``import denoise_cli``) are left alone: only this entry point sets it, and
``denoise_cli/__init__`` imports nothing heavy so that it runs before numpy does.
"""

from __future__ import annotations

import os

__all__ = ["BLAS_THREADS_ENV", "main", "single_threaded_blas"]

BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"


def single_threaded_blas() -> None:
    """Ask OpenBLAS for one thread in this process and its children (before numpy loads)."""
    os.environ.setdefault(BLAS_THREADS_ENV, "1")


def main() -> None:
    """The ``denoise`` command (``[project.scripts]``, ``python -m denoise_cli``)."""
    single_threaded_blas()
    from .cli import main as run

    run()

"""``--engine local``: the per-file units in this process (one worker) or in a process pool.

The pool's workers are forked from this process where that is safe (:func:`start_method`):
they then start with its imports and with the tokenizer it built already, so a run pays for
one interpreter and one build of the vocabulary (~1.2 CPU-s for a 262k one, plus ~0.4 s to
free it) instead of two, and needs neither a forkserver nor a resource tracker. Elsewhere
they start from a ``forkserver`` (``spawn`` where there is none) that has imported the worker
module and built the tokenizer once. Workers report progress through a queue; Ctrl-C reaches
the main process, which stops the pool. The output is byte-identical for any worker count and
start method. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import ConfigError, WorkerError
from . import Unit
from .procs import FORKSERVER_PARENT_ENV, die_with_parent
from .progress import Progress, file_rows

_WORKER: dict[str, Any] = {}

#: the pool's start method, when set: ``fork``, ``forkserver`` or ``spawn`` (a way out, should
#: forking this process ever misbehave somewhere; the default is :func:`start_method`'s choice)
START_METHOD_ENV = "DENOISE_START_METHOD"
# HF tokenizers reads its switch per call; these spellings turn its thread pool off
_TOKENIZERS_OFF = ("", "off", "false", "f", "no", "n", "0")


def start_method() -> str:
    """How the pool's workers start: ``fork`` from this process when that is safe, else
    ``forkserver`` (``spawn`` where there is none); ``$DENOISE_START_METHOD`` overrides.

    Safe means: Linux, and no Python thread but this one (``fork`` copies only the calling
    thread; a lock another one held would stay locked in the child); and HF tokenizers' thread
    pool not forced on: with ``TOKENIZERS_PARALLELISM`` true, a child of a process that used
    the pool deadlocks, while unset (or off) tokenizers runs the child single-threaded. The
    native threads numpy (OpenBLAS) and pyarrow (jemalloc) start are fork-safe: a forkserver
    that imported them forks its workers with them too."""
    methods = mp.get_all_start_methods()
    forced = os.environ.get(START_METHOD_ENV, "").strip()
    if forced:
        if forced not in methods:
            raise ConfigError(
                f"{START_METHOD_ENV}={forced!r}: this system offers {', '.join(methods)}"
            )
        return forced
    parallel = os.environ.get("TOKENIZERS_PARALLELISM")
    if (
        sys.platform.startswith("linux")
        and "fork" in methods
        and threading.active_count() == 1
        and (parallel is None or parallel.strip().lower() in _TOKENIZERS_OFF)
    ):
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _worker_init(unit: Unit, job: Any, q: Any, main_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the main process's SIGTERM/SIGHUP handlers (they raise
    # ``procs.Terminated`` for its teardown): a worker told to stop just stops (a signal
    # ignored on purpose, ``nohup``, stays ignored)
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and callable(signal.getsignal(sig)):
            signal.signal(sig, signal.SIG_DFL)
    # die with the parent (the main process when forked or spawned; else the forkserver, which
    # dies with the main process), whatever killed it
    die_with_parent(main_pid)
    _WORKER.update(unit=unit, job=job, q=q)


def _worker_run(file_idx: int) -> dict[str, Any]:
    q = _WORKER["q"]

    def progress(docs: int, tokens: int, nbytes: int) -> None:
        q.put((docs, tokens, nbytes))

    unit: Unit = _WORKER["unit"]
    return unit(_WORKER["job"], file_idx, progress)


def _mp_context(method: str, preload: list[str]) -> Any:
    if method != "forkserver":
        return mp.get_context(method)
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported numpy/pyarrow/tokenizers and this
    # package: ~0.3 s less start-up per worker (benchmarks/README_prepare.md)
    # (engines.procs first: it makes the server die with this process, see there)
    os.environ[FORKSERVER_PARENT_ENV] = str(os.getpid())
    ctx.set_forkserver_preload(["denoise_cli.engines.procs", *preload, "denoise_cli.engines.local"])
    return ctx


def run_files(
    unit: Unit,
    job: Any,
    todo: Sequence[int],
    progress: Progress,
    *,
    workers: int,
    address: str | None = None,
) -> None:
    """Run ``unit`` on files ``todo``, in-process for one worker, else in a process pool
    (``address`` is unused: the signature every engine shares)."""
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            rec = unit(job, i, progress.update)
            progress.file_done(job.files[i].size, file_rows(rec))
        return
    method = start_method()
    ctx = _mp_context(method, [unit.__module__])
    q = ctx.Queue()
    # what the job wants built once in the forkserver rather than in every worker (forked
    # workers have what this process built)
    preload = getattr(job, "worker_preload", None) if method != "fork" else None
    try:
        with (
            preload() if preload else contextlib.nullcontext(),
            ProcessPoolExecutor(
                max_workers=min(workers, len(todo)),
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(unit, job, q, os.getpid()),
            ) as ex,
        ):
            pending: set[Future[dict[str, Any]]] = set()
            try:
                futs = {ex.submit(_worker_run, i): i for i in todo}
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(q, progress)
                    for fu in done:
                        rec = fu.result()
                        progress.file_done(job.files[futs[fu]].size, file_rows(rec))
            except BaseException:
                # Stop now (Ctrl-C, a dead worker, or a file failed under --on-error fail):
                # killing a worker mid-part is safe, commits are atomic and a rerun resumes.
                for fu in pending:
                    fu.cancel()
                procs = getattr(ex, "_processes", None) or {}
                for proc in list(procs.values()):
                    proc.terminate()
                raise
            finally:
                _drain(q, progress)
    except (BrokenProcessPool, BrokenPipeError, ConnectionResetError, EOFError):
        raise WorkerError(
            "a worker process died (killed, or out of memory); everything committed so far is "
            "kept: rerun the same command to resume"
        ) from None


def _drain(q: Any, progress: Progress) -> None:
    while True:
        try:
            docs, tokens, nbytes = q.get_nowait()
        except queue.Empty:
            return
        progress.update(docs, tokens, nbytes)

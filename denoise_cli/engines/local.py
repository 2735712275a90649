"""``--engine local``: the per-file units in this process (one worker) or in a process pool.

Workers are started with ``forkserver`` (``spawn`` where unavailable) from a server that has
already imported the worker module, load the tokenizer lazily and report progress through a
queue; Ctrl-C reaches the main process, which stops the pool. The output is byte-identical
for any worker count. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import WorkerError
from . import Unit
from .procs import FORKSERVER_PARENT_ENV, die_with_parent
from .progress import Progress, file_rows

_WORKER: dict[str, Any] = {}


def _worker_init(unit: Unit, job: Any, q: Any, main_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # die with the parent (the forkserver, which dies with the main process; or the main
    # process itself under spawn), whatever killed it
    die_with_parent(main_pid)
    _WORKER.update(unit=unit, job=job, q=q)


def _worker_run(file_idx: int) -> dict[str, Any]:
    q = _WORKER["q"]

    def progress(docs: int, tokens: int, nbytes: int) -> None:
        q.put((docs, tokens, nbytes))

    unit: Unit = _WORKER["unit"]
    return unit(_WORKER["job"], file_idx, progress)


def _mp_context(preload: list[str]) -> Any:
    methods = mp.get_all_start_methods()
    if "forkserver" not in methods:
        return mp.get_context("spawn")
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
    ctx = _mp_context([unit.__module__])
    q = ctx.Queue()
    # what the job wants built once in the forkserver rather than in every worker
    preload = getattr(job, "worker_preload", None)
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

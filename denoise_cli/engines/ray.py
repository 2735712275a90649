"""``denoise prepare --engine ray``: the per-file units of ``prepare`` as Ray tasks.

One Ray core task per input file, each calling the unit (``prepare.worker.process_file``)
exactly as a local worker does, so the shards are byte-identical to ``--engine local`` for any
cluster size. The driver holds the output lock and writes the manifest once every task is done;
workers read inputs and write shards + commit records by path, so **inputs and output must be
on a filesystem every node sees at the same path**, or URLs (an object-store ``OUT`` runs the
unit ``prepare.publish.RemoteUnit``: it stages locally and uploads). The job is ``ray.put``
once. A lost task is retried up to ``MAX_RETRIES`` times (it resumes from the file's last
committed part); errors raised by the code are not retried but reach the caller as the same
exception type, and a task that keeps losing its worker ends the run with
:class:`~denoise_cli.errors.WorkerError`.
Progress goes through a zero-CPU actor (``REPORT_EVERY_S``). Cluster: ``address``, else
``RAY_ADDRESS``, else a new loopback-only local instance (``LOOPBACK_ENV``); an existing
connection is reused, and only what this module started is shut down. Ray's own log records
go through ``Progress.note`` (:class:`RayLogRoute`), never the bar. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DenoiseError, WorkerError
from ..output.layout import stale_tmp_files
from . import Unit
from .procs import Terminated
from .progress import Progress, file_rows

MAX_RETRIES = 3
REPORT_EVERY_S = 0.25
POLL_S = 0.2
# Ray's switch for "clusters beyond this machine"; "0" keeps a local instance on 127.0.0.1
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

_log = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray, which is not installed: pip install 'denoise-cli[ray]'"
        ) from None
    return ray


# --------------------------------------------------------------------------- worker side


class _ProgressSink:
    """Ray actor: accumulates what the tasks report until the driver takes it."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.events: list[dict[str, Any]] = []

    def add(self, docs: int, tokens: int, nbytes: int) -> None:
        self.counts[0] += docs
        self.counts[1] += tokens
        self.counts[2] += nbytes

    def started(self, info: dict[str, Any]) -> None:
        self.events.append(info)

    def take(self) -> tuple[list[int], list[dict[str, Any]]]:
        out = (self.counts, self.events)
        self.counts, self.events = [0, 0, 0], []
        return out


class _Reporter:
    """The ``progress`` callback of the unit inside a task: batched actor calls."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.acc = [0, 0, 0]
        self.last = time.monotonic()

    def __call__(self, docs: int, tokens: int, nbytes: int) -> None:
        self.acc[0] += docs
        self.acc[1] += tokens
        self.acc[2] += nbytes
        if time.monotonic() - self.last >= REPORT_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if any(self.acc):
            self.sink.add.remote(*self.acc)
            self.acc = [0, 0, 0]
        self.last = time.monotonic()


_JOB_CACHE: dict[str, Any] = {}


def _job(ray: Any, ref: Any) -> Any:
    """The job behind ``ref``, deserialized once per worker process (its tokenizer too)."""
    key = ref.hex()
    job = _JOB_CACHE.get(key)
    if job is None:
        _JOB_CACHE.clear()
        job = ray.get(ref)
        _JOB_CACHE[key] = job
    return job


def _clean_stale_tmp(job: Any, file_idx: int) -> None:
    """Remove the temporary files an earlier attempt at this file left behind (a killed worker
    cannot clean up). Only one task works on a file at a time, and the driver holds the lock."""
    for p in stale_tmp_files(Path(job.out), job.cfg.epochs, file_idx):
        p.unlink(missing_ok=True)


def _file_task(unit: Unit, box: list[Any], file_idx: int, sink: Any) -> dict[str, Any]:
    """Body of the Ray task for one input file. ``box`` holds the job's ObjectRef (inside a
    list, so Ray passes the reference and the worker can cache what it resolves to)."""
    ray = _import_ray()
    # Each task gets one CPU: never let the tokenizers' Rust pool oversubscribe it. Read at
    # every encode call, so this holds even when tokenizers was imported earlier.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # waited for (one round trip per file): recorded before the task can finish, so the
    # driver's last poll sees every attempt (a retry's "restarted" warning was otherwise lost
    # when that attempt finished before its fire-and-forget call reached the sink); the sink
    # is cosmetic, so a failure to reach it never fails the file
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get(
            sink.started.remote(
                {
                    "file": file_idx,
                    "pid": os.getpid(),
                    "node": ray.util.get_node_ip_address(),
                    "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
                }
            )
        )
    job = _job(ray, box[0])
    _clean_stale_tmp(job, file_idx)
    rep = _Reporter(sink)
    try:
        return unit(job, file_idx, rep)
    finally:
        rep.flush()


# --------------------------------------------------------------------------- driver side


def connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Connect to (or start) Ray; return whether this call did (and so must shut it down)."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            # explicit address, else Ray's own RAY_ADDRESS handling
            ray.init(address=address or None, **common)
        else:
            # a private single-machine instance: keep it on loopback
            ray.init(
                address="local",
                num_cpus=workers or None,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **common,
            )
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
        raise ConfigError(f"cannot start or connect to Ray ({where}): {e}") from None
    return True


#: Ray notices with nothing to act on for a private local instance: logged at debug level
QUIET_LOCAL_NOTICES = ("Token authentication is enabled for this Ray cluster",)


class RayLogRoute(logging.Handler):
    """While installed (a context manager), Ray's Python log records at WARNING and above go to
    ``progress.note`` as ``ray: <message>`` lines instead of Ray's own stderr handler, whose
    lines would land inside a progress bar drawn on the same terminal. Below WARNING and, for a
    private local instance (``private``), :data:`QUIET_LOCAL_NOTICES` go to this module's
    logger at debug level. Ray's handlers are put back on exit."""

    def __init__(self, progress: Progress, *, private: bool, logger: str = "ray") -> None:
        super().__init__(logging.DEBUG)
        self.progress = progress
        self.private = private
        self.logger = logging.getLogger(logger)
        self.saved: list[logging.Handler] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            quiet = self.private and any(n in msg for n in QUIET_LOCAL_NOTICES)
            if record.levelno < logging.WARNING or quiet:
                _log.debug("ray: %s", msg)
            else:
                self.progress.note(f"ray: {msg}")
        except Exception:
            self.handleError(record)

    def __enter__(self) -> RayLogRoute:
        self.saved = list(self.logger.handlers)
        for h in self.saved:
            self.logger.removeHandler(h)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        for h in self.saved:
            self.logger.addHandler(h)


def _catch_signals(stop: list[int]) -> dict[int, Any]:
    """While tasks run, SIGINT/SIGTERM/SIGHUP only record themselves in ``stop``; the wait
    loop then raises :class:`~denoise_cli.engines.procs.Terminated` between two ``ray.wait``
    calls. (``ray.init`` replaced the driver's SIGTERM handling with one that exits with code
    15, and an exception raised by a handler inside Ray's Cython calls surfaces as
    ``SystemError``.) Returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def record(signum: int, frame: Any) -> None:
        stop.append(signum)

    saved: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:
            saved[sig] = signal.signal(sig, record)
    return saved


def reraise(ray: Any, e: BaseException, job: Any, file_idx: int) -> None:
    """Turn what ``ray.get`` raised into what the caller expects; always raises."""
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, DenoiseError):
            raise cause from None  # InputError, OutputError, ...: the same type as --engine local
        raise e
    if isinstance(e, ray.exceptions.RayError):
        raise WorkerError(
            f"{job.files[file_idx].name}: the Ray task failed ({type(e).__name__}: {e}) and was "
            f"retried {MAX_RETRIES} times; everything committed so far is kept: rerun the same "
            "command to resume"
        ) from None
    raise e


def run_files(
    unit: Unit,
    job: Any,
    todo: Sequence[int],
    progress: Progress,
    *,
    workers: int | None,
    address: str | None,
) -> None:
    """Process ``todo`` (file indices, in submission order) as Ray tasks; raise as
    :func:`engines.local.run_files` does. The caller finalizes the output."""
    if not todo:
        return
    if not (address or os.environ.get("RAY_ADDRESS")):
        # a private local instance: with this set before Ray is imported, its node address stays
        # 127.0.0.1 (else Ray swaps in the host's address), and so gcs, raylet, workers and agents
        # listen on loopback only (tests/test_procs.py lists the listening sockets)
        os.environ.setdefault(LOOPBACK_ENV, "0")
    ray = _import_ray()
    private = not (address or os.environ.get("RAY_ADDRESS"))
    with RayLogRoute(progress, private=private):
        _run(ray, unit, job, todo, progress, workers, address)


def _run(
    ray: Any,
    unit: Unit,
    job: Any,
    todo: Sequence[int],
    progress: Progress,
    workers: int | None,
    address: str | None,
) -> None:
    limit = workers if workers and workers > 0 else None
    started = connect(ray, address, limit)
    stop: list[int] = []
    saved = _catch_signals(stop)
    sink = None
    inflight: dict[Any, int] = {}
    try:
        sink = ray.remote(num_cpus=0, max_restarts=0)(_ProgressSink).remote()
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_file_task)
        box = [ray.put(job)]
        queue = list(todo)
        queue.reverse()  # pop() from the end: submission keeps todo's order
        attempts: dict[int, int] = {}
        while queue or inflight:
            while queue and (limit is None or len(inflight) < limit):
                i = queue.pop()
                inflight[task.remote(unit, box, i, sink)] = i
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
            if stop:
                raise Terminated(stop[0])
            _poll(ray, sink, progress, job, attempts)
            for ref in ready:
                i = inflight.pop(ref)
                try:
                    rec = ray.get(ref)
                except Exception as e:
                    reraise(ray, e, job, i)
                progress.file_done(job.files[i].size, file_rows(rec))
        _poll(ray, sink, progress, job, attempts)
    except BaseException:
        # Stop the other tasks now (an error, Ctrl-C): a task killed mid-part is safe, commits
        # are atomic and a rerun resumes.
        for ref in inflight:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker is gone
                pass
        raise
    finally:
        for sig, h in saved.items():
            signal.signal(sig, h)
        if sink is not None:
            try:
                ray.kill(sink)
            except Exception:
                pass
        if started:
            ray.shutdown()


def _poll(ray: Any, sink: Any, progress: Progress, job: Any, attempts: dict[int, int]) -> None:
    try:
        counts, events = ray.get(sink.take.remote())
    except ray.exceptions.RayError:  # progress is cosmetic: never fail the run over it
        return
    for ev in events:
        i = int(ev["file"])
        attempts[i] = attempts.get(i, 0) + 1
        extra = {
            "file_idx": i,
            "pid": ev["pid"],
            "node": ev["node"],
            "attempt": attempts[i],
            "tokenizers_parallelism": ev["tokenizers_parallelism"],
        }
        if attempts[i] > 1:
            _log.warning(
                "%s: Ray task restarted (attempt %d, its worker was lost); resuming from "
                "its last committed part",
                job.files[i].name,
                attempts[i],
                extra=extra,
            )
        else:
            _log.debug(
                "%s: running on %s pid %d", job.files[i].name, ev["node"], ev["pid"], extra=extra
            )
    if any(counts):
        progress.update(*counts)

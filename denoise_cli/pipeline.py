"""``denoise prepare``: one unit of work per input file, run by a local process pool.

Per file (in a worker): read -> tokenize -> join documents -> pack into groups -> corrupt ->
write. Each file's rows go to its own shards ``data/FFFFF-PPPPP.arrow``; a *part* is a fixed
number of groups (so part boundaries do not depend on read batch sizes). After a part's shard
is renamed into place, a commit record ``.denoise/parts/FFFFF-PPPPP.json`` stores the resume
state: records consumed, the packer's next group / stream offset, the un-chunked tokens
(``.npy``) and the cumulative counters. A rerun skips finished files, continues an unfinished
file from its last committed part (skipping consumed lines without parsing them) and rewrites
nothing that was committed; since every group depends only on (seed, file, position), the
result is byte-identical to an uninterrupted run. ``denoise.json`` (the manifest) is written
last: its presence means the output is complete.

Workers are started with ``forkserver`` (``spawn`` where unavailable), load the tokenizer
lazily, and run tokenizers single-threaded; ``--workers 1`` runs in-process. The output is
byte-identical for any worker count.

Throughput and memory figures: ``benchmarks/bench_prepare.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import os
import queue
import shutil
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import __version__
from .config import ComponentPlan, PrepareConfig, expected_efficiency, sentinels_needed
from .corrupt import SpecialIds, corrupt_mixture, row_widths
from .errors import ConfigError, OutputError, WorkerError
from .pack import Group, Packer, PackerState, file_key, join_documents
from .progress import Progress as _Progress
from .progress import file_rows
from .read import FileStats, InputFile, find_inputs, iter_batches
from .tokenize import Encoder, TokenizerInfo, build_tokenizer
from .write import (
    TMP_PREFIX,
    ShardWriter,
    atomic_save_npy,
    atomic_write_bytes,
    fsync_dir,
    hf_dataset_files,
    record_batch,
)

MANIFEST = "denoise.json"
STATE_DIR = ".denoise"


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(
        obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; pickled once per worker."""

    cfg: PrepareConfig
    plans: tuple[ComponentPlan, ...]
    special: SpecialIds
    encoder: Encoder
    out: str
    files: tuple[InputFile, ...]
    rows_per_part: int
    group_size: int
    max_segments: int = 0  # packed output: examples per row at most (0: unpacked)

    @property
    def groups_per_part(self) -> int:
        return max(1, self.rows_per_part // self.group_size)

    def epoch_dir(self, epoch: int) -> str:
        """Where an epoch's dataset lives, relative to the output: "" for a single epoch."""
        return epoch_dir(self.cfg.epochs, epoch)

    def shard_name(self, epoch: int, file_idx: int, part: int) -> str:
        ext = "parquet" if self.cfg.format == "parquet" else "arrow"
        return f"{self.epoch_dir(epoch)}data/{file_idx:05d}-{part:05d}.{ext}"


def epoch_dir(epochs: int, epoch: int) -> str:
    return "" if epochs == 1 else f"epoch-{epoch}/"


def rows_per_part(cfg: PrepareConfig) -> int:
    if cfg.shard_rows:
        return cfg.shard_rows
    wi, wt = row_widths(cfg.lengths)
    row_bytes = 4 * wi + 4 * wt + wi + 32
    return max(1, cfg.shard_bytes // row_bytes)


# --------------------------------------------------------------------------- worker side


def _part_path(out: Path, epoch: int, file_idx: int, part: int) -> Path:
    return out / STATE_DIR / "parts" / f"E{epoch:03d}-{file_idx:05d}-{part:05d}.json"


def _file_done_path(out: Path, file_idx: int) -> Path:
    return out / STATE_DIR / "files" / f"{file_idx:05d}.json"


def _stats_from(d: dict[str, Any]) -> FileStats:
    st = FileStats()
    st.records = int(d["records"])
    st.docs = int(d["docs"])
    st.chars = int(d["chars"])
    st.bytes_read = int(d["bytes_read"])
    st.skipped = {str(k): int(v) for k, v in d["skipped"].items()}
    st.error = d.get("error")
    return st


def _last_commit(out: Path, epoch: int, file_idx: int) -> dict[str, Any] | None:
    """The last committed part of (epoch, file) whose shards all exist with the recorded size."""
    last = None
    part = 0
    while True:
        p = _part_path(out, epoch, file_idx, part)
        if not p.is_file():
            return last
        rec: dict[str, Any] = orjson.loads(p.read_bytes())
        shard = out / rec["shard"]
        if not shard.is_file() or shard.stat().st_size != rec["bytes"]:
            return last
        last = rec
        part += 1


class _EpochStream:
    """One epoch's packer and shard writer over a file's token stream, with its checkpoints.

    A checkpoint says: this epoch has consumed the stream up to token ``T`` (the end of record
    ``R``), holds ``carry`` un-chunked tokens, and committed parts ``0..part-1``. Epochs commit
    independently; on resume the file is re-read from the earliest checkpoint and each epoch
    only takes the tokens past its own ``T`` (token positions, not records, so read batch
    boundaries do not matter).
    """

    def __init__(self, job: Job, out: Path, file_idx: int, epoch: int, key: int) -> None:
        self.job, self.out, self.file_idx, self.epoch = job, out, file_idx, epoch
        rec = _last_commit(out, epoch, file_idx)
        self.parts: list[dict[str, Any]] = []
        self.final, self.tail = False, 0
        self.R, self.T, self.part = 0, 0, 0
        self.stats: dict[str, Any] | None = None
        self.reserved = 0
        state = None
        if rec is not None:
            carry = np.load(out / rec["carry"], allow_pickle=False)
            state = PackerState(rec["next_group"], rec["offset"], carry)
            self.R, self.T, self.part = rec["record_end"], rec["tokens_read"], rec["part"] + 1
            self.parts, self.stats = list(rec["parts"]), rec["stats"]
            self.reserved, self.final, self.tail = (
                rec["reserved_replaced"],
                rec["final"],
                rec["tail"],
            )
        cfg = job.cfg
        self.packer = Packer(
            job.plans, cfg.mixture.probabilities, job.group_size, cfg.seed, key, epoch, state
        )
        self.writer: ShardWriter | None = None
        self.part_tokens = 0

    def feed(
        self, stream: np.ndarray, t0: int, record_end: int, stats: FileStats, reserved: int
    ) -> None:
        """``stream`` holds tokens ``[t0, t0 + len)`` of the file's stream."""
        t1 = t0 + len(stream)
        if self.final or t1 <= self.T:
            return
        piece = stream[max(self.T - t0, 0) :]
        self.T, self.R = t1, record_end
        self._push(piece, stats, reserved)

    def _push(self, piece: np.ndarray, stats: FileStats, reserved: int) -> None:
        gpp = self.job.groups_per_part
        for grp in self.packer.push(piece):
            self.emit(grp)
            if (grp.index + 1) % gpp == 0:
                self.commit(stats, reserved, final=False)

    def finish(self, stats: FileStats, reserved: int) -> None:
        if self.final:
            return
        # a carry restored from a checkpoint can hold complete groups: cut them first
        self._push(np.zeros(0, np.int32), stats, reserved)
        grp, tail = self.packer.finish()
        if grp is not None:
            self.emit(grp)
        self.final, self.tail = True, tail
        self.commit(stats, reserved, final=True)

    def emit(self, grp: Group) -> None:
        job, cfg = self.job, self.job.cfg
        rows = corrupt_mixture(
            grp.stream,
            grp.starts,
            grp.components,
            job.plans,
            job.special,
            cfg.example_lengths,
            grp.rng,
        )
        n = len(grp.starts)
        if job.max_segments:
            from . import packing

            packed = packing.pack_rows(
                rows,
                cfg.lengths,
                pad_id=job.special.pad,
                max_segs=job.max_segments,
                denoiser=grp.components,
                example_index=grp.first_example + np.arange(n),
                token_offset=grp.token_offset,
            )
            batch = packing.packed_record_batch(packed, cfg.lengths, self.file_idx)
        else:
            batch = record_batch(
                rows,
                cfg.lengths,
                grp.components,
                self.file_idx,
                grp.first_example + np.arange(n),
                grp.token_offset,
            )
        if self.writer is None:
            path = self.out / job.shard_name(self.epoch, self.file_idx, self.part)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = ShardWriter(path, cfg.lengths, cfg.format, batch.schema)
        self.writer.write(batch)
        self.part_tokens += int(grp.stream.size)

    def commit(self, stats: FileStats, reserved: int, *, final: bool) -> None:
        """Make the current shard visible, then record the checkpoint (both atomic). The last
        part of an epoch is committed even when it has no rows, to record ``final``."""
        job = self.job
        shard = job.shard_name(self.epoch, self.file_idx, self.part)
        if self.writer is not None:
            info = self.writer.commit()
            self.writer = None
            self.parts.append({"shard": shard, "tokens": self.part_tokens, **info})
            size = info["bytes"]
        elif final:
            shard, size = "", 0
        else:
            return
        st = self.packer.state()
        carry_rel = (
            f"{STATE_DIR}/parts/E{self.epoch:03d}-{self.file_idx:05d}-{self.part:05d}.carry.npy"
        )
        atomic_save_npy(self.out / carry_rel, st.carry)
        rec = {
            "epoch": self.epoch,
            "file": self.file_idx,
            "part": self.part,
            "shard": shard,
            "bytes": size,
            "record_end": self.R,
            "tokens_read": self.T,
            "next_group": st.next_group,
            "offset": st.offset,
            "carry": carry_rel,
            "reserved_replaced": reserved,
            "stats": stats.to_dict(),
            "parts": self.parts,
            "final": final,
            "tail": self.tail,
        }
        atomic_write_bytes(_part_path(self.out, self.epoch, self.file_idx, self.part), _dumps(rec))
        self.part += 1
        self.part_tokens = 0

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def summary(self) -> dict[str, Any]:
        return {
            "tokens_used": self.T - self.tail,
            "tail_tokens": self.tail,
            "rows": sum(p["rows"] for p in self.parts),
            "parts": self.parts,
        }


def process_file(
    job: Job, file_idx: int, progress: Callable[[int, int, int], None]
) -> dict[str, Any]:
    """Process (or finish) one input file for every epoch; return its file record."""
    out = Path(job.out)
    done = _file_done_path(out, file_idx)
    if done.is_file():
        rec: dict[str, Any] = orjson.loads(done.read_bytes())
        return rec
    f = job.files[file_idx]
    cfg = job.cfg
    key = file_key(f.name)
    sep = job.special.eos if cfg.doc_separator == "eos" else None
    epochs = [_EpochStream(job, out, file_idx, e, key) for e in range(cfg.epochs)]
    first = min(epochs, key=lambda s: s.T)  # the earliest checkpoint: resume reading there
    stats = _stats_from(first.stats) if first.stats is not None else FileStats()
    record_end, t, reserved = first.R, first.T, first.reserved
    try:
        if not all(s.final for s in epochs):
            last_bytes = stats.bytes_read
            for batch in iter_batches(
                f,
                text_key=cfg.text_key,
                on_error=cfg.on_error,
                stats=stats,
                start_record=record_end,
                max_doc_chars=cfg.max_doc_chars,
            ):
                values, offsets, counts = job.encoder.encode(batch.texts)
                if counts.get("reserved_token"):
                    n = counts["reserved_token"]
                    stats.skipped["reserved_token"] = stats.skipped.get("reserved_token", 0) + n
                    stats.docs -= n
                reserved += counts.get("reserved_replaced", 0)
                stream = join_documents(values, offsets, sep)
                t0, t = t, t + len(stream)
                for s in epochs:
                    s.feed(stream, t0, batch.record_end, stats, reserved)
                progress(len(batch.texts), len(stream), stats.bytes_read - last_bytes)
                last_bytes = stats.bytes_read
            for s in epochs:
                s.finish(stats, reserved)
    except BaseException as e:
        for s in epochs:
            s.abort()
        if isinstance(e, OSError):
            raise OutputError(
                f"{f.name}: writing under {out} failed: {e}. Nothing incomplete is visible; free "
                "space or fix permissions and rerun the same command to resume."
            ) from None
        raise
    rec = {
        "index": file_idx,
        "name": f.name,
        "path": f.path,
        "size": f.size,
        "stats": stats.to_dict(),
        "tokens": t,
        "reserved_replaced": reserved,
        "epochs": [s.summary() for s in epochs],
    }
    atomic_write_bytes(done, _dumps(rec))
    return rec


_WORKER: dict[str, Any] = {}


def _worker_init(job: Job, q: Any) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["job"] = job
    _WORKER["q"] = q


def _worker_run(file_idx: int) -> dict[str, Any]:
    job: Job = _WORKER["job"]
    q = _WORKER["q"]

    def progress(docs: int, tokens: int, nbytes: int) -> None:
        q.put((docs, tokens, nbytes))

    return process_file(job, file_idx, progress)


# --------------------------------------------------------------------------- main side


@dataclass
class Prepared:
    """What the main process resolved before any work: plans, tokenizer, inputs."""

    cfg: PrepareConfig
    plans: tuple[ComponentPlan, ...]
    tokenizer: TokenizerInfo
    files: list[InputFile]


def resolve(
    cfg: PrepareConfig,
    inputs: Sequence[str] | None,
    tokenizer: str | None,
    storage_options: dict[str, Any] | None = None,
) -> Prepared:
    """Validate everything up front: lengths, sentinels, tokenizer, inputs. Raises ConfigError.
    ``storage_options`` are the fsspec options for URL inputs."""
    plans = cfg.plans()
    tok = build_tokenizer(tokenizer, cfg.tokens, cfg.mixture, sentinels_needed(plans))
    files = find_inputs(inputs, storage_options) if inputs else []
    return Prepared(cfg, plans, tok, files)


def plan_table(prep: Prepared) -> dict[str, Any]:
    cfg = prep.cfg
    return {
        "mixture": cfg.mixture.to_dict(),
        "lengths": cfg.lengths.to_dict(),
        "components": [c.to_dict() for c in prep.plans],
        "sentinels_needed": sentinels_needed(prep.plans),
        "expected_efficiency": _expected_efficiency(prep),
        "packing": _packing_plan(prep),
        "tokenizer": prep.tokenizer.to_dict(),
    }


def _packing_plan(prep: Prepared) -> dict[str, Any] | None:
    """What ``denoise plan --pack K`` adds: the example budget, the most examples per row, and
    for encoder-decoder the mixture's target/input ratio and the targets lengths at this ``I``
    for which the ratio bound allows 98% on both sides (``packing.targets_length_window``;
    None when the example targets budget is above that window, so that the plans would change
    with T)."""
    cfg = prep.cfg
    if not cfg.pack_factor:
        return None
    from . import packing

    ex = cfg.example_lengths
    out: dict[str, Any] = {
        "factor": cfg.pack_factor,
        "example_lengths": ex.to_dict(),
        "max_segments": packing.max_segments(prep.plans, cfg.lengths),
        "algorithm": packing.ALGORITHM,
    }
    if cfg.lengths.layout == "encoder-decoder":
        lo, hi = packing.targets_length_window(prep.plans, cfg.lengths.inputs_length)
        out["targets_per_input"] = packing.mixture_ratio(prep.plans)
        # the window is only valid while the example plans do not depend on T (budget <= T)
        out["targets_length_98"] = [lo, hi] if ex.targets_length <= lo else None
    return out


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(out / STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{out} is locked by another running `denoise prepare`; wait for it or use "
                "another output directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: {b!r} (existing) -> {a!r} (now)"]


def _run_identity(prep: Prepared, job_files: Sequence[InputFile]) -> dict[str, Any]:
    return {
        "config": prep.cfg.fingerprint_dict(),
        "tokenizer_sha256": prep.tokenizer.sha256,
        "inputs": [{"name": f.name, "size": f.size} for f in job_files],
        "version": __version__,
    }


def _prepare_out_dir(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    st = out / STATE_DIR
    run_file = st / "run.json"
    if run_file.is_file():
        old = orjson.loads(run_file.read_bytes())
        diffs = _diff(identity, old)
        if diffs and not overwrite:
            shown = "\n  ".join(diffs[:12])
            raise OutputError(
                f"{out} holds an output made with a different configuration; refusing to mix them "
                f"(use --overwrite to start over). Differences:\n  {shown}"
            )
        if diffs:
            _clear(out)
    else:
        others = [p for p in out.iterdir() if p.name != STATE_DIR] if out.exists() else []
        if others and not overwrite:
            raise OutputError(
                f"{out} is not empty and is not a denoise output; use --overwrite to replace it or "
                "choose an empty directory"
            )
        if others:
            _clear(out)
    for d in (out / "data", st / "parts", st / "files"):
        d.mkdir(parents=True, exist_ok=True)
    for d in (out, out / "data", st / "parts", st / "files"):
        for p in d.glob(f"{TMP_PREFIX}*"):
            p.unlink(missing_ok=True)
    atomic_write_bytes(run_file, _dumps(identity))


def _clear(out: Path) -> None:
    for p in out.iterdir():
        if p.name == STATE_DIR:
            for q in p.iterdir():
                if q.name != "lock":
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _mp_context() -> Any:
    methods = mp.get_all_start_methods()
    if "forkserver" not in methods:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported numpy/pyarrow/tokenizers and this
    # package: ~0.3 s less start-up per worker (benchmarks/README_prepare.md)
    ctx.set_forkserver_preload(["denoise_cli.pipeline"])
    return ctx


def run_files(
    job: Job, todo: Sequence[int], workers: int, progress: _Progress
) -> list[dict[str, Any]]:
    """Process files, in-process for one worker, else in a process pool."""
    results: dict[int, dict[str, Any]] = {}
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = process_file(job, i, progress.update)
            progress.file_done(job.files[i].size, file_rows(results[i]))
        return [results[i] for i in todo]
    ctx = _mp_context()
    q = ctx.Queue()
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(job, q),
        ) as ex:
            pending: set[Future[dict[str, Any]]] = set()
            try:
                futs = {ex.submit(_worker_run, i): i for i in todo}
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(q, progress)
                    for fu in done:
                        results[futs[fu]] = fu.result()
                        progress.file_done(job.files[futs[fu]].size, file_rows(results[futs[fu]]))
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
    return [results[i] for i in todo]


def _drain(q: Any, progress: _Progress) -> None:
    while True:
        try:
            docs, tokens, nbytes = q.get_nowait()
        except queue.Empty:
            return
        progress.update(docs, tokens, nbytes)


def assign_files(sizes: Sequence[int], num_shards: int) -> list[list[int]]:
    """Deterministic, size-balanced split of files over ``num_shards`` machines (largest file
    first onto the least-loaded machine; ties by index)."""
    loads = [(0, k) for k in range(num_shards)]
    out: list[list[int]] = [[] for _ in range(num_shards)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, k = min(loads)
        out[k].append(i)
        loads[k] = (load + max(sizes[i], 1), k)
    return [sorted(x) for x in out]


def prepare(
    inputs: Sequence[str],
    out_dir: str,
    cfg: PrepareConfig,
    *,
    tokenizer: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    num_shards: int = 1,
    shard_index: int = 0,
    storage_options: dict[str, Any] | None = None,
    progress_interval: float | None = None,
) -> dict[str, Any]:
    """Run ``denoise prepare`` end to end and return the manifest (also written to
    ``out_dir/denoise.json``).

    ``engine="ray"`` runs the same per-file units as Ray tasks (same bytes out).
    ``num_shards``/``shard_index`` process a deterministic, size-balanced part of the input files
    (Slurm/Kubernetes arrays); ``denoise merge`` joins the parts.
    ``storage_options``: fsspec options for URL inputs (``--storage-options``).
    ``progress_interval``: seconds between plain progress lines (default: a bar on a terminal,
    else every 30 s; see ``progress.Progress``).
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', got {engine!r}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ConfigError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    prep = resolve(cfg, inputs, tokenizer, storage_options)
    if not prep.files:
        raise ConfigError("no input files")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {out}: {e}") from None
    mine = assign_files([f.size for f in prep.files], num_shards)[shard_index]
    identity = _run_identity(prep, prep.files)
    if num_shards > 1:
        identity["part"] = {"index": shard_index, "count": num_shards, "files": mine}
    try:
        with _locked(out):
            _prepare_out_dir(out, identity, overwrite)
            job = _make_job(prep, out)
            todo = [i for i in mine if not _file_done_path(out, i).is_file()]
            todo.sort(key=lambda i: (-prep.files[i].size, i))  # largest first: load balance
            bar = _Progress(
                sum(prep.files[i].size for i in todo),
                len(todo),
                progress,
                interval=progress_interval,
            )
            try:
                if engine == "ray":
                    from .ray_engine import run_files_ray

                    run_files_ray(job, todo, bar, address=ray_address, workers=workers)
                else:
                    nworkers = workers if workers and workers > 0 else (os.cpu_count() or 1)
                    run_files(job, todo, nworkers, bar)
            finally:
                bar.close()
            records = [orjson.loads(_file_done_path(out, i).read_bytes()) for i in mine]
            part = identity.get("part")
            return finalize(out, prep, job, records, part)
    except OSError as e:
        raise OutputError(
            f"writing under {out} failed: {e}. Free space or fix permissions and rerun the same "
            "command to resume."
        ) from None


def _make_job(prep: Prepared, out: Path) -> Job:
    cfg, tok = prep.cfg, prep.tokenizer
    return Job(
        cfg=cfg,
        plans=prep.plans,
        special=tok.special_ids(),
        encoder=Encoder(tok.json, tok.reserved_ids(), tok.unk[1] if tok.unk else None),
        out=str(out),
        files=tuple(prep.files),
        rows_per_part=rows_per_part(cfg),
        group_size=cfg.group_size,
        max_segments=_max_segments(prep),
    )


def _expected_efficiency(prep: Prepared) -> dict[str, float]:
    """Unpacked: the plan's mean real tokens / slots. Packed: the ratio bound (an upper bound;
    the measured figure is in ``denoise stats``)."""
    if not prep.cfg.pack_factor:
        return expected_efficiency(prep.plans, prep.cfg.lengths)
    from .packing import efficiency_bound

    return {
        f"packed_bound_{k}": v for k, v in efficiency_bound(prep.plans, prep.cfg.lengths).items()
    }


def _max_segments(prep: Prepared) -> int:
    if not prep.cfg.pack_factor:
        return 0
    from .packing import max_segments

    return max_segments(prep.plans, prep.cfg.lengths)


def finalize(
    out: Path,
    prep: Prepared,
    job: Job,
    records: list[dict[str, Any]],
    part: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write each epoch's dataset files (manifest, tokenizer, HF state) and, for several
    epochs, the top-level manifest. The manifest is written last: its presence means done."""
    cfg = prep.cfg
    manifests = []
    for e in range(cfg.epochs):
        m = build_manifest(prep, job, records, e)
        if part is not None:
            m["part"] = part
        write_epoch_files(out / job.epoch_dir(e), m, prep.tokenizer.json, cfg.epochs > 1)
        manifests.append(m)
    top = top_manifest(manifests)
    atomic_write_bytes(out / MANIFEST, _dumps(top))
    fsync_dir(out)
    return top


def write_epoch_files(d: Path, m: dict[str, Any], tokenizer_json: str, with_manifest: bool) -> None:
    """An epoch's directory is a complete dataset: tokenizer, HF files, (its own manifest)."""
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / "tokenizer.json", tokenizer_json.encode())
    if m["format"] == "arrow":
        state, info = hf_dataset_files([s["path"] for s in m["shards"]], m["tokenizer"]["sha256"])
        atomic_write_bytes(d / "state.json", state)
        atomic_write_bytes(d / "dataset_info.json", info)
    if with_manifest:
        atomic_write_bytes(d / MANIFEST, _dumps(m))


def top_manifest(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One epoch: its manifest. Several: the shared part plus ``epoch_dirs`` and rows per epoch."""
    if len(manifests) == 1:
        return dict(manifests[0])
    first = manifests[0]
    top = {k: v for k, v in first.items() if k not in ("shards", "epoch", "totals", "files")}
    top["epoch_dirs"] = [epoch_dir(len(manifests), e).rstrip("/") for e in range(len(manifests))]
    totals = {
        k: v for k, v in first["totals"].items() if k not in ("rows", "tokens_used", "tail_tokens")
    }
    totals["rows_per_epoch"] = [m["totals"]["rows"] for m in manifests]
    top["totals"] = totals
    top["files"] = [
        {k: v for k, v in f.items() if k not in ("rows", "tokens_used", "tail_tokens")}
        for f in first["files"]
    ]
    return top


def build_manifest(
    prep: Prepared, job: Job, records: list[dict[str, Any]], epoch: int = 0
) -> dict[str, Any]:
    """The manifest of one epoch's dataset; shard paths are relative to the epoch's directory."""
    cfg = prep.cfg
    prefix = job.epoch_dir(epoch)
    shards = []
    for r in records:
        for p in r["epochs"][epoch]["parts"]:
            shards.append(
                {
                    "path": p["shard"][len(prefix) :],
                    "rows": p["rows"],
                    "bytes": p["bytes"],
                    "sha256": p["sha256"],
                    "tokens": p["tokens"],
                    "source_files": [r["index"]],
                }
            )
    files = [
        {
            "index": r["index"],
            "name": r["name"],
            "size": r["size"],
            "stats": r["stats"],
            "tokens": r["tokens"],
            "reserved_replaced": r["reserved_replaced"],
            "tokens_used": r["epochs"][epoch]["tokens_used"],
            "tail_tokens": r["epochs"][epoch]["tail_tokens"],
            "rows": r["epochs"][epoch]["rows"],
        }
        for r in records
    ]
    return {
        "format_version": 1,
        "denoise_version": __version__,
        "format": cfg.format,
        "layout": cfg.lengths.layout,
        "lengths": cfg.lengths.to_dict(),
        "row_widths": list(row_widths(cfg.lengths)),
        "seed": cfg.seed,
        "epoch": epoch,
        "epochs": cfg.epochs,
        "group_size": job.group_size,
        "packing": None
        if not cfg.pack_factor
        else {
            "factor": cfg.pack_factor,
            "example_lengths": cfg.example_lengths.to_dict(),
            "max_segments": job.max_segments,
            "algorithm": cfg.fingerprint_dict()["pack_algorithm"],
        },
        "rows_per_shard": job.rows_per_part,
        "config": cfg.fingerprint_dict(),
        "mixture": cfg.mixture.to_dict(),
        "components": [c.to_dict() for c in prep.plans],
        "sentinels_needed": sentinels_needed(prep.plans),
        "expected_efficiency": _expected_efficiency(prep),
        "tokenizer": prep.tokenizer.to_dict(),
        "files": files,
        "shards": shards,
        "totals": totals_from_files(files),
    }


def totals_from_files(files: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dataset totals, computed only from the per-file entries (so merged parts add up to
    exactly what one machine would have written)."""
    skipped: dict[str, int] = {}
    for f in files:
        for k, v in f["stats"]["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    return {
        "files": len(files),
        "rows": sum(f["rows"] for f in files),
        "records": sum(f["stats"]["records"] for f in files),
        "docs": sum(f["stats"]["docs"] for f in files),
        "skipped": dict(sorted(skipped.items())),
        "files_with_errors": sum(1 for f in files if f["stats"].get("error")),
        "tokens": sum(f["tokens"] for f in files),
        "tokens_used": sum(f["tokens_used"] for f in files),
        "tail_tokens": sum(f["tail_tokens"] for f in files),
        "reserved_replaced": sum(f["reserved_replaced"] for f in files),
    }

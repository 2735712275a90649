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
import time
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
from .errors import ConfigError, DenoiseError, OutputError, WorkerError
from .pack import Packer, PackerState, file_key, join_documents
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
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


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
    epoch: int = 0

    @property
    def groups_per_part(self) -> int:
        return max(1, self.rows_per_part // self.group_size)

    def shard_name(self, file_idx: int, part: int) -> str:
        ext = "parquet" if self.cfg.format == "parquet" else "arrow"
        return f"data/{file_idx:05d}-{part:05d}.{ext}"


def rows_per_part(cfg: PrepareConfig) -> int:
    if cfg.shard_rows:
        return cfg.shard_rows
    wi, wt = row_widths(cfg.lengths)
    row_bytes = 4 * wi + 4 * wt + wi + 32
    return max(1, cfg.shard_bytes // row_bytes)


# --------------------------------------------------------------------------- worker side


def _part_path(out: Path, file_idx: int, part: int) -> Path:
    return out / STATE_DIR / "parts" / f"{file_idx:05d}-{part:05d}.json"


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


def _last_commit(out: Path, job: Job, file_idx: int) -> dict[str, Any] | None:
    """The last committed part of a file whose shards all exist with the recorded size."""
    last = None
    part = 0
    while True:
        p = _part_path(out, file_idx, part)
        if not p.is_file():
            return last
        rec = orjson.loads(p.read_bytes())
        shard = out / rec["shard"]
        if not shard.is_file() or shard.stat().st_size != rec["bytes"]:
            return last
        last = rec
        part += 1


def process_file(job: Job, file_idx: int, progress: Callable[[int, int, int], None]) -> dict[str, Any]:
    """Process (or finish) one input file; return its file record."""
    out = Path(job.out)
    done = _file_done_path(out, file_idx)
    if done.is_file():
        rec: dict[str, Any] = orjson.loads(done.read_bytes())
        return rec
    f = job.files[file_idx]
    cfg = job.cfg
    key = file_key(f.name)
    sep = job.special.eos if cfg.doc_separator == "eos" else None
    commit = _last_commit(out, job, file_idx)
    parts: list[dict[str, Any]] = []
    if commit is None:
        stats = FileStats()
        state = PackerState(0, 0, np.zeros(0, np.int32))
        record_end, tokens_read, reserved_replaced, part = 0, 0, 0, 0
    else:
        stats = _stats_from(commit["stats"])
        carry = np.load(out / commit["carry"], allow_pickle=False)
        state = PackerState(commit["next_group"], commit["offset"], carry)
        record_end = commit["record_end"]
        tokens_read = commit["tokens_read"]
        reserved_replaced = commit["reserved_replaced"]
        part = commit["part"] + 1
        parts = list(commit["parts"])
    packer = Packer(job.plans, cfg.mixture.probabilities, job.group_size, cfg.seed, key, job.epoch, state)
    gpp = job.groups_per_part
    writer: ShardWriter | None = None
    part_tokens = 0

    def start_writer() -> ShardWriter:
        return ShardWriter(out / job.shard_name(file_idx, part), cfg.lengths, cfg.format)

    def emit(grp: Any) -> None:
        nonlocal writer, part_tokens
        rows = corrupt_mixture(grp.stream, grp.starts, grp.components, job.plans, job.special,
                               cfg.lengths, grp.rng)
        if writer is None:
            writer = start_writer()
        n = len(grp.starts)
        writer.write(record_batch(rows, cfg.lengths, grp.components, file_idx,
                                  grp.first_example + np.arange(n), grp.token_offset))
        part_tokens += int(grp.stream.size)

    def commit_part(final: bool, tail: int = 0) -> None:
        nonlocal writer, part, part_tokens
        if writer is None:
            return
        info = writer.commit()
        writer = None
        st = packer.state()
        carry_rel = f"{STATE_DIR}/parts/{file_idx:05d}-{part:05d}.carry.npy"
        atomic_save_npy(out / carry_rel, st.carry)
        shard = job.shard_name(file_idx, part)
        parts.append({"shard": shard, "tokens": part_tokens, **info})
        rec = {
            "file": file_idx, "part": part, "shard": shard, "bytes": info["bytes"],
            "record_end": record_end, "next_group": st.next_group, "offset": st.offset,
            "carry": carry_rel, "tokens_read": tokens_read, "reserved_replaced": reserved_replaced,
            "stats": stats.to_dict(), "parts": parts, "final": final, "tail": tail,
        }
        atomic_write_bytes(_part_path(out, file_idx, part), _dumps(rec))
        part += 1
        part_tokens = 0

    if commit is not None and commit["final"]:
        return _file_record(done, f, file_idx, stats, tokens_read, commit["tail"], reserved_replaced, parts)
    try:
        last_bytes = stats.bytes_read
        for batch in iter_batches(f, text_key=cfg.text_key, on_error=cfg.on_error, stats=stats,
                                  start_record=record_end, max_doc_chars=cfg.max_doc_chars):
            values, offsets, counts = job.encoder.encode(batch.texts)
            if counts.get("reserved_token"):
                stats.skipped["reserved_token"] = stats.skipped.get("reserved_token", 0) + counts["reserved_token"]
                stats.docs -= counts["reserved_token"]
            reserved_replaced += counts.get("reserved_replaced", 0)
            stream = join_documents(values, offsets, sep)
            tokens_read += len(stream)
            record_end = batch.record_end
            for grp in packer.push(stream):
                emit(grp)
                if (grp.index + 1) % gpp == 0:
                    commit_part(final=False)
            progress(len(batch.texts), len(stream), stats.bytes_read - last_bytes)
            last_bytes = stats.bytes_read
        grp, tail = packer.finish()
        if grp is not None:
            emit(grp)
        commit_part(final=True, tail=tail)
    except BaseException as e:
        if writer is not None:
            writer.abort()
        if isinstance(e, OSError):
            raise OutputError(
                f"{f.name}: writing under {out} failed: {e}. Nothing incomplete is visible; free "
                "space or fix permissions and rerun the same command to resume."
            ) from None
        raise
    return _file_record(done, f, file_idx, stats, tokens_read, tail, reserved_replaced, parts)


def _file_record(
    done: Path, f: InputFile, file_idx: int, stats: FileStats, tokens_read: int, tail: int,
    reserved_replaced: int, parts: list[dict[str, Any]],
) -> dict[str, Any]:
    rec = {
        "index": file_idx,
        "name": f.name,
        "path": f.path,
        "size": f.size,
        "stats": stats.to_dict(),
        "tokens": tokens_read,
        "tokens_used": tokens_read - tail,
        "tail_tokens": tail,
        "reserved_replaced": reserved_replaced,
        "rows": sum(p["rows"] for p in parts),
        "parts": parts,
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


def resolve(cfg: PrepareConfig, inputs: Sequence[str] | None, tokenizer: str | None) -> Prepared:
    """Validate everything up front: lengths, sentinels, tokenizer, inputs. Raises ConfigError."""
    plans = cfg.plans()
    tok = build_tokenizer(tokenizer, cfg.tokens, cfg.mixture, sentinels_needed(plans))
    files = find_inputs(inputs) if inputs else []
    return Prepared(cfg, plans, tok, files)


def plan_table(prep: Prepared) -> dict[str, Any]:
    cfg = prep.cfg
    return {
        "mixture": cfg.mixture.to_dict(),
        "lengths": cfg.lengths.to_dict(),
        "components": [c.to_dict() for c in prep.plans],
        "sentinels_needed": sentinels_needed(prep.plans),
        "expected_efficiency": expected_efficiency(prep.plans, cfg.lengths),
        "tokenizer": prep.tokenizer.to_dict(),
    }


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


class _Progress:
    def __init__(self, total_bytes: int, nfiles: int, enabled: bool) -> None:
        self.docs = 0
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=f"prepare {nfiles} file(s)", dynamic_ncols=True)

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(
                f"{self.docs:,} docs {self.docs / dt:,.0f} docs/s {self.tokens / dt / 1e3:,.0f}k tok/s",
                refresh=False,
            )
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _mp_context() -> Any:
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_files(job: Job, todo: Sequence[int], workers: int, progress: _Progress) -> list[dict[str, Any]]:
    """Process files, in-process for one worker, else in a process pool."""
    results: dict[int, dict[str, Any]] = {}
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = process_file(job, i, progress.update)
        return [results[i] for i in todo]
    ctx = _mp_context()
    q = ctx.Queue()
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                 initializer=_worker_init, initargs=(job, q)) as ex:
            pending: set[Future[dict[str, Any]]] = set()
            try:
                futs = {ex.submit(_worker_run, i): i for i in todo}
                pending = set(futs)
                while pending:
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    _drain(q, progress)
                    for fu in done:
                        results[futs[fu]] = fu.result()
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


def prepare(
    inputs: Sequence[str],
    out_dir: str,
    cfg: PrepareConfig,
    *,
    tokenizer: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``denoise prepare`` end to end and return the manifest (also written to
    ``out_dir/denoise.json``)."""
    prep = resolve(cfg, inputs, tokenizer)
    if not prep.files:
        raise ConfigError("no input files")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {out}: {e}") from None
    identity = _run_identity(prep, prep.files)
    try:
        return _prepare_locked(prep, out, identity, workers, overwrite, progress)
    except OSError as e:
        raise OutputError(
            f"writing under {out} failed: {e}. Free space or fix permissions and rerun the same "
            "command to resume."
        ) from None


def _prepare_locked(
    prep: Prepared, out: Path, identity: dict[str, Any], workers: int | None, overwrite: bool,
    progress: bool,
) -> dict[str, Any]:
    cfg = prep.cfg
    with _locked(out):
        _prepare_out_dir(out, identity, overwrite)
        atomic_write_bytes(out / "tokenizer.json", prep.tokenizer.json.encode())
        tok = prep.tokenizer
        gs = min(cfg.group_size, rows_per_part(cfg))
        job = Job(
            cfg=cfg,
            plans=prep.plans,
            special=tok.special_ids(),
            encoder=Encoder(tok.json, tok.reserved_ids(), tok.unk[1] if tok.unk else None),
            out=str(out),
            files=tuple(prep.files),
            rows_per_part=rows_per_part(cfg),
            group_size=gs,
        )
        todo = [i for i in range(len(prep.files)) if not _file_done_path(out, i).is_file()]
        nworkers = workers if workers and workers > 0 else (os.cpu_count() or 1)
        # Largest files first: better load balance; results are keyed by file index anyway.
        todo.sort(key=lambda i: -prep.files[i].size)
        bar = _Progress(sum(prep.files[i].size for i in todo), len(todo), progress)
        try:
            run_files(job, todo, nworkers, bar)
        finally:
            bar.close()
        records = [orjson.loads(_file_done_path(out, i).read_bytes()) for i in range(len(prep.files))]
        manifest = build_manifest(prep, job, records)
        shards = [p["shard"] for r in records for p in r["parts"]]
        if cfg.format == "arrow":
            state, info = hf_dataset_files(shards, cfg.lengths, tok.sha256)
            atomic_write_bytes(out / "state.json", state)
            atomic_write_bytes(out / "dataset_info.json", info)
        atomic_write_bytes(out / MANIFEST, _dumps(manifest))
        fsync_dir(out)
    return manifest


def build_manifest(prep: Prepared, job: Job, records: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = prep.cfg
    shards = []
    for r in records:
        for p in r["parts"]:
            shards.append({"path": p["shard"], "rows": p["rows"], "bytes": p["bytes"],
                           "sha256": p["sha256"], "tokens": p["tokens"], "source_files": [r["index"]]})
    skipped: dict[str, int] = {}
    for r in records:
        for k, v in r["stats"]["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    totals = {
        "files": len(records),
        "rows": sum(r["rows"] for r in records),
        "records": sum(r["stats"]["records"] for r in records),
        "docs": sum(r["stats"]["docs"] for r in records),
        "skipped": skipped,
        "files_with_errors": sum(1 for r in records if r["stats"].get("error")),
        "tokens": sum(r["tokens"] for r in records),
        "tokens_used": sum(r["tokens_used"] for r in records),
        "tail_tokens": sum(r["tail_tokens"] for r in records),
        "reserved_replaced": sum(r["reserved_replaced"] for r in records),
    }
    return {
        "format_version": 1,
        "denoise_version": __version__,
        "format": cfg.format,
        "layout": cfg.lengths.layout,
        "lengths": cfg.lengths.to_dict(),
        "row_widths": list(row_widths(cfg.lengths)),
        "seed": cfg.seed,
        "epoch": job.epoch,
        "group_size": job.group_size,
        "rows_per_shard": job.rows_per_part,
        "config": cfg.fingerprint_dict(),
        "mixture": cfg.mixture.to_dict(),
        "components": [c.to_dict() for c in prep.plans],
        "sentinels_needed": sentinels_needed(prep.plans),
        "expected_efficiency": expected_efficiency(prep.plans, cfg.lengths),
        "tokenizer": prep.tokenizer.to_dict(),
        "files": [
            {k: r[k] for k in ("index", "name", "size", "stats", "tokens", "tokens_used",
                               "tail_tokens", "reserved_replaced", "rows")}
            for r in records
        ],
        "shards": shards,
        "totals": totals,
    }


def is_denoise_error(e: BaseException) -> bool:
    return isinstance(e, DenoiseError)

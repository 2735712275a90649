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
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import __version__
from .config import ComponentPlan, PrepareConfig, expected_efficiency, sentinels_needed
from .corrupt import SpecialIds, corrupt_mixture, row_widths
from .errors import ConfigError, DenoiseError, InputError, Interrupted, OutputError, WorkerError
from .fingerprint import SourceDigest, prefix_sha256
from .fs import is_url
from .layout import MANIFEST as MANIFEST  # re-exported
from .layout import STATE_DIR as STATE_DIR  # re-exported
from .layout import (
    check_no_overlap,
    check_out_dir,
    clear_output,
    locked_output,
    only_state,
    output_path,
    remove_temporaries,
)
from .pack import Group, Packer, PackerState, file_key, join_documents
from .procs import FORKSERVER_PARENT_ENV, Terminated, die_with_parent, terminate_raises
from .progress import Progress as _Progress
from .progress import file_rows
from .read import KEYS_SEEN_RECORDS, FileStats, InputFile, find_inputs, iter_batches, open_input
from .tokenize import BackendChoice, Encoder, TokenizerInfo, build_tokenizer, choose_backend
from .write import (
    ShardWriter,
    atomic_save_npy,
    atomic_write_bytes,
    fsync_dir,
    hf_dataset_files,
    record_batch,
)

DEFAULT_MAX_SKIP_FRACTION = 0.5  # a run that skips more of its records fails (exit 3)

_log = logging.getLogger(__name__)


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
    st.keys_seen = [str(k) for k in d.get("keys_seen", [])]
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
        what = f"{STATE_DIR}/parts/{p.name}"
        shard = output_path(out, rec["shard"], f"{what}: shard") if rec["shard"] else out
        output_path(out, rec["carry"], f"{what}: carry")
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

    def __init__(
        self, job: Job, out: Path, file_idx: int, epoch: int, key: int, source: SourceDigest
    ) -> None:
        self.job, self.out, self.file_idx, self.epoch = job, out, file_idx, epoch
        self.source = source  # the raw input bytes read so far: recorded with each commit
        rec = _last_commit(out, epoch, file_idx)
        # (bytes, sha256) of the input prefix this epoch's commits were made from
        self.consumed: tuple[int, str] | None = None
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
            if "source_sha256" in rec:
                self.consumed = (int(rec["source_bytes"]), str(rec["source_sha256"]))
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
            "source_bytes": self.source.count,
            "source_sha256": self.source.hexdigest(),
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
    source = SourceDigest()
    epochs = [_EpochStream(job, out, file_idx, e, key, source) for e in range(cfg.epochs)]
    if not input_unchanged(f, [s.consumed for s in epochs]):
        _log.warning(
            "%s changed since its parts were committed (same size, other bytes); redoing it "
            "from the start",
            f.name,
        )
        forget_file(job, out, file_idx)
        epochs = [_EpochStream(job, out, file_idx, e, key, source) for e in range(cfg.epochs)]
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
                digest=source,
            ):
                values, offsets, counts = job.encoder.encode(batch.texts)
                ndocs = len(batch.texts)
                batch.texts.clear()  # a huge document's text is not needed past this point
                if counts.get("reserved_token"):
                    n = counts["reserved_token"]
                    stats.skipped["reserved_token"] = stats.skipped.get("reserved_token", 0) + n
                    stats.docs -= n
                reserved += counts.get("reserved_replaced", 0)
                stream = join_documents(values, offsets, sep)
                del values, offsets
                t0, t = t, t + len(stream)
                for s in epochs:
                    s.feed(stream, t0, batch.record_end, stats, reserved)
                progress(ndocs, len(stream), stats.bytes_read - last_bytes)
                last_bytes = stats.bytes_read
                del stream
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
        "source_bytes": source.count,
        "source_sha256": source.hexdigest(),
        "stats": stats.to_dict(),
        "tokens": t,
        "reserved_replaced": reserved,
        "epochs": [s.summary() for s in epochs],
    }
    atomic_write_bytes(done, _dumps(rec))
    return rec


def input_unchanged(f: InputFile, consumed: Sequence[tuple[int, str] | None]) -> bool:
    """Whether the input still starts with the bytes the committed parts were made from
    (``consumed``: per epoch, (bytes, sha256) of its last commit, None if nothing committed).
    The longest prefix covers every epoch's; parts committed before fingerprints existed
    carry none and are trusted."""
    known = [c for c in consumed if c is not None]
    if not known:
        return True
    nbytes, digest = max(known)
    return prefix_sha256(lambda: open_input(f), nbytes) == digest


def forget_file(job: Job, out: Path, file_idx: int) -> None:
    """Remove every commit record, carry and shard of one (unfinished) input file."""
    for p in (out / STATE_DIR / "parts").glob(f"E*-{file_idx:05d}-*"):
        p.unlink(missing_ok=True)
    for e in range(job.cfg.epochs):
        for p in (out / job.epoch_dir(e) / "data").glob(f"{file_idx:05d}-*"):
            p.unlink(missing_ok=True)


_WORKER: dict[str, Any] = {}


def _worker_init(job: Job, q: Any, main_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # die with the parent (the forkserver, which dies with the main process; or the main
    # process itself under spawn), whatever killed it
    die_with_parent(main_pid)
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
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths not read
    backend: BackendChoice | None = None  # set by prepare (--tokenizer-backend)


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
    ignored: dict[str, list[str]] = {}
    files = find_inputs(inputs, storage_options, ignored) if inputs else []
    return Prepared(cfg, plans, tok, files, ignored)


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
            clear_output(out)
    elif not only_state(out):
        # a merged output, or a merge cut short: no run identity to resume from
        if not overwrite:
            raise OutputError(
                f"{out} holds a denoise output without a run state ({STATE_DIR}/run.json: a "
                "merged output?); use --overwrite to replace it, or choose another directory"
            )
        clear_output(out)
    # else: a run killed before its run.json was in place left only .denoise/: start afresh.
    # The identity goes first: from here on a kill leaves a recognisable output.
    atomic_write_bytes(run_file, _dumps(identity))
    for d in (out / "data", st / "parts", st / "files"):
        d.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)


def _shard_rel(job: Job, file_idx: int, shard: object, prefix: str) -> str:
    """A shard path of a file's commit records, relative to its epoch's directory (checked:
    the records are read back from the output)."""
    output_path(job.out, shard, f"{STATE_DIR}/files/{file_idx:05d}.json: shard")
    assert isinstance(shard, str)
    if not shard.startswith(prefix):
        raise OutputError(
            f"{job.out}: {STATE_DIR}/files/{file_idx:05d}.json: shard {shard!r} is not in "
            f"{prefix or 'the output'}"
        )
    return shard[len(prefix) :]


def _mp_context() -> Any:
    methods = mp.get_all_start_methods()
    if "forkserver" not in methods:
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported numpy/pyarrow/tokenizers and this
    # package: ~0.3 s less start-up per worker (benchmarks/README_prepare.md)
    # (denoise_cli.procs first: it makes the server die with this process, see there)
    os.environ[FORKSERVER_PARENT_ENV] = str(os.getpid())
    ctx.set_forkserver_preload(["denoise_cli.procs", "denoise_cli.pipeline"])
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
            initargs=(job, q, os.getpid()),
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
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
    notify: Callable[[str], None] | None = None,
    tokenizer_backend: str = "auto",
    progress_interval: float | None = None,
) -> dict[str, Any]:
    """Run ``denoise prepare`` end to end and return the manifest (also written to
    ``out_dir/denoise.json``).

    After the output is complete, :func:`check_run` raises :class:`InputError` when no row was
    written or more than ``max_skip_fraction`` of the records were skipped (the output stays).

    ``engine="ray"`` runs the same per-file units as Ray tasks (same bytes out).
    ``num_shards``/``shard_index`` process a deterministic, size-balanced part of the input files
    (Slurm/Kubernetes arrays); ``denoise merge`` joins the parts.
    ``storage_options``: fsspec options for URL inputs (``--storage-options``).
    ``notify`` receives the one-line "resuming: ..." message when earlier work is reused.
    SIGINT/SIGTERM/SIGHUP stop the workers and raise :class:`Interrupted` (what is committed
    is kept).
    ``tokenizer_backend``: auto, hf or fast (``tokenize.choose_backend``; same ids either way).
    ``progress_interval``: seconds between plain progress lines (default: a bar on a terminal,
    else every 30 s; see ``progress.Progress``).
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', got {engine!r}")
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ConfigError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    if not 0.0 <= max_skip_fraction <= 1.0:
        raise ConfigError(f"--max-skip-fraction must be in [0, 1], got {max_skip_fraction}")
    prep = resolve(cfg, inputs, tokenizer, storage_options)
    if not prep.files:
        raise ConfigError("no input files")
    out = Path(out_dir)
    # refuse before writing anything: no directory, no lock file left behind
    check_no_overlap(
        out,
        [s for s in inputs if os.path.isdir(os.path.expanduser(s))],
        [f.path for f in prep.files if not is_url(f.path)],
    )
    check_out_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory {out}: {e}") from None
    mine = assign_files([f.size for f in prep.files], num_shards)[shard_index]
    prep.backend = _choose_backend(prep, tokenizer_backend, mine)
    identity = _run_identity(prep, prep.files)
    if num_shards > 1:
        identity["part"] = {"index": shard_index, "count": num_shards, "files": mine}
    try:
        with locked_output(out):
            _prepare_out_dir(out, identity, overwrite)
            job = _make_job(prep, out)
            todo = [i for i in mine if not _file_done_path(out, i).is_file()]
            todo.sort(key=lambda i: (-prep.files[i].size, i))  # largest first: load balance
            if notify is not None and resume_point(out, mine) != (0, 0):
                notify(_resuming_line(out, mine))
            bar = _Progress(
                sum(prep.files[i].size for i in todo),
                len(todo),
                progress,
                interval=progress_interval,
            )
            try:
                with terminate_raises():
                    if engine == "ray":
                        from .ray_engine import run_files_ray

                        run_files_ray(job, todo, bar, address=ray_address, workers=workers)
                    else:
                        nworkers = workers if workers and workers > 0 else (os.cpu_count() or 1)
                        run_files(job, todo, nworkers, bar)
            except (KeyboardInterrupt, Terminated) as e:
                signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
                done, parts = resume_point(out, mine)
                more = f" (+{parts} parts of unfinished files)" if parts else ""
                raise Interrupted(
                    f"interrupted; {done} of {len(mine)} files committed{more}; rerun the same "
                    "command to resume",
                    signum,
                ) from None
            finally:
                bar.close()
            records = [orjson.loads(_file_done_path(out, i).read_bytes()) for i in mine]
            part = identity.get("part")
            manifest = finalize(out, prep, job, records, part)
    except OSError as e:
        raise OutputError(
            f"writing under {out} failed: {e}. Free space or fix permissions and rerun the same "
            "command to resume."
        ) from None
    check_run(manifest, cfg.text_key, max_skip_fraction, str(out))
    return manifest


def _n(x: int) -> str:
    return f"{x:,}"


def check_run(m: dict[str, Any], text_key: str, max_skip_fraction: float, out: str) -> None:
    """Refuse (``InputError``) a run that wrote no row, or skipped more than
    ``max_skip_fraction`` of its records; the message names the worst file, its reasons and,
    for ``missing_text``, the keys its records have."""
    t = m["totals"]
    records, docs = int(t["records"]), int(t["docs"])
    rows = sum(t["rows_per_epoch"]) if "rows_per_epoch" in t else int(t["rows"])
    nskipped = records - docs
    too_many = records > 0 and nskipped > max_skip_fraction * records
    if rows > 0 and not too_many:
        return
    files = m["files"]
    if not files:  # a part of a multi-machine run that was assigned no file
        return

    def bad(f: dict[str, Any]) -> int:
        st = f["stats"]
        return int(st["records"]) - int(st["docs"]) + (1 if st.get("error") else 0)

    worst = max(files, key=bad)
    what = "no row written" if rows == 0 else f"{_n(nskipped)} of {_n(records)} records skipped"
    what += f" in all {len(files)} input file(s)" if len(files) > 1 else ""
    st = worst["stats"]
    reasons = ", ".join(
        f"{k} {_n(v)}" for k, v in sorted(st["skipped"].items(), key=lambda x: -x[1])
    )
    parts = [what]
    if st.get("error"):
        parts.append(str(st["error"]))
    if st["skipped"].get("missing_text"):
        shown = min(int(st["records"]), KEYS_SEEN_RECORDS)
        keys = ", ".join(st.get("keys_seen", [])) or "none"
        parts.append(
            f"no record in the first {_n(shown)} has key {text_key!r}"
            if int(st["skipped"]["missing_text"]) == int(st["records"])
            else f"{_n(st['skipped']['missing_text'])} records lack key {text_key!r}"
        )
        parts[-1] += f"; keys seen: {keys}"
    if rows == 0 and records > 0 and nskipped < records:
        parts.append(
            f"{_n(int(t['tokens']))} tokens read, fewer than one row needs (all in file tails)"
        )
    if rows == 0 and records == 0 and not any(f["stats"].get("error") for f in files):
        parts.append("the inputs hold no records")
    parts.append(
        f"the output in {out} is complete but "
        + ("empty" if rows == 0 else f"holds only {_n(docs)} documents")
    )
    if rows > 0:
        parts.append(
            f"pass --max-skip-fraction {min(1.0, round(nskipped / records + 0.005, 2))} to accept"
        )
    raise InputError(
        worst["name"],
        f"{_n(int(st['records']) - int(st['docs']))} of {_n(int(st['records']))} records skipped"
        + (f" ({reasons})" if reasons else ""),
        "nothing_written" if rows == 0 else "too_many_skipped",
        "; ".join(parts),
    )


def resume_point(out: Path, files: Sequence[int]) -> tuple[int, int]:
    """(files completely done, parts committed in the unfinished ones) among ``files``."""
    done = [i for i in files if _file_done_path(out, i).is_file()]
    ids = {f"{i:05d}" for i in files} - {f"{i:05d}" for i in done}
    parts = sum(1 for p in (out / STATE_DIR / "parts").glob("E*-*-*.json") if p.name[5:10] in ids)
    return len(done), parts


def _resuming_line(out: Path, files: Sequence[int]) -> str:
    done, parts = resume_point(out, files)
    line = f"resuming: {done} of {len(files)} files done"
    if parts:
        line += f", {parts} parts of unfinished files committed"
    return line + f" (in {out})"


def _make_job(prep: Prepared, out: Path) -> Job:
    cfg, tok = prep.cfg, prep.tokenizer
    return Job(
        cfg=cfg,
        plans=prep.plans,
        special=tok.special_ids(),
        encoder=Encoder(
            tok.json,
            tok.reserved_ids(),
            tok.unk[1] if tok.unk else None,
            fast=prep.backend.spec if prep.backend else None,
        ),
        out=str(out),
        files=tuple(prep.files),
        rows_per_part=rows_per_part(cfg),
        group_size=cfg.group_size,
        max_segments=_max_segments(prep),
    )


def _choose_backend(prep: Prepared, requested: str, mine: Sequence[int]) -> BackendChoice:
    """The document encoder, self-checked on the torture texts and the run's first documents
    (those in the first ~256k characters of its first input file); warns on a fallback."""

    def sample() -> list[str]:
        if not mine:
            return []
        with contextlib.suppress(DenoiseError):
            for batch in iter_batches(
                prep.files[mine[0]],
                text_key=prep.cfg.text_key,
                stats=FileStats(),
                start_record=0,
                batch_chars=1 << 18,
            ):
                return list(batch.texts)
        return []

    choice = choose_backend(prep.tokenizer.json, requested, sample)
    if choice.warning:
        print(f"denoise: warning: {choice.warning}", file=sys.stderr)
    return choice


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
                    "path": _shard_rel(job, r["index"], p["shard"], prefix),
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
        "tokenizer_backend": prep.backend.to_dict() if prep.backend else None,
        "files": files,
        "shards": shards,
        "totals": totals_from_files(files),
        **({"inputs_ignored": ignored_summary(prep.ignored)} if prep.ignored else {}),
    }


def ignored_summary(ignored: dict[str, list[str]]) -> dict[str, Any]:
    """Entries with an input extension that were not read, per reason: count and a few names."""
    return {
        reason: {"count": len(paths), "names": sorted(os.path.basename(p) for p in paths)[:5]}
        for reason, paths in sorted(ignored.items())
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

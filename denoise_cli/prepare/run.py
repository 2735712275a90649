"""``denoise prepare`` end to end: resolve the config, tokenizer and inputs, claim the output
directory, run the per-file units (:mod:`.worker`) on an engine, finalize the manifest.

One unit of work per input file; each file's rows go to its own shards, a *part* being a fixed
number of groups, so part boundaries do not depend on read batch sizes. A rerun resumes from
the committed parts (:mod:`.resume`) and gives a byte-identical output. ``num_shards`` /
``shard_index`` split the input files over machines (:func:`assign_files`); ``denoise merge``
joins the results. ``--split`` runs the engine once per held-out split, each into its own
directory (``Job.split``); ``--limit-*`` first resolves the prefix of the inputs. See
docs/architecture.md; figures: benchmarks/README_prepare.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import PrepareConfig
from ..engines import Unit
from ..engines import engine as engine_for
from ..engines.procs import Terminated, terminate_raises
from ..engines.progress import Progress
from ..errors import ConfigError, Interrupted, OutputError
from ..output.layout import check_no_overlap, check_out_dir, locked_output
from ..output.remote import RemoteOutput, is_output_url
from ..source.fs import is_url
from .finalize import DEFAULT_MAX_SKIP_FRACTION, check_run, finalize, write_split_top
from .job import Job, apply_limit, choose_encoder_backend, make_job, resolve
from .outdir import claim, claim_split, run_identity
from .publish import (
    RemoteUnit,
    claim_remote,
    make_stage,
    publish_dataset,
    pull_file_records,
    remote_resume_point,
)
from .resume import file_records, is_finished, resume_point
from .worker import process_file


def array_task(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """--num-shards/--shard-index, else Slurm's array variables, else (1, 0)."""

    def env(name: str) -> int | None:
        v = os.environ.get(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"{name}={v!r} is not an integer") from None

    n = num_shards if num_shards is not None else env("SLURM_ARRAY_TASK_COUNT") or 1
    i = shard_index if shard_index is not None else env("SLURM_ARRAY_TASK_ID") or 0
    if num_shards is None and shard_index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        i -= env("SLURM_ARRAY_TASK_MIN") or 0  # arrays may start at 1
    return n, i


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
    staging_dir: str | None = None,
) -> dict[str, Any]:
    """Run ``denoise prepare`` end to end and return the manifest (also written to
    ``out_dir/denoise.json``).

    ``engine="ray"`` runs the same per-file units as Ray tasks (same bytes out).
    ``num_shards``/``shard_index`` process a deterministic, size-balanced part of the input files
    (Slurm/Kubernetes arrays); ``denoise merge`` joins the parts.
    After the output is complete, :func:`~.finalize.check_run` raises :class:`InputError` when
    no row was written or more than ``max_skip_fraction`` of the records were skipped (the
    output stays).
    ``storage_options``: fsspec options for URL inputs and a URL ``out_dir``
    (``--storage-options``); a URL ``out_dir`` is staged under ``staging_dir`` (default: the
    temp directory) and published part by part (:mod:`.publish`).
    ``tokenizer_backend``: auto, hf or fast (``source.backend.choose_backend``; same ids either way).
    ``progress_interval``: seconds between plain progress lines (default: a bar on a terminal,
    else every 30 s; see ``engines.progress.Progress``).
    ``notify`` receives the one-line "resuming: ..." message when earlier work is reused.
    SIGINT/SIGTERM/SIGHUP stop the workers and raise :class:`Interrupted` (what is committed
    is kept).
    """
    run_files = engine_for(engine)
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise ConfigError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    if not 0.0 <= max_skip_fraction <= 1.0:
        raise ConfigError(f"--max-skip-fraction must be in [0, 1], got {max_skip_fraction}")
    prep = resolve(cfg, inputs, tokenizer, storage_options)
    if not prep.files:
        raise ConfigError("no input files")
    remote = RemoteOutput(out_dir, storage_options) if is_output_url(out_dir) else None
    out = Path(out_dir)
    # refuse before writing anything: no directory, no lock file left behind
    if remote is None:
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
    else:
        if cfg.splits:
            raise ConfigError(
                "--split/--holdout into an object-store OUT is not supported yet: write the "
                "splits to a local directory and upload it"
            )
        check_remote_overlap(remote, inputs, [f.path for f in prep.files])
        remote.check_out()
    mine = assign_files([f.size for f in prep.files], num_shards)[shard_index]
    prep.backend = choose_encoder_backend(prep, tokenizer_backend, mine)
    if apply_limit(prep):  # fewer files: assign them again
        mine = assign_files([f.size for f in prep.files], num_shards)[shard_index]
    identity = run_identity(prep, prep.files)
    if num_shards > 1:
        identity["part"] = {"index": shard_index, "count": num_shards, "files": mine}
    where = out_dir if remote is not None else str(out)
    try:
        with contextlib.ExitStack() as held:
            unit: Unit = process_file
            if remote is None:
                held.enter_context(locked_output(out))
                claim(out, identity, overwrite)
            else:
                held.enter_context(remote.lock())
                claim_remote(remote, identity, overwrite)
                out = make_stage(staging_dir)
                held.callback(shutil.rmtree, out, True)
                pull_file_records(remote, out, mine)
                unit = RemoteUnit(remote, staging_dir)
            base = make_job(prep, out)
            # --split: one engine run per split, each into its own directory
            jobs = [replace(base, split=n) for n in base.split_names] or [base]
            for j in jobs:
                if j.split:
                    claim_split(j.root(), j.split)

            def point(files: Sequence[int]) -> tuple[int, int]:
                if remote is not None:
                    return remote_resume_point(remote, files)
                return _resume_point(jobs, files)

            todos = [[i for i in mine if not is_finished(j.root(), i)] for j in jobs]
            for todo in todos:
                todo.sort(key=lambda i: (-prep.files[i].size, i))  # largest first: load balance
            if notify is not None and point(mine) != (0, 0):
                notify(_resuming_line(point(mine), len(mine) * len(jobs), where))
            bar = Progress(
                sum(prep.files[i].size for todo in todos for i in todo),
                sum(len(todo) for todo in todos),
                progress,
                interval=progress_interval,
            )
            try:
                if engine == "local":
                    workers = workers if workers and workers > 0 else (os.cpu_count() or 1)
                with terminate_raises():
                    for j, todo in zip(jobs, todos, strict=True):
                        run_files(unit, j, todo, bar, workers=workers, address=ray_address)
            except (KeyboardInterrupt, Terminated) as e:
                signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
                done, parts = point(mine)
                more = f" (+{parts} parts of unfinished files)" if parts else ""
                units = len(mine) * len(jobs)
                raise Interrupted(
                    f"interrupted; {done} of {units} files committed{more}; rerun the same "
                    "command to resume",
                    signum,
                ) from None
            finally:
                bar.close()
            if remote is not None:
                pull_file_records(remote, out, mine)
            part = identity.get("part")
            manifests = [
                finalize(j.root(), prep, j, file_records(j.root(), mine), part) for j in jobs
            ]
            manifest = write_split_top(out, manifests) if base.split_names else manifests[0]
            if remote is not None:
                publish_dataset(remote, out)
    except OSError as e:
        raise OutputError(
            f"writing under {where} failed: {e}. Free space or fix permissions and rerun the "
            "same command to resume."
        ) from None
    check_run(manifest, cfg.text_key, max_skip_fraction, where)
    return manifest


def _resume_point(jobs: Sequence[Job], files: Sequence[int]) -> tuple[int, int]:
    """``resume.resume_point`` over every split's directory (units: (split, file) pairs)."""
    points = [resume_point(j.root(), files) for j in jobs]
    return sum(p[0] for p in points), sum(p[1] for p in points)


def _resuming_line(point: tuple[int, int], nfiles: int, where: str) -> str:
    done, parts = point
    line = f"resuming: {done} of {nfiles} files done"
    if parts:
        line += f", {parts} parts of unfinished files committed"
    return line + f" (in {where})"


def check_remote_overlap(
    remote: RemoteOutput, input_specs: Sequence[str], input_paths: Sequence[str]
) -> None:
    """``check_no_overlap`` for a URL output, by URL text: refuse an output prefix inside an
    input URL spec (a directory), one that holds an input, or that is an input's directory."""
    o = remote.url.rstrip("/") + "/"
    for spec in input_specs:
        if is_url(spec) and o.startswith(spec.rstrip("/") + "/"):
            raise OutputError(f"the output {remote.url} is inside the input {spec}; choose another")
    for p in input_paths:
        if is_url(p) and (p.startswith(o) or p.rsplit("/", 1)[0] + "/" == o):
            raise OutputError(f"the output {remote.url} holds the input {p}; choose another")

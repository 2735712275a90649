"""``denoise prepare`` into an object store (OUT an fsspec URL): stage locally, publish by part.

The driver claims the prefix (``output.remote``: foreign prefixes refused, ``--overwrite``
clears only our entries, a best-effort lock object) and writes the run identity there. Each
per-file unit (:class:`RemoteUnit`, on any engine and any node) makes its own staging
directory, fetches that file's commit records from the store, registers a :class:`StoreMirror`
(``resume.mirror_to``) and runs the unchanged local unit: after each committed part the shard,
then its carry, then its commit record are uploaded, and the local shard is dropped. Resume
reads the records back (every key checked by ``layout``'s rules) and trusts a part only when
its shard is in the store with the recorded size. The driver finalizes in its own staging
directory, checks that every shard the manifest lists is in the store with its size, uploads
the dataset files and the manifests last. So no node needs a filesystem another one sees.
See docs/architecture.md and docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..engines.procs import pid_alive
from ..errors import OutputError
from ..output.layout import (
    DATA_DIR,
    MANIFEST,
    STATE_DIR,
    check_rel,
    file_record,
    file_state_patterns,
    part_record,
    run_record,
    work_dirs,
)
from ..output.manifest import datasets, diff, dumps
from ..output.remote import RemoteOutput
from .job import Job
from .resume import mirror_to
from .worker import process_file

_ROOT = Path(".")


def rel_of(p: Path) -> str:
    """A ``layout`` path built on ``Path(".")`` as a key relative to the output."""
    return p.as_posix()


STAGE_PREFIX = "denoise-stage-"


def make_stage(staging_dir: str | None) -> Path:
    """A new staging directory owned by this process (under ``staging_dir`` or the temp dir),
    named ``denoise-stage-<host>_<pid namespace>-<pid>-<random>``; first the stale ones are removed
    (:func:`remove_stale_stages`)."""
    base = Path(staging_dir) if staging_dir else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(base)
    d = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{_host()}-{os.getpid()}-", dir=base))
    (d / STATE_DIR).mkdir()  # what marks it as a run's (never uploaded: publish skips it)
    return d


def _host() -> str:
    """This host and PID namespace (containers may share a host name and a staging volume, but
    a pid means something only in its own namespace)."""
    name = "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname()) or "host"
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        ns = 0
    return f"{name}_{ns}"


def remove_stale_stages(base: Path) -> list[Path]:
    """Remove the staging directories under ``base`` that a killed run left (``kill -9`` of a
    worker or of the main process, which takes its forked workers with it): those named by
    :func:`make_stage` for this host whose process is gone, and that hold a run's state
    directory (or nothing at all). Another host's (a shared ``--staging-dir``), a live
    process's and anything not named and shaped so are left alone. Returns the directories
    removed."""
    mine = f"{STAGE_PREFIX}{_host()}-"
    gone: list[Path] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(mine)]
    except OSError:
        return gone
    for name in names:
        pid, sep, rest = name[len(mine) :].partition("-")
        d = base / name
        if not (sep and rest and pid.isdigit()) or d.is_symlink() or not d.is_dir():
            continue
        if pid_alive(int(pid)):
            continue
        if (d / STATE_DIR).is_dir():
            shutil.rmtree(d, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty
        if not d.exists():
            gone.append(d)
    return gone


class StoreMirror:
    """Publishes the commits under a staging directory to the store (``resume.Mirror``)."""

    def __init__(self, remote: RemoteOutput, stage: Path, epochs: int) -> None:
        self.remote, self.stage, self.epochs = remote, stage, epochs

    def shard_ok(self, rel: str, size: int) -> bool:
        # one HEAD per part: the cost of a resume grows with this file's parts, not the output's
        return self.remote.size(check_rel(self.remote.url, rel, "commit record shard")) == size

    def committed(self, rels: Sequence[str]) -> None:
        for rel in rels:
            local = self.stage / rel
            self.remote.put(local, rel)
            if rel.split("/")[0] != STATE_DIR:
                local.unlink(missing_ok=True)  # a shard: the store has it now

    def forget(self, file_idx: int) -> None:
        self.remote.refresh()
        for d, pat in file_state_patterns(self.epochs, file_idx):
            for name in sorted(self.remote.listdir(d)):
                if fnmatch.fnmatchcase(name, pat):
                    self.remote.remove(f"{d}/{name}")


def stage_file(remote: RemoteOutput, stage: Path, epochs: int, file_idx: int) -> None:
    """Fetch one input file's resume state into ``stage``: its file record if it is finished,
    else per epoch the commit records whose shards are in the store (the chain
    ``resume.last_commit`` walks) and the carry of the last one."""
    remote.refresh()
    frec = file_record(_ROOT, file_idx)
    if remote.size(rel_of(frec)) is not None:
        remote.get(rel_of(frec), stage / frec)
        return
    mirror = StoreMirror(remote, stage, epochs)
    for e in range(epochs):
        last = None
        part = 0
        while True:
            rp = part_record(_ROOT, e, file_idx, part)
            rec = remote.read_json(rel_of(rp))  # read by name: no listing of every record
            if rec is None or not rec.get("shard"):
                break
            if not mirror.shard_ok(str(rec["shard"]), int(rec["bytes"])):
                break
            (stage / rp).parent.mkdir(parents=True, exist_ok=True)
            (stage / rp).write_bytes(dumps(rec))
            last = rec
            part += 1
        if last is not None:
            carry = check_rel(remote.url, last.get("carry"), f"{rp.name}: carry")
            remote.get(carry, stage / carry)


@dataclass(frozen=True)
class RemoteUnit:
    """The per-file unit for an output in a store: ``worker.process_file`` in a staging
    directory of its own, publishing every commit (picklable: engines ship it to workers)."""

    remote: RemoteOutput
    staging_dir: str | None = None

    def __call__(self, job: Job, file_idx: int, progress: Any) -> dict[str, Any]:
        stage = make_stage(self.staging_dir)
        try:
            for d in work_dirs(stage):
                d.mkdir(parents=True, exist_ok=True)
            epochs = job.cfg.epochs
            stage_file(self.remote, stage, epochs, file_idx)
            mirror_to(stage, StoreMirror(self.remote, stage, epochs))
            try:
                return process_file(replace(job, out=str(stage)), file_idx, progress)
            finally:
                mirror_to(stage, None)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


# --------------------------------------------------------------------------- driver side


def claim_remote(remote: RemoteOutput, identity: dict[str, Any], overwrite: bool) -> None:
    """``outdir.claim`` for a prefix (the caller holds the lock): resume a run of the same
    identity, refuse anything else unless ``overwrite``; then write the identity."""
    remote.refresh()
    rel = rel_of(run_record(_ROOT))
    old = remote.read_json(rel)
    if old is not None:
        diffs = diff(identity, old)
        if diffs and not overwrite:
            shown = "\n  ".join(diffs[:12])
            raise OutputError(
                f"{remote.url} holds an output made with a different configuration; refusing to "
                f"mix them (use --overwrite to start over). Differences:\n  {shown}"
            )
        if diffs:
            remote.clear()
    elif set(remote.listdir()) - {STATE_DIR} or remote.is_denoise_output():
        if not overwrite:
            raise OutputError(
                f"{remote.url} holds a denoise output without a run state ({rel}: a merged "
                "output?); use --overwrite to replace it, or choose another prefix"
            )
        remote.clear()
    remote.write(rel, dumps(identity))
    remote.remove_temporaries()


def pull_file_records(remote: RemoteOutput, stage: Path, files: Sequence[int]) -> None:
    """Fetch the records of the finished files among ``files`` into ``stage``."""
    remote.refresh()
    have = remote.listdir(f"{STATE_DIR}/files")
    for i in files:
        p = file_record(_ROOT, i)
        if p.name in have:
            remote.get(rel_of(p), stage / p)


def remote_resume_point(remote: RemoteOutput, files: Sequence[int]) -> tuple[int, int]:
    """``resume.resume_point`` from the store's listings."""
    remote.refresh()
    done = set(remote.listdir(f"{STATE_DIR}/files"))
    parts = remote.listdir(f"{STATE_DIR}/parts")
    finished = committed = 0
    for i in files:
        if file_record(_ROOT, i).name in done:
            finished += 1
        else:
            committed += len(fnmatch.filter(parts, f"E*-{i:05d}-*.json"))
    return finished, committed


def publish_dataset(remote: RemoteOutput, stage: Path) -> None:
    """Upload what ``finalize`` wrote in ``stage``: check first that every shard a manifest
    lists is in the store with its size, then the dataset files, the epochs' manifests and the
    top-level manifest last."""
    remote.refresh()
    for prefix, _path, m in datasets(stage):
        listing = remote.listdir(f"{prefix}{DATA_DIR}")
        for s in m["shards"]:
            rel = check_rel(remote.url, s["path"], f"{prefix}{MANIFEST}: shard path")
            d, _, name = rel.rpartition("/")
            if d != DATA_DIR or listing.get(name) != int(s["bytes"]):
                raise OutputError(
                    f"{remote.url}/{prefix}{rel} is missing or has another size than the "
                    "manifest says; not publishing the manifest (rerun the same command)"
                )
    files = []
    for root, dirs, names in os.walk(stage):
        dirs[:] = sorted(d for d in dirs if d != STATE_DIR)
        for n in sorted(names):
            rel = Path(root, n).relative_to(stage).as_posix()
            if n != MANIFEST:
                files.append(rel)
    for rel in files:
        remote.put(stage / rel, rel)
    epochs = [p for p, _, _ in datasets(stage) if p]
    for prefix in epochs:
        remote.put(stage / prefix / MANIFEST, f"{prefix}{MANIFEST}")
    remote.put(stage / MANIFEST, MANIFEST)

"""The output directory's lifecycle: one run at a time (:func:`locked`), a run identity that a
rerun must match to resume (:func:`run_identity`), and a directory that is either empty, a
resumable run of the same configuration, or replaced only with ``--overwrite``
(:func:`claim`). See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..errors import OutputError
from ..output.layout import STATE_DIR, TMP_PREFIX, lock_file, run_record, state_dir, work_dirs
from ..output.manifest import diff, dumps
from ..output.shards import atomic_write_bytes
from ..source.read import InputFile
from .job import Prepared


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the output's lock (``OutputError`` when another ``prepare`` holds it)."""
    state_dir(out).mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(out), os.O_RDWR | os.O_CREAT, 0o644)
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


def run_identity(prep: Prepared, job_files: Sequence[InputFile]) -> dict[str, Any]:
    return {
        "config": prep.cfg.fingerprint_dict(),
        "tokenizer_sha256": prep.tokenizer.sha256,
        "inputs": [{"name": f.name, "size": f.size} for f in job_files],
        "version": __version__,
    }


def read_identity(out: Path) -> dict[str, Any] | None:
    p = run_record(out)
    if not p.is_file():
        return None
    ident: dict[str, Any] = orjson.loads(p.read_bytes())
    return ident


def claim(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Make ``out`` this run's: resume a run of the same identity, refuse anything else unless
    ``overwrite``; create the work directories and sweep temporary files."""
    old = read_identity(out)
    if old is not None:
        diffs = diff(identity, old)
        if diffs and not overwrite:
            shown = "\n  ".join(diffs[:12])
            raise OutputError(
                f"{out} holds an output made with a different configuration; refusing to mix them "
                f"(use --overwrite to start over). Differences:\n  {shown}"
            )
        if diffs:
            clear(out)
    else:
        others = [p for p in out.iterdir() if p.name != STATE_DIR] if out.exists() else []
        if others and not overwrite:
            raise OutputError(
                f"{out} is not empty and is not a denoise output; use --overwrite to replace it or "
                "choose an empty directory"
            )
        if others:
            clear(out)
    for d in work_dirs(out):
        d.mkdir(parents=True, exist_ok=True)
    for d in (out, *work_dirs(out)):
        for p in d.glob(f"{TMP_PREFIX}*"):
            p.unlink(missing_ok=True)
    atomic_write_bytes(run_record(out), dumps(identity))


def clear(out: Path) -> None:
    """Remove everything in ``out`` but the lock."""
    lock = lock_file(out)
    for p in out.iterdir():
        if p.name == STATE_DIR:
            for q in p.iterdir():
                if q != lock:
                    shutil.rmtree(q) if q.is_dir() else q.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()

"""The output directory's lifecycle for a run: a run identity that a rerun must match to resume
(:func:`run_identity`), and a directory that is either empty, a resumable run of the same
configuration, or replaced only with ``--overwrite`` (:func:`claim`). The lock, the checks of
what a directory is and what clearing may remove are ``output.layout``'s. See
docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..errors import OutputError
from ..output.layout import (
    MANIFEST,
    MARKERS,
    SPLIT_MARKER,
    STATE_DIR,
    clear_output,
    only_state,
    remove_temporaries,
    run_record,
    work_dirs,
)
from ..output.manifest import diff, dumps
from ..output.shards import atomic_write_bytes
from ..source.discover import InputFile
from .job import Prepared


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
    """Make ``out`` this run's, holding its lock: resume a run of the same identity, refuse
    anything else unless ``overwrite`` (which clears only what an output consists of); write the
    identity first (from there on a kill leaves a recognisable output), then create the work
    directories and remove the temporaries a killed run left."""
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
    atomic_write_bytes(run_record(out), dumps(identity))
    for d in work_dirs(out):
        d.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)


def claim_split(root: Path, split: str) -> None:
    """A split's directory under a claimed output (``--split``): its marker (so that
    ``--overwrite`` and the temporary sweep recognise it) and its work directories."""
    marker = root / STATE_DIR / SPLIT_MARKER
    if not marker.is_file():
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(marker, dumps({"split": split}))
    for d in work_dirs(root):
        d.mkdir(parents=True, exist_ok=True)


def check_new_output(dst: Path, marker: Path, verb: str) -> None:
    """Where ``denoise merge`` / ``shuffle`` (``verb``) may write: a new or empty directory, or
    one its own interrupted run left (its ``marker`` in ``.denoise/``, or only ``.denoise/``).
    Anything else (a complete output, another command's unfinished one, foreign files) is
    refused, naming what is there. Writes nothing."""
    if not dst.exists():
        return
    if not dst.is_dir():
        raise OutputError(f"{dst} exists and is not a directory")
    names = sorted(e.name for e in dst.iterdir())
    if not names:
        return
    if (dst / MANIFEST).exists():
        raise OutputError(f"{dst} already holds a denoise output; {verb} into a new directory")
    other = [m for m in MARKERS if m != marker.name and (dst / STATE_DIR / m).is_file()]
    if other:
        raise OutputError(
            f"{dst} holds an unfinished output of another denoise command ({STATE_DIR}/"
            f"{other[0]}); {verb} into a new directory"
        )
    if not (marker.is_file() or only_state(dst)):
        raise OutputError(
            f"{dst} is not empty and is not an interrupted {verb} (it holds "
            f"{', '.join(names[:5])}); {verb} into a new directory"
        )

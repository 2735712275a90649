"""Where everything of an output lives: the one owner of file and directory names.

An output directory ``OUT`` holds ``denoise.json`` (the manifest, written last), the tokenizer,
the Hugging Face files and ``data/FFFFF-PPPPP.{arrow,parquet}`` (file ``F``, part ``P``); with
``--epochs K`` each epoch is a complete dataset under ``epoch-k/``. ``.denoise/`` holds the run
identity, the lock and the resume records. Files are written under a temporary name
(:func:`tmp_path`) and renamed into place. Nothing else in the package builds these names.
See docs/architecture.md.
"""

from __future__ import annotations

import os
from pathlib import Path

MANIFEST = "denoise.json"
TOKENIZER = "tokenizer.json"
HF_STATE = "state.json"
HF_INFO = "dataset_info.json"
DATA_DIR = "data"
STATE_DIR = ".denoise"
TMP_PREFIX = ".tmp-"
#: the extension of each shard format's files
EXTENSIONS: dict[str, str] = {"arrow": "arrow", "parquet": "parquet"}


def epoch_dir(epochs: int, epoch: int) -> str:
    """Where an epoch's dataset lives, relative to the output: "" for a single epoch."""
    return "" if epochs == 1 else f"epoch-{epoch}/"


def epoch_dirs(epochs: int) -> list[str]:
    """The ``epoch_dirs`` of a top-level manifest (no trailing slash)."""
    return [epoch_dir(epochs, e).rstrip("/") for e in range(epochs)]


def shard_name(epochs: int, epoch: int, file_idx: int, part: int, fmt: str) -> str:
    """A shard's path relative to the output (the manifest's paths drop the epoch prefix)."""
    return f"{epoch_dir(epochs, epoch)}{DATA_DIR}/{file_idx:05d}-{part:05d}.{EXTENSIONS[fmt]}"


def tmp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


# --------------------------------------------------------------------------- run state


def state_dir(out: Path) -> Path:
    return out / STATE_DIR


def run_record(out: Path) -> Path:
    """The run identity (config fingerprint, tokenizer, inputs, part of a split)."""
    return out / STATE_DIR / "run.json"


def lock_file(out: Path) -> Path:
    return out / STATE_DIR / "lock"


def parts_dir(out: Path) -> Path:
    return out / STATE_DIR / "parts"


def files_dir(out: Path) -> Path:
    return out / STATE_DIR / "files"


def part_record(out: Path, epoch: int, file_idx: int, part: int) -> Path:
    """The commit record of one part of (epoch, file)."""
    return parts_dir(out) / f"E{epoch:03d}-{file_idx:05d}-{part:05d}.json"


def carry_name(epoch: int, file_idx: int, part: int) -> str:
    """The un-chunked tokens of a commit record, relative to the output."""
    return f"{STATE_DIR}/parts/E{epoch:03d}-{file_idx:05d}-{part:05d}.carry.npy"


def file_record(out: Path, file_idx: int) -> Path:
    """The record of a finished input file."""
    return files_dir(out) / f"{file_idx:05d}.json"


def work_dirs(out: Path) -> list[Path]:
    """Directories a run writes into (created before work starts, swept of temporary files)."""
    return [out / DATA_DIR, parts_dir(out), files_dir(out)]


def stale_tmp_files(out: Path, epochs: int, file_idx: int) -> list[Path]:
    """Temporary files an interrupted attempt at one input file may have left behind."""
    pats = [
        (out / epoch_dir(epochs, e) / DATA_DIR, f"{TMP_PREFIX}{file_idx:05d}-*")
        for e in range(epochs)
    ]
    pats += [
        (parts_dir(out), f"{TMP_PREFIX}E*-{file_idx:05d}-*"),
        (files_dir(out), f"{TMP_PREFIX}{file_idx:05d}.json.*"),
    ]
    return [p for d, pat in pats for p in d.glob(pat)]


def datasets(out: Path, epoch_dirs_: list[str] | None) -> list[tuple[str, Path]]:
    """The datasets of an output from its top-level manifest's ``epoch_dirs``:
    ``[("", out)]``, or one ``("epoch-k/", out/epoch-k)`` per epoch."""
    if not epoch_dirs_:
        return [("", out)]
    return [(f"{d}/", out / d) for d in epoch_dirs_]

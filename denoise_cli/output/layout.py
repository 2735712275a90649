"""What a denoise output directory consists of - the one owner of its file and directory names
- and the checks that keep the tool inside it.

``OUT`` holds ``denoise.json`` (the manifest, written last), the tokenizer, the Hugging Face
files and ``data/FFFFF-PPPPP.{arrow,parquet}`` (file ``F``, part ``P``); with ``--epochs K``
each epoch is a complete dataset under ``epoch-k/``; with ``--split`` each split is a complete
output under ``OUT/<split>/`` (:func:`split_root`). ``.denoise/`` holds the run identity, the
lock and the resume records. Files are written under a temporary name (:func:`tmp_path`) and
renamed into place. :func:`output_path` is the one check for every path read from an output's
own files (relative, normalised, no ``..``, inside the output once symlinks are resolved);
:func:`check_out_dir` / :func:`clear_output` touch a non-empty directory only if it is
recognisably a denoise output; :func:`check_no_overlap` keeps outputs and inputs apart. See
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from ..errors import OutputError

MANIFEST = "denoise.json"
TOKENIZER = "tokenizer.json"
HF_STATE = "state.json"
HF_INFO = "dataset_info.json"
DATA_DIR = "data"
STATE_DIR = ".denoise"
TMP_PREFIX = ".tmp-"
#: Top-level files of an output besides the manifest (Hugging Face ``load_from_disk`` files).
OUTPUT_FILES = (TOKENIZER, HF_STATE, HF_INFO)
_EPOCH = re.compile(r"epoch-\d+")


def epoch_dir(epochs: int, epoch: int) -> str:
    """Where an epoch's dataset lives, relative to the output: "" for a single epoch."""
    return "" if epochs == 1 else f"epoch-{epoch}/"


def epoch_dirs(epochs: int) -> list[str]:
    """The ``epoch_dirs`` of a top-level manifest (no trailing slash)."""
    return [epoch_dir(epochs, e).rstrip("/") for e in range(epochs)]


def shard_name(epochs: int, epoch: int, file_idx: int, part: int, fmt: str) -> str:
    """A shard's path relative to the output (the manifest's paths drop the epoch prefix); its
    extension is the name of its format (``output.shards.FORMATS``)."""
    return f"{epoch_dir(epochs, epoch)}{DATA_DIR}/{file_idx:05d}-{part:05d}.{fmt}"


def shuffled_shard_name(epochs: int, epoch: int, index: int, fmt: str) -> str:
    """A shard of ``denoise shuffle``'s output (rows of every file, in the shuffled order)."""
    return f"{epoch_dir(epochs, epoch)}{DATA_DIR}/shuffled-{index:05d}.{fmt}"


#: written into a split's directory (``OUT/<split>/.denoise/split.json``): ``--overwrite`` and
#: the temporary sweep recognise a split directory by it
SPLIT_MARKER = "split.json"


def split_root(out: Path, split: str) -> Path:
    """The directory of a held-out split (a complete output with its own resume records)."""
    return out / split


def is_split_dir(p: Path) -> bool:
    """A directory a ``--split`` run made (it holds :data:`SPLIT_MARKER`; not a symlink)."""
    return p.is_dir() and not p.is_symlink() and (p / STATE_DIR / SPLIT_MARKER).is_file()


def tmp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before it is renamed into place."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


# --------------------------------------------------------------------------- run state


def state_dir(out: Path) -> Path:
    return out / STATE_DIR


def run_record(out: Path) -> Path:
    """The run identity (config fingerprint, tokenizer, inputs, part of a split)."""
    return out / STATE_DIR / "run.json"


def merge_record(out: Path) -> Path:
    """Written first into a merge's output: a rerun recognises an interrupted merge by it."""
    return out / STATE_DIR / "merge.json"


def shuffle_record(out: Path) -> Path:
    """Written first into the output of ``denoise shuffle``: a rerun recognises an interrupted
    shuffle by it."""
    return out / STATE_DIR / "shuffle.json"


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


def committed_parts(out: Path, file_idx: int) -> list[Path]:
    """The commit records of one input file (every epoch)."""
    return sorted(parts_dir(out).glob(f"E*-{file_idx:05d}-*.json"))


def file_state_patterns(epochs: int, file_idx: int) -> list[tuple[str, str]]:
    """(directory relative to the output, glob) of everything a run writes for one input file
    before it is finished: its commit records and carries, and its shards in every epoch."""
    pats = [(f"{STATE_DIR}/parts", f"E*-{file_idx:05d}-*")]
    pats += [(f"{epoch_dir(epochs, e)}{DATA_DIR}", f"{file_idx:05d}-*") for e in range(epochs)]
    return pats


def file_state_files(out: Path, epochs: int, file_idx: int) -> list[Path]:
    """Everything a run wrote for one unfinished input file (:func:`file_state_patterns`)."""
    return [p for d, pat in file_state_patterns(epochs, file_idx) for p in (out / d).glob(pat)]


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


def split_dirs(out: Path, dirs: dict[str, str]) -> dict[str, Path]:
    """The split directories of a top-level manifest's ``split_dirs`` (each path checked)."""
    return {k: output_path(out, v, f"{MANIFEST}: split_dirs entry") for k, v in dirs.items()}


def datasets(out: Path, epoch_dirs_: list[str] | None) -> list[tuple[str, Path]]:
    """The datasets of an output from its top-level manifest's ``epoch_dirs``:
    ``[("", out)]``, or one ``("epoch-k/", out/epoch-k)`` per epoch (each path checked with
    :func:`output_path`)."""
    if not epoch_dirs_:
        return [("", out)]
    return [(f"{d}/", output_path(out, d, f"{MANIFEST}: epoch_dirs entry")) for d in epoch_dirs_]


# --------------------------------------------------------------------------- safety


def output_path(root: str | Path, rel: object, what: str) -> Path:
    """``root / rel`` for a path ``rel`` read from one of the output's own files (``what`` says
    which, e.g. ``"denoise.json: shard path"``). Raises :class:`OutputError` unless ``rel`` is a
    relative, normalised path without ``..`` that stays inside ``root`` after resolving
    symlinks."""
    rootp = Path(root)
    bad = rel_problem(rel)
    if not bad:
        assert isinstance(rel, str)
        full = rootp / rel
        if not _has_symlink(rootp, rel):  # the common case: 2 lstat calls for data/x.arrow
            return full
        base = os.path.realpath(rootp)
        real = os.path.realpath(full)
        if os.path.commonpath([base, real]) != base or real == base:
            bad = "leads outside the output through a symlink"
        else:
            return full
    raise OutputError(
        f"{rootp}: {what} {rel!r} {bad}; a path in an output's own files must stay inside it "
        "(refusing to use it: the output was edited or crafted)"
    )


def rel_problem(rel: object) -> str:
    """What is wrong with a path read from an output ("" when nothing): the rules of
    :func:`output_path` that need no filesystem (an object store has no symlinks, so for a
    key under an output URL these are all of them)."""
    if not isinstance(rel, str) or not rel:
        return "is not a non-empty string"
    if "\x00" in rel or "\\" in rel:
        return "holds a NUL or backslash"
    pp = PurePosixPath(rel)
    if pp.is_absolute():
        return "is absolute"
    if ".." in pp.parts:
        return "contains '..'"
    if str(pp) != rel or rel == ".":
        return "is not normalised"
    return ""


def check_rel(root: str, rel: object, what: str) -> str:
    """``rel`` (a path read from the output at URL ``root``, or listed under it) if it passes
    :func:`rel_problem`, else :class:`OutputError` as :func:`output_path` raises it."""
    bad = rel_problem(rel)
    if bad:
        raise OutputError(
            f"{root}: {what} {rel!r} {bad}; a path in an output's own files must stay inside it "
            "(refusing to use it: the output was edited or crafted)"
        )
    assert isinstance(rel, str)
    return rel


def _has_symlink(root: Path, rel: str) -> bool:
    """Whether a component of ``rel`` under ``root`` is a symlink (missing ones are not)."""
    cur = str(root)
    for part in rel.split("/"):
        cur = os.path.join(cur, part)
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                return True
        except OSError:
            return False
    return False


def is_output_entry(name: str) -> bool:
    """Whether a top-level entry name is one a denoise output consists of."""
    return (
        name in (MANIFEST, STATE_DIR, DATA_DIR, *OUTPUT_FILES)
        or _EPOCH.fullmatch(name) is not None
        or name.startswith(TMP_PREFIX)
    )


#: Files in ``.denoise/`` that say what a directory is: a prepare run's identity, a merge's
#: parts, a shuffle's source. Written first after the lock, removed last by :func:`clear_output`.
MARKERS = ("run.json", "merge.json", "shuffle.json")


def is_denoise_output(d: str | Path) -> bool:
    """A complete (``denoise.json``) or partial (a marker in ``.denoise/``: :data:`MARKERS`)
    denoise output."""
    p = Path(d)
    return (p / MANIFEST).is_file() or any((p / STATE_DIR / m).is_file() for m in MARKERS)


def only_state(d: str | Path) -> bool:
    """``d`` holds nothing but ``.denoise/`` without a marker: a run killed after taking its lock
    and before writing its marker (or at the end of :func:`clear_output`)."""
    p = Path(d)
    return [e.name for e in p.iterdir()] == [STATE_DIR] and not is_denoise_output(p)


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def check_out_dir(out: str | Path) -> None:
    """Refuse a non-empty directory that is not a denoise output (with or without
    ``--overwrite``). Writes nothing."""
    p = Path(out)
    if not p.exists():
        return
    if not p.is_dir():
        raise OutputError(f"{p} exists and is not a directory")
    if is_denoise_output(p) or only_state(p):
        return
    names = sorted(e.name for e in p.iterdir())
    if names:
        raise OutputError(
            f"{p} is not empty and is not a denoise output (it holds {_few(names)}); refusing to "
            "write into it or delete anything there: choose an empty or new directory"
        )


def clear_output(out: str | Path, keep: Iterable[str] = ("lock",)) -> None:
    """Remove what a denoise output consists of (:func:`is_output_entry`) from ``out``, keeping
    ``.denoise/<keep>`` and every other entry. Symlinks are removed, never followed. The
    :data:`MARKERS` go last, so that a clear cut short is still recognised as an output; the
    manifests go first (the top one, then each epoch's before its shards), so that a reader never
    sees a manifest listing shards already removed."""
    p = Path(out)
    entries = sorted(p.iterdir(), key=lambda e: (e.name == STATE_DIR, e.name != MANIFEST, e.name))
    for e in entries:
        if not is_output_entry(e.name) and not is_split_dir(e):
            continue
        if _EPOCH.fullmatch(e.name) and e.is_dir() and not e.is_symlink():
            (e / MANIFEST).unlink(missing_ok=True)
            _remove(e)
        elif e.name == STATE_DIR and e.is_dir() and not e.is_symlink():
            for q in sorted(e.iterdir(), key=lambda q: (q.name in MARKERS, q.name)):
                if q.name not in keep:
                    _remove(q)
        else:
            _remove(e)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def remove_temporaries(out: str | Path) -> list[Path]:
    """Remove the ``.tmp-*`` files (incomplete shards, manifests, commit records) a killed run
    left anywhere the tool writes: the output, ``data/``, every ``epoch-K/`` and its ``data/``,
    ``.denoise/`` and its subdirectories. Call it only while holding the output's lock."""
    p = Path(out)
    dirs = [p, p / DATA_DIR]
    if p.is_dir():
        for e in sorted(p.iterdir()):
            if _EPOCH.fullmatch(e.name) and e.is_dir() and not e.is_symlink():
                dirs += [e, e / DATA_DIR]
    st = p / STATE_DIR
    if st.is_dir() and not st.is_symlink():
        dirs += [st, *(q for q in sorted(st.iterdir()) if q.is_dir() and not q.is_symlink())]
    removed = []
    if p.is_dir():
        for e in sorted(p.iterdir()):
            if is_split_dir(e):
                removed += remove_temporaries(e)
    for d in dirs:
        if not d.is_dir() or d.is_symlink():
            continue
        for f in d.glob(f"{TMP_PREFIX}*"):
            if not f.is_dir() or f.is_symlink():
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def _inside(child: str, parent: str) -> bool:
    return child == parent or os.path.commonpath([child, parent]) == parent


def check_no_overlap(
    out: str | Path, input_dirs: Iterable[str | Path], input_files: Iterable[str | Path]
) -> None:
    """Refuse (before any work) an output that is an input directory or inside one, the
    directory of an input file, or that contains an input. Paths are compared resolved."""
    o = os.path.realpath(out)
    for d in input_dirs:
        r = os.path.realpath(d)
        if _inside(o, r):
            rel = "is" if o == r else "is inside"
            raise OutputError(f"the output {out} {rel} the input directory {d}; choose another")
        if _inside(r, o):
            raise OutputError(f"the input directory {d} is inside the output {out}")
    for f in input_files:
        r = os.path.realpath(f)
        if os.path.dirname(r) == o:
            raise OutputError(f"the output {out} is the directory of the input {f}; choose another")
        if _inside(r, o):
            raise OutputError(f"the input {f} is inside the output {out}; choose another output")


@contextlib.contextmanager
def locked_output(out: Path, what: str = "denoise prepare") -> Iterator[None]:
    """Hold ``out/.denoise/lock`` (an exclusive ``flock``) for the duration."""
    (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(out / STATE_DIR / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{out} is locked by another running `{what}`; wait for it or use another "
                "output directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)

"""What a denoise output directory consists of, and the checks that keep the tool inside it.

- :func:`output_path` is the one check for every path read from an output's own files (a
  manifest's shard paths and ``epoch_dirs``, ``state.json``, commit records): relative,
  normalised, no ``..``, and still inside the output once symlinks are resolved.
- :func:`check_out_dir` / :func:`clear_output`: a non-empty directory is written into (or
  cleared by ``--overwrite``) only if it is recognisably a denoise output, and clearing removes
  only the entries an output consists of (:func:`is_output_entry`).
- :func:`check_no_overlap`: the output and the inputs never contain each other.
- :func:`remove_temporaries`: ``.tmp-*`` files a killed run left in any directory the tool
  writes.
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

from .errors import OutputError

MANIFEST = "denoise.json"
STATE_DIR = ".denoise"
TMP_PREFIX = ".tmp-"
#: Top-level files of an output besides the manifest (Hugging Face ``load_from_disk`` files).
OUTPUT_FILES = ("tokenizer.json", "state.json", "dataset_info.json")
_EPOCH = re.compile(r"epoch-\d+")


def output_path(root: str | Path, rel: object, what: str) -> Path:
    """``root / rel`` for a path ``rel`` read from one of the output's own files (``what`` says
    which, e.g. ``"denoise.json: shard path"``). Raises :class:`OutputError` unless ``rel`` is a
    relative, normalised path without ``..`` that stays inside ``root`` after resolving
    symlinks."""
    rootp = Path(root)
    bad = ""
    if not isinstance(rel, str) or not rel:
        bad = "is not a non-empty string"
    elif "\x00" in rel or "\\" in rel:
        bad = "holds a NUL or backslash"
    else:
        pp = PurePosixPath(rel)
        if pp.is_absolute():
            bad = "is absolute"
        elif ".." in pp.parts:
            bad = "contains '..'"
        elif str(pp) != rel or rel == ".":
            bad = "is not normalised"
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
        name in (MANIFEST, STATE_DIR, "data", *OUTPUT_FILES)
        or _EPOCH.fullmatch(name) is not None
        or name.startswith(TMP_PREFIX)
    )


#: Files in ``.denoise/`` that say what a directory is: a prepare run's identity, a merge's
#: parts. Written first after the lock, removed last by :func:`clear_output`.
MARKERS = ("run.json", "merge.json")


def is_denoise_output(d: str | Path) -> bool:
    """A complete (``denoise.json``) or partial (``.denoise/run.json`` or ``merge.json``) denoise
    output."""
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
    :data:`MARKERS` go last, so that a clear cut short is still recognised as an output."""
    p = Path(out)
    entries = sorted(p.iterdir(), key=lambda e: (e.name == STATE_DIR, e.name))
    for e in entries:
        if not is_output_entry(e.name):
            continue
        if e.name == STATE_DIR and e.is_dir() and not e.is_symlink():
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
    dirs = [p, p / "data"]
    if p.is_dir():
        for e in sorted(p.iterdir()):
            if _EPOCH.fullmatch(e.name) and e.is_dir() and not e.is_symlink():
                dirs += [e, e / "data"]
    st = p / STATE_DIR
    if st.is_dir() and not st.is_symlink():
        dirs += [st, *(q for q in sorted(st.iterdir()) if q.is_dir() and not q.is_symlink())]
    removed = []
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

"""Finding the input files: files, directories, globs and fsspec URLs -> :class:`InputFile` s.

Each spec is a file, a directory (walked recursively; hidden entries and denoise outputs are
skipped) or a glob (``**`` allowed), local or a URL listed through :mod:`denoise_cli.source.fs`.
Only the extensions in ``ACCEPTED_SUFFIXES`` are taken from directories and globs; a file named
explicitly with another extension, a missing path, or a spec that yields nothing is a
:class:`~denoise_cli.errors.ConfigError`. Every file gets a stable manifest *name* (its path
relative to where it was found; colliding names get leading components of their root), so the
result depends only on the files. Entries with an input extension that cannot be read as a
regular file (``not_regular_file``, ``dangling_symlink``) are reported through ``ignored``.
Details: docs/input.md.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError
from ..output.layout import is_denoise_output
from .fs import find_remote, is_url

Compression = Literal["zst", "gz", "none", "parquet"]

# suffix -> compression; longest suffixes first so ".jsonl.zst" wins over ".zst"-less forms
_SUFFIXES: tuple[tuple[str, Compression], ...] = (
    (".jsonl.zstd", "zst"),
    (".json.zstd", "zst"),
    (".jsonl.zst", "zst"),
    (".json.zst", "zst"),
    (".jsonl.gz", "gz"),
    (".json.gz", "gz"),
    (".jsonl", "none"),
    (".json", "none"),
    (".parquet", "parquet"),
)
ACCEPTED_SUFFIXES: tuple[str, ...] = tuple(s for s, _ in _SUFFIXES)


@dataclass(frozen=True)
class InputFile:
    """One input file. ``name`` is the stable manifest name (see :func:`find_inputs`)."""

    path: str
    name: str
    size: int
    compression: Compression
    # fsspec options for a URL path (--storage-options); not part of the file's identity
    storage_options: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def compression_of(path: str) -> Compression | None:
    """The compression implied by an accepted extension, or ``None`` if not an input file."""
    low = path.lower()
    for suffix, comp in _SUFFIXES:
        if low.endswith(suffix):
            return comp
    return None


def _has_magic(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def _glob_root(pattern: str) -> str:
    """The literal directory prefix of a glob pattern (``data/**/*.zst`` -> ``data``)."""
    parts = pattern.split(os.sep)
    lit: list[str] = []
    for p in parts[:-1]:
        if _has_magic(p):
            break
        lit.append(p)
    root = os.sep.join(lit)
    if not root:
        root = os.sep if pattern.startswith(os.sep) else "."
    return root


Ignored = dict[str, list[str]]


def _note_not_file(path: str, ignored: Ignored | None) -> None:
    """Record why an entry with an input extension is not read."""
    if ignored is None or os.path.isdir(path):
        return
    if os.path.islink(path) and not os.path.exists(path):
        reason = "dangling_symlink"
    else:
        reason = "not_regular_file"
    ignored.setdefault(reason, []).append(path)


def _walk(root: str, ignored: Ignored | None = None) -> list[str]:
    """Input files under ``root`` (recursive), skipping hidden files and directories and
    denoise outputs."""
    out: list[str] = []

    def onerror(e: OSError) -> None:
        raise ConfigError(f"cannot list input directory {e.filename}: {e.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        if is_denoise_output(dirpath):  # never read a denoise output's own files as input
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or compression_of(fn) is None:
                continue
            full = os.path.join(dirpath, fn)
            if os.path.isfile(full):
                out.append(full)
            else:
                _note_not_file(full, ignored)
    return out


@dataclass
class _Found:
    path: str  # absolute
    rel: str  # name relative to root ("/"-separated)
    root: str  # absolute root directory it was found under


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _expand(spec: str, ignored: Ignored | None = None) -> list[_Found]:
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        root = os.path.abspath(path)
        if is_denoise_output(root):
            raise ConfigError(
                f"input directory {spec} is a denoise output: its files are not inputs"
            )
        here: Ignored = {}
        files = _walk(root, here)
        for reason, paths in here.items():
            if ignored is not None:
                ignored.setdefault(reason, []).extend(paths)
        if not files:
            odd = "; ".join(
                f"{reason}: {', '.join(os.path.basename(p) for p in paths[:3])}"
                for reason, paths in sorted(here.items())
            )
            raise ConfigError(
                f"input directory {spec} contains no input files ({', '.join(ACCEPTED_SUFFIXES)})"
                + (f"; not read ({odd})" if odd else "")
            )
        return [_Found(os.path.abspath(p), _rel(p, root), root) for p in files]
    if os.path.exists(path):
        if not os.path.isfile(path):
            raise ConfigError(f"input {spec} is not a regular file or directory")
        if compression_of(path) is None:
            raise ConfigError(
                f"input file {spec} has an unsupported extension; expected one of "
                f"{', '.join(ACCEPTED_SUFFIXES)}"
            )
        ap = os.path.abspath(path)
        return [_Found(ap, os.path.basename(ap), os.path.dirname(ap))]
    if not _has_magic(path):
        raise ConfigError(f"input {spec} does not exist")
    root = os.path.abspath(_glob_root(path))
    found: list[_Found] = []
    matches = sorted(glob.glob(path, recursive=True))
    for m in matches:
        if os.path.isdir(m):
            found.extend(_Found(os.path.abspath(p), _rel(p, root), root) for p in _walk(m, ignored))
        elif compression_of(m) is not None and not is_denoise_output(os.path.dirname(m) or "."):
            if os.path.isfile(m):
                found.append(_Found(os.path.abspath(m), _rel(m, root), root))
            else:
                _note_not_file(m, ignored)
    if not found:
        what = "matches nothing" if not matches else "matches no input files"
        raise ConfigError(f"input glob {spec} {what} ({', '.join(ACCEPTED_SUFFIXES)})")
    return found


def _disambiguate(found: list[_Found]) -> list[str]:
    """Unique names: colliding names get more and more components of their root prepended,
    finally the absolute path (unique, since paths are de-duplicated)."""
    depth = [0] * len(found)

    def name(i: int) -> str:
        f = found[i]
        if depth[i] == 0:
            return f.rel
        comps = [c for c in f.root.split(os.sep) if c]
        if depth[i] > len(comps):
            return f.path.lstrip(os.sep).replace(os.sep, "/")
        return "/".join([*comps[len(comps) - depth[i] :], f.rel])

    while True:
        names = [name(i) for i in range(len(found))]
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        clash = [ix for ix in groups.values() if len(ix) > 1]
        if not clash:
            return names
        for ix in clash:
            for i in ix:
                depth[i] += 1


def find_inputs(
    specs: Sequence[str],
    storage_options: dict[str, Any] | None = None,
    ignored: Ignored | None = None,
) -> list[InputFile]:
    """Expand files, directories and globs into a sorted, de-duplicated list of inputs.

    A spec that is a URL is listed through fsspec with ``storage_options``.

    Raises :class:`ConfigError` for a missing path, a glob or directory without input files, an
    explicitly named file with an unsupported extension, or no specs at all. Entries found in
    directories or globs that have an input extension but cannot be read as a file are added to
    ``ignored`` (reason -> paths) when given.
    """
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ConfigError("no input files given")
    seen: set[str] = set()
    found: list[_Found] = []
    remote_size: dict[str, int] = {}
    for spec in specs:
        if is_url(spec):
            remote = find_remote(
                spec,
                storage_options,
                lambda p: compression_of(p) is not None,
                ", ".join(ACCEPTED_SUFFIXES),
            )
            remote_size.update((r.url, r.size) for r in remote)
            expanded = [_Found(r.url, r.rel, r.root) for r in remote]
        else:
            expanded = _expand(spec, ignored)
        for f in expanded:
            key = f.path if f.path in remote_size else os.path.realpath(f.path)
            if key not in seen:
                seen.add(key)
                found.append(f)
    if not found:  # pragma: no cover - every spec either yields files or raises
        raise ConfigError("no input files found in " + ", ".join(specs))
    names = _disambiguate(found)
    out: list[InputFile] = []
    for f, n in zip(found, names, strict=True):
        comp = compression_of(f.path)
        assert comp is not None
        if f.path in remote_size:
            size, opts = remote_size[f.path], storage_options
        else:
            opts = None
            try:
                size = os.stat(f.path).st_size
            except OSError as e:
                raise ConfigError(f"cannot stat input {f.path}: {e.strerror}") from None
        out.append(
            InputFile(path=f.path, name=n, size=size, compression=comp, storage_options=opts)
        )
    out.sort(key=lambda x: x.name)
    return out

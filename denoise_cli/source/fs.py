"""Inputs behind fsspec URLs: ``s3://``, ``gs://``, ``hf://``, ``http(s)://``, ``file://``, ...

A URL spec is expanded like a local one (:func:`find_remote`): a file, a "directory" (every
object under the prefix, recursively; hidden components skipped) or a glob (``**`` allowed),
keeping the files whose name an ``accept`` predicate takes. Each file gets a manifest name
relative to the directory or the glob's literal prefix, so ``s3://bucket/raw/`` names its files
exactly as a local copy of ``raw/`` would (same names, same examples).

Credentials and endpoints come the standard way of each filesystem (for S3: the AWS
environment variables including ``AWS_ENDPOINT_URL``, profiles); ``storage_options`` (the
``--storage-options`` JSON) are passed to the filesystem as keyword arguments. A filesystem
package that is missing is a :class:`~denoise_cli.errors.ConfigError` naming the extra to
install (``pip install 'denoise-cli[s3]'``). Files are opened with :func:`open_remote` in the
worker that reads them (filesystems are created per process and cached by fsspec).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from ..errors import ConfigError

__all__ = [
    "EXTRAS",
    "REACH_HINTS",
    "RemoteFile",
    "find_remote",
    "is_url",
    "open_remote",
    "parse_storage_options",
]

# URL scheme -> the denoise-cli extra that installs its filesystem
EXTRAS: dict[str, str] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "hf": "hf",
    "http": "http",
    "https": "http",
}

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")


def is_url(spec: str) -> bool:
    """True for ``scheme://...`` (also fsspec chains such as ``simplecache::s3://...``)."""
    return bool(_URL.match(spec))


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """The ``--storage-options`` JSON object (``None`` or empty: no options)."""
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"--storage-options is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ConfigError("--storage-options must be a JSON object")
    return obj


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


#: what to check when a store cannot be reached, per extra (appended to listing errors)
REACH_HINTS: dict[str, str] = {
    "hf": "hf:// reads the Hub through huggingface_hub ('denoise-cli[hf]'); offline? check the "
    "network, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN",
}


def _hint(url: str) -> str:
    scheme = url.split("://", 1)[0].split("::")[-1].lower()
    hint = REACH_HINTS.get(EXTRAS.get(scheme, ""))
    return f" ({hint})" if hint else ""


def _filesystem(url: str, options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URL; ConfigError when it cannot be had."""
    from fsspec.core import url_to_fs

    scheme = url.split("://", 1)[0].split("::")[-1].lower()
    try:
        fs, path = url_to_fs(url, **dict(options or {}))
        return fs, str(path)
    except ImportError:
        extra = EXTRAS.get(scheme)
        hint = f"pip install 'denoise-cli[{extra}]'" if extra else "install its fsspec package"
        raise ConfigError(f"{scheme}:// inputs need an optional dependency: {hint}") from None
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise ConfigError(f"unsupported URL scheme {scheme}:// in {url}") from None
        raise ConfigError(f"cannot use {url}: {_one_line(e)}{_hint(url)}") from None
    except Exception as e:
        raise ConfigError(f"cannot use {url}: {_one_line(e)}{_hint(url)}") from None


@dataclass(frozen=True)
class RemoteFile:
    """One file found under a URL: its full ``url``, the name ``rel`` relative to ``root`` (the
    directory or literal glob prefix, as a URL) and its ``size`` in bytes."""

    url: str
    rel: str
    root: str
    size: int


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _hidden(rel: str) -> bool:
    return any(c.startswith(".") for c in rel.split("/"))


def _info(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        return None
    return info


def find_remote(
    spec: str,
    storage_options: Mapping[str, Any] | None,
    accept: Callable[[str], bool],
    accepted: str,
) -> list[RemoteFile]:
    """Expand one URL (file, directory or glob) into its input files, sorted by URL.

    ``accept(name)`` says whether a file name is an input; ``accepted`` lists the accepted
    extensions for messages. Raises :class:`ConfigError` like the local expansion does: a
    missing path, no input files, an explicit file with another extension, a listing failure.
    """
    fs, path = _filesystem(spec, storage_options)
    path = path.rstrip("/") or path

    def url(p: str) -> str:
        return str(fs.unstrip_protocol(p))

    def size(info: Mapping[str, Any]) -> int:
        return int(info.get("size") or 0)

    def under(root: str) -> list[tuple[str, int]]:
        found: dict[str, Any] = fs.find(root, detail=True)
        out = []
        for p, info in sorted(found.items()):
            rel = p[len(root) :].lstrip("/")
            if info.get("type") == "file" and not _hidden(rel) and accept(p):
                out.append((p, size(info)))
        return out

    try:
        fs.invalidate_cache()  # a listing cached by an earlier run in this process may be stale
        if _has_magic(path):
            parts = path.split("/")
            lit = []
            for c in parts[:-1]:
                if _has_magic(c):
                    break
                lit.append(c)
            root = "/".join(lit)
            matches: dict[str, Any] = fs.glob(path, detail=True)
            files: list[tuple[str, int]] = []
            for p, info in sorted(matches.items()):
                if info.get("type") == "directory":
                    files.extend(under(p))
                elif accept(p) and not _hidden(p[len(root) :].lstrip("/")):
                    files.append((p, size(info)))
            if not files:
                what = "matches nothing" if not matches else "matches no input files"
                raise ConfigError(f"input glob {spec} {what} ({accepted})")
        else:
            # a name with an input extension is asked about first as a file: over http(s),
            # isdir() would download the whole file to look for links in it
            info = _info(fs, path) if accept(path) else None
            if info is not None and info.get("type") != "directory":
                root = path.rsplit("/", 1)[0] if "/" in path else ""
                files = [(path, size(info))]
            elif fs.isdir(path):
                root = path
                files = under(path)
                if not files:
                    raise ConfigError(
                        f"input directory {spec} contains no input files ({accepted})"
                    )
            elif _info(fs, path) is None:
                raise ConfigError(f"input {spec} does not exist")
            else:
                raise ConfigError(
                    f"input file {spec} has an unsupported extension; expected one of {accepted}"
                )
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"input {spec} does not exist") from None
    except Exception as e:
        raise ConfigError(f"cannot list input {spec}: {_one_line(e)}{_hint(spec)}") from None
    return [RemoteFile(url(p), p[len(root) :].lstrip("/"), url(root), n) for p, n in files]


def open_remote(url: str, storage_options: Mapping[str, Any] | None) -> IO[bytes]:
    """Open a URL for binary reading. Failures are :class:`OSError` (the reader reports them
    as an unreadable file); a missing filesystem package is a :class:`ConfigError`."""
    fs, path = _filesystem(url, storage_options)
    try:
        fh: IO[bytes] = fs.open(path, "rb")
    except OSError:
        raise
    except Exception as e:
        raise OSError(_one_line(e)) from None
    return fh

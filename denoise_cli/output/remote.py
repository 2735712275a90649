"""A denoise output behind an fsspec URL (``s3://``, ``gs://``, ``file://``, ...): the same keys
as a local output (``output.layout`` names them all), reached through fsspec.

:class:`RemoteOutput` is an output prefix: reads, listings, uploads and the ownership rules of
``layout`` for a prefix (a foreign prefix is refused, ``--overwrite`` removes only our own
entries, the manifest first). Every key listed or read from the store goes through
``layout.rel_problem``. An object PUT is atomic (a key is absent or whole); on a plain
filesystem (``file://``) uploads go to a temporary name and are renamed. :meth:`RemoteOutput.lock`
is a lock object (host, pid, token), refreshed while held and taken over when its holder is
dead (same host) or silent for ``LOCK_STALE_S``. It is created only if absent where the
filesystem can (fsspec's ``mode="create"``: S3 conditional writes; a local hard link) and taken
over only if still the stale version read (S3 ``If-Match``); elsewhere it is best-effort (write,
read back) and one writer per OUT is the rule. :func:`localize` is the read side: a copy of
a complete output (manifest, tokenizer, shards) in a local cache directory, keyed by the URL
and the manifest's digest, so every reader (``open_dataset``, ``verify``, ``stats``, ...) runs
unchanged on local, memory-mappable files. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError, OutputError
from .layout import (
    DATA_DIR,
    MANIFEST,
    MARKERS,
    STATE_DIR,
    TMP_PREFIX,
    check_rel,
    is_output_entry,
    rel_problem,
)

#: URL scheme -> the denoise-cli extra that installs its filesystem
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}
LOCK = f"{STATE_DIR}/lock"
LOCK_REFRESH_S = 60.0
LOCK_STALE_S = 600.0
#: where :func:`localize` keeps its copies unless told otherwise
CACHE_ENV = "DENOISE_CACHE_DIR"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(::[A-Za-z][A-Za-z0-9+.-]*)*://")


def is_output_url(out: str | os.PathLike[str]) -> bool:
    """Whether an OUT argument is a URL (``scheme://...``) rather than a local path."""
    return isinstance(out, str) and bool(_URL.match(out))


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class RemoteOutput:
    """An output prefix behind a URL. Relative keys are ``layout``'s names (``data/x.arrow``)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.url = url.rstrip("/")
        self.options = dict(storage_options or {})
        scheme = url.split("://", 1)[0].split("::")[-1].lower()
        try:
            self.fs, root = url_to_fs(url, **self.options)
        except ImportError:
            extra = EXTRAS.get(scheme)
            hint = f"pip install 'denoise-cli[{extra}]'" if extra else "install its fsspec package"
            raise ConfigError(f"{scheme}:// outputs need an optional dependency: {hint}") from None
        except Exception as e:
            raise ConfigError(f"cannot use the output {url}: {_one_line(e)}") from None
        self.root = str(root).rstrip("/")
        if not self.root or self.root == "/":
            raise ConfigError(f"{url}: give a directory or a prefix, not the filesystem's root")
        self.atomic_put = "local" in getattr(self.fs, "protocol", ()) or "file" in getattr(
            self.fs, "protocol", ()
        )

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, Any]]]:
        return (RemoteOutput, (self.url, self.options))

    def __str__(self) -> str:
        return self.url

    def key(self, rel: str) -> str:
        return f"{self.root}/{check_rel(self.url, rel, 'key')}"

    def refresh(self) -> None:
        """Forget cached listings (another process may have written since)."""
        self.fs.invalidate_cache()

    # ------------------------------------------------------------------ reading

    def read(self, rel: str) -> bytes | None:
        """The bytes under ``rel``, or None when it does not exist."""
        try:
            data: bytes = self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None
        return data

    def read_json(self, rel: str) -> dict[str, Any] | None:
        data = self.read(rel)
        if data is None:
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise OutputError(f"{self.url}/{rel} is not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise OutputError(f"{self.url}/{rel} is not a JSON object")
        return obj

    def listdir(self, rel: str = "") -> dict[str, int]:
        """Files directly under ``rel`` (name -> size); subdirectories as size -1. Names that
        fail ``rel_problem`` are refused."""
        path = self.key(rel) if rel else self.root
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[str, int] = {}
        for e in entries:
            name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            if str(e["name"]).rstrip("/") == path:
                continue  # some filesystems list a file as itself
            check_rel(self.url, name, f"name listed under {rel or '.'}")
            if "/" in name:
                raise OutputError(f"{self.url}: listed name {name!r} under {rel!r} holds a '/'")
            out[name] = int(e.get("size") or 0) if e.get("type") == "file" else -1
        return out

    def size(self, rel: str) -> int | None:
        try:
            info = self.fs.info(self.key(rel))
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type") == "file" else None

    def get(self, rel: str, dest: Path) -> None:
        """Download ``rel`` to ``dest`` (written under a temporary name, then renamed)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}.{os.getpid()}")
        try:
            self.fs.get_file(self.key(rel), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing

    def put(self, src: Path, rel: str) -> None:
        """Upload a local file under ``rel``: whole or not at all."""
        key = self.key(rel)
        if self.atomic_put:
            parent, name = key.rsplit("/", 1)
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/{TMP_PREFIX}{name}.{os.getpid()}"
            self.fs.put_file(str(src), tmp)
            self.fs.mv(tmp, key)
        else:
            self.fs.put_file(str(src), key)

    def write(self, rel: str, data: bytes) -> None:
        key = self.key(rel)
        if self.atomic_put:
            parent, name = key.rsplit("/", 1)
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{parent}/{TMP_PREFIX}{name}.{os.getpid()}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, key)
        else:
            self.fs.pipe_file(key, data)

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.key(rel), recursive=True)

    # ------------------------------------------------------------------ ownership

    def is_denoise_output(self) -> bool:
        """A complete (manifest) or partial (a run's or a merge's marker) denoise output."""
        if self.size(MANIFEST) is not None:
            return True
        return any(self.size(f"{STATE_DIR}/{m}") is not None for m in MARKERS)

    def check_out(self) -> None:
        """Refuse a prefix that holds anything and is not a denoise output (``layout``'s
        ``check_out_dir`` for a prefix). Writes nothing."""
        self.refresh()
        names = sorted(self.listdir())
        if not names or self.is_denoise_output() or names == [STATE_DIR]:
            return
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise OutputError(
            f"{self.url} is not empty and is not a denoise output (it holds {shown}); refusing "
            "to write into it or delete anything there: choose an empty or new prefix"
        )

    def clear(self) -> None:
        """Remove what an output consists of (``layout.is_output_entry``), keeping the lock and
        every other key: the manifests first (a reader never sees a manifest whose shards are
        going), the markers last (a clear cut short is still recognised as an output)."""
        self.refresh()
        names = self.listdir()
        if MANIFEST in names:
            self.remove(MANIFEST)
        for name in sorted(names):
            if name.startswith("epoch-") and is_output_entry(name):
                self.remove(f"{name}/{MANIFEST}")
        for name in sorted(names):
            if is_output_entry(name) and name not in (MANIFEST, STATE_DIR):
                self.remove(name)
        state = self.listdir(STATE_DIR)
        for name in sorted(state, key=lambda n: (n in MARKERS, n)):
            if name != "lock":
                self.remove(f"{STATE_DIR}/{name}")

    def remove_temporaries(self) -> None:
        """Remove the ``.tmp-*`` keys a killed upload left (only ``file://`` makes them)."""
        if not self.atomic_put:
            return
        self.refresh()
        with contextlib.suppress(FileNotFoundError):
            for key in self.fs.find(self.root):
                rel = str(key)[len(self.root) + 1 :]
                if not rel_problem(rel) and rel.rsplit("/", 1)[-1].startswith(TMP_PREFIX):
                    self.fs.rm(key)

    @property
    def conditional_writes(self) -> bool:
        """Whether a key can be replaced only if it is still the version read (S3's
        ``If-Match``; s3fs passes it through)."""
        return bool({"s3", "s3a"} & set(getattr(self.fs, "protocol", ())))

    def _read_lock(self) -> tuple[dict[str, Any] | None, str | None]:
        """The lock object and, where :attr:`conditional_writes`, its ETag (read before and
        after the content: a lock replaced in between is reported, not guessed at)."""
        if not self.conditional_writes:
            return self.read_json(LOCK), None

        def etag() -> str | None:
            try:
                tag = self.fs.info(self.key(LOCK)).get("ETag")
            except FileNotFoundError:
                return None
            return None if tag is None else str(tag)

        before = etag()
        held = self.read_json(LOCK)
        self.refresh()
        if etag() != before:
            raise OutputError(f"{self.url}/{LOCK} changed while it was read: another run is there")
        return held, before

    def _put_lock(self, data: bytes, held_etag: str | None, replacing: bool) -> bool:
        """Write the lock object: created only if absent where the store can (fsspec's
        ``mode="create"``: S3's ``If-None-Match``; :meth:`_link_new` locally), or replacing only the
        stale version read (``If-Match``). False when another run got there first; a store
        that offers neither gets a plain write (the read-back in :meth:`lock` decides)."""
        key = self.key(LOCK)
        if self.atomic_put and not replacing:
            return self._link_new(key, data)
        try:
            if not replacing:
                self.fs.pipe_file(key, data, mode="create")
            elif held_etag is not None:
                self.fs.pipe_file(key, data, IfMatch=held_etag)
            else:
                self.write(LOCK, data)
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError, ValueError):  # no exclusive create here
            self.write(LOCK, data)
        except OSError:
            if not (replacing and held_etag is not None):
                raise
            # a failed If-Match (412: another run replaced the lock) or the store's own error
            self.refresh()
            if self.read_json(LOCK) is not None:
                return False
            raise
        return True

    def _link_new(self, key: str, data: bytes) -> bool:
        """On a plain filesystem: ``data`` under ``key`` only if ``key`` is absent, whole or not
        at all (written under a temporary name, then hard-linked: ``link`` fails on an existing
        name, and a kill leaves no half-written lock). A filesystem without hard links gets
        the ordinary atomic write (the read-back in :meth:`lock` decides)."""
        parent = key.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/{TMP_PREFIX}lock.{os.getpid()}.{secrets.token_hex(4)}"
        self.fs.pipe_file(tmp, data)
        try:
            os.link(tmp, key)
        except (FileExistsError, FileNotFoundError):
            # the lock exists, or the run holding it removed our temporary (remove_temporaries)
            return False
        except OSError:  # no hard links here
            self.fs.mv(tmp, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return True

    @contextlib.contextmanager
    def lock(self, what: str = "denoise prepare") -> Iterator[None]:
        """Hold the lock object ``.denoise/lock`` for the duration (see the module docstring:
        atomic where the store offers conditional writes, best-effort elsewhere)."""
        me = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
        self.refresh()
        held, etag = self._read_lock()
        if held is not None and not self._stale(held):
            raise OutputError(
                f"{self.url} is locked by a running `{what}` (host {held.get('host')}, pid "
                f"{held.get('pid')}); wait for it, or delete {self.url}/{LOCK} if no run is "
                "writing there"
            )
        data = orjson.dumps({**me, "time": time.time()})
        if not self._put_lock(data, etag, replacing=held is not None):
            raise OutputError(f"{self.url}: another `{what}` took the lock at the same time")
        self.refresh()
        now = self.read_json(LOCK)
        if now is None or now.get("token") != me["token"]:
            raise OutputError(f"{self.url}: another `{what}` took the lock at the same time")
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(LOCK_REFRESH_S):
                with contextlib.suppress(Exception):
                    self.write(LOCK, orjson.dumps({**me, "time": time.time()}))

        t = threading.Thread(target=beat, name="denoise-lock", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(timeout=5)
            with contextlib.suppress(Exception):
                self.refresh()
                cur = self.read_json(LOCK)
                if cur is not None and cur.get("token") == me["token"]:
                    self.remove(LOCK)

    @staticmethod
    def _stale(held: Mapping[str, Any]) -> bool:
        if held.get("host") == socket.gethostname():
            try:
                os.kill(int(held.get("pid", 0)), 0)
            except (ProcessLookupError, ValueError, OverflowError):
                return True
            except PermissionError:
                return False
            return int(held.get("pid", 0)) <= 0
        return time.time() - float(held.get("time", 0)) > LOCK_STALE_S


# --------------------------------------------------------------------------- read side


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "denoise" / "outputs"


def _wanted(rel: str) -> bool:
    """Whether :func:`localize` copies a key: the output's entries, not its resume state
    (except the markers ``merge`` reads) and not temporaries."""
    parts = rel.split("/")
    if not is_output_entry(parts[0]) or parts[-1].startswith(TMP_PREFIX):
        return False
    if parts[0] == STATE_DIR:
        return len(parts) == 2 and parts[1] in MARKERS
    return True


def localize(
    url: str,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """A local copy of the complete output at ``url``: ``cache_dir`` (default
    ``$DENOISE_CACHE_DIR`` or ``~/.cache/denoise/outputs``) / a key of the URL and its
    manifest's sha256. Files already there with the listed size are kept (they were written
    whole, under a temporary name), the rest downloaded; the manifest is written last. Raises
    :class:`OutputError` when the URL holds no manifest (not a complete output)."""
    remote = RemoteOutput(url, storage_options)
    remote.refresh()
    manifest = remote.read(MANIFEST)
    if manifest is None:
        raise OutputError(
            f"{url} has no {MANIFEST}: not a denoise output, or `denoise prepare` has not "
            "finished there"
        )
    digest = hashlib.sha256(manifest).hexdigest()
    name = hashlib.sha256(f"{remote.url}\n{digest}".encode()).hexdigest()[:24]
    dest = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = dest / name
    found: dict[str, Any] = remote.fs.find(remote.root, detail=True)
    for key, info in sorted(found.items()):
        rel = str(key)[len(remote.root) :].lstrip("/")
        if info.get("type") != "file" or rel == MANIFEST or not _wanted(rel):
            continue
        check_rel(remote.url, rel, "key")
        local = dest / rel
        if local.is_file() and local.stat().st_size == int(info.get("size") or 0):
            continue
        remote.get(rel, local)
    (dest / DATA_DIR).mkdir(parents=True, exist_ok=True)
    top = dest / MANIFEST
    if not top.is_file() or top.read_bytes() != manifest:
        tmp = dest / f"{TMP_PREFIX}{MANIFEST}.{os.getpid()}"
        tmp.write_bytes(manifest)
        os.replace(tmp, top)
    return dest

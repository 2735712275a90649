"""Resume records of a run under ``OUT/.denoise``: after a part's shard is renamed into place, a
commit record stores the resume state (records consumed, the chunker's next group and stream
offset, the un-chunked tokens as ``.npy``, the cumulative counters); a finished input file gets
a file record. A rerun skips finished files and continues an unfinished one from its last
committed part whose shard exists with the recorded size, unless the input's bytes changed
since (each commit records the SHA-256 of the input bytes consumed). A run into an object store
stages under a local directory and registers a :class:`Mirror` for it (:func:`mirror_to`):
every commit is then published (shard, carry, record, in that order) and the shards of
resumed parts are looked up in the store. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from ..errors import OutputError
from ..output.layout import (
    STATE_DIR,
    carry_name,
    committed_parts,
    file_record,
    file_state_files,
    output_path,
    part_record,
)
from ..output.manifest import dumps
from ..output.shards import atomic_save_npy, atomic_write_bytes
from ..source.decompress import open_input
from ..source.discover import InputFile
from ..source.fingerprint import prefix_sha256
from ..source.read import FileStats
from ..source.units import InputUnit, unit_sha256


class Mirror(Protocol):
    """Where the commits under a staging directory are published (``prepare.publish``)."""

    def shard_ok(self, rel: str, size: int) -> bool:
        """Whether the published shard ``rel`` exists with ``size`` bytes."""
        ...

    def committed(self, rels: Sequence[str]) -> None:
        """Publish these files (paths relative to the staging directory), in this order."""
        ...

    def forget(self, file_idx: int) -> None:
        """Remove what was published for an unfinished input file."""
        ...


#: staging directory -> its mirror, in the process that runs the unit
_MIRRORS: dict[str, Mirror] = {}


def mirror_to(out: Path, mirror: Mirror | None) -> None:
    """Publish what is committed under ``out`` through ``mirror`` (None: stop)."""
    if mirror is None:
        _MIRRORS.pop(str(out), None)
    else:
        _MIRRORS[str(out)] = mirror


def _rel(out: Path, p: Path) -> str:
    return p.relative_to(out).as_posix()


def stats_from(d: dict[str, Any]) -> FileStats:
    """The reading counters of a record (the inverse of ``FileStats.to_dict``)."""
    st = FileStats()
    st.records = int(d["records"])
    st.docs = int(d["docs"])
    st.chars = int(d["chars"])
    st.bytes_read = int(d["bytes_read"])
    st.skipped = {str(k): int(v) for k, v in d["skipped"].items()}
    st.error = d.get("error")
    st.keys_seen = [str(k) for k in d.get("keys_seen", [])]
    return st


def last_commit(out: Path, epoch: int, file_idx: int) -> dict[str, Any] | None:
    """The last committed part of (epoch, file) whose shards all exist with the recorded size."""
    last = None
    part = 0
    while True:
        p = part_record(out, epoch, file_idx, part)
        if not p.is_file():
            return last
        rec: dict[str, Any] = orjson.loads(p.read_bytes())
        what = f"{STATE_DIR}/parts/{p.name}"
        shard = output_path(out, rec["shard"], f"{what}: shard") if rec["shard"] else out
        output_path(out, rec["carry"], f"{what}: carry")
        mirror = _MIRRORS.get(str(out))
        if mirror is not None:
            if not rec["shard"] or not mirror.shard_ok(rec["shard"], int(rec["bytes"])):
                return last
        elif not shard.is_file() or shard.stat().st_size != rec["bytes"]:
            return last
        last = rec
        part += 1


def load_carry(out: Path, rec: dict[str, Any]) -> np.ndarray:
    """The un-chunked tokens of a commit record (:func:`last_commit` checked its path)."""
    carry: np.ndarray = np.load(output_path(out, rec["carry"], "carry"), allow_pickle=False)
    return carry


def commit_part(out: Path, rec: dict[str, Any], carry: np.ndarray) -> None:
    """Record a committed part (``rec`` without its ``carry`` path; the carry is saved first)."""
    rel = carry_name(rec["epoch"], rec["file"], rec["part"])
    atomic_save_npy(out / rel, carry)
    rec["carry"] = rel
    p = part_record(out, rec["epoch"], rec["file"], rec["part"])
    atomic_write_bytes(p, dumps(rec))
    mirror = _MIRRORS.get(str(out))
    if mirror is not None:
        mirror.committed([*([rec["shard"]] if rec["shard"] else []), rel, _rel(out, p)])


def finished_file(out: Path, file_idx: int) -> dict[str, Any] | None:
    """The record of a finished input file, or None."""
    p = file_record(out, file_idx)
    if not p.is_file():
        return None
    rec: dict[str, Any] = orjson.loads(p.read_bytes())
    return rec


def input_unchanged(f: InputFile, consumed: Sequence[tuple[int, str] | None]) -> bool:
    """Whether the input still starts with the bytes the committed parts were made from
    (``consumed``: per epoch, (bytes, sha256) of its last commit, None if nothing committed).
    The longest prefix covers every epoch's; parts committed before fingerprints existed
    carry none and are trusted."""
    known = [c for c in consumed if c is not None]
    if not known:
        return True
    nbytes, digest = max(known)
    if isinstance(f, InputUnit):  # a unit hashes the footer and its row groups (source.units)
        return unit_sha256(f) == (nbytes, digest)
    return prefix_sha256(lambda: open_input(f), nbytes) == digest


def forget_file(out: Path, epochs: int, file_idx: int) -> None:
    """Remove every commit record, carry and shard of one (unfinished) input file."""
    for p in file_state_files(out, epochs, file_idx):
        p.unlink(missing_ok=True)
    mirror = _MIRRORS.get(str(out))
    if mirror is not None:
        mirror.forget(file_idx)


def resume_point(out: Path, files: Sequence[int]) -> tuple[int, int]:
    """(files completely done, parts committed in the unfinished ones) among ``files``."""
    done = [i for i in files if is_finished(out, i)]
    parts = sum(len(committed_parts(out, i)) for i in files if i not in set(done))
    return len(done), parts


def file_records(out: Path, idxs: list[int]) -> list[dict[str, Any]]:
    """The records of finished files ``idxs`` (all of them must be finished)."""
    recs = [finished_file(out, i) for i in idxs]
    missing = [i for i, r in zip(idxs, recs, strict=True) if r is None]
    if missing:
        raise OutputError(f"{out}: input files {missing} have no record; rerun to finish them")
    return [r for r in recs if r is not None]


def is_finished(out: Path, file_idx: int) -> bool:
    return file_record(out, file_idx).is_file()


def finish_file(out: Path, file_idx: int, rec: dict[str, Any]) -> None:
    p = file_record(out, file_idx)
    atomic_write_bytes(p, dumps(rec))
    mirror = _MIRRORS.get(str(out))
    if mirror is not None:
        mirror.committed([_rel(out, p)])

"""The unit of work of ``prepare``: one input file's token stream (or one unit's of a large
Parquet file split by ``source.units``) -> groups -> rows -> shards, for every epoch, with its
resume records.

:func:`group_rows` is the one corrupt -> pack path from a group of raw chunks to model rows
(``verify --source`` regenerates rows through it too); :func:`group_batch` turns them into a
record batch of the output's row format. :class:`EpochStream` is one epoch's chunker and shard
writer with its checkpoints; :func:`process_file` reads the file once and feeds every epoch.
Every group depends only on (seed, file, position), so a resumed or re-run file gives the same
bytes for any worker count. See docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..config import Lengths
from ..errors import OutputError
from ..output.schema import (
    compact_packed_record_batch,
    compact_record_batch,
    packed_record_batch,
    record_batch,
    with_components,
)
from ..output.shards import ShardWriter
from ..rows.base import Rows, SpecialIds
from ..rows.chunk import Chunker, ChunkerState, Group
from ..rows.corrupt import corrupt_mixture
from ..rows.packing import PackedRows, pack_rows
from ..rows.plan import ComponentPlan
from ..source.fingerprint import SourceDigest
from ..source.read import FileStats
from ..source.stream import token_stream
from ..source.units import stream_key, with_unit
from .job import Job
from .resume import (
    commit_part,
    finish_file,
    finished_file,
    forget_file,
    input_unchanged,
    last_commit,
    load_carry,
    stats_from,
)

_log = logging.getLogger(__name__)


def group_rows(
    grp: Group,
    plans: tuple[ComponentPlan, ...],
    special: SpecialIds,
    example_lengths: Lengths,
    row_lengths: Lengths,
    max_segments: int,
) -> Rows | PackedRows:
    """A group's examples (corrupted at ``example_lengths``), packed into rows of
    ``row_lengths`` when ``max_segments`` > 0."""
    rows = corrupt_mixture(
        grp.stream, grp.starts, grp.components, plans, special, example_lengths, grp.rng
    )
    if not max_segments:
        return rows
    n = len(grp.starts)
    return pack_rows(
        rows,
        row_lengths,
        pad_id=special.pad,
        max_segs=max_segments,
        denoiser=grp.components,
        example_index=grp.first_example + np.arange(n),
        token_offset=grp.token_offset,
    )


def group_batch(
    grp: Group,
    rows: Rows | PackedRows,
    lengths: Lengths,
    file_idx: int,
    compact: tuple[int, int] | None = None,
) -> pa.RecordBatch:
    """The record batch of a group's rows (:func:`group_rows`); ``compact``: ``(vocab size, pad
    id)`` of a ``--compact`` output."""
    if isinstance(rows, PackedRows):
        if compact is not None:
            return compact_packed_record_batch(rows, lengths, file_idx, *compact)
        return packed_record_batch(rows, lengths, file_idx)
    n = len(grp.starts)
    if compact is not None:
        return compact_record_batch(
            rows,
            lengths,
            grp.components,
            file_idx,
            grp.first_example + np.arange(n),
            grp.token_offset,
            *compact,
        )
    return record_batch(
        rows,
        lengths,
        grp.components,
        file_idx,
        grp.first_example + np.arange(n),
        grp.token_offset,
    )


class EpochStream:
    """One epoch's chunker and shard writer over a file's token stream, with its checkpoints.

    A checkpoint says: this epoch has consumed the stream up to token ``T`` (the end of record
    ``R``), holds ``carry`` un-chunked tokens, and committed parts ``0..part-1``. Epochs commit
    independently; on resume the file is re-read from the earliest checkpoint and each epoch
    only takes the tokens past its own ``T`` (token positions, not records, so read batch
    boundaries do not matter).
    """

    def __init__(
        self, job: Job, out: Path, file_idx: int, epoch: int, key: int, source: SourceDigest
    ) -> None:
        self.job, self.out, self.file_idx, self.epoch = job, out, file_idx, epoch
        self.source = source  # the raw input bytes read so far: recorded with each commit
        rec = last_commit(out, epoch, file_idx)
        # (bytes, sha256) of the input prefix this epoch's commits were made from
        self.consumed: tuple[int, str] | None = None
        self.parts: list[dict[str, Any]] = []
        self.final, self.tail = False, 0
        self.R, self.T, self.part = 0, 0, 0
        self.stats: dict[str, Any] | None = None
        self.reserved = 0
        state = None
        if rec is not None:
            state = ChunkerState(rec["next_group"], rec["offset"], load_carry(out, rec))
            self.R, self.T, self.part = rec["record_end"], rec["tokens_read"], rec["part"] + 1
            if "source_sha256" in rec:
                self.consumed = (int(rec["source_bytes"]), str(rec["source_sha256"]))
            self.parts, self.stats = list(rec["parts"]), rec["stats"]
            self.reserved, self.final, self.tail = (
                rec["reserved_replaced"],
                rec["final"],
                rec["tail"],
            )
        cfg = job.cfg
        self.chunker = Chunker(
            job.plans, cfg.mixture.probabilities, job.group_size, cfg.seed, key, epoch, state
        )
        self.writer: ShardWriter | None = None
        self.part_tokens = 0

    def feed(
        self, stream: np.ndarray, t0: int, record_end: int, stats: FileStats, reserved: int
    ) -> None:
        """``stream`` holds tokens ``[t0, t0 + len)`` of the file's stream."""
        t1 = t0 + len(stream)
        if self.final or t1 <= self.T:
            return
        piece = stream[max(self.T - t0, 0) :]
        self.T, self.R = t1, record_end
        self._push(piece, stats, reserved)

    def _push(self, piece: np.ndarray, stats: FileStats, reserved: int) -> None:
        gpp = self.job.groups_per_part
        for grp in self.chunker.push(piece):
            self.emit(grp)
            if (grp.index + 1) % gpp == 0:
                self.commit(stats, reserved, final=False)

    def finish(self, stats: FileStats, reserved: int) -> None:
        if self.final:
            return
        # a carry restored from a checkpoint can hold complete groups: cut them first
        self._push(np.zeros(0, np.int32), stats, reserved)
        grp, tail = self.chunker.finish()
        if grp is not None:
            self.emit(grp)
        self.final, self.tail = True, tail
        self.commit(stats, reserved, final=True)

    def emit(self, grp: Group) -> None:
        job, cfg = self.job, self.job.cfg
        rows = group_rows(
            grp, job.plans, job.special, cfg.example_lengths, cfg.lengths, job.max_segments
        )
        compact = (job.vocab_size, job.special.pad) if cfg.compact else None
        batch = group_batch(grp, rows, cfg.lengths, self.file_idx, compact)
        if self.writer is None:
            path = self.out / job.shard_name(self.epoch, self.file_idx, self.part)
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = with_components(batch.schema, [p.to_dict() for p in job.plans])
            self.writer = ShardWriter(path, cfg.format, schema)
        self.writer.write(batch)
        self.part_tokens += int(grp.stream.size)

    def commit(self, stats: FileStats, reserved: int, *, final: bool) -> None:
        """Make the current shard visible, then record the checkpoint (both atomic). The last
        part of an epoch is committed even when it has no rows, to record ``final``."""
        job = self.job
        shard = job.shard_name(self.epoch, self.file_idx, self.part)
        if self.writer is not None:
            info = self.writer.commit()
            self.writer = None
            self.parts.append({"shard": shard, "tokens": self.part_tokens, **info})
            size = info["bytes"]
        elif final:
            shard, size = "", 0
        else:
            return
        st = self.chunker.state()
        rec = {
            "epoch": self.epoch,
            "file": self.file_idx,
            "part": self.part,
            "shard": shard,
            "bytes": size,
            "record_end": self.R,
            "tokens_read": self.T,
            "source_bytes": self.source.count,
            "source_sha256": self.source.hexdigest(),
            "next_group": st.next_group,
            "offset": st.offset,
            "reserved_replaced": reserved,
            "stats": stats.to_dict(),
            "parts": self.parts,
            "final": final,
            "tail": self.tail,
        }
        commit_part(self.out, rec, st.carry)
        self.part += 1
        self.part_tokens = 0

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def summary(self) -> dict[str, Any]:
        return {
            "tokens_used": self.T - self.tail,
            "tail_tokens": self.tail,
            "rows": sum(p["rows"] for p in self.parts),
            "parts": self.parts,
        }


def process_file(
    job: Job, file_idx: int, progress: Callable[[int, int, int], None]
) -> dict[str, Any]:
    """Process (or finish) one input file for every epoch (with ``job.split``: that split's
    documents of it, under the split's directory); return its file record."""
    out = job.root()
    done = finished_file(out, file_idx)
    if done is not None:
        return done
    f = job.files[file_idx]
    cfg = job.cfg
    key = stream_key(f)
    sep = job.special.eos if cfg.doc_separator == "eos" else None
    source = SourceDigest()
    epochs = [EpochStream(job, out, file_idx, e, key, source) for e in range(cfg.epochs)]
    if not input_unchanged(f, [s.consumed for s in epochs]):
        _log.warning(
            "%s changed since its parts were committed (same size, other bytes); redoing it "
            "from the start",
            f.name,
        )
        forget_file(out, cfg.epochs, file_idx)
        epochs = [EpochStream(job, out, file_idx, e, key, source) for e in range(cfg.epochs)]
    first = min(epochs, key=lambda s: s.T)  # the earliest checkpoint: resume reading there
    stats = stats_from(first.stats) if first.stats is not None else FileStats()
    # the file's documents before the resume point (kept, dropped for a reserved id, or in
    # another split): the split of a document is drawn from its index
    doc0 = stats.docs + sum(stats.skipped.get(k, 0) for k in ("reserved_token", "other_split"))
    t, reserved = first.T, first.reserved
    try:
        if not all(s.final for s in epochs):
            for piece in token_stream(
                f,
                job.encoder,
                stats=stats,
                text_key=cfg.text_key,
                on_error=cfg.on_error,
                separator=sep,
                max_doc_chars=cfg.max_doc_chars,
                start_record=first.R,
                t0=first.T,
                digest=source,
                stop_record=job.stop_record(file_idx),
                select=job.split_filter(key),
                doc0=doc0,
            ):
                reserved += piece.reserved_replaced
                t = piece.t0 + len(piece.tokens)
                for s in epochs:
                    s.feed(piece.tokens, piece.t0, piece.record_end, stats, reserved)
                progress(piece.docs, len(piece.tokens), piece.nbytes)
                del piece  # a huge document's ids are not needed past this point
            for s in epochs:
                s.finish(stats, reserved)
    except BaseException as e:
        for s in epochs:
            s.abort()
        if isinstance(e, OSError):
            raise OutputError(
                f"{f.name}: writing under {out} failed: {e}. Nothing incomplete is visible; free "
                "space or fix permissions and rerun the same command to resume."
            ) from None
        raise
    rec = {
        "index": file_idx,
        "name": f.name,
        "path": f.path,
        "source_bytes": source.count,
        "source_sha256": source.hexdigest(),
        "stats": stats.to_dict(),
        "tokens": t,
        "reserved_replaced": reserved,
        "epochs": [s.summary() for s in epochs],
    }
    with_unit(f, rec)  # the file's size; a unit of a split file says which
    if job.stop_record(file_idx) is not None:
        rec["stop_record"] = job.stop_record(file_idx)
    finish_file(out, file_idx, rec)
    return rec

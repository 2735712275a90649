"""Reading one input file: records -> documents, in batches with an exact resume point.

:func:`iter_batches` turns the decompressed blocks of a file (:mod:`denoise_cli.source.decompress`)
into lines (a carry for the unfinished line; a line over ``max_line_bytes`` is dropped as it
streams by), or, for a ``.json`` file holding one JSON array, into its elements. The first
``start_record`` records are skipped unparsed (resume). Every record is parsed with ``orjson``
and classified into exactly one outcome: a document, or one of ``SKIP_REASONS``, so
``docs + sum(skipped) == records`` always. Texts are yielded in :class:`DocBatch` es with the
index of the next record. Records decoded before a stream failure are yielded and counted; the
error goes to :attr:`FileStats.error` (``on_error="skip"``) or raises
:class:`~denoise_cli.errors.InputError` (``"fail"``). Parquet files are read by
:mod:`denoise_cli.source.read_parquet` with the same batches and counters; finding the files is
:mod:`denoise_cli.source.discover`. Design and edge cases: docs/input.md; figures:
benchmarks/README_read.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from ..errors import ConfigError, InputError
from .decompress import BLOCK_SIZE, Stream, StreamError, hash_whole_file
from .discover import InputFile
from .fingerprint import SourceDigest
from .read_parquet import iter_parquet

ARRAY_MAX_BYTES = 256 << 20  # a .json file holding one JSON array is read whole up to this
KEYS_SEEN_RECORDS = 1000  # keys of records without the text key are noted in the first N records

SKIP_REASONS: tuple[str, ...] = (
    "malformed_json",
    "invalid_utf8",
    "not_object",
    "missing_text",
    "text_not_string",
    "empty",
    "too_long",
    "line_too_long",
)


@dataclass
class FileStats:
    """Per-file counters. ``records`` = ``docs + sum(skipped.values())`` (blank lines are not
    records). ``bytes_read`` counts compressed bytes consumed (for progress)."""

    records: int = 0
    docs: int = 0
    chars: int = 0
    bytes_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    # top-level keys of records that lacked the text key, among the first KEYS_SEEN_RECORDS
    keys_seen: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "records": self.records,
            "docs": self.docs,
            "chars": self.chars,
            "bytes_read": self.bytes_read,
            "skipped": dict(sorted(self.skipped.items())),
            "error": self.error,
        }
        if self.keys_seen:
            d["keys_seen"] = list(self.keys_seen)
        return d


@dataclass
class DocBatch:
    """Good texts, and ``record_end``: the index of the next record of the file (the number of
    records, counted from the start of the file, consumed once this batch is done)."""

    texts: list[str]
    record_end: int


_WS = frozenset(b" \t\r\n\x0b\x0c")


def _line_blocks(read: Callable[[], bytes], max_line_bytes: int) -> Iterator[list[bytes | None]]:
    """Non-blank lines of the stream, one list per block read; ``None`` stands for a line longer
    than ``max_line_bytes`` (dropped as it streams by). A final line without newline counts,
    unless the stream is truncated (then :class:`StreamError` is raised instead)."""
    M = max_line_bytes
    ws = _WS
    pending: list[bytes] = []
    pending_len = 0
    discarding = False
    while True:
        block = read()
        if not block:
            break
        if discarding:
            j = block.find(b"\n")
            if j < 0:
                continue
            discarding = False
            block = block[j + 1 :]
            if not block:
                continue
        parts = block.split(b"\n")
        if len(parts) == 1:
            pending.append(block)
            pending_len += len(block)
            if pending_len > M:
                pending, pending_len, discarding = [], 0, True
                yield [None]
            continue
        if pending:
            pending.append(parts[0])
            parts[0] = b"".join(pending)
            pending, pending_len = [], 0
        tail = parts.pop()
        out: list[bytes | None] = []
        for p in parts:
            if len(p) > M:
                out.append(None)
            elif p and (p[0] not in ws or p.strip()):
                out.append(p)
        if tail:
            if len(tail) > M:
                out.append(None)
                discarding = True
            else:
                pending, pending_len = [tail], len(tail)
        del parts, p  # hold a huge line only in ``out`` while it is processed
        if out:
            yield out
    if pending:
        last = b"".join(pending)
        pending = []
        if last[0] not in ws or last.strip():
            yield [last]


def _records(stream: Stream, f: InputFile, max_line_bytes: int) -> Iterator[list[bytes | None]]:
    """The records of a file as (lists of) raw JSON texts: its lines, or, for a ``.json`` file
    holding one JSON array, its elements (re-serialized)."""
    first = stream.read()
    is_json = f.path.lower().endswith((".json", ".json.zst", ".json.zstd", ".json.gz"))
    if is_json and first.lstrip()[:1] == b"[":
        buf, size = [first], len(first)
        while True:
            block = stream.read()
            if not block:
                break
            size += len(block)
            if size > ARRAY_MAX_BYTES:
                raise StreamError(
                    "json_array_too_large",
                    stream.bytes_read,
                    f"a JSON array larger than {ARRAY_MAX_BYTES >> 20} MiB (decompressed), the "
                    "limit for .json array files; convert it to JSON Lines, e.g. jq -c '.[]'",
                )
            buf.append(block)
        data = b"".join(buf)
        del buf
        try:
            arr = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise StreamError(
                "malformed_json_array", 0, f"starts with '[' but is not a JSON array ({e})"
            ) from None
        del data
        if not isinstance(arr, list):  # pragma: no cover - '[' always starts a list
            raise StreamError("malformed_json_array", 0, "not a JSON array")
        dumps = orjson.dumps
        for i in range(0, len(arr), 1024):
            yield [dumps(x) for x in arr[i : i + 1024]]
        return
    pushed = [first]

    def read() -> bytes:
        return pushed.pop() if pushed else stream.read()

    yield from _line_blocks(read, max_line_bytes)


# --------------------------------------------------------------------------- records


def _classify_json_error(line: bytes, err: Exception) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    if "surrogate" in str(err):  # lone surrogate escape such as "\ud800"
        return "invalid_utf8"
    return "malformed_json"


def _dig(obj: dict[str, Any], keys: list[str]) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(k)
    return cur


def iter_batches(
    f: InputFile,
    *,
    text_key: str = "text",
    on_error: Literal["skip", "fail"] = "skip",
    stats: FileStats,
    start_record: int = 0,
    batch_chars: int = 1 << 20,
    max_doc_chars: int = 0,
    max_line_bytes: int = 1 << 30,
    digest: SourceDigest | None = None,
    stop_record: int | None = None,
    row_groups: tuple[int, int] | None = None,
) -> Iterator[DocBatch]:
    """Stream the documents of one file in batches of about ``batch_chars`` characters.

    Records before ``start_record`` are skipped unparsed and do not touch ``stats`` counters.
    Bad records are counted in ``stats.skipped`` (``on_error="skip"``) or raise
    :class:`InputError` at ``line N`` (N = record index + 1; blank lines are not counted).
    A corrupt/truncated/unreadable stream sets ``stats.error`` after yielding what came before
    it, then ends (``skip``) or raises :class:`InputError` at ``byte offset N`` (``fail``).
    The last batch (possibly empty) always carries the final ``record_end``.
    ``digest``, if given, receives every raw byte read from the file (resume fingerprint).
    ``stop_record``, if given, ends the file before that record (``--limit-docs``).
    ``row_groups=(a, b)`` (Parquet only): read those row groups as a file of their own (a unit
    of a large file, ``source.units``, which hashes its own bytes for ``digest``).
    """
    if on_error not in ("skip", "fail"):
        raise ConfigError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    keys = text_key.split(".")
    if not text_key or any(not k for k in keys):
        raise ConfigError(f"bad text key {text_key!r}")
    if start_record < 0 or batch_chars < 1 or max_doc_chars < 0 or max_line_bytes < 1:
        raise ConfigError("start_record/max_doc_chars must be >= 0, batch/line sizes >= 1")
    if f.compression == "parquet":
        if digest is not None:
            # row groups are read out of order: the fingerprint of a Parquet file is its whole
            # content, hashed once before reading (cheap next to tokenizing it)
            hash_whole_file(f, digest)
        for texts_, end in iter_parquet(
            f.path,
            keys=keys,
            stats=stats,
            on_error=on_error,
            start_record=start_record,
            batch_chars=batch_chars,
            max_doc_chars=max_doc_chars,
            size=f.size,
            stop_record=stop_record,
            storage_options=f.storage_options,
            row_groups=row_groups,
        ):
            yield DocBatch(texts_, end)
        return
    key0 = keys[0] if len(keys) == 1 else None
    fail = on_error == "fail"
    skipped = stats.skipped
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError

    texts: list[str] = []
    nchars = 0
    detail = ""
    rec = 0  # index of the next record
    try:
        stream = Stream(f, digest)
    except StreamError as e:
        stats.error = f"{f.path}: {e.detail} (byte offset 0, 0 records read)"
        yield DocBatch(texts, rec)
        if fail:
            raise InputError(f.path, "byte offset 0", e.reason, e.detail) from None
        return
    try:
        try:
            for lines in _records(stream, f, max_line_bytes):
                stats.bytes_read = stream.bytes_read
                if rec < start_record:
                    if rec + len(lines) <= start_record:
                        rec += len(lines)
                        continue
                    lines = lines[start_record - rec :]
                    rec = start_record
                if stop_record is not None and rec + len(lines) > stop_record:
                    lines = lines[: max(0, stop_record - rec)]
                for k, line in enumerate(lines):
                    rec += 1
                    stats.records += 1
                    if line is None:
                        reason = "line_too_long"
                    else:
                        try:
                            obj = loads(line)
                        except decode_error as e:
                            reason = _classify_json_error(line, e)
                            if fail:
                                detail = str(e)[:200]
                        else:
                            if type(obj) is not dict:
                                reason = "not_object"
                            else:
                                text = obj.get(key0) if key0 is not None else _dig(obj, keys)
                                if text is None:
                                    reason = "missing_text"
                                    if rec <= KEYS_SEEN_RECORDS and len(stats.keys_seen) < 20:
                                        seen = stats.keys_seen
                                        seen.extend(k for k in obj if k not in seen)
                                        del seen[20:]
                                elif type(text) is not str:
                                    reason = "text_not_string"
                                elif not text or text.isspace():
                                    reason = "empty"
                                elif max_doc_chars and len(text) > max_doc_chars:
                                    reason = "too_long"
                                else:
                                    n = len(text)
                                    if n > BLOCK_SIZE:  # release a huge line's bytes now
                                        lines[k] = line = None
                                    texts.append(text)
                                    nchars += n
                                    stats.docs += 1
                                    stats.chars += n
                                    if nchars >= batch_chars:
                                        del obj, text  # the consumer may free the texts
                                        yield DocBatch(texts, rec)
                                        texts, nchars = [], 0
                                    continue
                    skipped[reason] = skipped.get(reason, 0) + 1
                    if fail:
                        if texts:
                            yield DocBatch(texts, rec - 1)
                            texts = []
                        if line is None:
                            detail = f"line longer than {max_line_bytes} bytes"
                        elif reason not in ("malformed_json", "invalid_utf8"):
                            detail = ""
                        raise InputError(f.path, f"line {rec}", reason, detail)
                if stop_record is not None and rec >= stop_record:
                    break
        except StreamError as e:
            stats.bytes_read = stream.bytes_read
            stats.error = (
                f"{f.path}: {e.detail} (byte offset {e.offset}, {rec} records read before it)"
            )
            yield DocBatch(texts, rec)
            if fail:
                raise InputError(f.path, f"byte offset {e.offset}", e.reason, e.detail) from None
            return
        stats.bytes_read = stream.bytes_read
        yield DocBatch(texts, rec)
    finally:
        stream.close()

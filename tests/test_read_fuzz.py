"""Property tests of the input stage: whatever the bytes, ``iter_batches`` raises nothing under
``on_error="skip"`` and only ``InputError`` under ``"fail"``, and its counters add up."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import denoise_cli.source.decompress as D
import denoise_cli.source.read as R
from denoise_cli.errors import InputError
from denoise_cli.source.discover import InputFile
from denoise_cli.source.read import FileStats, iter_batches

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@contextmanager
def block_size(n: int) -> Iterator[None]:
    old = D.BLOCK_SIZE
    D.BLOCK_SIZE = n
    try:
        yield
    finally:
        D.BLOCK_SIZE = old


def make_file(workdir: Path, raw: bytes, compression: str) -> InputFile:
    ext = {"zst": ".jsonl.zst", "gz": ".jsonl.gz", "none": ".jsonl"}[compression]
    p = workdir / f"f{ext}"
    p.write_bytes(raw)
    return InputFile(str(p), p.name, len(raw), compression)  # type: ignore[arg-type]


def check_skip(f: InputFile, **kw: Any) -> tuple[list[str], FileStats]:
    """Read under on_error=skip: must not raise; checks every invariant."""
    stats = FileStats()
    texts: list[str] = []
    ends: list[int] = []
    for b in iter_batches(f, stats=stats, **kw):
        texts.extend(b.texts)
        ends.append(b.record_end)
    assert stats.docs + sum(stats.skipped.values()) == stats.records
    assert stats.docs == len(texts)
    assert stats.chars == sum(map(len, texts))
    assert set(stats.skipped) <= set(R.SKIP_REASONS)
    assert all(v > 0 for v in stats.skipped.values())
    assert ends and ends == sorted(ends)
    assert ends[-1] == stats.records + kw.get("start_record", 0) or (
        kw.get("start_record", 0) > ends[-1] and stats.records == 0
    )
    assert 0 <= stats.bytes_read <= f.size
    for t in texts:
        t.encode("utf-8")  # no lone surrogates ever get through
        assert t and not t.isspace()
    if stats.error is not None:
        assert f.path in stats.error and "byte offset" in stats.error
    return texts, stats


def check_fail(f: InputFile, **kw: Any) -> None:
    try:
        for _ in iter_batches(f, stats=FileStats(), on_error="fail", **kw):
            pass
    except InputError as e:
        assert e.path == f.path
        assert re.fullmatch(r"line \d+|byte offset \d+", e.position)


def good_data() -> bytes:
    lines = [json.dumps({"text": f"doc {i} " + "word " * (i % 17), "id": i}) for i in range(400)]
    lines[7] = '{"text": ""}'
    lines[50] = '{"text": 3}'
    return ("\n".join(lines) + "\n").encode()


GOOD = good_data()
GOOD_TEXTS = [t for x in GOOD.splitlines() if isinstance(t := json.loads(x)["text"], str) and t]
BASES = {
    "single": zstandard.ZstdCompressor(level=3).compress(GOOD),
    "frames+checksum": b"".join(
        zstandard.ZstdCompressor(level=1, write_checksum=True).compress(GOOD[i : i + 5000])
        for i in range(0, len(GOOD), 5000)
    ),
}


# --------------------------------------------------------------------------- random bytes


@SETTINGS
@given(
    raw=st.one_of(
        st.binary(max_size=3000),
        st.lists(
            st.sampled_from(
                [
                    *(b"\n", b"\r\n", b" ", b"{", b"}", b'"text"', b":", b'"a\\ud800"', b"\xff"),
                    *(
                        b"\x00",
                        b'{"text": "ok"}',
                        b"[1]",
                        b"null",
                        b'"',
                        b"\\",
                        b",",
                        b"\xe6\xbc\xa2",
                    ),
                ]
            ),
            max_size=200,
        ).map(b"".join),
    ),
    compression=st.sampled_from(["none", "zst", "gz"]),
    block=st.sampled_from([1, 3, 64, 1 << 22]),
    max_line=st.sampled_from([1 << 30, 10]),
)
def test_random_bytes(
    workdir: Path, raw: bytes, compression: str, block: int, max_line: int
) -> None:
    if compression == "zst" and raw[:1] == b"\x00":
        raw = zstandard.ZstdCompressor().compress(raw)  # sometimes valid framing
    elif compression == "gz" and raw[:1] == b"\x00":
        raw = gzip.compress(raw)
    f = make_file(workdir, raw, compression)
    with block_size(block):
        _, stats = check_skip(f, max_line_bytes=max_line)
        check_fail(f, max_line_bytes=max_line)
    if compression == "none":
        text = raw.removeprefix(b"\xef\xbb\xbf")  # the reader drops a UTF-8 BOM at the start
        records = [ln for ln in text.split(b"\n") if ln.strip()]
        assert stats.records == len(records)
        assert stats.error is None


# --------------------------------------------------------------------------- mutations


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 50)),
)


def mutate(data: bytes, ops: list[tuple[str, float, Any]]) -> bytes:
    b = bytearray(data)
    for op, where, arg in ops:
        if not b:
            break
        i = min(int(where * len(b)), len(b) - 1)
        if op == "flip":
            b[i] ^= 1 << arg
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b[i:i] = arg
        else:
            del b[i : i + arg]
    return bytes(b)


@SETTINGS
@given(
    base=st.sampled_from(sorted(BASES)),
    ops=st.lists(mutation, min_size=1, max_size=4),
    block=st.sampled_from([7, 4096, 1 << 22]),
)
def test_mutated_zstd(
    workdir: Path, base: str, ops: list[tuple[str, float, Any]], block: int
) -> None:
    raw = mutate(BASES[base], ops)
    f = make_file(workdir, raw, "zst")
    with block_size(block):
        texts, stats = check_skip(f)
        check_fail(f)
    if raw == BASES[base]:  # mutations that cancel out
        assert texts == GOOD_TEXTS and stats.error is None


@SETTINGS
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_gzip(workdir: Path, ops: list[tuple[str, float, Any]]) -> None:
    f = make_file(workdir, mutate(gzip.compress(GOOD, mtime=0), ops), "gz")
    check_skip(f)
    check_fail(f)


# --------------------------------------------------------------------------- line structure

good_line = st.text(max_size=30).map(lambda t: json.dumps({"text": t}).encode())
junk_line = st.binary(max_size=30).map(lambda b: b"#" + b.replace(b"\n", b""))
blank_line = st.sampled_from([b"", b" ", b"\t", b"\r", b"  \r"])


@SETTINGS
@given(
    lines=st.lists(st.one_of(good_line, junk_line, blank_line), max_size=60),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    final_newline=st.booleans(),
    compression=st.sampled_from(["none", "zst", "gz"]),
    block=st.sampled_from([1, 2, 5, 100, 1 << 22]),
    start=st.integers(0, 70),
    batch_chars=st.sampled_from([1, 10, 1 << 20]),
)
def test_records_docs_and_resume(
    workdir: Path,
    lines: list[bytes],
    eol: bytes,
    final_newline: bool,
    compression: str,
    block: int,
    start: int,
    batch_chars: int,
) -> None:
    data = eol.join(lines) + (eol if final_newline and lines else b"")
    if compression == "zst":
        raw = zstandard.ZstdCompressor().compress(data)
    elif compression == "gz":
        raw = gzip.compress(data)
    else:
        raw = data
    f = make_file(workdir, raw, compression)
    records = [ln for ln in data.split(b"\n") if ln.strip()]
    expect: list[tuple[int, str]] = []  # (record index, text)
    for i, ln in enumerate(records):
        if ln.startswith(b"{"):
            t = json.loads(ln)["text"]
            if t.strip() and not t.isspace():
                expect.append((i, t))
    with block_size(block):
        texts, stats = check_skip(f, batch_chars=batch_chars)
        assert stats.error is None
        assert stats.records == len(records)
        assert texts == [t for _, t in expect]
        tail, tstats = check_skip(f, batch_chars=batch_chars, start_record=start)
        assert tail == [t for i, t in expect if i >= start]
        assert tstats.records == max(len(records) - start, 0)

"""Tests of the input stage (denoise_cli.read). Every fixture is generated in tmp_path."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import zstandard

import denoise_cli.source.decompress as D
from denoise_cli.errors import ConfigError, InputError
from denoise_cli.source.discover import InputFile, find_inputs
from denoise_cli.source.read import DocBatch, FileStats, iter_batches

# --------------------------------------------------------------------------- helpers


def jl(*objs: Any) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def zst(data: bytes, frames: int = 1, checksum: bool = False, level: int = 3) -> bytes:
    """``data`` as ``frames`` concatenated zstd frames (split at arbitrary byte positions)."""
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=checksum)
    if frames <= 1:
        return cctx.compress(data)
    step = max(1, len(data) // frames + 1)
    return b"".join(cctx.compress(data[i : i + step]) for i in range(0, len(data), step))


def gz(data: bytes, members: int = 1) -> bytes:
    if members <= 1:
        return gzip.compress(data, mtime=0)
    step = max(1, len(data) // members + 1)
    return b"".join(gzip.compress(data[i : i + step], mtime=0) for i in range(0, len(data), step))


def put(tmp_path: Path, name: str, raw: bytes) -> InputFile:
    """Write bytes as-is (already compressed if the name says so) and find it."""
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(raw)
    (f,) = find_inputs([str(p)])
    return f


def put_text(tmp_path: Path, name: str, data: bytes, **kw: Any) -> InputFile:
    """Write uncompressed ``data``, compressed according to the file name."""
    if name.endswith((".zst", ".zstd")):
        return put(tmp_path, name, zst(data, **kw))
    if name.endswith(".gz"):
        return put(tmp_path, name, gz(data, **kw))
    return put(tmp_path, name, data)


def read(f: InputFile, **kw: Any) -> tuple[list[str], list[DocBatch], FileStats]:
    st = FileStats()
    batches = list(iter_batches(f, stats=st, **kw))
    texts = [t for b in batches for t in b.texts]
    assert st.docs + sum(st.skipped.values()) == st.records
    assert st.docs == len(texts) or kw.get("start_record")
    return texts, batches, st


DOCS = [f"document number {i} with some text" + " é ü 漢字 😀" * (i % 3) for i in range(300)]
GOOD = jl(*({"text": t, "meta": {"i": i}} for i, t in enumerate(DOCS)))


# --------------------------------------------------------------------------- find_inputs


def test_find_inputs_directory_recursive(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for rel in [
        "a.jsonl",
        "b.jsonl.zst",
        "sub/c.json.gz",
        "sub/deeper/d.jsonl.zstd",
        "sub/e.json",
        "sub/f.json.zst",
        "sub/g.jsonl.gz",
        "notes.txt",
        "x.parquet",
        ".hidden.jsonl",
        ".git/h.jsonl",
        "sub/.cache/i.jsonl.zst",
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * len(rel))
    got = find_inputs([str(root)])
    assert [f.name for f in got] == [
        "a.jsonl",
        "b.jsonl.zst",
        "sub/c.json.gz",
        "sub/deeper/d.jsonl.zstd",
        "sub/e.json",
        "sub/f.json.zst",
        "sub/g.jsonl.gz",
        "x.parquet",
    ]
    comp = {f.name: f.compression for f in got}
    assert comp == {
        "a.jsonl": "none",
        "b.jsonl.zst": "zst",
        "sub/c.json.gz": "gz",
        "sub/deeper/d.jsonl.zstd": "zst",
        "sub/e.json": "none",
        "sub/f.json.zst": "zst",
        "sub/g.jsonl.gz": "gz",
        "x.parquet": "parquet",
    }
    for f in got:
        assert os.path.isabs(f.path)
        assert f.path == str(root / f.name)
        assert f.size == len(f.name)


def test_find_inputs_glob_and_explicit(tmp_path: Path) -> None:
    for rel in ["d/x/1.jsonl.zst", "d/y/2.jsonl.zst", "d/y/3.jsonl.gz", "d/4.jsonl.zst", "e.jsonl"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"{}\n")
    got = find_inputs([str(tmp_path / "d" / "**" / "*.zst")])
    assert [f.name for f in got] == ["4.jsonl.zst", "x/1.jsonl.zst", "y/2.jsonl.zst"]
    got = find_inputs([str(tmp_path / "d" / "*" / "*.json*")])
    assert [f.name for f in got] == ["x/1.jsonl.zst", "y/2.jsonl.zst", "y/3.jsonl.gz"]
    # explicit file: basename
    (f,) = find_inputs([str(tmp_path / "d" / "y" / "3.jsonl.gz")])
    assert (f.name, f.compression, f.size) == ("3.jsonl.gz", "gz", 3)
    # relative spec -> absolute path
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        (f,) = find_inputs(["e.jsonl"])
        assert f.path == str(tmp_path / "e.jsonl")
        assert [g.name for g in find_inputs(["d/*/*.zst"])] == ["x/1.jsonl.zst", "y/2.jsonl.zst"]
    finally:
        os.chdir(cwd)


def test_find_inputs_dedup_and_sorting(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for n in ["b.jsonl", "a.jsonl"]:
        (d / n).write_bytes(b"{}\n")
    got = find_inputs([str(d / "b.jsonl"), str(d), str(d / "*.jsonl"), str(d / "a.jsonl")])
    assert [f.name for f in got] == ["a.jsonl", "b.jsonl"]
    assert len({f.path for f in got}) == 2


def test_find_inputs_same_name_disambiguated(tmp_path: Path) -> None:
    for rel in ["en/00.jsonl.zst", "code/00.jsonl.zst", "x/en/00.jsonl.zst", "code/01.jsonl.zst"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    specs = [str(tmp_path / "en"), str(tmp_path / "code"), str(tmp_path / "x" / "en")]
    got = find_inputs(specs)
    names = [f.name for f in got]
    assert len(set(names)) == 4
    assert "01.jsonl.zst" in names
    assert "code/00.jsonl.zst" in names
    # two roots both called "en": one more level of their path
    assert f"{tmp_path.name}/en/00.jsonl.zst" in names
    assert "x/en/00.jsonl.zst" in names
    assert names == sorted(names)
    # deterministic: independent of spec order
    assert sorted((f.name, f.path) for f in find_inputs(specs[::-1])) == sorted(
        (f.name, f.path) for f in got
    )
    by_path = {f.path: f.name for f in got}
    assert by_path[str(tmp_path / "code" / "00.jsonl.zst")] == "code/00.jsonl.zst"


def test_find_inputs_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.csv").write_text("a,b")
    with pytest.raises(ConfigError, match=r"missing\.jsonl"):
        find_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match=r"notes\.txt.*unsupported extension"):
        find_inputs([str(tmp_path / "notes.txt")])
    with pytest.raises(ConfigError, match=r"nothing.*\.zst"):
        find_inputs([str(tmp_path / "nothing*.zst")])
    with pytest.raises(ConfigError, match="empty"):
        find_inputs([str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match="other"):
        find_inputs([str(tmp_path / "other")])
    with pytest.raises(ConfigError, match=r"other/\*"):
        find_inputs([str(tmp_path / "other" / "*")])
    with pytest.raises(ConfigError):
        find_inputs([])


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("good.jsonl", {}),
        ("good.json", {}),
        ("good.jsonl.zst", {}),
        ("good.jsonl.zst", {"frames": 7}),
        ("good.json.zst", {"frames": 3, "checksum": True}),
        ("good.jsonl.zstd", {"frames": 2, "level": 19}),
        ("good.jsonl.gz", {}),
        ("good.json.gz", {"members": 5}),
    ],
)
def test_good_files(tmp_path: Path, name: str, kw: dict[str, Any]) -> None:
    f = put_text(tmp_path, name, GOOD, **kw)
    texts, batches, st = read(f)
    assert texts == DOCS
    assert st.to_dict() == {
        "records": 300,
        "docs": 300,
        "chars": sum(map(len, DOCS)),
        "bytes_read": f.size,
        "skipped": {},
        "error": None,
    }
    assert batches[-1].record_end == 300


def test_skippable_frames_are_ignored(tmp_path: Path) -> None:
    skip = struct.pack("<II", 0x184D2A5E, 6) + b"ignore"
    f = put(tmp_path, "s.jsonl.zst", skip + zst(GOOD[:1000]) + skip + zst(GOOD[1000:]) + skip)
    texts, _, st = read(f)
    assert texts == DOCS
    assert st.error is None


def test_batches_and_record_end(tmp_path: Path) -> None:
    docs = [f"doc{i:03d}" for i in range(100)]  # 6 chars each
    data = b"".join(
        (b"\n  \n" if i % 10 == 0 else b"")  # blank lines are not records
        + (b"{bad\n" if i % 7 == 3 else b"")
        + json.dumps({"text": d}).encode()
        + b"\n"
        for i, d in enumerate(docs)
    )
    f = put_text(tmp_path, "b.jsonl.zst", data)
    texts, batches, st = read(f, batch_chars=60)
    assert texts == docs
    # each batch ends exactly when its texts reach 60 chars
    assert [len(b.texts) for b in batches] == [10] * 10 + [0]
    bad = sum(1 for i in range(100) if i % 7 == 3)
    assert st.records == 100 + bad
    assert st.skipped == {"malformed_json": bad}
    # record_end: index of the next record after the batch's last doc
    idx, ends = 0, []
    for i in range(100):
        idx += 1 + (i % 7 == 3)
        if i % 10 == 9:
            ends.append(idx)
    assert [b.record_end for b in batches] == [*ends, 100 + bad]


def test_crlf_blank_lines_no_trailing_newline_dotted_key(tmp_path: Path) -> None:
    data = (
        b"\r\n"
        b'{"meta": {"body": "first"}}\r\n'
        b"   \t \r\n"
        b"\n"
        b'{"meta": {"body": "line\\r\\nbreaks"}, "text": "ignored"}\r\n'
        b'{"meta": {"other": 1}}\r\n'
        b'{"meta": "flat"}\r\n'
        b'{"meta": null}\r\n'
        b'{"meta": {"body": 5}}\r\n'
        b'{"meta": {"body": "last"}}'
    )
    for name in ["c.jsonl", "c.jsonl.zst", "c.jsonl.gz"]:
        f = put_text(tmp_path, name, data)
        texts, batches, st = read(f, text_key="meta.body")
        assert texts == ["first", "line\r\nbreaks", "last"]
        assert st.records == 7
        assert st.skipped == {"missing_text": 3, "text_not_string": 1}
        assert batches[-1].record_end == 7
        texts, _, st = read(f)
        assert texts == ["ignored"]
        assert st.skipped == {"missing_text": 6}


def test_empty_files(tmp_path: Path) -> None:
    for name, raw in [
        ("e.jsonl", b""),
        ("e0.jsonl.zst", b""),
        ("e0.jsonl.gz", b""),
        ("e1.jsonl.zst", zst(b"")),
        ("e1.jsonl.gz", gz(b"")),
        ("blank.jsonl", b"\n\n  \r\n\t\n"),
        ("blank.jsonl.zst", zst(b"\n\n \n", frames=3)),
    ]:
        f = put(tmp_path, name, raw)
        texts, batches, st = read(f)
        assert texts == []
        assert [(b.texts, b.record_end) for b in batches] == [([], 0)], name
        assert st.records == 0 and st.error is None, name


# --------------------------------------------------------------------------- bad records

BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"text": "unterminated', "malformed_json"),
    (b"this is not json at all", "malformed_json"),
    (b'{"text": "a"} trailing', "malformed_json"),
    (b'{"text": "nul\x00byte"}', "malformed_json"),
    (b"\x00\x00\x00", "malformed_json"),
    (b'{"text": "tab\tinside"}', "malformed_json"),
    (b"[" * 5000, "malformed_json"),
    (b'{"text": 1' + b"0" * 400 + b"}", "malformed_json"),
    (b'{"text": NaN}', "malformed_json"),
    (b'{"text": "caf\xe9"}', "invalid_utf8"),
    (b'{"text": "\xff\xfe"}', "invalid_utf8"),
    (b'{"text": "cut \xe6\xbc"}', "invalid_utf8"),
    (b'{"text": "lone \\ud800 high"}', "invalid_utf8"),
    (b'{"text": "lone \\udc00 low"}', "invalid_utf8"),
    (b'{"text": "end \\ud83d"}', "invalid_utf8"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b"42", "not_object"),
    (b"null", "not_object"),
    (b'{"txt": "wrong key"}', "missing_text"),
    (b'{"text": null}', "missing_text"),
    (b'{"text": 5}', "text_not_string"),
    (b'{"text": 1.5}', "text_not_string"),
    (b'{"text": ["a", "b"]}', "text_not_string"),
    (b'{"text": {"a": 1}}', "text_not_string"),
    (b'{"text": true}', "text_not_string"),
    (b'{"text": ""}', "empty"),
    (b'{"text": "  \\n\\t "}', "empty"),
    (b'{"text": "\\u3000\\u00a0"}', "empty"),
]


def _mixed() -> tuple[bytes, list[str], dict[str, int]]:
    lines: list[bytes] = []
    good: list[str] = []
    counts: dict[str, int] = {}
    for i, (line, reason) in enumerate(BAD_LINES):
        t = f"good {i} \\ud83d\\ude00"  # a valid surrogate pair escape
        lines.append(f'{{"text": "{t}"}}'.encode())
        good.append(json.loads(f'"{t}"'))
        lines.append(line)
        counts[reason] = counts.get(reason, 0) + 1
    lines.append(b'{"text": "the end"}')
    good.append("the end")
    return b"\n".join(lines) + b"\n", good, counts


@pytest.mark.parametrize("name", ["m.jsonl", "m.jsonl.zst", "m.jsonl.gz"])
def test_bad_records_counted_and_neighbours_survive(tmp_path: Path, name: str) -> None:
    data, good, counts = _mixed()
    f = put_text(tmp_path, name, data)
    texts, batches, st = read(f)
    assert texts == good
    assert "😀" in texts[0]
    assert st.skipped == counts
    assert st.records == len(BAD_LINES) + len(good)
    assert st.docs == len(good)
    assert batches[-1].record_end == st.records
    assert st.error is None


def test_each_bad_line_alone(tmp_path: Path) -> None:
    for i, (line, reason) in enumerate(BAD_LINES):
        f = put(tmp_path, f"b{i}.jsonl", line + b"\n")
        texts, _, st = read(f)
        assert texts == [] and st.skipped == {reason: 1}, (line, st.skipped)


def test_not_json_at_all(tmp_path: Path) -> None:
    data = b"".join(b"Plain prose line %d, no JSON here.\n" % i for i in range(50))
    f = put_text(tmp_path, "prose.jsonl.zst", data)
    texts, _, st = read(f)
    assert texts == [] and st.records == 50 and st.skipped == {"malformed_json": 50}
    f = put(tmp_path, "bin.jsonl", os.urandom(1000).replace(b"\n", b"") + b"\n")
    texts, _, st = read(f)
    assert st.records == 1 and sum(st.skipped.values()) == 1


def test_max_doc_chars(tmp_path: Path) -> None:
    f = put_text(tmp_path, "t.jsonl", jl({"text": "a" * 10}, {"text": "b" * 11}, {"text": "c"}))
    texts, _, st = read(f, max_doc_chars=10)
    assert texts == ["a" * 10, "c"] and st.skipped == {"too_long": 1}
    texts, _, st = read(f)
    assert len(texts) == 3


@pytest.mark.parametrize("block", [3, 10, 64, 1 << 22])
def test_line_too_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(D, "BLOCK_SIZE", block)
    long_doc = {"text": "x" * 200}
    data = jl({"text": "a"}, long_doc, {"text": "b"}, long_doc, long_doc, {"text": "c"})
    data += json.dumps(long_doc).encode()  # final long line without newline
    for name in ["l.jsonl", "l.jsonl.zst"]:
        f = put_text(tmp_path, name, data)
        texts, batches, st = read(f, max_line_bytes=100)
        assert texts == ["a", "b", "c"]
        assert st.records == 7 and st.skipped == {"line_too_long": 4}
        assert batches[-1].record_end == 7
        # exactly at the limit is fine
        n = len(json.dumps(long_doc))
        texts, _, st = read(f, max_line_bytes=n)
        assert len(texts) == 7


@pytest.mark.parametrize("block", [1, 2, 5, 17, 4096])
def test_block_size_does_not_change_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    data, good, counts = _mixed()
    data = data.replace(b"\n", b"\r\n", 5) + b"\n\n  \n" + b'{"text": "tail"}'
    f = put_text(tmp_path, "m.jsonl.zst", data, frames=4)
    ref_texts, ref_batches, ref_st = read(f, batch_chars=30)
    monkeypatch.setattr(D, "BLOCK_SIZE", block)
    texts, batches, st = read(f, batch_chars=30)
    assert texts == ref_texts == [*good, "tail"]
    assert [b.record_end for b in batches] == [b.record_end for b in ref_batches]
    assert st == ref_st
    assert st.skipped == counts


def test_big_document(tmp_path: Path) -> None:
    big = ("Lorem ipsum dolor sit amet, 漢字 ü. " * 1_500_000)[: 50 * 1000 * 1000]
    data = jl({"text": "small"}, {"text": big}, {"text": "after"})
    f = put_text(tmp_path, "big.jsonl.zst", data)
    texts, batches, st = read(f)
    assert len(texts) == 3 and texts[1] == big and texts[2] == "after"
    assert st.chars == len(big) + 10
    assert [len(b.texts) for b in batches] == [2, 1]  # the big doc fills a batch by itself


def test_many_tiny_documents(tmp_path: Path) -> None:
    n = 200_000
    data = b"".join(b'{"text":"d%d"}\n' % i for i in range(n))
    f = put_text(tmp_path, "tiny.jsonl.zst", data, frames=3)
    texts, batches, st = read(f, batch_chars=100_000)
    assert len(texts) == n and texts[0] == "d0" and texts[-1] == f"d{n - 1}"
    assert st.records == st.docs == n and st.chars == sum(len(f"d{i}") for i in range(n))
    ends = [b.record_end for b in batches]
    assert ends == sorted(ends) and ends[-1] == n
    assert sum(len(b.texts) for b in batches) == n


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.zst", "r.jsonl.gz"])
def test_resume_equals_tail(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "BLOCK_SIZE", 97)  # resume points fall inside blocks
    data, _, _ = _mixed()
    data = b"\n" + data.replace(b"\n", b"\n\n", 3)
    f = put_text(tmp_path, name, data)
    _, full_batches, full = read(f, batch_chars=1)  # one batch per doc
    # (record_end after each doc) -> the docs from there on
    assert full.records == len(BAD_LINES) * 2 + 1
    for k in range(full.records + 2):
        st = FileStats()
        batches = list(iter_batches(f, stats=st, start_record=k, batch_chars=40))
        texts = [t for b in batches for t in b.texts]
        expect = [t for b in full_batches for t in b.texts if b.record_end > k]  # index >= k
        assert texts == expect, k
        assert batches[-1].record_end == full.records
        assert st.records == max(full.records - k, 0)
        assert st.docs == len(expect)
    # resuming with a batch's record_end gives exactly the rest
    for i, b in enumerate(full_batches):
        rest = [t for bb in full_batches[i + 1 :] for t in bb.texts]
        got, _, _ = read(f, start_record=b.record_end)
        assert got == rest


def test_resume_past_end(tmp_path: Path) -> None:
    f = put_text(tmp_path, "p.jsonl.zst", GOOD)
    texts, batches, st = read(f, start_record=10_000)
    assert texts == [] and st.records == 0
    assert batches[-1].record_end == 300  # fewer records than asked to skip


# --------------------------------------------------------------------------- on_error=fail


def test_fail_raises_at_first_bad_record(tmp_path: Path) -> None:
    data = jl({"text": "a"}, {"text": "b"}) + b"\n" + b'{"text": 3}\n' + jl({"text": "c"})
    f = put_text(tmp_path, "f.jsonl.zst", data)
    st = FileStats()
    got: list[DocBatch] = []
    with pytest.raises(InputError) as ei:
        for b in iter_batches(f, stats=st, on_error="fail"):
            got.append(b)
    e = ei.value
    assert (e.path, e.position, e.reason) == (f.path, "line 3", "text_not_string")
    assert f.path in str(e) and "line 3" in str(e)
    assert [t for b in got for t in b.texts] == ["a", "b"]
    assert got[-1].record_end == 2
    f = put_text(tmp_path, "g.jsonl", b'{"text": "a"}\n{"text": "x\xff"}\n')
    with pytest.raises(InputError, match=r"g\.jsonl: line 2: invalid_utf8"):
        list(iter_batches(f, stats=FileStats(), on_error="fail"))
    f = put_text(tmp_path, "h.jsonl", b'{"text": "a"}\n{"text": "a"\n')
    with pytest.raises(InputError, match=r"h\.jsonl: line 2: malformed_json \(.+\)"):
        list(iter_batches(f, stats=FileStats(), on_error="fail"))
    f = put_text(tmp_path, "i.jsonl", b'{"text": "aaaaaaaa"}\n')
    with pytest.raises(InputError, match="line 1: line_too_long"):
        list(iter_batches(f, stats=FileStats(), on_error="fail", max_line_bytes=5))


def test_fail_good_file_does_not_raise(tmp_path: Path) -> None:
    f = put_text(tmp_path, "ok.jsonl.gz", GOOD)
    texts, _, _ = read(f, on_error="fail")
    assert texts == DOCS


# --------------------------------------------------------------------------- broken streams


def _prefix_docs(texts: list[str]) -> None:
    """texts must be a prefix of DOCS (nothing reordered, nothing invented)."""
    assert texts == DOCS[: len(texts)]


def test_truncated_zstd(tmp_path: Path) -> None:
    comp = zst(GOOD)
    for cut in [len(comp) - 1, len(comp) - 3, len(comp) // 2, 20, 5, 1]:
        f = put(tmp_path, f"t{cut}.jsonl.zst", comp[:cut])
        texts, batches, st = read(f)
        _prefix_docs(texts)
        assert len(texts) < len(DOCS)
        assert st.error is not None
        assert f.path in st.error and "truncated" in st.error
        assert f"byte offset {cut}" in st.error and f"{st.records} records" in st.error
        assert batches[-1].record_end == st.records
        assert st.bytes_read == cut
        with pytest.raises(InputError) as ei:
            list(iter_batches(f, stats=FileStats(), on_error="fail"))
        assert ei.value.reason == "truncated_stream"
        assert ei.value.position == f"byte offset {cut}"
        assert f.path in str(ei.value)


def test_truncated_zstd_keeps_records_before_the_cut(tmp_path: Path) -> None:
    # small frames: cutting the last one keeps every complete earlier record
    comp = zst(GOOD, frames=10)
    f = put(tmp_path, "t.jsonl.zst", comp[:-7])
    texts, _, st = read(f)
    _prefix_docs(texts)
    assert len(texts) >= 250
    assert st.error is not None


def test_truncated_zstd_partial_line_is_not_a_record(tmp_path: Path) -> None:
    data = jl({"text": "complete"}) + b'{"text": "cut off here'
    comp = zst(data)
    # append a second frame and cut it: the first frame's unterminated last line
    # would be a record if the file ended cleanly, but the stream is truncated.
    broken = comp + zst(b'", "x": 1}\n')[:6]
    f = put(tmp_path, "p.jsonl.zst", broken)
    texts, _, st = read(f)
    assert texts == ["complete"] and st.records == 1 and st.error is not None
    f = put(tmp_path, "q.jsonl.zst", comp)  # clean end: the last line is a record
    texts, _, st = read(f)
    assert texts == ["complete"] and st.skipped == {"malformed_json": 1} and st.error is None


def test_every_truncation_point_detected(tmp_path: Path) -> None:
    data = jl(*({"text": f"t{i}"} for i in range(40)))
    comp = zst(data, frames=3, checksum=True)
    bounds = set()
    pos = 0
    for i in range(0, len(data), len(data) // 3 + 1):
        pos += len(zst(data[i : i + len(data) // 3 + 1], checksum=True))
        bounds.add(pos)
    assert pos == len(comp)
    for cut in range(1, len(comp) + 1):
        f = put(tmp_path, "t.jsonl.zst", comp[:cut])
        texts, _, st = read(f)
        assert texts == [f"t{i}" for i in range(len(texts))]
        assert (st.error is None) == (cut in bounds), cut


def test_zstd_garbage_between_frames(tmp_path: Path) -> None:
    first, second = GOOD[:4000], GOOD[4000:]
    n_first = first.count(b"\n")
    raw = zst(first) + b"GARBAGE! not a zstd frame" + zst(second)
    f = put(tmp_path, "g.jsonl.zst", raw)
    texts, batches, st = read(f)
    assert texts == DOCS[:n_first]
    assert st.error is not None and "corrupt" in st.error and f.path in st.error
    assert f"framing breaks at byte {len(zst(first))}" in st.error
    assert batches[-1].record_end == n_first
    with pytest.raises(InputError) as ei:
        list(iter_batches(f, stats=FileStats(), on_error="fail"))
    assert ei.value.reason == "corrupt_stream"
    assert ei.value.position.startswith("byte offset ")


def test_zstd_garbage_inside_frame(tmp_path: Path) -> None:
    comp = zst(GOOD, checksum=True)
    mid = len(comp) // 2
    raw = comp[:mid] + b"\xff" * 40 + comp[mid + 40 :]
    f = put(tmp_path, "g.jsonl.zst", raw)
    texts, _, st = read(f)
    _prefix_docs(texts)
    assert st.error is not None
    with pytest.raises(InputError, match=r"corrupt_stream|truncated_stream"):
        list(iter_batches(f, stats=FileStats(), on_error="fail"))


def test_zstd_trailing_garbage(tmp_path: Path) -> None:
    for tail in [b"x", b"abc", b"\x00" * 20, b"not zstd at all, just text"]:
        f = put(tmp_path, "t.jsonl.zst", zst(GOOD) + tail)
        texts, _, st = read(f)
        assert texts == DOCS  # everything before the garbage arrives
        assert st.error is not None


def test_zst_that_is_not_zstd(tmp_path: Path) -> None:
    f = put(tmp_path, "plain.jsonl.zst", GOOD)
    texts, batches, st = read(f)
    assert texts == [] and st.records == 0 and batches[-1].record_end == 0
    assert st.error is not None and "corrupt" in st.error


def test_gz_not_gzip(tmp_path: Path) -> None:
    f = put(tmp_path, "n.jsonl.gz", GOOD)
    texts, _, st = read(f)
    assert texts == [] and st.error is not None and f.path in st.error
    with pytest.raises(InputError) as ei:
        list(iter_batches(f, stats=FileStats(), on_error="fail"))
    assert ei.value.reason == "corrupt_stream" and ei.value.path == f.path


def test_gz_truncated(tmp_path: Path) -> None:
    comp = gz(GOOD)
    for cut in [len(comp) - 4, len(comp) // 2, 15]:
        f = put(tmp_path, f"t{cut}.jsonl.gz", comp[:cut])
        texts, batches, st = read(f)
        _prefix_docs(texts)
        assert st.error is not None and "truncated" in st.error
        assert batches[-1].record_end == st.records
        with pytest.raises(InputError) as ei:
            list(iter_batches(f, stats=FileStats(), on_error="fail"))
        assert ei.value.reason == "truncated_stream"
    # only the CRC/size trailer missing: every record is complete and kept, but it's an error
    f = put(tmp_path, "crc.jsonl.gz", comp[:-8])
    texts, _, st = read(f)
    assert texts == DOCS and st.error is not None


def test_gz_corrupt_and_trailing_garbage(tmp_path: Path) -> None:
    comp = gz(GOOD, members=3)
    f = put(tmp_path, "c.jsonl.gz", comp + b"trailing garbage")
    texts, _, st = read(f)
    assert texts == DOCS and st.error is not None
    f = put(tmp_path, "z.jsonl.gz", comp + b"\x00" * 16)  # NUL padding is accepted
    texts, _, st = read(f)
    assert texts == DOCS and st.error is None
    mid = len(comp) // 2
    f = put(tmp_path, "m.jsonl.gz", comp[:mid] + bytes(b ^ 0x55 for b in comp[mid : mid + 30]))
    texts, _, st = read(f)
    _prefix_docs(texts)
    assert st.error is not None


def test_unreadable_file(tmp_path: Path) -> None:
    f = put_text(tmp_path, "gone.jsonl.zst", GOOD)
    os.unlink(f.path)
    texts, batches, st = read(f)
    assert texts == [] and [b.record_end for b in batches] == [0]
    assert st.error is not None and f.path in st.error
    with pytest.raises(InputError) as ei:
        list(iter_batches(f, stats=FileStats(), on_error="fail"))
    assert ei.value.path == f.path and ei.value.position == "byte offset 0"


def test_bad_arguments(tmp_path: Path) -> None:
    f = put_text(tmp_path, "a.jsonl", GOOD)
    for kw in [{"text_key": ""}, {"text_key": "a..b"}, {"on_error": "ignore"}, {"batch_chars": 0}]:
        with pytest.raises(ConfigError):
            list(iter_batches(f, stats=FileStats(), **kw))


def _open_fds_on(path: str) -> int:
    fds = Path("/proc/self/fd")
    n = 0
    for fd in fds.iterdir():
        try:
            n += os.readlink(fd) == path
        except OSError:  # closed while listing
            pass
    return n


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_generator_close_releases_file(tmp_path: Path) -> None:
    f = put_text(tmp_path, "a.jsonl.zst", GOOD * 20)
    path = os.path.realpath(f.path)
    it = iter_batches(f, stats=FileStats(), batch_chars=10)
    next(it)
    assert _open_fds_on(path) == 1  # reading: the file is open
    it.close()  # the file handle is closed in the generator's finally
    assert _open_fds_on(path) == 0


# --------------------------------------------------------------------------- frame walker


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"write_checksum": True},
        {"write_content_size": False},
        {"level": 19, "write_checksum": True},
        {"level": -5},
    ],
)
def test_frame_walker_on_valid_frames(kw: dict[str, Any]) -> None:
    payloads = [b"", b"a", GOOD, os.urandom(300_000), b"z" * 1_000_000]
    for p in payloads:
        comp = zstandard.ZstdCompressor(**kw).compress(p)
        w = D.ZstdFrameWalker()
        for i in range(0, len(comp), 7):
            w.feed(comp[i : i + 7])
        assert w.complete and not w.lost
        w2 = D.ZstdFrameWalker()
        w2.feed(comp[:-1])
        assert not w2.complete
    # streaming compressor (unknown content size, several blocks, flushes)
    cctx = zstandard.ZstdCompressor(**kw)
    chunker = cctx.chunker(chunk_size=32768)
    out = b"".join(
        [
            *chunker.compress(GOOD * 10),
            *chunker.flush(),
            *chunker.compress(b"more"),
            *chunker.finish(),
        ]
    )
    w = D.ZstdFrameWalker()
    w.feed(out)
    assert w.complete

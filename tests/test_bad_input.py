"""Bad input is never silent (issue 13, item 6): BOM, a ``.json`` JSON array, FIFOs and dangling
symlinks in input directories, and runs that write nothing or skip most records."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard
from typer.testing import CliRunner

from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, InputError
from denoise_cli.prepare.run import prepare
from denoise_cli.source import decompress as D
from denoise_cli.source import read as R
from denoise_cli.source.discover import find_inputs
from denoise_cli.source.read import FileStats, iter_batches

DOCS = [f"document {i}: " + "some plain words of text " * 8 for i in range(40)]


def jl(objs: list[Any]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def texts_of(path: Path, **kw: Any) -> tuple[list[str], FileStats]:
    (f,) = find_inputs([str(path)])
    st = FileStats()
    texts = [t for b in iter_batches(f, stats=st, **kw) for t in b.texts]
    return texts, st


def cfg() -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("t5"), lengths=Lengths("encoder-decoder", 32, 16), text_key="text"
    )


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst", "a.json"])
def test_utf8_bom_is_stripped(tmp_path: Path, name: str) -> None:
    data = b"\xef\xbb\xbf" + jl([{"text": t} for t in DOCS[:3]])
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / name).write_bytes(data)
    texts, st = texts_of(tmp_path / name)
    assert texts == DOCS[:3]
    assert st.skipped == {}


@pytest.mark.parametrize("name", ["a.json", "a.json.zst"])
def test_json_array_file_is_read_as_records(tmp_path: Path, name: str) -> None:
    objs: list[Any] = [{"text": t, "meta": {"i": i}} for i, t in enumerate(DOCS[:8])]
    objs.insert(3, {"body": "no text key"})
    data = json.dumps(objs, indent=2).encode()  # pretty-printed, as editors write it
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    (tmp_path / name).write_bytes(data)
    texts, st = texts_of(tmp_path / name)
    assert texts == DOCS[:8]
    assert st.records == 9 and st.skipped == {"missing_text": 1}
    assert st.keys_seen == ["body"]
    # resume inside the array: records are its elements
    (f,) = find_inputs([str(tmp_path / name)])
    st2 = FileStats()
    rest = [t for b in iter_batches(f, stats=st2, start_record=5) for t in b.texts]
    assert rest == DOCS[4:8]


def test_json_array_over_the_limit_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(R, "ARRAY_MAX_BYTES", 100)
    monkeypatch.setattr(D, "BLOCK_SIZE", 64)
    p = tmp_path / "big.json"
    p.write_bytes(json.dumps([{"text": t} for t in DOCS]).encode())
    texts, st = texts_of(p)
    assert texts == []
    assert st.error is not None and "JSON array larger than" in st.error
    with pytest.raises(InputError, match="json_array_too_large"):
        texts_of(p, on_error="fail")


def test_broken_json_array_is_a_file_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.json"
    p.write_bytes(b'[\n  {"text": "a"},\n  {"text": "b"\n')
    texts, st = texts_of(p)
    assert texts == [] and st.error is not None and "not a JSON array" in st.error


def test_jsonl_starting_with_bracket_is_still_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'[1, 2]\n{"text": "x"}\n')
    texts, st = texts_of(p)
    assert texts == ["x"] and st.skipped == {"not_object": 1}


def test_fifo_and_dangling_symlink_are_reported(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.jsonl").write_bytes(jl([{"text": t} for t in DOCS]))
    os.mkfifo(d / "pipe.jsonl")
    os.symlink(tmp_path / "nowhere.jsonl", d / "gone.jsonl.zst")
    (d / "notes.txt").write_text("not an input")
    ignored: dict[str, list[str]] = {}
    files = find_inputs([str(d)], ignored=ignored)
    assert [f.name for f in files] == ["good.jsonl"]
    assert {k: [os.path.basename(p) for p in v] for k, v in ignored.items()} == {
        "not_regular_file": ["pipe.jsonl"],
        "dangling_symlink": ["gone.jsonl.zst"],
    }
    ignored = {}
    find_inputs([str(d / "*.json*")], ignored=ignored)
    assert sorted(ignored) == ["dangling_symlink", "not_regular_file"]
    m = prepare([str(d)], str(tmp_path / "out"), cfg(), tokenizer=None, workers=1, progress=False)
    assert m["inputs_ignored"] == {
        "dangling_symlink": {"count": 1, "names": ["gone.jsonl.zst"]},
        "not_regular_file": {"count": 1, "names": ["pipe.jsonl"]},
    }
    only = tmp_path / "only"
    only.mkdir()
    os.mkfifo(only / "p.jsonl")
    with pytest.raises(ConfigError, match=r"no input files.*not read \(not_regular_file: p.jsonl"):
        find_inputs([str(only)])
    res = CliRunner().invoke(app, ["prepare", str(d), str(tmp_path / "out2"), "-w", "1"])
    assert res.exit_code == 0, res.output
    assert "not read (not_regular_file): 1 entry" in res.output
    assert "not read (dangling_symlink): 1 entry" in res.output


def test_wrong_text_key_exits_nonzero_naming_file_and_keys(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    raw = jl([{"text": t, "meta": {"i": i}} for i, t in enumerate(DOCS)])
    (d / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["prepare", str(d), str(out), "-w", "1", "--text-key", "body", "-m", "t5"]
    )
    assert res.exit_code == 3, res.output
    assert "a.jsonl.zst" in res.output
    assert "no record in the first 40 has key 'body'; keys seen: text, meta" in res.output
    assert "load it" not in res.output
    assert (out / "denoise.json").is_file()  # the (empty) output is complete and says so


def test_most_records_skipped_exits_nonzero_unless_allowed(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    lines = [json.dumps({"text": t}).encode() for t in DOCS[:10]] + [b"{broken"] * 30
    (d / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(
        InputError, match=r"a\.jsonl: 30 of 40 records skipped \(malformed_json 30\): too_many"
    ):
        prepare([str(d)], str(tmp_path / "o1"), cfg(), workers=1, progress=False)
    m = prepare(
        [str(d)], str(tmp_path / "o2"), cfg(), workers=1, progress=False, max_skip_fraction=0.8
    )
    assert m["totals"]["docs"] == 10
    res = CliRunner().invoke(
        app,
        [
            *("prepare", str(d), str(tmp_path / "o3"), "-w", "1", "--max-skip-fraction", "0.75"),
            *("-m", "t5", "-I", "32", "-T", "16"),
        ],
    )
    assert res.exit_code == 0, res.output


def test_too_little_text_for_one_row_exits_nonzero(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_bytes(jl([{"text": "two words"}]))
    with pytest.raises(InputError, match=r"no row written.*fewer than one row needs"):
        prepare([str(d)], str(tmp_path / "o"), cfg(), workers=1, progress=False)


def test_all_inputs_unreadable_exits_nonzero(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl.zst").write_bytes(b"this is not zstd at all")
    res = CliRunner().invoke(app, ["prepare", str(d), str(tmp_path / "out"), "-w", "1"])
    assert res.exit_code == 3, res.output
    assert "no row written" in res.output and "a.jsonl.zst" in res.output
    assert "corrupt" in res.output

"""Resume after an input was edited in place with the same size: the file is redone from the
start, never mixed (the commit records carry a SHA-256 of the input bytes consumed)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
import zstandard
from test_pipeline import SAMPLE, cfg_for, shard_bytes

import denoise_cli.prepare.resume as pl
from denoise_cli.errors import Interrupted
from denoise_cli.prepare.run import prepare
from denoise_cli.source.fingerprint import SourceDigest, prefix_sha256


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, commits: int) -> None:
    real = pl.atomic_write_bytes
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if "/parts/" in str(path):
            calls["n"] += 1
            if calls["n"] > commits:
                raise KeyboardInterrupt("simulated kill")
        real(path, data)

    monkeypatch.setattr(pl, "atomic_write_bytes", flaky)


def _edit_same_size(path: Path) -> None:
    """Change letters of the first record's text in place: same size, other bytes."""
    data = path.read_bytes()
    end = data.index(b"\n")
    first = data[:end].replace(b"e", b"a")
    assert first != data[:end]
    path.write_bytes(first + data[end:])


def test_prefix_sha256_matches_the_digest_of_what_was_read(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(bytes(range(256)) * 10)
    d = SourceDigest()
    d.update(p.read_bytes()[:1000])
    assert d.count == 1000
    assert prefix_sha256(lambda: open(p, "rb"), 1000) == d.hexdigest()
    assert prefix_sha256(lambda: open(p, "rb"), 999) != d.hexdigest()
    assert prefix_sha256(lambda: open(p, "rb"), 10**6) is None  # shorter than the recorded prefix


def test_input_edited_in_place_with_same_size_is_redone_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raw = zstandard.ZstdDecompressor().decompress(
        (SAMPLE / "en-prose-00.jsonl.zst").read_bytes(), max_output_size=1 << 28
    )
    cfg = cfg_for("ul2", shard_rows=16, group_size=16)
    inp = tmp_path / "in"
    inp.mkdir()
    src = inp / "a.jsonl"
    src.write_bytes(raw)
    out = tmp_path / "o"
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        prepare([str(inp)], str(out), cfg, workers=1, progress=False)
    monkeypatch.undo()
    committed = sorted((out / ".denoise" / "parts").glob("E*.json"))
    assert len(committed) == 3
    assert orjson.loads(committed[-1].read_bytes())["source_bytes"] > 0

    _edit_same_size(src)
    size = src.stat().st_size
    assert size == len(raw)
    ref = tmp_path / "ref"  # an uninterrupted run on the edited file
    prepare([str(inp)], str(ref), cfg, workers=1, progress=False)

    with caplog.at_level(logging.WARNING, logger="denoise_cli.prepare.worker"):
        prepare([str(inp)], str(out), cfg, workers=1, progress=False)
    assert shard_bytes(out) == shard_bytes(ref)
    assert (out / "denoise.json").read_bytes() == (ref / "denoise.json").read_bytes()
    assert "a.jsonl changed since its parts were committed" in caplog.text


def test_unchanged_input_resumes_without_redo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = cfg_for("ul2", shard_rows=16, group_size=16)
    out, ref = tmp_path / "o", tmp_path / "ref"
    prepare([str(SAMPLE)], str(ref), cfg, workers=1, progress=False)
    _interrupt_after(monkeypatch, 4)
    with pytest.raises(Interrupted):
        prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    monkeypatch.undo()
    shards = [orjson.loads(p.read_bytes())["shard"] for p in out.glob(".denoise/parts/E*.json")]
    kept = {n: (out / n).stat().st_mtime_ns for n in shards}
    assert kept
    with caplog.at_level(logging.WARNING, logger="denoise_cli.prepare.worker"):
        prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    assert "changed since" not in caplog.text
    assert all((out / n).stat().st_mtime_ns == t for n, t in kept.items())  # not redone
    assert shard_bytes(out) == shard_bytes(ref)


def test_parquet_input_edited_in_place_is_redone_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Parquet row groups are read out of order: the fingerprint is the whole file's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = zstandard.ZstdDecompressor().decompress(
        (SAMPLE / "en-prose-00.jsonl.zst").read_bytes(), max_output_size=1 << 28
    )
    texts = [orjson.loads(line)["text"] for line in raw.splitlines() if line.strip()]

    def write(ts: list[str]) -> None:
        pq.write_table(
            pa.table({"text": ts}),
            src,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
            row_group_size=max(1, len(ts) // 4),
        )

    cfg = cfg_for("ul2", shard_rows=16, group_size=16)
    inp = tmp_path / "in"
    inp.mkdir()
    src = inp / "a.parquet"
    write(texts)
    size = src.stat().st_size
    out = tmp_path / "o"
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(Interrupted):
        prepare([str(inp)], str(out), cfg, workers=1, progress=False)
    monkeypatch.undo()

    edited = [texts[0].replace("e", "a"), *texts[1:]]
    assert edited[0] != texts[0]
    write(edited)
    assert src.stat().st_size == size
    ref = tmp_path / "ref"
    prepare([str(inp)], str(ref), cfg, workers=1, progress=False)
    with caplog.at_level(logging.WARNING, logger="denoise_cli.prepare.worker"):
        prepare([str(inp)], str(out), cfg, workers=1, progress=False)
    assert shard_bytes(out) == shard_bytes(ref)
    assert "a.parquet changed since its parts were committed" in caplog.text

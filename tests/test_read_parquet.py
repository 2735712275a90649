"""Parquet input (denoise_cli.read_parquet through read.iter_batches): FineWeb-style files made
in the test, compared record for record with the same records written as jsonl.zst."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import InputError, Interrupted
from denoise_cli.prepare.run import prepare
from denoise_cli.source.discover import InputFile, find_inputs
from denoise_cli.source.read import FileStats, iter_batches
from denoise_cli.source.read_parquet import column_path

REPO = Path(__file__).resolve().parents[1]
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")

WORDS = "the quick brown fox jumps over a lazy dog é 漢字 😀".split()


def doc(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(5 + (i * 13) % 60))


def fineweb_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """FineWeb-like records: text, id, url, score; a null, an empty and a blank text among them."""
    rows = [
        {
            "text": doc(i + seed),
            "id": f"<urn:uuid:{seed}-{i}>",
            "url": f"https://example.org/{seed}/{i}",
            "score": (i % 10) / 10,
        }
        for i in range(n)
    ]
    rows[3]["text"] = None
    rows[7]["text"] = ""
    rows[11]["text"] = " \n\t "
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]], rg: int, **kw: Any) -> None:
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, path, row_group_size=rg, compression="zstd", **kw)


def write_jsonl_zst(path: Path, rows: list[dict[str, Any]]) -> None:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(zstandard.ZstdCompressor().compress(data))


def flip_text_chunk(p: Path, rg: int, mask: int) -> None:
    """Flip bits near the end of row group ``rg``'s text column chunk (column 0): inside the
    last page's body (page headers hold unchecked min/max statistics)."""
    col = pq.ParquetFile(p).metadata.row_group(rg).column(0)
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    raw = bytearray(p.read_bytes())
    raw[start + col.total_compressed_size - 3] ^= mask
    p.write_bytes(bytes(raw))


def read_all(f: InputFile, **kw: Any) -> tuple[list[str], list[int], FileStats]:
    st = FileStats()
    batches = list(iter_batches(f, stats=st, **kw))
    assert st.docs + sum(st.skipped.values()) == st.records
    return [t for b in batches for t in b.texts], [b.record_end for b in batches], st


def same_stats(a: FileStats, b: FileStats) -> None:
    for k in ("records", "docs", "chars", "skipped", "error"):
        assert getattr(a, k) == getattr(b, k), k


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    """The same records as Parquet (several row groups) and as jsonl.zst: two files each; the
    second file's text column is an int64 column (non-string texts) with a null."""
    pdir, jdir = tmp_path / "pq", tmp_path / "js"
    pdir.mkdir()
    jdir.mkdir()
    rows = fineweb_rows(230)
    write_parquet(pdir / "000_00000.parquet", rows, rg=50)
    write_jsonl_zst(jdir / "000_00000.jsonl.zst", rows)
    ints: list[dict[str, Any]] = [
        {"text": i * 3 if i != 2 else None, "id": str(i), "url": "u", "score": 0.5}
        for i in range(9)
    ]
    write_parquet(pdir / "000_00001.parquet", ints, rg=4)
    write_jsonl_zst(jdir / "000_00001.jsonl.zst", ints)
    return pdir, jdir


def test_parquet_records_equal_the_same_jsonl_records(corpus: tuple[Path, Path]) -> None:
    pdir, jdir = corpus
    pfiles, jfiles = find_inputs([str(pdir)]), find_inputs([str(jdir)])
    assert [f.compression for f in pfiles] == ["parquet", "parquet"]
    assert pq.ParquetFile(pfiles[0].path).num_row_groups == 5
    for pf, jf in zip(pfiles, jfiles, strict=True):
        pt, pends, pst = read_all(pf, batch_chars=2000)
        jt, jends, jst = read_all(jf, batch_chars=2000)
        assert pt == jt
        same_stats(pst, jst)
        assert pends[-1] == jends[-1] == pst.records
        assert pst.bytes_read == pf.size
    _, _, st0 = read_all(pfiles[0])
    assert st0.records == 230 and st0.docs == 227
    assert st0.skipped == {"missing_text": 1, "empty": 2}
    _, _, st1 = read_all(pfiles[1])
    assert st1.docs == 0 and st1.skipped == {"missing_text": 1, "text_not_string": 8}


def test_parquet_prepare_has_the_jsonl_documents_and_tokens(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    pdir, jdir = corpus
    cfg = PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=32,
        group_size=32,
    )
    mp = prepare([str(pdir)], str(tmp_path / "op"), cfg, tokenizer=T5_TINY, progress=False)
    mj = prepare([str(jdir)], str(tmp_path / "oj"), cfg, tokenizer=T5_TINY, progress=False)
    assert mp["totals"]["tokens"] == mj["totals"]["tokens"] > 1000
    assert mp["totals"]["docs"] == mj["totals"]["docs"] == 227
    for a, b in zip(mp["files"], mj["files"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["stats"]["skipped"] == b["stats"]["skipped"]


def test_nested_text_key_like_json(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"meta": {"body": {"text": doc(i)}, "n": i}, "id": i} for i in range(20)
    ]
    rows[4]["meta"] = None
    rows[5]["meta"]["body"] = None
    rows[6]["meta"]["body"]["text"] = ""
    write_parquet(tmp_path / "n.parquet", rows, rg=6)
    write_jsonl_zst(tmp_path / "n.jsonl.zst", rows)
    (fp,) = find_inputs([str(tmp_path / "n.parquet")])
    (fj,) = find_inputs([str(tmp_path / "n.jsonl.zst")])
    for key in ("meta.body.text", "meta.n", "meta.nope", "id.x", "nope"):
        pt, _, pst = read_all(fp, text_key=key)
        jt, _, jst = read_all(fj, text_key=key)
        assert pt == jt, key
        same_stats(pst, jst)
    assert pst.skipped == {"missing_text": 20}
    sch = pq.read_schema(fp.path)
    assert column_path(sch, ["meta", "body", "text"]) == ("meta.body.text", 2)
    assert column_path(sch, ["id", "x"]) is None


def test_missing_column_under_fail_names_the_columns(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", fineweb_rows(12), rg=5)
    (f,) = find_inputs([str(tmp_path / "a.parquet")])
    with pytest.raises(InputError, match=r"row 1: missing_text .*'content'.*text, id, url, score"):
        read_all(f, text_key="content", on_error="fail")


def test_bad_record_under_fail_names_the_row(tmp_path: Path) -> None:
    write_parquet(tmp_path / "a.parquet", fineweb_rows(12), rg=5)
    (f,) = find_inputs([str(tmp_path / "a.parquet")])
    st = FileStats()
    got: list[str] = []
    with pytest.raises(InputError, match=r"row 4: missing_text"):
        for b in iter_batches(f, stats=st, on_error="fail"):
            got += b.texts
    assert got == [doc(0), doc(1), doc(2)]


def test_resume_at_any_record_skips_row_groups(tmp_path: Path) -> None:
    rows = fineweb_rows(60)
    write_parquet(tmp_path / "a.parquet", rows, rg=16)
    (f,) = find_inputs([str(tmp_path / "a.parquet")])
    texts = [r["text"] for r in rows]
    good = [i for i, t in enumerate(texts) if t and not t.isspace()]
    for start in range(0, 62):
        got, ends, _ = read_all(f, start_record=start, batch_chars=300)
        assert got == [texts[i] for i in good if i >= start], start
        assert ends[-1] == 60
        assert ends == sorted(ends)


def test_resume_does_not_decode_skipped_row_groups(tmp_path: Path) -> None:
    """Row group 0 is corrupt: reading from the start stops there; resuming at record 16 (the
    start of row group 1) skips it through the footer and reads the rest."""
    rows = fineweb_rows(48)
    p = tmp_path / "a.parquet"
    write_parquet(p, rows, rg=16, write_page_checksum=True)
    flip_text_chunk(p, 0, 0xFF)
    (f,) = find_inputs([str(p)])
    got, _, st = read_all(f)
    assert got == [] and st.error is not None and "row group 0" in st.error
    got, ends, st = read_all(f, start_record=16)
    assert got == [r["text"] for r in rows[16:]] and st.error is None and ends[-1] == 48


def test_bad_page_keeps_what_was_read_before_it(tmp_path: Path) -> None:
    rows = fineweb_rows(64)
    p = tmp_path / "a.parquet"
    write_parquet(p, rows, rg=16, write_page_checksum=True)
    flip_text_chunk(p, 2, 0x55)
    (f,) = find_inputs([str(p)])
    got, ends, st = read_all(f, batch_chars=100)
    want = [r["text"] for r in rows[:32] if r["text"] and not r["text"].isspace()]
    assert got == want and ends[-1] == 32 == st.records
    assert st.error is not None and "row group 2" in st.error and "32 records" in st.error
    with pytest.raises(InputError, match=r"row 4: missing_text"):  # a bad row comes first
        read_all(f, on_error="fail")
    with pytest.raises(InputError, match=r"row group 2: corrupt_parquet .*CRC"):
        read_all(f, on_error="fail", start_record=16)


@pytest.mark.parametrize("cut", [0, 1, 8, -1, -8, -100])
def test_corrupt_footer_is_a_file_error(tmp_path: Path, cut: int) -> None:
    p = tmp_path / "a.parquet"
    write_parquet(p, fineweb_rows(20), rg=5)
    raw = p.read_bytes()
    p.write_bytes(raw[:cut])
    (f,) = find_inputs([str(p)])
    got, ends, st = read_all(f)
    assert got == [] and ends == [0] and st.records == 0
    assert st.error is not None and "footer" in st.error
    with pytest.raises(InputError, match=r"footer: corrupt_parquet"):
        read_all(f, on_error="fail")


def test_unreadable_file(tmp_path: Path) -> None:
    p = tmp_path / "a.parquet"
    write_parquet(p, fineweb_rows(20), rg=5)
    (f,) = find_inputs([str(p)])
    p.unlink()
    got, _, st = read_all(f)
    assert got == [] and st.error is not None
    with pytest.raises(InputError, match="unreadable"):
        read_all(f, on_error="fail")


def test_batches_stream_inside_one_row_group(tmp_path: Path) -> None:
    """One big row group is decoded in record batches of about batch_chars, not at once."""
    rows = [{"text": doc(i)} for i in range(2000)]
    write_parquet(tmp_path / "a.parquet", rows, rg=10_000)
    (f,) = find_inputs([str(tmp_path / "a.parquet")])
    assert pq.ParquetFile(f.path).num_row_groups == 1
    st = FileStats()
    batches = list(iter_batches(f, stats=st, batch_chars=2000))
    longest = max(len(r["text"]) for r in rows)
    assert len(batches) > 50
    assert all(sum(map(len, b.texts)) < 2000 + longest for b in batches)
    assert [t for b in batches for t in b.texts] == [r["text"] for r in rows]


def test_binary_text_column_is_decoded(tmp_path: Path) -> None:
    table = pa.table({"text": pa.array([b"caf\xc3\xa9", b"\xff\xfe", None, b"ok"], pa.binary())})
    pq.write_table(table, tmp_path / "b.parquet")
    (f,) = find_inputs([str(tmp_path / "b.parquet")])
    got, _, st = read_all(f)
    assert got == ["café", "ok"]
    assert st.skipped == {"invalid_utf8": 1, "missing_text": 1}


def test_max_doc_chars_like_json(corpus: tuple[Path, Path]) -> None:
    pdir, jdir = corpus
    pf, jf = find_inputs([str(pdir)])[0], find_inputs([str(jdir)])[0]
    pt, _, pst = read_all(pf, max_doc_chars=150)
    jt, _, jst = read_all(jf, max_doc_chars=150)
    assert pt == jt and pst.skipped.get("too_long", 0) > 0
    same_stats(pst, jst)


def test_parquet_kill_and_resume_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed between parts of one Parquet file resumes inside it (record count ->
    row-group skip) and ends with the bytes of an uninterrupted run."""
    import denoise_cli.prepare.resume as pl
    import denoise_cli.source.stream as stream_mod

    write_parquet(tmp_path / "a.parquet", fineweb_rows(400), rg=37)
    inp = [str(tmp_path / "a.parquet")]
    cfg = PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=16,
        group_size=16,
    )
    starts: list[int] = []
    real_iter = stream_mod.iter_batches

    def spy(f: InputFile, **kw: Any) -> Any:  # small batches: commits inside the file
        starts.append(kw["start_record"])
        return real_iter(f, **kw, batch_chars=3000)

    monkeypatch.setattr(stream_mod, "iter_batches", spy)
    ref = tmp_path / "ref"
    prepare(inp, str(ref), cfg, tokenizer=T5_TINY, workers=1, progress=False)

    def digest(out: Path) -> dict[str, str]:
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "data").iterdir())
        }

    real = pl.atomic_write_bytes
    resumed: list[int] = []
    for kill_after in (2, 9):
        out = tmp_path / f"cut{kill_after}"
        calls = {"n": 0}

        def flaky(
            path: Path, data: bytes, calls: dict[str, int] = calls, limit: int = kill_after
        ) -> None:
            if "/parts/" in str(path):
                calls["n"] += 1
                if calls["n"] > limit:
                    raise KeyboardInterrupt("simulated kill")
            real(path, data)

        monkeypatch.setattr(pl, "atomic_write_bytes", flaky)
        with pytest.raises(Interrupted):
            prepare(inp, str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)
        monkeypatch.setattr(pl, "atomic_write_bytes", real)
        starts.clear()
        prepare(inp, str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)
        assert starts and 0 < starts[0] < 400  # resumed inside the file
        resumed.append(starts[0])
        assert digest(out) == digest(ref) and len(digest(ref)) > 4
        assert (out / "denoise.json").read_bytes() == (ref / "denoise.json").read_bytes()
    assert max(resumed) > 37  # past row group 0: whole row groups skipped

"""End-to-end tests of ``denoise prepare`` on the bundled sample and on generated files."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
import zstandard
from helpers import REPO, SAMPLE, T5_TINY, Outputs

from denoise_cli import open_dataset
from denoise_cli.config import Lengths, Mixture, PrepareConfig, TokenConfig, load_mixture
from denoise_cli.errors import ConfigError, InputError, Interrupted, OutputError
from denoise_cli.prepare.run import prepare
from denoise_cli.rows.base import IGNORE_INDEX
from denoise_cli.source.discover import find_inputs
from denoise_cli.source.read import FileStats, iter_batches
from denoise_cli.source.stream import join_documents
from denoise_cli.source.tokenize import TokenizerInfo


def shard_bytes(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "data").iterdir())
        if p.is_file()
    }


def cfg_for(mixture: str = "ul2", **kw: Any) -> PrepareConfig:
    lengths = kw.pop("lengths", Lengths("encoder-decoder", 128, 128))
    return PrepareConfig(mixture=load_mixture(mixture), lengths=lengths, **kw)


def write_jsonl_zst(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n"))


def source_streams(out: Path, inputs: list[str], cfg: PrepareConfig) -> dict[int, np.ndarray]:
    """Independently re-read and re-tokenize each input file into its token stream."""
    m = open_dataset(out).manifest
    tok = m["tokenizer"]
    enc = TokenizerInfo.from_dict(tok, (out / "tokenizer.json").read_text()).encoder()
    streams = {}
    for i, f in enumerate(find_inputs(inputs)):
        st = FileStats()
        parts = []
        for b in iter_batches(f, text_key=cfg.text_key, stats=st):
            v, o, _ = enc.encode(b.texts)
            parts.append(
                join_documents(v, o, tok["eos"]["id"] if cfg.doc_separator == "eos" else None)
            )
        streams[i] = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return streams


def rebuild_raw(row: dict[str, Any], comp: dict[str, Any], manifest: dict[str, Any]) -> np.ndarray:
    """Raw chunk from one encoder-decoder row, written plainly (loops) from the format spec."""
    ids = list(row["input_ids"][: row["input_length"]])
    labels = [t for t in row["labels"] if t != IGNORE_INDEX]
    eos = manifest["tokenizer"]["eos"]["id"]
    sentinels = manifest["tokenizer"]["sentinel_ids"]
    assert ids[-1] == eos and labels[-1] == eos
    ids, labels = ids[:-1], labels[:-1]
    if comp["mode_token"] is not None:
        assert ids[0] == manifest["tokenizer"]["mode_tokens"][comp["mode_token"]]
        ids = ids[1:]
    if comp["spans"] == 0:  # S: prefix + suffix
        return np.array(ids + labels)
    # R/X: inputs = keep0 S0 keep1 S1 ... ; targets = S0 noise0 S1 noise1 ...
    pos = {s: k for k, s in enumerate(sentinels)}
    keeps: list[list[int]] = [[]]
    for t in ids:
        if t in pos:
            assert pos[t] == len(keeps) - 1, "sentinels out of order in inputs"
            keeps.append([])
        else:
            keeps[-1].append(t)
    noises: list[list[int]] = []
    for t in labels:
        if t in pos:
            assert pos[t] == len(noises), "sentinels out of order in targets"
            noises.append([])
        else:
            noises[-1].append(t)
    assert len(noises) == comp["spans"] == len(keeps) - 1
    assert all(noises) and all(keeps[:-1]), "empty span"
    raw: list[int] = []
    for k, n in zip(keeps, noises, strict=False):
        raw += k + n
    return np.array(raw + keeps[-1])


@pytest.fixture(scope="module")
def sample_out(outputs: Outputs) -> tuple[Path, PrepareConfig]:
    cfg = cfg_for("ul2", shard_rows=64, group_size=64)
    return outputs(cfg), cfg


def test_sample_rows_rebuild_the_token_stream(sample_out: tuple[Path, PrepareConfig]) -> None:
    out, cfg = sample_out
    ds = open_dataset(out)
    m = ds.manifest
    streams = source_streams(out, [str(SAMPLE)], cfg)
    assert len(ds) == m["totals"]["rows"] > 100
    used = {i: 0 for i in streams}
    for i in range(len(ds)):
        row = ds[i]
        comp = m["components"][int(row["denoiser"])]
        raw = rebuild_raw(row, comp, m)
        assert len(raw) == comp["raw_length"]
        f, off = int(row["source_file"]), int(row["token_offset"])
        np.testing.assert_array_equal(raw, streams[f][off : off + len(raw)])
        assert off == used[f], "chunks of a file must be contiguous and in order"
        used[f] += len(raw)
        # padding only after the real tokens, never masked
        am = row["attention_mask"]
        assert am[: row["input_length"]].all() and not am[row["input_length"] :].any()
        assert (row["input_ids"][row["input_length"] :] == m["tokenizer"]["pad"]["id"]).all()
    for f, rec in enumerate(m["files"]):
        assert rec["tokens"] == len(streams[f])
        assert rec["tokens_used"] == used[f]
        assert rec["tail_tokens"] == len(streams[f]) - used[f]
    # the token stream itself never holds sentinel/mode/pad ids: only the denoisers write them
    reserved = set(m["tokenizer"]["sentinel_ids"]) | set(m["tokenizer"]["mode_tokens"].values())
    for s in streams.values():
        assert not np.isin(s, [*list(reserved), m["tokenizer"]["pad"]["id"]]).any()


def test_manifest_accounts_for_every_record(sample_out: tuple[Path, PrepareConfig]) -> None:
    out, _ = sample_out
    m = json.loads((out / "denoise.json").read_text())
    assert m["totals"]["records"] == m["totals"]["docs"] == 41
    assert m["totals"]["skipped"] == {}
    assert sum(s["rows"] for s in m["shards"]) == m["totals"]["rows"]
    for s in m["shards"]:
        p = out / s["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == s["sha256"]
        with pa.memory_map(str(p)) as src:
            assert pa.ipc.open_stream(src).read_all().num_rows == s["rows"]
    assert (
        m["tokenizer"]["sha256"]
        == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    )
    assert m["sentinels_needed"] == max(c["spans"] for c in m["components"])
    assert len(m["shards"]) > 2  # shard_rows=64 splits files into several parts


def test_worker_count_and_reruns_are_byte_identical(tmp_path: Path) -> None:
    cfg = cfg_for("ul2", shard_rows=50, group_size=50)
    outs = []
    for name, workers in (("w1", 1), ("w2", 2), ("w2b", 2)):
        prepare([str(SAMPLE)], str(tmp_path / name), cfg, workers=workers, progress=False)
        outs.append(tmp_path / name)
    a, b, c = (shard_bytes(o) for o in outs)
    assert a == b == c and len(a) >= 4
    ma, mb = ((o / "denoise.json").read_bytes() for o in outs[:2])
    assert ma == mb
    prepare([str(SAMPLE)], str(tmp_path / "seed1"), replace(cfg, seed=1), workers=1, progress=False)
    assert shard_bytes(tmp_path / "seed1") != a


def test_packed_output_is_worker_count_independent_and_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--pack: the rows (which examples share a row, in which order) are a pure function of each
    group, so 1 or 2 workers and a run killed between parts and resumed give the same bytes; a
    resume with a denoise that packs differently is refused as config drift."""
    import denoise_cli.config as config
    import denoise_cli.prepare.resume as pl

    cfg = replace(
        cfg_for("ul2", shard_rows=16, group_size=64),
        lengths=Lengths("encoder-decoder", 256, 160),
        pack_factor=4,
    )
    ref = tmp_path / "w1"
    prepare([str(SAMPLE)], str(ref), cfg, workers=1, progress=False)
    prepare([str(SAMPLE)], str(tmp_path / "w2"), cfg, workers=2, progress=False)
    assert shard_bytes(ref) == shard_bytes(tmp_path / "w2") and len(shard_bytes(ref)) >= 4
    m = json.loads((ref / "denoise.json").read_text())
    assert m["packing"]["algorithm"] == config.PACK_ALGORITHM == m["config"]["pack_algorithm"]

    real = pl.atomic_write_bytes
    out = tmp_path / "cut"
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if "/parts/" in str(path):
            calls["n"] += 1
            if calls["n"] > 3:
                raise KeyboardInterrupt("simulated kill")
        real(path, data)

    monkeypatch.setattr(pl, "atomic_write_bytes", flaky)
    with pytest.raises(Interrupted):
        prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    monkeypatch.setattr(pl, "atomic_write_bytes", real)
    monkeypatch.setattr(config, "PACK_ALGORITHM", "some-other-packer")
    with pytest.raises(OutputError, match="pack_algorithm"):
        prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    monkeypatch.undo()
    prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    assert shard_bytes(out) == shard_bytes(ref)
    assert (out / "denoise.json").read_bytes() == (ref / "denoise.json").read_bytes()


def test_rerun_on_complete_output_changes_nothing(sample_out: tuple[Path, PrepareConfig]) -> None:
    out, cfg = sample_out
    before = shard_bytes(out)
    m1 = (out / "denoise.json").read_bytes()
    prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    assert shard_bytes(out) == before
    assert (out / "denoise.json").read_bytes() == m1


def test_interrupted_run_resumes_without_gaps_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = cfg_for("ul2", shard_rows=16, group_size=16)
    ref = tmp_path / "ref"
    prepare([str(SAMPLE)], str(ref), cfg, workers=1, progress=False)
    import denoise_cli.prepare.resume as pl

    real = pl.atomic_write_bytes
    for kill_after in (1, 3, 6, 10):
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
            prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
        assert not (out / "denoise.json").exists()
        monkeypatch.setattr(pl, "atomic_write_bytes", real)
        prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
        assert shard_bytes(out) == shard_bytes(ref)
        assert (out / "denoise.json").read_bytes() == (ref / "denoise.json").read_bytes()
        assert not list(out.rglob(".tmp-*"))


def test_config_drift_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o"
    cfg = cfg_for("t5")
    prepare([str(SAMPLE)], str(out), cfg, workers=1, progress=False)
    with pytest.raises(OutputError, match="seed"):
        prepare([str(SAMPLE)], str(out), replace(cfg, seed=7), workers=1, progress=False)
    with pytest.raises(OutputError, match="mixture"):
        prepare([str(SAMPLE)], str(out), cfg_for("ul2"), workers=1, progress=False)
    prepare(
        [str(SAMPLE)], str(out), replace(cfg, seed=7), workers=1, progress=False, overwrite=True
    )
    assert json.loads((out / "denoise.json").read_text())["seed"] == 7


def test_refuses_non_empty_foreign_directory(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a denoise output"):
        prepare([str(SAMPLE)], str(out), cfg_for("t5"), workers=1, progress=False)
    assert (out / "precious.txt").read_text() == "keep me"


def test_bad_records_are_counted_and_good_neighbours_kept(tmp_path: Path) -> None:
    good = [orjson.dumps({"text": f"document number {i} " * 40}) for i in range(30)]
    lines = [
        good[0],
        b"{not json",
        good[1],
        b'"just a string"',
        good[2],
        b'{"meta": 1}',
        good[3],
        b'{"text": null}',
        good[4],
        b'{"text": 12}',
        good[5],
        b'{"text": ["a"]}',
        good[6],
        b'{"text": ""}',
        good[7],
        b'{"text": "\xff\xfe bad utf8"}',
        good[8],
        *good[9:],
    ]
    inp = tmp_path / "in"
    inp.mkdir()
    write_jsonl_zst(inp / "a.jsonl.zst", lines)
    out = tmp_path / "o"
    m = prepare(
        [str(inp)],
        str(out),
        cfg_for("t5", lengths=Lengths("encoder-decoder", 64, 32)),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
    )
    f = m["files"][0]["stats"]
    assert f["docs"] == 30
    assert f["skipped"] == {
        "malformed_json": 1,
        "not_object": 1,
        "missing_text": 2,
        "text_not_string": 2,
        "empty": 1,
        "invalid_utf8": 1,
    }
    assert f["records"] == 30 + 8
    with pytest.raises(InputError, match=r"a\.jsonl\.zst.*line 2"):
        prepare(
            [str(inp)],
            str(tmp_path / "o2"),
            cfg_for("t5", lengths=Lengths("encoder-decoder", 64, 32), on_error="fail"),
            tokenizer=T5_TINY,
            workers=1,
            progress=False,
        )


def test_truncated_zstd_keeps_what_was_read(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    docs = [orjson.dumps({"text": f"line {i} " + "word " * 200}) for i in range(400)]
    blob = zstandard.ZstdCompressor().compress(b"\n".join(docs) + b"\n")
    (inp / "cut.jsonl.zst").write_bytes(blob[: len(blob) * 2 // 3])
    write_jsonl_zst(inp / "ok.jsonl.zst", docs[:50])
    m = prepare(
        [str(inp)],
        str(tmp_path / "o"),
        cfg_for("t5", lengths=Lengths("encoder-decoder", 64, 32)),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
    )
    cut = next(f for f in m["files"] if f["name"] == "cut.jsonl.zst")
    assert cut["stats"]["error"] and "cut.jsonl.zst" in cut["stats"]["error"]
    assert 0 < cut["stats"]["docs"] < 400 and cut["rows"] > 0
    assert m["totals"]["files_with_errors"] == 1


def test_sentinels_looked_up_by_name_not_by_vocab_size(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(300)]
    specials = ["<pad>", "</s>", "<unk>"] + [f"<extra_id_{k}>" for k in range(40)]
    rng = np.random.default_rng(0)
    vocab_list = words + specials
    perm = rng.permutation(len(vocab_list))
    vocab = {tok: int(i) for tok, i in zip(vocab_list, perm, strict=False)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk_path = tmp_path / "tok.json"
    tk.save(str(tk_path))
    inp = tmp_path / "in"
    inp.mkdir()
    texts = [" ".join(rng.choice(words, 300)) + " <extra_id_0> </s>" for _ in range(20)]
    (inp / "a.jsonl").write_bytes(b"\n".join(orjson.dumps({"text": t}) for t in texts))
    cfg = cfg_for(
        "t5", lengths=Lengths("encoder-decoder", 64, 32), tokens=TokenConfig(add_missing=False)
    )
    m = prepare(
        [str(inp)], str(tmp_path / "o"), cfg, tokenizer=str(tk_path), workers=1, progress=False
    )
    assert m["tokenizer"]["sentinel_ids"] == [
        vocab[f"<extra_id_{k}>"] for k in range(m["sentinels_needed"])
    ]
    assert m["tokenizer"]["added_tokens"] == []
    # the literal "<extra_id_0>" / "</s>" in the text became unk, never a sentinel / eos
    assert m["totals"]["reserved_replaced"] == 40
    ds = open_dataset(tmp_path / "o")
    streams = source_streams(tmp_path / "o", [str(inp)], cfg)
    for i in range(len(ds)):
        row = ds[i]
        comp = m["components"][int(row["denoiser"])]
        raw = rebuild_raw(row, comp, m)
        off = int(row["token_offset"])
        np.testing.assert_array_equal(raw, streams[0][off : off + len(raw)])


def test_too_few_sentinels_fails_before_work(tmp_path: Path) -> None:
    cfg = PrepareConfig(
        mixture=load_mixture("X(3,0.5)"),
        lengths=Lengths("encoder-decoder", 512, 512),
        tokens=TokenConfig(add_missing=False),
    )
    with pytest.raises(ConfigError, match="127 sentinels"):
        prepare(
            [str(SAMPLE)], str(tmp_path / "o"), cfg, tokenizer=T5_TINY, workers=1, progress=False
        )
    assert not (tmp_path / "o").exists()


def test_decoder_only_layout_and_parquet(tmp_path: Path) -> None:
    cfg = cfg_for("ul2r", lengths=Lengths("decoder-only", seq_length=256), format="parquet")
    m = prepare([str(SAMPLE)], str(tmp_path / "o"), cfg, workers=2, progress=False)
    ds = open_dataset(tmp_path / "o")
    assert len(ds) == m["totals"]["rows"] > 0
    b = ds[0 : len(ds)]
    assert b["input_ids"].shape == (len(ds), 256) and b["labels"].shape == (len(ds), 256)
    col = np.arange(256)[None, :]
    has_label = (col >= b["prefix_length"][:, None]) & (col < b["input_length"][:, None])
    assert ((b["labels"] != IGNORE_INDEX) == has_label).all()
    np.testing.assert_array_equal(b["labels"][has_label], b["input_ids"][has_label])
    assert (b["labels"] != IGNORE_INDEX).sum(axis=1).tolist() == b["target_length"].tolist()
    eos = m["tokenizer"]["eos"]["id"]
    assert (b["input_ids"][np.arange(len(ds)), b["input_length"] - 1] == eos).all()


def test_datasets_load_from_disk(sample_out: tuple[Path, PrepareConfig]) -> None:
    datasets = pytest.importorskip("datasets")
    out, _ = sample_out
    hf = datasets.load_from_disk(str(out))
    ds = open_dataset(out)
    assert len(hf) == len(ds)
    for i in (0, len(ds) // 2, len(ds) - 1):
        assert hf[i]["input_ids"] == ds[i]["input_ids"].tolist()
        assert hf[i]["labels"] == ds[i]["labels"].tolist()


def test_mixture_is_never_an_or_of_masks(tmp_path: Path) -> None:
    mix = Mixture(
        "two",
        (load_mixture("R(3,0.15)").denoisers[0], load_mixture("R(8,0.15)").denoisers[0]),
        mode_tokens=False,
    )
    cfg = PrepareConfig(mixture=mix, lengths=Lengths("encoder-decoder", 128, 128))
    m = prepare([str(SAMPLE)], str(tmp_path / "o"), cfg, workers=1, progress=False)
    b = open_dataset(tmp_path / "o")[0 : m["totals"]["rows"]]
    comps = m["components"]
    # every row's noise count is exactly its own component's, and both components occur
    noise = b["target_length"] - 1 - np.array([comps[d]["spans"] for d in b["denoiser"]])
    np.testing.assert_array_equal(noise, [comps[d]["noise_tokens"] for d in b["denoiser"]])
    assert set(np.unique(b["denoiser"]).tolist()) == {0, 1}


@pytest.mark.parametrize("layout", ["encoder-decoder", "decoder-only"])
def test_packed_output_holds_exactly_the_unpacked_examples(tmp_path: Path, layout: str) -> None:
    """--pack k writes the same examples as an unpacked run at the 1/k example budget (same
    seed, same draws), several per row: unpacking them gives the unpacked rows back."""
    from denoise_cli.rows.packing import unpack_rows

    if layout == "encoder-decoder":
        rows_len, ex_len = Lengths(layout, 256, 160), Lengths(layout, 64, 64)
    else:
        rows_len, ex_len = Lengths(layout, seq_length=512), Lengths(layout, seq_length=128)
    packed_cfg = PrepareConfig(mixture=load_mixture("ul2r"), lengths=rows_len, pack_factor=4)
    assert packed_cfg.example_lengths == ex_len
    mp = prepare([str(SAMPLE)], str(tmp_path / "p"), packed_cfg, workers=2, progress=False)
    mu = prepare(
        [str(SAMPLE)],
        str(tmp_path / "u"),
        replace(packed_cfg, lengths=ex_len, pack_factor=0),
        workers=1,
        progress=False,
    )
    p, u = open_dataset(tmp_path / "p"), open_dataset(tmp_path / "u")
    pb, ub = p[np.arange(len(p))], u[np.arange(len(u))]
    assert mp["packing"]["max_segments"] >= 4 and len(p) < len(u) / 2
    ex = unpack_rows(pb, ex_len, mp["tokenizer"]["pad"]["id"])
    valid = np.arange(pb["segment_example_index"].shape[1])[None, :] < pb["num_segments"][:, None]
    key = np.stack(
        [np.repeat(pb["source_file"], pb["num_segments"]), pb["segment_example_index"][valid]], 1
    )
    order = np.lexsort((key[:, 1], key[:, 0]))
    assert len(order) == len(u) == mu["totals"]["rows"]
    np.testing.assert_array_equal(ex.input_ids[order], ub["input_ids"])
    np.testing.assert_array_equal(ex.labels[order], ub["labels"])
    np.testing.assert_array_equal(pb["segment_denoiser"][valid][order], ub["denoiser"])
    # pad_last padding rows of a packed output carry no segment, no loss, no metadata
    (last,) = list(p.iter_batches(len(p) + 3, pad_last=True))
    seg_col = "encoder_segment_ids" if layout == "encoder-decoder" else "segment_ids"
    assert (last[seg_col][-3:] == 0).all() and (last["labels"][-3:] == IGNORE_INDEX).all()
    assert (last["num_segments"][-3:] == 0).all() and (
        last["segment_example_index"][-3:] == -1
    ).all()
    # packing wastes fewer slots than one example per row
    real = pb["attention_mask"].sum() + (pb["labels"] != IGNORE_INDEX).sum()
    assert real / (pb["input_ids"].size + pb["labels"].size) > 0.6


def example_digest(out: Path) -> tuple[int, str]:
    """Row count and sha256 of the examples (``input_ids`` then ``labels``, int32 LE)."""
    ds = open_dataset(out)
    b = ds[np.arange(len(ds))]
    h = hashlib.sha256()
    for k in ("input_ids", "labels"):
        h.update(np.ascontiguousarray(b[k]).astype("<i4").tobytes())
    return len(ds), h.hexdigest()


# Pinned before the redesign (issue 14): the default ul2 run must keep these exact examples.
SAMPLE_UL2_DIGEST = (163, "9cd1ab5b81105016c213169cffca23e0182c693a8fd2266b369676164ead1142")
SHARED_00_GPT2_UL2_DIGEST = (
    5370,
    "23fce4fef02e53c59e79817acc926a95c8c927a19eca402132950021fab9a117",
)


@pytest.mark.parametrize("shard", [{}, {"shard_rows": 100}, {"shard_rows": 1}, {"shard_bytes": 1}])
def test_examples_do_not_depend_on_shard_size(tmp_path: Path, shard: dict[str, int]) -> None:
    """Storage choices never change the examples: a shard holds whole draw groups."""
    cfg = cfg_for("ul2", lengths=Lengths("encoder-decoder", 512, 512), **shard)
    prepare([str(SAMPLE)], tmp_path / "o", cfg, workers=1, progress=False)
    assert example_digest(tmp_path / "o") == SAMPLE_UL2_DIGEST


SHARED_00 = REPO.parent / "shared" / "corpus" / "en-prose" / "00.jsonl.zst"
SHARED_GPT2 = REPO.parent / "shared" / "tokenizers" / "gpt2" / "tokenizer.json"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_00.is_file(), reason="needs ../shared (real corpus)")
@pytest.mark.parametrize("shard", [{}, {"shard_rows": 1000}])
def test_real_shard_examples_are_pinned(tmp_path: Path, shard: dict[str, int]) -> None:
    cfg = cfg_for("ul2", lengths=Lengths("encoder-decoder", 512, 512), **shard)
    prepare(
        [str(SHARED_00)], tmp_path / "o", cfg, tokenizer=str(SHARED_GPT2), workers=1, progress=False
    )
    assert example_digest(tmp_path / "o") == SHARED_00_GPT2_UL2_DIGEST

"""``prepare --limit-docs / --limit-tokens`` (a deterministic prefix of the inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zstandard
from helpers import SAMPLE

from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, OutputError
from denoise_cli.prepare.run import prepare


def cfg(**kw: object) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 128, 128),
        shard_rows=40,
        group_size=40,
        **kw,
    )  # type: ignore[arg-type]


def ref_docs(path: Path) -> list[int]:
    """The record index (0-based, blank lines not counted) of every document of a jsonl.zst
    file, read the obvious way."""
    raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    recs = [ln for ln in raw.split(b"\n") if ln.strip()]
    out = []
    for i, ln in enumerate(recs):
        try:
            t = json.loads(ln).get("text")
        except ValueError:
            continue
        if isinstance(t, str) and t.strip():
            out.append(i)
    return out


def rows(d: Path) -> dict[str, np.ndarray]:
    from denoise_cli import open_dataset

    ds = open_dataset(d)
    return ds[np.arange(len(ds))]


def tree(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full") / "o"
    prepare([str(SAMPLE)], str(out), cfg(), workers=1, progress=False)
    return out


def test_limit_docs_is_a_prefix(full: Path, tmp_path: Path) -> None:
    files = sorted(SAMPLE.glob("*.jsonl.zst"))
    docs0 = ref_docs(files[0])
    docs1 = ref_docs(files[1])
    k = 7
    n = len(docs0) + k
    a, b = tmp_path / "a", tmp_path / "b"
    m = prepare([str(SAMPLE)], str(a), cfg(limit_docs=n), workers=1, progress=False)
    prepare([str(SAMPLE)], str(b), cfg(limit_docs=n), workers=2, progress=False)
    assert tree(a) == tree(b)  # the same N gives the same bytes whatever -w
    assert m["config"]["limit_docs"] == n
    assert m["totals"]["docs"] == n
    f0, f1 = m["files"][:2]
    assert "stop_record" not in f0 and f0["stats"]["docs"] == len(docs0)
    # the second file stops right after its k-th document
    assert f1["stop_record"] == docs1[k - 1] + 1
    assert f1["stats"]["docs"] == k
    assert len(m["files"]) == 2 or all(f["stats"]["docs"] == 0 for f in m["files"][2:])
    # the first file, fully covered, is byte-identical to the full run's; the second file's
    # rows equal the full run's up to its last (partial) group
    ta, tf = tree(a), tree(full)
    for name, data in tf.items():
        if name.startswith("data/00000-"):
            assert ta[name] == data
    ra, rf = rows(a), rows(full)
    sa = np.flatnonzero(ra["source_file"] == 1)
    sf = np.flatnonzero(rf["source_file"] == 1)
    keep = (len(sa) // 40 - 1) * 40  # whole groups before the last one
    assert keep > 0
    for col in ("input_ids", "labels", "denoiser"):
        np.testing.assert_array_equal(ra[col][sa[:keep]], rf[col][sf[:keep]])
    # verify --source re-reads exactly the limited prefix
    verify(a, sources=[str(SAMPLE)])


def test_limit_tokens_is_shortest_document_prefix(tmp_path: Path) -> None:
    n = 9000
    m = prepare([str(SAMPLE)], str(tmp_path / "t"), cfg(limit_tokens=n), workers=2, progress=False)
    assert m["config"]["limit_tokens"] == n
    docs = m["totals"]["docs"]
    assert m["totals"]["tokens"] >= n
    # one document fewer (as a --limit-docs run) falls short of N
    m2 = prepare(
        [str(SAMPLE)], str(tmp_path / "d"), cfg(limit_docs=docs - 1), workers=1, progress=False
    )
    assert m2["totals"]["tokens"] < n
    verify(tmp_path / "t", sources=[str(SAMPLE)])


def test_limit_change_refused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "o"
    prepare([str(SAMPLE)], str(out), cfg(limit_docs=10), workers=1, progress=False)
    with pytest.raises(OutputError, match="limit_docs"):
        prepare([str(SAMPLE)], str(out), cfg(limit_docs=11), workers=1, progress=False)
    with pytest.raises(OutputError, match="limit_docs"):
        prepare([str(SAMPLE)], str(out), cfg(), workers=1, progress=False)


def test_limit_options_checked() -> None:
    with pytest.raises(ConfigError):
        cfg(limit_docs=-1)
    with pytest.raises(ConfigError, match="cannot be combined"):
        cfg(limit_docs=3, limit_tokens=5)
    c = cfg(limit_tokens=5)
    assert PrepareConfig.from_dict(c.fingerprint_dict()) == c
    assert "limit_docs" not in cfg().fingerprint_dict()  # unlimited outputs keep their identity


# --------------------------------------------------------------------------- --split / --holdout

SPLITS = (("train", 0.7), ("validation", 0.3))


def ref_split(seed: int, key: int, index: int, fractions: list[float]) -> int:
    """The split of a document, by Python integers: splitmix64 over (seed, key, index)."""
    m = (1 << 64) - 1

    def mix(x: int) -> int:
        x = (x + 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    h = mix(mix(mix(seed) ^ key) ^ index)
    u = (h >> 11) / float(1 << 53)
    acc = 0.0
    for k, f in enumerate(fractions[:-1]):
        acc += f
        if u < acc:
            return k
    return len(fractions) - 1


def test_split_of_matches_reference() -> None:
    from denoise_cli.source.stream import split_of

    fr = [0.5, 0.3, 0.2]
    for seed, key in [(0, 0), (7, 2**64 - 1), (2**63 - 1, 12345)]:
        got = split_of(seed, key, np.arange(500), np.cumsum(fr))
        assert got.tolist() == [ref_split(seed, key, i, fr) for i in range(500)]
    # roughly the fractions (a hash, not a quota)
    got = split_of(1, 2, np.arange(20000), np.cumsum(fr))
    assert np.allclose(np.bincount(got) / 20000, fr, atol=0.02)


@pytest.fixture(scope="module")
def split_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split") / "o"
    prepare([str(SAMPLE)], str(out), cfg(splits=SPLITS), workers=1, progress=False)
    return out


def texts_of(path: Path) -> list[str]:
    raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    return [json.loads(ln)["text"] for ln in raw.split(b"\n") if ln.strip()]


def test_split_assignment_stable_complete_and_disjoint(split_out: Path, tmp_path: Path) -> None:
    from denoise_cli.rows.chunk import file_key

    other = tmp_path / "w2"
    prepare([str(SAMPLE)], str(other), cfg(splits=SPLITS), workers=2, progress=False)
    assert tree(other) == tree(split_out)  # stable across worker counts
    top = json.loads((split_out / "denoise.json").read_text())
    assert top["split_dirs"] == {"train": "train", "validation": "validation"}
    per = {n: json.loads((split_out / n / "denoise.json").read_text()) for n, _ in SPLITS}
    fr = [f for _, f in SPLITS]
    tok = json.loads((split_out / "train" / "tokenizer.json").read_text())
    from tokenizers import Tokenizer

    hf = Tokenizer.from_str(json.dumps(tok))
    for k, path in enumerate(sorted(SAMPLE.glob("*.jsonl.zst"))):
        docs = texts_of(path)
        key = file_key(path.name)
        which = [ref_split(0, key, i, fr) for i in range(len(docs))]
        for s, (name, _) in enumerate(SPLITS):
            entry = per[name]["files"][k]
            assert entry["name"] == path.name
            mine = [d for d, w in zip(docs, which, strict=True) if w == s]
            # every document in exactly one split: the counts partition the file's documents
            assert entry["stats"]["docs"] == len(mine)
            assert entry["stats"]["skipped"].get("other_split", 0) == len(docs) - len(mine)
            # the split's stream is exactly its documents, each followed by EOS
            ids = hf.encode_batch(mine, add_special_tokens=False)
            assert entry["tokens"] == sum(len(e.ids) + 1 for e in ids)
        assert sum(per[n]["files"][k]["stats"]["docs"] for n, _ in SPLITS) == len(docs)
        assert top["files"][k]["stats"]["docs"] == len(docs)
    assert top["totals"]["docs"] == sum(m["totals"]["docs"] for m in per.values())
    assert top["totals"]["rows_per_split"] == {n: m["totals"]["rows"] for n, m in per.items()}
    verify(split_out, sources=[str(SAMPLE)])
    verify(split_out, split="validation", sources=[str(SAMPLE)])


def test_split_rows_do_not_depend_on_other_split(split_out: Path, tmp_path: Path) -> None:
    """A split's rows are those of a plain run on a file holding just its documents (same
    name: the file's identity in the random streams)."""
    from denoise_cli.rows.chunk import file_key

    path = sorted(SAMPLE.glob("*.jsonl.zst"))[0]
    docs = texts_of(path)
    which = [ref_split(0, file_key(path.name), i, [0.7, 0.3]) for i in range(len(docs))]
    d = tmp_path / "in"
    d.mkdir()
    lines = b"".join(
        json.dumps({"text": t}).encode() + b"\n" for t, w in zip(docs, which, strict=True) if w == 1
    )
    (d / path.name).write_bytes(zstandard.ZstdCompressor().compress(lines))
    plain = tmp_path / "plain"
    prepare([str(d)], str(plain), cfg(), workers=1, progress=False)
    from denoise_cli import open_dataset

    a = open_dataset(split_out, split="validation")
    b = open_dataset(plain)
    ra, rb = a[np.arange(len(a))], b[np.arange(len(b))]
    sel = ra["source_file"] == 0
    assert int(sel.sum()) == len(b) > 0
    for col in ("input_ids", "labels", "denoiser", "example_index", "token_offset"):
        np.testing.assert_array_equal(ra[col][sel], rb[col])


def test_split_loaders_and_errors(split_out: Path) -> None:
    from denoise_cli import open_dataset

    for name, _ in SPLITS:
        m = json.loads((split_out / name / "denoise.json").read_text())
        assert len(open_dataset(split_out, split=name)) == m["totals"]["rows"]
    with pytest.raises(OutputError, match="train, validation"):
        open_dataset(split_out)
    with pytest.raises(OutputError, match="no split 'test'"):
        open_dataset(split_out, split="test")
    from denoise_cli.check.stats_render import stats_report

    assert "holds the splits train, validation" in stats_report([str(split_out)])
    one = json.loads(stats_report([str(split_out)], as_json=True, split="validation"))
    m = json.loads((split_out / "validation" / "denoise.json").read_text())
    assert one["rows"] == m["totals"]["rows"]


def test_split_resume_and_refusals(
    split_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.resume as pl
    from denoise_cli.errors import Interrupted

    out = tmp_path / "o"
    real = pl.atomic_write_bytes
    # a part of the train split, then (resumed) the first part of the validation split
    for where, at in (("/train/", 5), ("/validation/", 1)):
        calls = {"n": 0}

        def flaky(
            path: Path, data: bytes, where: str = where, at: int = at, calls: dict[str, int] = calls
        ) -> None:
            if "/parts/" in str(path) and where in str(path):
                calls["n"] += 1
                if calls["n"] == at:
                    raise KeyboardInterrupt("simulated kill")
            real(path, data)

        monkeypatch.setattr(pl, "atomic_write_bytes", flaky)
        with pytest.raises(Interrupted):
            prepare([str(SAMPLE)], str(out), cfg(splits=SPLITS), workers=1, progress=False)
    monkeypatch.setattr(pl, "atomic_write_bytes", real)
    prepare([str(SAMPLE)], str(out), cfg(splits=SPLITS), workers=1, progress=False)
    assert tree(out) == tree(split_out)
    other = (("train", 0.5), ("validation", 0.5))
    with pytest.raises(OutputError, match="splits"):
        prepare([str(SAMPLE)], str(out), cfg(splits=other), workers=1, progress=False)
    # --overwrite clears the split directories too
    prepare([str(SAMPLE)], str(out), cfg(), workers=1, progress=False, overwrite=True)
    assert not (out / "train").exists() and not (out / "validation").exists()
    with pytest.raises(ConfigError, match="--epochs"):
        cfg(splits=SPLITS, epochs=2)


def test_parse_splits() -> None:
    from denoise_cli.cli_options import parse_splits

    assert parse_splits(None, 0.01) == (("train", 0.99), ("validation", 0.01))
    assert parse_splits("a=0.5,b=0.25,c=0.25", None) == (("a", 0.5), ("b", 0.25), ("c", 0.25))
    for bad in ("train=0.9", "train=0.5,validation=0.4", "a=0.5,a=0.5", "data=0.5,b=0.5", "x"):
        with pytest.raises(ConfigError):
            parse_splits(bad, None)
    with pytest.raises(ConfigError):
        parse_splits("a=0.5,b=0.5", 0.1)

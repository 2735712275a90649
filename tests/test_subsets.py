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

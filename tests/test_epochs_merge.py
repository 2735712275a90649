"""``prepare --epochs K`` and ``--num-shards/--shard-index`` + ``merge``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, Interrupted
from denoise_cli.prepare.merge import merge
from denoise_cli.prepare.run import assign_files, prepare


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every file of a dataset (shards, manifests, tokenizer, HF files), not .denoise."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


def cfg(**kw: object) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 128, 128),
        shard_rows=40,
        group_size=40,
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ep") / "o"
    prepare([str(SAMPLE)], str(out), cfg(epochs=3), workers=2, progress=False)
    return out


def _rows(d: Path) -> dict[str, np.ndarray]:
    from denoise_cli import open_dataset

    ds = open_dataset(d)
    return ds[np.arange(len(ds))]


def test_epoch_zero_equals_single_epoch_run(three_epochs: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    prepare([str(SAMPLE)], str(single), cfg(), workers=1, progress=False)
    a = {k: v for k, v in tree_digest(three_epochs / "epoch-0").items() if k.startswith("data/")}
    b = {k: v for k, v in tree_digest(single).items() if k.startswith("data/")}
    assert a == b


def test_epochs_hold_same_tokens_with_fresh_corruption(three_epochs: Path) -> None:
    top = json.loads((three_epochs / "denoise.json").read_text())
    assert top["epoch_dirs"] == ["epoch-0", "epoch-1", "epoch-2"]
    per = [json.loads((three_epochs / d / "denoise.json").read_text()) for d in top["epoch_dirs"]]
    # the same token stream underneath: same documents and tokens per file in every epoch
    for m in per:
        assert [f["tokens"] for f in m["files"]] == [f["tokens"] for f in top["files"]]
        assert m["totals"]["docs"] == top["totals"]["docs"]
        for f in m["files"]:
            assert f["tokens_used"] + f["tail_tokens"] == f["tokens"]
    rows = [_rows(three_epochs / d) for d in top["epoch_dirs"]]
    # fresh mixture draws and masks: the denoiser sequence and the inputs differ between epochs
    assert not np.array_equal(rows[0]["denoiser"][:50], rows[1]["denoiser"][:50])
    assert not np.array_equal(rows[1]["denoiser"][:50], rows[2]["denoiser"][:50])
    # every epoch tiles each file's stream from offset 0 without gaps
    for r, m in zip(rows, per, strict=False):
        comps = m["components"]
        for f in range(len(m["files"])):
            sel = r["source_file"] == f
            raw = np.array([comps[d]["raw_length"] for d in r["denoiser"][sel]])
            off = r["token_offset"][sel]
            assert off[0] == 0
            np.testing.assert_array_equal(off[1:], np.cumsum(raw)[:-1])
            assert raw.sum() == m["files"][f]["tokens_used"]


def test_epochs_are_worker_count_independent_and_resumable(
    three_epochs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.resume as pl

    out = tmp_path / "o"
    real = pl.atomic_write_bytes
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if "/parts/" in str(path):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt("simulated kill")
        real(path, data)

    monkeypatch.setattr(pl, "atomic_write_bytes", flaky)
    with pytest.raises(Interrupted):
        prepare([str(SAMPLE)], str(out), cfg(epochs=3), workers=1, progress=False)
    monkeypatch.setattr(pl, "atomic_write_bytes", real)
    prepare([str(SAMPLE)], str(out), cfg(epochs=3), workers=1, progress=False)
    assert tree_digest(out) == tree_digest(three_epochs)


def test_open_dataset_serves_epoch_mod_k(three_epochs: Path) -> None:
    from denoise_cli import open_dataset

    for e in range(5):
        ds = open_dataset(three_epochs, epoch=e)
        ref = open_dataset(three_epochs / f"epoch-{e % 3}")
        assert len(ds) == len(ref)
        np.testing.assert_array_equal(ds[0:10]["input_ids"], ref[0:10]["input_ids"])


def test_assign_files_is_balanced_and_complete() -> None:
    sizes = [100, 5, 60, 40, 7, 90, 1, 30]
    parts = assign_files(sizes, 3)
    assert sorted(i for p in parts for i in p) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in p) for p in parts]
    assert max(loads) - min(loads) <= max(sizes)
    assert assign_files(sizes, 3) == parts


def test_parts_merge_to_the_single_machine_output(tmp_path: Path) -> None:
    c = cfg()
    single = tmp_path / "single"
    prepare([str(SAMPLE)], str(single), c, workers=1, progress=False)
    parts = []
    for i in range(2):
        p = tmp_path / f"part{i}"
        m = prepare(
            [str(SAMPLE)], str(p), c, workers=1, progress=False, num_shards=2, shard_index=i
        )
        assert m["part"]["index"] == i and m["totals"]["files"] == 1
        parts.append(str(p))
    merged = tmp_path / "merged"
    merge(parts[::-1], str(merged))
    assert tree_digest(merged) == tree_digest(single)
    with pytest.raises(ConfigError, match="missing"):
        merge(parts[:1], str(tmp_path / "m2"))
    other = tmp_path / "other"
    prepare(
        [str(SAMPLE)],
        str(other),
        replace(c, seed=5),
        workers=1,
        progress=False,
        num_shards=2,
        shard_index=1,
    )
    with pytest.raises(ConfigError, match="seed"):
        merge([parts[0], str(other)], str(tmp_path / "m3"))


def test_epochs_and_parts_merge(tmp_path: Path) -> None:
    c = cfg(epochs=2)
    single = tmp_path / "single"
    prepare([str(SAMPLE)], str(single), c, workers=1, progress=False)
    parts = []
    for i in range(2):
        p = tmp_path / f"part{i}"
        prepare([str(SAMPLE)], str(p), c, workers=1, progress=False, num_shards=2, shard_index=i)
        parts.append(str(p))
    merge(parts, str(tmp_path / "merged"))
    assert tree_digest(tmp_path / "merged") == tree_digest(single)

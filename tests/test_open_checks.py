"""``open_dataset`` (and the torch wrappers) check what they serve against the manifest: the
corruptions of issue 13 (flipped bytes, swapped / truncated / extra / missing shards, edited row
counts) are refused with an OutputError instead of being served."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from denoise_cli import open_dataset
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import OutputError
from denoise_cli.prepare.run import prepare

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample"
TOKENIZER = ROOT / "tests" / "data" / "t5-tiny-tokenizer.json"


def _prepare(out: Path, fmt: str = "arrow", pack: int = 0) -> Path:
    w = 64 * max(pack, 1)
    cfg = PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", w, w),
        format=fmt,  # type: ignore[arg-type]
        group_size=100,
        shard_rows=200 // max(pack, 1),
        pack_factor=pack,
    )
    prepare([str(SAMPLE)], str(out), cfg, tokenizer=str(TOKENIZER), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("open") / "ed")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "out"
    shutil.copytree(src, dst)
    return dst


def _manifest(out: Path) -> dict[str, Any]:
    m: dict[str, Any] = orjson.loads((out / "denoise.json").read_bytes())
    return m


def _edit(out: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    m = _manifest(out)
    edit(m)
    (out / "denoise.json").write_bytes(orjson.dumps(m))


def _same_size_pair(m: dict[str, Any], same_file: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    sh = m["shards"]
    for a in sh:
        for b in sh:
            if a is not b and a["bytes"] == b["bytes"]:
                if (a["source_files"] == b["source_files"]) == same_file:
                    return a, b
    raise AssertionError("the fixture has no two shards of the same size")


def _refused(out: Path, match: str, **kw: Any) -> None:
    with pytest.raises(OutputError, match=match):
        open_dataset(out, **kw)


def test_good_output_opens_in_every_mode(good: Path) -> None:
    m = _manifest(good)
    assert len(m["shards"]) >= 4 and len(m["files"]) == 2
    for mode in ("fast", "sha256", "none"):
        assert len(open_dataset(good, verify=mode)) == m["totals"]["rows"]
    with pytest.raises(ValueError, match="verify must be one of"):
        open_dataset(good, verify="md5")


def test_flipped_byte_caught_by_sha256(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    p = out / _manifest(out)["shards"][0]["path"]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the token buffers: same size, same rows
    p.write_bytes(bytes(data))
    _refused(out, "sha256 .* differs from the manifest", verify="sha256")


def test_truncated_shard(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    p = out / _manifest(out)["shards"][1]["path"]
    p.write_bytes(p.read_bytes()[:-1000])
    _refused(out, r"bytes, the manifest says")


def test_truncated_shard_with_size_edited_is_unreadable(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    rel = _manifest(out)["shards"][1]["path"]
    p = out / rel
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    def fix(m: dict[str, Any]) -> None:
        m["shards"][1]["bytes"] = p.stat().st_size

    _edit(out, fix)
    _refused(out, r"not a readable arrow shard|rows, the manifest says")


def test_swapped_shards_of_one_file(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    a, b = _same_size_pair(_manifest(out), same_file=True)
    pa_, pb = out / a["path"], out / b["path"]
    da, db = pa_.read_bytes(), pb.read_bytes()
    pa_.write_bytes(db)
    pb.write_bytes(da)
    _refused(out, "out of order")
    _refused(out, "sha256", verify="sha256")


def test_swapped_shards_of_two_files(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    a, b = _same_size_pair(_manifest(out), same_file=False)
    pa_, pb = out / a["path"], out / b["path"]
    da, db = pa_.read_bytes(), pb.read_bytes()
    pa_.write_bytes(db)
    pb.write_bytes(da)
    _refused(out, "holds rows of file")


def test_extra_shard(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    first = out / _manifest(out)["shards"][0]["path"]
    shutil.copy(first, first.parent / "00009-00000.arrow")
    _refused(out, "not listed in the manifest")


def test_missing_shard(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    (out / _manifest(out)["shards"][2]["path"]).unlink()
    _refused(out, "missing", verify="none")
    _refused(out, "missing")


def test_shard_dropped_from_manifest(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)

    def drop(m: dict[str, Any]) -> None:
        del m["shards"][1]

    _edit(out, drop)
    _refused(out, "row counts disagree|not listed")


@pytest.mark.parametrize("where", ["shard", "all"])
def test_edited_row_counts(good: Path, tmp_path: Path, where: str) -> None:
    out = _copy(good, tmp_path)

    def bump(m: dict[str, Any]) -> None:
        s = m["shards"][0]
        s["rows"] += 1
        if where == "all":  # consistently: the manifest's sums still agree
            f = next(f for f in m["files"] if [f["index"]] == s["source_files"])
            f["rows"] += 1
            m["totals"]["rows"] += 1

    _edit(out, bump)
    _refused(out, "row counts disagree" if where == "shard" else "rows, the manifest says")


def test_edited_byte_count(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)

    def edit(m: dict[str, Any]) -> None:
        m["shards"][0]["bytes"] += 8

    _edit(out, edit)
    _refused(out, "bytes, the manifest says")


def test_garbage_shard_is_an_output_error(good: Path, tmp_path: Path) -> None:
    out = _copy(good, tmp_path)
    rel = _manifest(out)["shards"][0]["path"]
    (out / rel).write_bytes(b"\xff" * 4096)

    def fix(m: dict[str, Any]) -> None:
        m["shards"][0]["bytes"] = 4096

    _edit(out, fix)
    _refused(out, "not a readable arrow shard")


def test_parquet_truncated(tmp_path: Path) -> None:
    out = _prepare(tmp_path / "pq", fmt="parquet")
    assert len(open_dataset(out, verify="sha256")) == _manifest(out)["totals"]["rows"]
    p = out / _manifest(out)["shards"][0]["path"]
    p.write_bytes(p.read_bytes()[:-10])
    _refused(out, "bytes, the manifest says")


def test_packed_output_swapped_shards(tmp_path: Path) -> None:
    out = _prepare(tmp_path / "pk", pack=2)
    m = _manifest(out)
    assert m["packing"] and len(open_dataset(out)) == m["totals"]["rows"]
    a, b = _same_size_pair(m, same_file=True)
    pa_, pb = out / a["path"], out / b["path"]
    da, db = pa_.read_bytes(), pb.read_bytes()
    pa_.write_bytes(db)
    pb.write_bytes(da)
    _refused(out, "out of example order")


def test_torch_wrappers_check_too(good: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from denoise_cli.torch_data import DenoiseBatches, DenoiseTorchDataset

    out = _copy(good, tmp_path)
    assert len(DenoiseTorchDataset(out, verify="sha256")) == _manifest(out)["totals"]["rows"]
    p = out / _manifest(out)["shards"][0]["path"]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(OutputError, match="bytes, the manifest says"):
        DenoiseTorchDataset(out)
    with pytest.raises(OutputError, match="bytes, the manifest says"):
        len(DenoiseBatches(out, 8))

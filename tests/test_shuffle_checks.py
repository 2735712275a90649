"""``verify`` / ``stats`` / ``inspect`` on shuffled outputs (``denoise shuffle``): a good shuffled
output passes like its source (``--source`` included), reads back as its source (same stats,
same rows for the same logical row ids), and hand-made faults in the shuffled shards or the
manifest are caught. Where a problem lands is computed from the source output's own rows
(source_file, example_index), not from the shuffle's permutation."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from helpers import SAMPLE, T5_TINY, Outputs, make_cfg, refresh_shard_entry, write_arrow_shard

from denoise_cli.check.inspect import choose_rows, inspect_rows
from denoise_cli.check.spec import OutputSpec
from denoise_cli.check.stats import compute
from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths
from denoise_cli.errors import OutputError, VerifyError
from denoise_cli.output.manifest import read_manifest
from denoise_cli.output.shards import batch_arrays, open_shard
from denoise_cli.output.shuffled import key_digest
from denoise_cli.prepare.shuffle import shuffle

SMALL = Lengths("encoder-decoder", 128, 48)
REBUILT = " (rebuilt from the shuffled rows)"
SHARD_ROWS = 100  # several shuffled shards from a few thousand rows
PHYS0, PHYS1 = "data/shuffled-00000.arrow", "data/shuffled-00001.arrow"

VARIANTS: dict[str, dict[str, Any]] = {
    "ed": {},
    "compact": {"compact": True},
    "pack": {"pack_factor": 2},
    "epochs": {"epochs": 2},
    "parquet": {"format": "parquet"},
    "do": {"lengths": Lengths("decoder-only", seq_length=256)},
}


@pytest.fixture(scope="module")
def pairs(
    outputs: Outputs, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """(source, shuffled) per variant."""
    base = tmp_path_factory.mktemp("shuffled")
    res = {}
    for name, kw in VARIANTS.items():
        kw = {"lengths": SMALL, **kw}
        src = outputs(make_cfg("ul2", **kw), [SAMPLE], tokenizer=T5_TINY)
        dst = base / name
        shuffle(str(src), str(dst), seed=7, shard_rows=SHARD_ROWS)
        res[name] = (src, dst)
    return res


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _read(path: Path, fmt: str = "arrow") -> dict[str, np.ndarray]:
    _, batches = open_shard(path, fmt)
    parts = [batch_arrays(rb) for rb in batches]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _edit_manifest(out: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    mp = out / "denoise.json"
    m = orjson.loads(mp.read_bytes())
    edit(m)
    mp.write_bytes(orjson.dumps(m))


def _rewrite(
    out: Path, rel: str, edit: Callable[[dict[str, np.ndarray]], None], keys: bool = True
) -> None:
    """Rewrite an Arrow shard with edited columns (same schema) and update the manifest's bytes
    and sha256 (and with ``keys`` its keys_sha256), so that only the row checks can notice."""
    p = out / rel
    a = {k: np.array(v) for k, v in _read(p).items()}
    edit(a)
    rb = write_arrow_shard(p, a)

    def fix(m: dict[str, Any]) -> None:
        s = refresh_shard_entry(m, rel, p)
        if s is not None and keys:
            s["keys_sha256"] = key_digest([rb])

    _edit_manifest(out, fix)


def _where(src: Path) -> dict[tuple[int, int], tuple[str, int]]:
    """(source_file, example_index) -> (shard, row) in the unshuffled source output."""
    m = read_manifest(src)
    res = {}
    for s in m["shards"]:
        a = _read(src / s["path"], m["format"])
        for r, key in enumerate(
            zip(a["source_file"].tolist(), a["example_index"].tolist(), strict=True)
        ):
            res[key] = (str(s["path"]), r)
    return res


def _problems(out: Path, **kw: Any) -> str:
    with pytest.raises(VerifyError) as ei:
        verify(out, **kw)
    return str(ei.value)


# --------------------------------------------------------------------------- good outputs


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shuffled_output_verifies(pairs: dict[str, tuple[Path, Path]], name: str) -> None:
    src, dst = pairs[name]
    rep, want = verify(dst), verify(src)
    assert rep.rows == want.rows > 0
    assert rep.tokens == want.tokens
    assert "shuffled rows: the source's in the seed's order" in rep.checks
    m = read_manifest(dst)
    ms = [m] if "epoch_dirs" not in m else [read_manifest(dst / d) for d in m["epoch_dirs"]]
    for em in ms:  # really shuffled: the shuffled shards are not in the source's file order
        assert len(em["shards"]) > 2 and em["shuffle"]["shard_rows"] == SHARD_ROWS
    sub = dst / (m["epoch_dirs"][0] if "epoch_dirs" in m else "")
    a = _read(sub / ms[0]["shards"][0]["path"], m["format"])
    key = (
        a["source_file"].astype(np.int64) * 10**9 + a["segment_example_index"][:, 0]
        if ("segment_example_index" in a)
        else a["source_file"].astype(np.int64) * 10**9 + a["example_index"]
    )
    assert not (np.diff(key) > 0).all()


@pytest.mark.parametrize("name", ["ed", "pack", "epochs"])
def test_shuffled_output_verifies_with_source(
    pairs: dict[str, tuple[Path, Path]], name: str
) -> None:
    src, dst = pairs[name]
    rep = verify(dst, sources=[str(SAMPLE)])
    assert rep.source_files == verify(src, sources=[str(SAMPLE)]).source_files > 0
    assert "rows regenerated bit for bit" in rep.checks


# --------------------------------------------------------------------------- stats, inspect


@pytest.mark.parametrize("name", list(VARIANTS))
def test_stats_equal_the_source(pairs: dict[str, tuple[Path, Path]], name: str) -> None:
    src, dst = pairs[name]
    a, b = compute(dst).to_dict(), compute(src).to_dict()
    assert a.pop("outputs") == [str(dst)] and b.pop("outputs") == [str(src)]
    for d in (a, b):
        for s in d["shards"]:
            s.pop("output")
    assert a == b


@pytest.mark.parametrize("name", ["ed", "pack", "compact"])
def test_inspect_same_rows_as_the_source(pairs: dict[str, tuple[Path, Path]], name: str) -> None:
    src, dst = pairs[name]
    ms, md = read_manifest(src), read_manifest(dst)
    spec = OutputSpec.from_manifest(ms)
    total = int(ms["totals"]["rows"])
    for row in sorted({0, 1, SHARD_ROWS, total // 2, total - 1, *range(7, total, 611)}):
        want = choose_rows(src, ms, spec, None, row, None)
        got = choose_rows(dst, md, spec, None, row, None)
        assert len(got) == len(want) >= 1
        for g, w in zip(got, want, strict=True):
            assert (g.index, g.row, g.segment, g.shard) == (
                w.index,
                w.row,
                w.segment,
                w.shard + REBUILT,
            )
            assert g.a.keys() == w.a.keys()
            for k in set(w.a) - {"packed_row"}:  # packed_row: within the record batch read
                np.testing.assert_array_equal(g.a[k], w.a[k], err_msg=f"row {row} column {k}")
    text = inspect_rows(dst, row=total // 2, width=160).replace(REBUILT, "")
    assert text == inspect_rows(src, row=total // 2, width=160)
    assert inspect_rows(dst, width=160).replace(REBUILT, "") == inspect_rows(src, width=160)


# --------------------------------------------------------------------------- faults


def test_flipped_byte_in_a_shuffled_shard(
    pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    out = _copy(pairs["ed"][1], tmp_path)
    p = out / PHYS1
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(bytes(b))
    assert f"{PHYS1}: sha256 " in _problems(out)


def test_swapped_shuffled_shards(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)
    a, b = (out / PHYS0).read_bytes(), (out / PHYS1).read_bytes()
    assert len(a) == len(b)  # same size: only the hashes and the rows can tell
    (out / PHYS0).write_bytes(b)
    (out / PHYS1).write_bytes(a)
    msg = _problems(out)
    assert f"{PHYS0}: sha256 " in msg and f"{PHYS1}: sha256 " in msg
    assert f"{PHYS0}: its rows' source_file/example_index hash to " in msg  # keys_sha256
    # without the file hashes: the key digests, and the rebuilt rows break their files' chains
    msg = _problems(out, checksums=False)
    assert f"{REBUILT} row " in msg and f"{PHYS0}: sha256" not in msg
    assert f"{PHYS1}: its rows' source_file/example_index hash to " in msg


def _swap_rows(a: dict[str, np.ndarray], i: int, j: int) -> None:
    for v in a.values():
        v[[i, j]] = v[[j, i]]


def test_swapped_rows_in_a_shuffled_shard(
    pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    src, sh = pairs["ed"]
    out = _copy(sh, tmp_path)
    a = _read(out / PHYS0)
    i, j = 3, 50
    where = _where(src)
    # after the swap, the row of source position A holds B's row and vice versa
    pos = [where[int(a["source_file"][k]), int(a["example_index"][k])] for k in (i, j)]
    _rewrite(out, PHYS0, lambda x: _swap_rows(x, i, j))
    msg = _problems(out)
    for rel, r in pos:
        assert f"{rel}{REBUILT} row {r}: " in msg
    assert "sha256" not in msg  # the manifest's hashes and key digest were updated


def test_swapped_rows_key_digest(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """Swapped rows with the file hashes updated, not the key digest: the digest tells."""
    out = _copy(pairs["ed"][1], tmp_path)
    _rewrite(out, PHYS0, lambda x: _swap_rows(x, 3, 50), keys=False)
    msg = _problems(out)
    assert f"{PHYS0}: its rows' source_file/example_index hash to " in msg
    assert "the manifest's keys_sha256 says" in msg


def test_edited_keys_sha256(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)

    def edit(m: dict[str, Any]) -> None:
        m["shards"][1]["keys_sha256"] = "0" * 64

    _edit_manifest(out, edit)
    msg = _problems(out)
    assert f"{PHYS1}: its rows' source_file/example_index hash to " in msg
    assert "1 problem(s)" in msg


def test_out_of_vocabulary_token_in_a_shuffled_shard(
    pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    src, sh = pairs["ed"]
    out = _copy(sh, tmp_path)
    a = _read(out / PHYS1)
    k = 17
    rel, r = _where(src)[int(a["source_file"][k]), int(a["example_index"][k])]
    vocab = int(read_manifest(out)["tokenizer"]["vocab_size"])

    def edit(x: dict[str, np.ndarray]) -> None:
        x["input_ids"][k, 2] = vocab + 5

    _rewrite(out, PHYS1, edit)
    msg = _problems(out)
    assert (
        f"{rel}{REBUILT} row {r}: input_ids column 2 holds {vocab + 5}, outside the vocabulary"
        in msg
    )


def test_changed_token_in_a_shuffled_shard_needs_the_source(
    pairs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    src, sh = pairs["ed"]
    out = _copy(sh, tmp_path)
    a = _read(out / PHYS1)
    spec = OutputSpec.from_manifest(read_manifest(out))
    k = 40
    col = int(np.flatnonzero(np.take(spec.lut, a["input_ids"][k]) == 0)[5])  # an ordinary token
    old = int(a["input_ids"][k, col])
    new = 11 if old != 11 else 12
    rel, r = _where(src)[int(a["source_file"][k]), int(a["example_index"][k])]

    def edit(x: dict[str, np.ndarray]) -> None:
        x["input_ids"][k, col] = new

    _rewrite(out, PHYS1, edit)
    verify(out)  # every count is still right: only the source can tell
    msg = _problems(out, sources=[str(SAMPLE)])
    assert f"{rel}{REBUILT} row {r}: rebuilt tokens differ from the source" in msg
    assert f"the row gives id {new}, " in msg and f" gives id {old}" in msg


def test_edited_shuffle_seed(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)

    def edit(m: dict[str, Any]) -> None:
        m["shuffle"]["seed"] += 1

    _edit_manifest(out, edit)
    msg = _problems(out)
    assert f"{REBUILT} row " in msg
    assert "denoise.json" not in msg  # only the rows can tell


def test_edited_source_shard_rows(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)
    m = read_manifest(out)
    s0 = m["shuffle"]["source_shards"][0]
    f0 = next(f for f in m["files"] if [f["index"]] == s0["source_files"])

    def edit(m: dict[str, Any]) -> None:
        m["shuffle"]["source_shards"][0]["rows"] += 1

    _edit_manifest(out, edit)
    msg = _problems(out)
    assert "shuffle.source_manifest_sha256" in msg
    assert f"its shards list {int(f0['rows']) + 1:,}" in msg
    assert "the shuffled shards hold" in msg


def test_edited_shuffled_shard_rows(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """Rows moved between two shuffled shards' entries: the totals still add up."""
    out = _copy(pairs["ed"][1], tmp_path)

    def edit(m: dict[str, Any]) -> None:
        m["shards"][0]["rows"] -= 1
        m["shards"][1]["rows"] += 1

    _edit_manifest(out, edit)
    msg = _problems(out)
    assert f"{PHYS0}: {SHARD_ROWS - 1} rows in the manifest" in msg
    assert f"{PHYS0}: holds {SHARD_ROWS} rows, the manifest says {SHARD_ROWS - 1}" in msg


def test_unlisted_shuffled_shard(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)
    shutil.copy(out / PHYS0, out / "data/shuffled-09999.arrow")
    assert "data/shuffled-09999.arrow: not listed in the manifest" in _problems(out)


def test_missing_shuffled_shard(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)
    (out / PHYS1).unlink()
    assert f"{PHYS1}: missing (listed in the manifest with {SHARD_ROWS} rows)" in _problems(out)
    with pytest.raises(OutputError, match="a shard of this shuffled output is missing"):
        compute(out)
    with pytest.raises(OutputError, match="a shard of this shuffled output is missing"):
        inspect_rows(out, row=0)


def test_malformed_shuffle_entry(pairs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    out = _copy(pairs["ed"][1], tmp_path)

    def edit(m: dict[str, Any]) -> None:
        m["shuffle"]["seed"] = -1

    _edit_manifest(out, edit)
    assert "denoise.json: malformed 'shuffle' entry" in _problems(out)
    # an error of its kind (the CLI turns it into an exit code), not a crash
    with pytest.raises(OutputError, match="malformed 'shuffle' entry"):
        compute(out)
    with pytest.raises(OutputError, match="malformed 'shuffle' entry"):
        inspect_rows(out, row=0)

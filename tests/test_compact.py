"""The loader's row gather (``output.columns.MappedRows``) against a slow reference read through
pyarrow, and ``prepare --compact``: narrow ragged ids, no derivable columns, and the same batches
as the default output through ``open_dataset`` and ``torch_data``; ``verify``/``stats``/``inspect``
read compact outputs through the one reader."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import SAMPLE, T5_TINY, Outputs

from denoise_cli import open_dataset
from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import OutputError, VerifyError
from denoise_cli.output.manifest import read_manifest
from denoise_cli.output.schema import id_type
from denoise_cli.output.shards import batch_arrays, open_shard, read_shard

LENGTHS = {
    "encoder-decoder": Lengths("encoder-decoder", 64, 64, 128),
    "decoder-only": Lengths("decoder-only", 64, 64, 96),
}


def _cfg(layout: str, fmt: str = "arrow", compact: bool = False, pack: int = 0) -> PrepareConfig:
    return PrepareConfig(
        pack_factor=pack,
        mixture=load_mixture("ul2"),
        lengths=LENGTHS[layout],
        format=fmt,  # type: ignore[arg-type]
        group_size=100,
        shard_rows=300,
        compact=compact,
    )


CASES = [
    ("encoder-decoder", "arrow", 0),
    ("decoder-only", "arrow", 0),
    ("encoder-decoder", "parquet", 0),
    ("encoder-decoder", "arrow", 4),
    ("decoder-only", "arrow", 4),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{a}-{b}-pack{c}" for a, b, c in CASES])
def pair(request: Any, outputs: Outputs) -> tuple[Path, Path]:
    layout, fmt, pack = request.param
    default = outputs(_cfg(layout, fmt, pack=pack), tokenizer=T5_TINY)
    compact = outputs(_cfg(layout, fmt, compact=True, pack=pack), tokenizer=T5_TINY)
    return default, compact


def _reference_rows(out: Path) -> dict[str, list[Any]]:
    """Every row of every shard as Python values, read with pyarrow's own conversion (slow,
    obvious; no numpy views, no offsets arithmetic)."""
    m = read_manifest(out)
    rows: dict[str, list[Any]] = {}
    for s in m["shards"]:
        for rb in read_shard(out / s["path"], m["format"]):
            for name, col in zip(rb.schema.names, rb.columns, strict=True):
                rows.setdefault(name, []).extend(col.to_pylist())
    return rows


def _rewrite_first_batch(p: Path, column: str, new: pa.Array) -> None:
    """Rewrite shard ``p`` with ``column`` of its first record batch replaced (read into memory
    first: the file is truncated while writing)."""
    rbs = list(pa.ipc.open_stream(pa.py_buffer(p.read_bytes())))
    rb = rbs[0]
    cols = [new if n == column else rb.column(n) for n in rb.schema.names]
    rbs[0] = pa.RecordBatch.from_arrays(cols, schema=rb.schema)
    with pa.OSFile(str(p), "wb") as f, pa.ipc.new_stream(f, rb.schema) as w:
        for x in rbs:
            w.write_batch(x)


def test_take_matches_a_slow_reference(pair: tuple[Path, Path]) -> None:
    default, _ = pair
    ds = open_dataset(default)
    ref = _reference_rows(default)
    n = len(ds)
    assert n > 150 and len(ds.manifest["shards"]) > 1
    rng = np.random.default_rng(0)
    for idx in (
        rng.integers(0, n, 97),  # unsorted, repeats, across shards and record batches
        np.sort(rng.choice(n, 64, replace=False)),
        np.array([n - 1, 0, -1, -n]),
        np.arange(n),
    ):
        got = ds.take(idx)
        for k, v in got.items():
            want = np.array([ref[k][int(i)] for i in idx])
            assert np.array_equal(v, want), k
            assert v.dtype == ds.column_info[k][1]


def test_take_into_wider_arrays(pair: tuple[Path, Path]) -> None:
    default, _ = pair
    ds = open_dataset(default)
    idx = np.random.default_rng(1).integers(0, len(ds), 50)
    want = ds.take(idx)
    out = {k: np.zeros((50, *v.shape[1:]), dtype=np.int64) for k, v in want.items()}
    ds.take(idx, out=out)
    for k in want:
        assert np.array_equal(out[k], want[k])


def test_compact_take_subsets_and_wider_arrays(pair: tuple[Path, Path]) -> None:
    """Compact rows rebuilt for any subset of columns (a rebuilt column without its sources
    among them), as new arrays or into wider ones, equal the default output's rows."""
    default, compact = pair
    a, b = open_dataset(default), open_dataset(compact)
    idx = np.random.default_rng(3).integers(0, len(a), 61)
    for cols in (None, ["attention_mask"], ["labels"], ["labels", "input_ids"], ["input_length"]):
        want = a.take(idx, cols)
        got = b.take(idx, cols)
        wide = {k: np.full(v.shape, 7, dtype=np.int64) for k, v in want.items()}
        b.take(idx, out=wide)
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
            assert np.array_equal(wide[k], want[k]), k


def test_compact_gives_the_same_batches(pair: tuple[Path, Path]) -> None:
    default, compact = pair
    a, b = open_dataset(default), open_dataset(compact)
    assert len(a) == len(b) and a.column_info == b.column_info
    assert a.columns == b.columns
    for kw in (
        {"shuffle": True, "seed": 5},
        {"shuffle": False, "drop_last": False},
        {"shuffle": True, "rank": 1, "world_size": 3, "pad_last": True},
    ):
        n = 0
        for x, y in zip(a.iter_batches(32, **kw), b.iter_batches(32, **kw), strict=True):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k
            n += 1
        assert n > 5
    for i in (0, 7, len(a) - 1):
        for k, v in a[i].items():
            assert np.array_equal(v, b[i][k])
    for k, v in a[3:40].items():
        assert np.array_equal(v, b[3:40][k])


def test_compact_same_torch_batches(pair: tuple[Path, Path]) -> None:
    torch = pytest.importorskip("torch")
    from denoise_cli.torch_data import DenoiseBatches

    default, compact = pair
    for long in (True, False):
        xs = list(DenoiseBatches(default, 16, seed=2, long=long))
        ys = list(DenoiseBatches(compact, 16, seed=2, long=long))
        assert len(xs) == len(ys) > 5
        for x, y in zip(xs, ys, strict=True):
            for k in x:
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), k


def test_compact_stores_no_padding_nor_derivable_columns(pair: tuple[Path, Path]) -> None:
    default, compact = pair
    m = read_manifest(compact)
    assert m["compact"] is True and m["config"]["compact"] is True
    assert "compact" not in read_manifest(default)
    vocab = int(m["tokenizer"]["vocab_size"])
    enc = m["layout"] == "encoder-decoder"
    packed = bool(m["packing"])
    total = 0
    for s in m["shards"]:
        schema, batches = open_shard(compact / s["path"], m["format"])
        assert "attention_mask" not in schema.names
        assert ("labels" in schema.names) == (enc or packed)
        t = schema.field("input_ids").type
        assert t.value_type == id_type(vocab)
        if packed:  # segment ids / positions narrowed: < 256 segments, widths < 65536
            assert pa.types.is_fixed_size_list(t)
            for f in schema:
                if f.name.endswith("segment_ids"):
                    assert f.type.value_type == pa.uint8()
                if f.name.endswith("positions"):
                    assert f.type.value_type == pa.uint16()
        else:
            assert pa.types.is_list(t)
        for rb in batches:
            if not packed:
                ids = rb.column("input_ids")
                lens = np.array(rb.column("input_length").to_pylist())
                assert len(ids.flatten()) == lens.sum()  # real tokens only
            total += rb.num_rows
            got = batch_arrays(rb)
            assert list(got) == [
                c for c in read_shard(default / s["path"], m["format"])[0].schema.names
            ]
    assert total == m["totals"]["rows"]
    size = {o: sum(p.stat().st_size for p in (o / "data").iterdir()) for o in pair}
    # uncompressed Arrow: int32 ids + padding + mask vs narrow ids only; zstd Parquet compresses
    # the padding away already
    assert size[compact] < size[default] / (2 if m["format"] == "arrow" else 1)


def test_checks_read_compact_outputs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    default, compact = pair
    rep = verify(compact, sources=[str(SAMPLE)])
    assert rep.rows == read_manifest(compact)["totals"]["rows"]
    from denoise_cli.check.stats import compute

    da, db = compute(default).to_dict(), compute(compact).to_dict()
    for d in (da, db):
        del d["outputs"], d["shards"]  # paths and file sizes
    assert da == db
    # a changed token in a compact shard is found (its sha256 recomputed into the manifest)
    m = read_manifest(compact)
    if m["format"] != "arrow":
        return
    bad = tmp_path / "bad"
    shutil.copytree(compact, bad)
    s = m["shards"][0]
    p = bad / s["path"]
    ids = pa.ipc.open_stream(pa.py_buffer(p.read_bytes())).read_next_batch().column("input_ids")
    vals = ids.values.to_pylist()
    vals[3] = int(m["tokenizer"]["pad"]["id"])  # a pad inside the text
    new_vals = pa.array(vals, type=ids.type.value_type)
    if pa.types.is_fixed_size_list(ids.type):
        new_ids = pa.FixedSizeListArray.from_arrays(new_vals, ids.type.list_size)
    else:
        new_ids = pa.ListArray.from_arrays(ids.offsets, new_vals)
    _rewrite_first_batch(p, "input_ids", new_ids)
    with pytest.raises(VerifyError, match="row"):
        verify(bad, checksums=False)


def test_damaged_list_offsets_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, compact = pair
    m = read_manifest(compact)
    if m["format"] != "arrow" or m["packing"]:
        pytest.skip("ragged arrow shards")
    bad = tmp_path / "bad"
    shutil.copytree(compact, bad)
    p = bad / m["shards"][0]["path"]
    ids = pa.ipc.open_stream(pa.py_buffer(p.read_bytes())).read_next_batch().column("input_ids")
    offs = np.array(ids.offsets.to_pylist(), dtype=np.int32)
    offs[5] = offs[-1] + 10**6  # points far past the values
    bad_ids = pa.Array.from_buffers(
        ids.type, len(ids), [None, pa.py_buffer(offs)], children=[ids.values]
    )
    _rewrite_first_batch(p, "input_ids", bad_ids)
    with pytest.raises(OutputError):
        open_dataset(bad, verify="none")


def test_id_type_is_the_narrowest_unsigned_type() -> None:
    # the largest id of a vocabulary of V is V - 1: 255 fits uint8, 65535 fits uint16
    assert id_type(256) == pa.uint8()
    assert id_type(257) == pa.uint16()
    assert id_type(65_536) == pa.uint16()
    assert id_type(65_537) == pa.uint32()


def test_compact_config_round_trip() -> None:
    cfg = _cfg("encoder-decoder", compact=True)
    back = PrepareConfig.from_dict(cfg.fingerprint_dict())
    assert back.compact and back.fingerprint_dict() == cfg.fingerprint_dict()
    assert "compact" not in _cfg("encoder-decoder").fingerprint_dict()


def test_disk_estimate_matches_the_output(pair: tuple[Path, Path]) -> None:
    """``plan``'s bytes per raw token against the shard bytes actually written (the estimate
    uses the mixture's expected lengths; a few hundred rows realise them to a few percent)."""
    from denoise_cli.output.manifest import prepare_config
    from denoise_cli.rows.plan import disk_estimate, plans_for

    for out in pair:
        m = read_manifest(out)
        if m["format"] != "arrow" or m["packing"]:
            pytest.skip("the estimate is for unpacked arrow outputs")
        cfg = prepare_config(m)
        idb = 1 if int(m["tokenizer"]["vocab_size"]) <= 256 else 2
        est = disk_estimate(plans_for(cfg), cfg.lengths, compact=cfg.compact, id_bytes=idb)
        # an Arrow IPC file holds its schema twice (head and footer); with the component table
        # as metadata that is a few KiB per shard, which the per-row estimate leaves out
        from denoise_cli.output.schema import shard_schema

        files = list((out / "data").iterdir())
        schema_bytes = 2 * shard_schema(m).serialize().size * len(files)
        data = sum(p.stat().st_size for p in files) - schema_bytes
        per_token = data / m["totals"]["tokens_used"]
        assert abs(per_token / est["bytes_per_raw_token"] - 1) < 0.1, (out, per_token, est)

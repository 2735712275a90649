"""Loading an output: ``open_dataset`` (numpy, zero-copy), ``iter_batches`` / ``epoch_batches``
(shuffle, ranks, drop/pad of the last batch), Parquet = Arrow, ``datasets.load_from_disk``, and the
PyTorch wrappers of ``denoise_cli.torch_data`` with real DataLoader workers.

The outputs are prepared once per module from the bundled sample with the tiny test tokenizer,
small record batches (``group_size``) and shards (``shard_rows``), so that a dataset has several
shards of several record batches each."""

from __future__ import annotations

import math
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import SAMPLE, T5_TINY, Outputs, read_output_table

from denoise_cli import DenoiseDataset, open_dataset
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import OutputError
from denoise_cli.load import PAD_FILL, epoch_batches, epoch_order
from denoise_cli.prepare.run import prepare

MODEL_COLS = ("input_ids", "attention_mask", "labels")


def _prepare(outputs: Outputs, layout: str = "encoder-decoder", fmt: str = "arrow") -> Path:
    lengths = Lengths(layout, 64, 64, 128)  # type: ignore[arg-type]
    cfg = PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=lengths,
        format=fmt,  # type: ignore[arg-type]
        group_size=100,
        shard_rows=300,
    )
    return outputs(cfg, tokenizer=T5_TINY)


@pytest.fixture(scope="module")
def out_ed(outputs: Outputs) -> Path:
    return _prepare(outputs)


@pytest.fixture(scope="module")
def out_pq(outputs: Outputs) -> Path:
    return _prepare(outputs, fmt="parquet")


@pytest.fixture(scope="module")
def out_do(outputs: Outputs) -> Path:
    return _prepare(outputs, layout="decoder-only")


@pytest.fixture(scope="module")
def ds(out_ed: Path) -> DenoiseDataset:
    return open_dataset(out_ed)


def _reference(out: Path) -> dict[str, np.ndarray]:
    """All rows read with pyarrow alone (no denoise code), shard by shard in manifest order."""
    t = read_output_table(out)
    ref = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_fixed_size_list(col.type):
            ref[name] = np.stack(col.to_numpy(zero_copy_only=False))
        else:
            ref[name] = col.to_numpy()
    return ref


@pytest.fixture(scope="module")
def ref(out_ed: Path) -> dict[str, np.ndarray]:
    return _reference(out_ed)


def _rows_equal(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], idx: Any) -> None:
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k][idx], err_msg=k)


def _batch_buffer(ds: DenoiseDataset, bi: int, col: str) -> np.ndarray:
    """The raw values buffer of column ``col`` of record batch ``bi`` as a flat numpy array."""
    rb = ds._batches[bi]
    arr = rb.column(col)
    values = arr.values if pa.types.is_fixed_size_list(arr.type) else arr
    buf = values.buffers()[1]
    return np.frombuffer(buf, dtype=values.type.to_pandas_dtype())


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's memory mappings of ``path`` (Linux /proc/self/maps)."""
    out = []
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi))
    return out


# --------------------------------------------------------------------------- basic access


def test_len_manifest_and_columns(ds: DenoiseDataset, out_ed: Path) -> None:
    m = ds.manifest
    assert len(ds) == m["totals"]["rows"] == sum(s["rows"] for s in m["shards"])
    assert len(m["shards"]) > 3 and ds.num_batches > len(m["shards"])  # several batches a shard
    assert m["layout"] == "encoder-decoder" and m["row_widths"] == [64, 64]
    assert ds.columns[:3] == ["input_ids", "labels", "attention_mask"]
    assert "prefix_length" not in ds.columns
    assert ds.path == out_ed


def test_rows_match_pyarrow(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    n = len(ds)
    _rows_equal(ds[0:n], ref, slice(0, n))
    assert ds[0:n]["input_ids"].shape == (n, 64)
    assert ds[0:n]["input_ids"].dtype == np.int32
    assert ds[0:n]["attention_mask"].dtype == np.int8


def test_int_indexing(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    n = len(ds)
    for i in (0, 1, 99, 100, 299, 300, n - 1, -1, -n, np.int64(7)):
        row = ds[i]
        assert row["input_ids"].shape == (64,)
        for k in ref:
            np.testing.assert_array_equal(row[k], ref[k][int(i)], err_msg=f"{k} row {i}")
    for bad in (n, -n - 1):
        with pytest.raises(IndexError):
            ds[bad]


def test_slices(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    n = len(ds)
    for s in (
        slice(0, 10),
        slice(95, 105),  # across a record batch boundary
        slice(290, 310),  # across a shard boundary
        slice(10, 500, 7),
        slice(None, None, -1),
        slice(-5, None),
        slice(50, 50),
        slice(60, 40),
        slice(n - 3, n + 10),
    ):
        got = ds[s]
        _rows_equal(got, ref, s)


def test_index_arrays(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    n = len(ds)
    rng = np.random.default_rng(0)
    idx = rng.integers(-n, n, 200)
    _rows_equal(ds[idx], ref, idx)
    _rows_equal(ds[list(idx[:17])], ref, idx[:17])
    _rows_equal(ds[[5, 5, 5, 0]], ref, [5, 5, 5, 0])  # repeats
    _rows_equal(ds[np.zeros(0, dtype=np.int64)], ref, np.zeros(0, dtype=np.int64))
    mask = rng.random(n) < 0.1
    _rows_equal(ds[mask], ref, mask)
    with pytest.raises(IndexError):
        ds[mask[:-1]]
    with pytest.raises(IndexError):
        ds[[0, n]]
    with pytest.raises(IndexError):
        ds.take(np.array([-n - 1]))


def test_take_columns(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    idx = np.array([400, 3, 250, 3])
    got = ds.take(idx, columns=MODEL_COLS)
    assert list(got) == list(MODEL_COLS)
    for k in MODEL_COLS:
        np.testing.assert_array_equal(got[k], ref[k][idx])
    with pytest.raises(KeyError, match="nope"):
        ds.take(idx, columns=["nope"])
    # out=: gather (and widen) into the caller's arrays, sorted and unsorted indices alike
    for ix in (np.array([3, 3, 250, 400]), idx):
        out = {k: np.full((len(ix), 64), 7, dtype=np.int64) for k in MODEL_COLS}
        assert ds.take(ix, out=out) is out
        for k in MODEL_COLS:
            np.testing.assert_array_equal(out[k], ref[k][ix])
    with pytest.raises(ValueError, match="shape"):
        ds.take(idx, out={"input_ids": np.empty((3, 64), dtype=np.int64)})
    info = ds.column_info
    assert info["input_ids"] == ((64,), np.dtype(np.int32))
    assert info["attention_mask"] == ((64,), np.dtype(np.int8))
    assert info["denoiser"] == ((), np.dtype(np.int8))


def test_zero_copy_slice_inside_a_record_batch(ds: DenoiseDataset, out_ed: Path) -> None:
    start = int(ds._starts[2]) + 5  # record batch 2
    got = ds[start : start + 20]
    buf = _batch_buffer(ds, 2, "input_ids")
    a = got["input_ids"]
    assert np.shares_memory(a, buf)
    assert not a.flags.owndata and not a.flags.writeable  # a read-only view of the map
    # ... and the memory is the kernel's mapping of the shard file itself (not a copy of it)
    if sys.platform.startswith("linux"):
        shard = out_ed / ds.manifest["shards"][0]["path"]
        assert int(ds._starts[2]) + 25 <= ds.manifest["shards"][0]["rows"]
        addr = a.__array_interface__["data"][0]
        assert any(lo <= addr and addr + a.nbytes <= hi for lo, hi in _mapped_ranges(shard))
    # every column is a view
    for k in ds.columns:
        assert np.shares_memory(got[k], _batch_buffer(ds, 2, k)), k


def test_copies_otherwise(ds: DenoiseDataset) -> None:
    b0, b1 = int(ds._starts[1]), int(ds._starts[2])
    buffers = [_batch_buffer(ds, bi, "input_ids") for bi in range(ds.num_batches)]
    for got in (ds[b1 - 5 : b1 + 5], ds[[b0, b0 + 1]], ds[b0 : b0 + 10 : 2], ds.take(np.arange(3))):
        a = got["input_ids"]
        assert a.flags.writeable and a.flags.c_contiguous
        assert not any(np.shares_memory(a, b) for b in buffers)


def test_pickles_as_path(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    blob = pickle.dumps(ds)
    assert len(blob) < 1000  # the path, not the data
    ds2 = pickle.loads(blob)
    assert len(ds2) == len(ds)
    _rows_equal(ds2[100:200], ref, slice(100, 200))


def test_missing_output(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"denoise\.json"):
        open_dataset(tmp_path)


def test_decoder_only_columns(out_do: Path) -> None:
    d = open_dataset(out_do)
    b = d[0:50]
    assert b["input_ids"].shape == (50, 128) and b["labels"].shape == (50, 128)
    assert "prefix_length" in b
    pos = np.arange(128)[None, :]
    # labels are -100 on the prefix and equal to input_ids on the targets
    prefix = pos < b["prefix_length"][:, None]
    assert (b["labels"][prefix] == -100).all()
    has = b["labels"] != -100
    np.testing.assert_array_equal(b["labels"][has], b["input_ids"][has])
    assert (has.sum(1) == b["target_length"]).all()


def test_parquet_same_rows_as_arrow(out_pq: Path, ref: dict[str, np.ndarray]) -> None:
    d = open_dataset(out_pq)
    assert d.manifest["format"] == "parquet"
    assert all(s["path"].endswith(".parquet") for s in d.manifest["shards"])
    n = len(d)
    assert n == len(ref["input_ids"])
    _rows_equal(d[0:n], ref, slice(0, n))
    _rows_equal(_reference(out_pq), ref, slice(0, n))
    idx = np.random.default_rng(1).permutation(n)[:100]
    _rows_equal(d[idx], ref, idx)


# --------------------------------------------------------------------------- batches


def _keys(batch: dict[str, np.ndarray]) -> np.ndarray:
    """A unique id per row: (source_file, example_index)."""
    return batch["source_file"].astype(np.int64) * 10**9 + batch["example_index"]


def test_iter_batches_drop_last(ds: DenoiseDataset) -> None:
    n = len(ds)
    bs = 64
    batches = list(ds.iter_batches(bs))
    assert len(batches) == n // bs
    assert all(b["input_ids"].shape == (bs, 64) for b in batches)
    # unshuffled: rows in order
    allk = np.concatenate([_keys(b) for b in batches])
    np.testing.assert_array_equal(allk, _keys(ds[0 : n // bs * bs]))


def test_iter_batches_keep_last(ds: DenoiseDataset) -> None:
    n = len(ds)
    bs = 64
    assert n % bs  # the test needs a short last batch
    batches = list(ds.iter_batches(bs, shuffle=True, drop_last=False))
    assert len(batches) == -(-n // bs)
    assert [len(b["input_ids"]) for b in batches[:-1]] == [bs] * (len(batches) - 1)
    assert len(batches[-1]["input_ids"]) == n % bs
    k = np.concatenate([_keys(b) for b in batches])
    assert len(k) == n and len(np.unique(k)) == n


def test_iter_batches_pad_last(ds: DenoiseDataset) -> None:
    n = len(ds)
    bs = 64
    pad_id = ds.manifest["tokenizer"]["pad"]["id"]
    batches = list(ds.iter_batches(bs, shuffle=True, pad_last=True))  # overrides drop_last
    assert len(batches) == -(-n // bs)
    assert all(b[k].shape[0] == bs for b in batches for k in b)
    last = batches[-1]
    real = last["input_length"] > 0
    assert real.sum() == n % bs and real[: n % bs].all()
    assert (last["input_ids"][~real] == pad_id).all()
    assert (last["labels"][~real] == -100).all()
    assert (last["attention_mask"][~real] == 0).all()
    for k, v in PAD_FILL.items():
        if k in last:
            assert (last[k][~real] == v).all(), k
    k = np.concatenate([_keys(b)[b["input_length"] > 0] for b in batches])
    assert len(k) == n and len(np.unique(k)) == n


def test_shuffle_determinism(ds: DenoiseDataset) -> None:
    def order(**kw: Any) -> np.ndarray:
        it = ds.iter_batches(32, shuffle=True, drop_last=False, **kw)
        return np.concatenate([_keys(b) for b in it])

    a = order(seed=1, epoch=0)
    np.testing.assert_array_equal(a, order(seed=1, epoch=0))
    assert not np.array_equal(a, order(seed=1, epoch=1))
    assert not np.array_equal(a, order(seed=2, epoch=0))
    assert not np.array_equal(np.sort(a), a)  # really shuffled
    np.testing.assert_array_equal(np.sort(a), np.sort(order(seed=1, epoch=1)))  # same rows
    np.testing.assert_array_equal(epoch_order(10, shuffle=False, seed=3, epoch=4), np.arange(10))


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_rank_partition(ds: DenoiseDataset, world_size: int) -> None:
    n = len(ds)
    bs = 16
    for epoch in (0, 1):
        # keep the tail: every row exactly once over the ranks
        ks = [
            np.concatenate(
                [
                    _keys(b)
                    for b in ds.iter_batches(
                        bs,
                        shuffle=True,
                        seed=5,
                        epoch=epoch,
                        rank=r,
                        world_size=world_size,
                        drop_last=False,
                    )
                ]
            )
            for r in range(world_size)
        ]
        allk = np.concatenate(ks)
        assert len(allk) == n and len(np.unique(allk)) == n
        # drop_last: the same number of full batches on every rank, no row twice
        counts = []
        seen = []
        for r in range(world_size):
            bl = list(
                ds.iter_batches(
                    bs, shuffle=True, seed=5, epoch=epoch, rank=r, world_size=world_size
                )
            )
            counts.append(len(bl))
            assert all(len(b["input_ids"]) == bs for b in bl)
            seen += [_keys(b) for b in bl]
        assert len(set(counts)) == 1 and counts[0] == (n // world_size) // bs
        s = np.concatenate(seen)
        assert len(np.unique(s)) == len(s) > n - world_size * bs
        # pad_last: same number of full-shape batches on every rank, real rows exactly once
        padded = [
            list(
                ds.iter_batches(
                    bs,
                    shuffle=True,
                    seed=5,
                    epoch=epoch,
                    rank=r,
                    world_size=world_size,
                    pad_last=True,
                )
            )
            for r in range(world_size)
        ]
        assert len({len(p) for p in padded}) == 1
        real = np.concatenate([_keys(b)[b["input_length"] > 0] for p in padded for b in p])
        assert len(real) == n and len(np.unique(real)) == n


def test_epoch_batches_plan() -> None:
    for n in (0, 1, 5, 64, 100, 1001):
        for ws in (1, 2, 3, 8):
            for bs in (1, 7, 64):
                plans = [
                    epoch_batches(
                        n, bs, shuffle=True, seed=0, epoch=0, rank=r, world_size=ws, drop_last=False
                    )
                    for r in range(ws)
                ]
                flat = np.concatenate(
                    [np.concatenate(p) if p else np.zeros(0, np.int64) for p in plans]
                )
                np.testing.assert_array_equal(np.sort(flat), np.arange(n))
                padded = [
                    epoch_batches(n, bs, rank=r, world_size=ws, pad_last=True) for r in range(ws)
                ]
                assert len({len(p) for p in padded}) == 1
                assert len(padded[0]) == math.ceil(math.ceil(n / ws) / bs)
    with pytest.raises(ValueError):
        epoch_batches(10, 0)
    with pytest.raises(ValueError):
        epoch_batches(10, 2, rank=2, world_size=2)


# --------------------------------------------------------------------------- Hugging Face


def test_load_from_disk(out_ed: Path, ref: dict[str, np.ndarray]) -> None:
    datasets = pytest.importorskip("datasets")
    hf = datasets.load_from_disk(str(out_ed))
    assert hf.num_rows == len(ref["input_ids"])
    assert hf.column_names == list(ref)
    np_ds = hf.with_format("numpy")
    for k in ref:
        np.testing.assert_array_equal(np.asarray(np_ds[k]), ref[k], err_msg=k)
    row = hf[123]
    assert row["input_ids"] == ref["input_ids"][123].tolist()


# --------------------------------------------------------------------------- PyTorch


def _torch() -> Any:
    return pytest.importorskip("torch")


def _tkeys(batch: dict[str, Any]) -> np.ndarray:
    return _keys({k: v.numpy() for k, v in batch.items()})


KEY_COLS = (*MODEL_COLS, "source_file", "example_index", "input_length")


def test_torch_missing_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "denoise_cli.torch_data", raising=False)
    monkeypatch.delitem(sys.modules, "denoise_cli.load.torch_data", raising=False)
    with pytest.raises(ImportError, match="needs PyTorch"):
        import denoise_cli.torch_data  # noqa: F401


def test_torch_batches_tensors(ds: DenoiseDataset) -> None:
    torch = _torch()
    from denoise_cli.torch_data import MODEL_COLUMNS, DenoiseBatches

    b = DenoiseBatches(ds, 32, seed=3, columns=MODEL_COLUMNS)
    assert len(b) == len(ds) // 32
    batch = next(iter(b))
    assert list(batch) == list(MODEL_COLUMNS)
    for v in batch.values():
        assert isinstance(v, torch.Tensor) and v.dtype == torch.int64 and v.shape == (32, 64)
    # the same rows as the numpy plan with the same arguments
    np_batch = next(ds.iter_batches(32, shuffle=True, seed=3))
    for k in MODEL_COLUMNS:
        np.testing.assert_array_equal(batch[k].numpy(), np_batch[k])
    raw = next(iter(DenoiseBatches(ds, 32, seed=3, long=False, pin_memory=True)))
    assert raw["input_ids"].dtype == torch.int32 and raw["attention_mask"].dtype == torch.int8
    assert set(raw) == set(ds.columns)
    with pytest.raises(KeyError):
        DenoiseBatches(ds, 32, columns=["nope"])


@pytest.mark.parametrize(
    ("world_size", "num_workers"), [(1, 0), (1, 2), (2, 2), (3, 2), (4, 2), (4, 1)]
)
def test_torch_exactly_once(ds: DenoiseDataset, world_size: int, num_workers: int) -> None:
    _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatches

    n = len(ds)
    bs = 48
    orders: dict[int, list[np.ndarray]] = {}
    for epoch in (0, 1):
        ks = []
        for r in range(world_size):
            b = DenoiseBatches(
                ds, bs, seed=11, drop_last=False, rank=r, world_size=world_size, columns=KEY_COLS
            )
            b.set_epoch(epoch)
            dl = DataLoader(b, batch_size=None, num_workers=num_workers)
            got = list(dl)
            assert len(got) == len(b)
            assert all(x["input_ids"].shape[1] == 64 for x in got)
            assert all(x["input_ids"].shape[0] == bs for x in got[:-1])
            ks.append(np.concatenate([_tkeys(x) for x in got]))
            # the batch order does not depend on the number of workers
            ref_plan = ds.iter_batches(
                bs,
                shuffle=True,
                seed=11,
                epoch=epoch,
                rank=r,
                world_size=world_size,
                drop_last=False,
            )
            np.testing.assert_array_equal(ks[-1], np.concatenate([_keys(x) for x in ref_plan]))
        allk = np.concatenate(ks)
        assert len(allk) == n and len(np.unique(allk)) == n  # every row exactly once
        orders[epoch] = ks
    assert not np.array_equal(orders[0][0], orders[1][0])  # epochs differ


def test_torch_pad_last_and_drop_last_with_workers(ds: DenoiseDataset) -> None:
    _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatches

    n, bs, ws = len(ds), 40, 3
    real = []
    lens = set()
    for r in range(ws):
        b = DenoiseBatches(ds, bs, pad_last=True, rank=r, world_size=ws, columns=KEY_COLS)
        got = list(DataLoader(b, batch_size=None, num_workers=2))
        lens.add(len(got))
        assert all(x[k].shape[0] == bs for x in got for k in x)
        real += [_tkeys(x)[x["input_length"].numpy() > 0] for x in got]
    assert len(lens) == 1
    allk = np.concatenate(real)
    assert len(allk) == n and len(np.unique(allk)) == n
    seen = []
    for r in range(ws):
        b = DenoiseBatches(ds, bs, rank=r, world_size=ws, columns=KEY_COLS)  # drop_last
        got = list(DataLoader(b, batch_size=None, num_workers=2))
        assert len(got) == (n // ws) // bs
        seen += [_tkeys(x) for x in got]
    s = np.concatenate(seen)
    assert len(np.unique(s)) == len(s)


def test_torch_set_epoch_reaches_persistent_workers(ds: DenoiseDataset) -> None:
    _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatches

    b = DenoiseBatches(ds, 64, seed=2, columns=KEY_COLS)
    dl = DataLoader(b, batch_size=None, num_workers=2, persistent_workers=True)
    per_epoch = []
    for epoch in (0, 1, 0):
        b.set_epoch(epoch)
        per_epoch.append(np.concatenate([_tkeys(x) for x in dl]))
    assert not np.array_equal(per_epoch[0], per_epoch[1])
    np.testing.assert_array_equal(per_epoch[0], per_epoch[2])
    expect = np.concatenate([_keys(x) for x in ds.iter_batches(64, shuffle=True, seed=2, epoch=1)])
    np.testing.assert_array_equal(per_epoch[1], expect)


def test_torch_rank_from_distributed(ds: DenoiseDataset, tmp_path: Path) -> None:
    torch = _torch()
    import torch.distributed as dist

    from denoise_cli.torch_data import DenoiseBatches, DenoiseBatchSampler, dist_rank_world

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    assert dist_rank_world() == (0, 1)
    assert dist_rank_world(2, 4) == (2, 4)
    with pytest.raises(ValueError):
        dist_rank_world(4, 4)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        b = DenoiseBatches(ds, 16)
        assert (b.rank, b.world_size) == (0, 1)
        s = DenoiseBatchSampler(ds, 16)
        assert (s.rank, s.world_size) == (0, 1)
        assert DenoiseBatches(ds, 16, rank=1, world_size=2).world_size == 2  # explicit wins
    finally:
        dist.destroy_process_group()
    del torch


def test_torch_map_style_and_batch_sampler(ds: DenoiseDataset, ref: dict[str, np.ndarray]) -> None:
    torch = _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatchSampler, DenoiseTorchDataset, collate

    tds = DenoiseTorchDataset(ds, columns=KEY_COLS)
    assert len(tds) == len(ds)
    row = tds[7]
    assert row["input_ids"].shape == (64,) and row["input_ids"].dtype == torch.int64
    np.testing.assert_array_equal(row["labels"].numpy(), ref["labels"][7])
    batch = tds.__getitems__([3, 1, 2])
    np.testing.assert_array_equal(batch["input_ids"].numpy(), ref["input_ids"][[3, 1, 2]])
    # per-row fetch + default collate gives the same batch (the slow path)
    slow = DataLoader(tds, batch_size=3, collate_fn=collate, sampler=[3, 1, 2])
    one = next(iter(slow))
    for k in KEY_COLS:
        assert torch.equal(one[k], batch[k])

    n, bs = len(ds), 50
    for ws, nw in [(1, 2), (3, 2)]:
        ks = []
        for r in range(ws):
            sampler = DenoiseBatchSampler(tds, bs, seed=4, drop_last=False, rank=r, world_size=ws)
            sampler.set_epoch(1)
            dl = DataLoader(tds, batch_sampler=sampler, collate_fn=collate, num_workers=nw)
            got = list(dl)
            assert len(got) == len(sampler)
            ks.append(np.concatenate([_tkeys(x) for x in got]))
        allk = np.concatenate(ks)
        assert len(allk) == n and len(np.unique(allk)) == n
    s = DenoiseBatchSampler(n, bs, seed=4)
    assert len(s) == n // bs and all(len(x) == bs for x in s)


@pytest.mark.slow
def test_torch_spawn_workers(out_ed: Path) -> None:
    """Workers started with spawn re-open the dataset from its path and still see set_epoch."""
    _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatches

    d = open_dataset(out_ed)
    b = DenoiseBatches(d, 64, seed=9, drop_last=False, columns=KEY_COLS)
    dl = DataLoader(
        b, batch_size=None, num_workers=2, multiprocessing_context="spawn", persistent_workers=True
    )
    for epoch in (0, 3):
        b.set_epoch(epoch)
        got = np.concatenate([_tkeys(x) for x in dl])
        expect = np.concatenate(
            [
                _keys(x)
                for x in d.iter_batches(64, shuffle=True, seed=9, epoch=epoch, drop_last=False)
            ]
        )
        np.testing.assert_array_equal(got, expect)


def test_torch_batches_serve_epoch_variants(tmp_path: Path) -> None:
    """An output of ``prepare --epochs 2`` given by path: epoch e reads variant e % 2, also in
    persistent workers after ``set_epoch``."""
    _torch()
    from torch.utils.data import DataLoader

    from denoise_cli.torch_data import DenoiseBatches

    out = tmp_path / "ep"
    cfg = PrepareConfig(
        mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 64, 64), epochs=2
    )
    prepare([str(SAMPLE)], str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    b = DenoiseBatches(out, 64, seed=1, drop_last=False, columns=KEY_COLS)
    dl = DataLoader(b, batch_size=None, num_workers=2, persistent_workers=True)
    for epoch in (0, 1, 2, 3):
        b.set_epoch(epoch)
        got = list(dl)
        variant = open_dataset(out, epoch=epoch)
        assert variant.path.name == f"epoch-{epoch % 2}"
        expect = list(variant.iter_batches(64, shuffle=True, seed=1, epoch=epoch, drop_last=False))
        assert len(got) == len(expect) == len(b)
        for g, e in zip(got, expect, strict=True):
            for k in KEY_COLS:
                np.testing.assert_array_equal(g[k].numpy(), e[k], err_msg=k)

"""``denoise shuffle`` and the block loaders (issue 16 part 3).

The shuffled output is checked against a reference built with pyarrow alone (the source's rows
in manifest order, then indexed by a permutation computed here from the documented recipe), for
the default, compact, packed, parquet and ``--epochs`` layouts; reruns, kills and foreign
directories are injected; ``shuffle="blocks"`` plans are checked against a slow per-rank
reference, and zero-copy batches against copied ones."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from helpers import T5_TINY, Outputs, read_output_table

from denoise_cli import open_dataset
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, OutputError
from denoise_cli.load import epoch_batches
from denoise_cli.prepare.shuffle import shuffle

torch = pytest.importorskip("torch")

MODEL_COLS = ("input_ids", "attention_mask", "labels")


def _cfg(**kw: Any) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64, 128),  # type: ignore[arg-type]
        group_size=100,
        shard_rows=300,
        **kw,
    )


def _perm(n: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The documented recipe, written out here: PCG64(SeedSequence([0x53485546, seed, epoch]))."""
    ss = np.random.SeedSequence([0x53485546, seed, epoch])
    return np.random.Generator(np.random.PCG64(ss)).permutation(n)


def _digest(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


@pytest.fixture(scope="module")
def src(outputs: Outputs) -> Path:
    return outputs(_cfg(), tokenizer=T5_TINY)


@pytest.mark.parametrize(
    "kw",
    [{}, {"compact": True}, {"format": "parquet"}, {"pack_factor": 2}],
    ids=["default", "compact", "parquet", "pack2"],
)
def test_rows_are_the_source_rows_in_the_seeded_order(
    outputs: Outputs, tmp_path: Path, kw: dict[str, Any]
) -> None:
    s = outputs(_cfg(**kw), tokenizer=T5_TINY)
    out = tmp_path / "sh"
    m = shuffle(str(s), str(out), seed=7, shard_rows=128)
    ref = read_output_table(s)
    got = read_output_table(out)
    assert got.schema.equals(ref.schema, check_metadata=True)
    n = ref.num_rows
    assert got.num_rows == n and n > 256
    assert got.equals(ref.take(pa.array(_perm(n, 7))))
    # shards of 128 rows, one record batch each; the per-file accounting is the source's
    assert [sh["rows"] for sh in m["shards"]] == [128] * (n // 128) + ([n % 128] if n % 128 else [])
    src_m = open_dataset(s).manifest
    assert m["files"] == src_m["files"] and m["totals"] == src_m["totals"]
    assert m["shuffle"]["source_shards"] == src_m["shards"]
    # the loaders see the same rows as through the source, in the shuffled order
    a, b = open_dataset(s), open_dataset(out)
    perm = _perm(n, 7)
    for k in a.columns:
        np.testing.assert_array_equal(b[0:n][k], a.take(perm)[k], err_msg=k)


def test_rerun_is_refused_and_bytes_do_not_depend_on_the_run(src: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shuffle(str(src), str(a), seed=1, shard_rows=100)
    shuffle(str(src), str(b), seed=1, shard_rows=100)
    assert _digest(a) == _digest(b)
    with pytest.raises(OutputError, match="already holds a denoise output"):
        shuffle(str(src), str(a), seed=1)
    c = tmp_path / "c"
    shuffle(str(src), str(c), seed=2, shard_rows=100)
    assert _digest(a) != _digest(c)


def test_refuses_foreign_directories_and_touches_nothing(src: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "f"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        shuffle(str(src), str(foreign))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(OutputError, match="inside the input"):
        shuffle(str(src), str(src / "data" / "x"))
    before = _digest(src)
    with pytest.raises(ConfigError, match="shard-rows"):
        shuffle(str(src), str(tmp_path / "z"), shard_rows=0)
    assert _digest(src) == before
    merging = tmp_path / "m"  # an interrupted merge's directory is not ours to clear
    (merging / ".denoise").mkdir(parents=True)
    (merging / ".denoise" / "merge.json").write_text("{}")
    with pytest.raises(OutputError, match="another denoise command"):
        shuffle(str(src), str(merging))
    assert (merging / ".denoise" / "merge.json").read_text() == "{}"
    sh = tmp_path / "sh"
    shuffle(str(src), str(sh))
    with pytest.raises(ConfigError, match="already a shuffled output"):
        shuffle(str(sh), str(tmp_path / "sh2"))


def test_interrupted_shuffle_reruns_to_identical_bytes(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.shuffle as shm

    ref = tmp_path / "ref"
    shuffle(str(src), str(ref), seed=3, shard_rows=100)
    out = tmp_path / "o"
    real = shm.ShardWriter.commit
    calls = {"n": 0}

    def flaky(self: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(self)

    monkeypatch.setattr(shm.ShardWriter, "commit", flaky)
    with pytest.raises(KeyboardInterrupt):
        shuffle(str(src), str(out), seed=3, shard_rows=100)
    assert not (out / "denoise.json").exists()  # never a manifest before every shard
    assert not list(out.rglob(".tmp-*"))  # the aborted shard's temporary is gone
    monkeypatch.setattr(shm.ShardWriter, "commit", real)
    shuffle(str(src), str(out), seed=3, shard_rows=100)
    assert _digest(out) == _digest(ref)


@pytest.mark.slow
def test_kill9_at_any_moment_then_rerun(src: Path, tmp_path: Path) -> None:
    """Real ``kill -9`` of ``denoise shuffle`` at several moments; the rerun gives the same
    bytes as an uninterrupted run."""
    args = [sys.executable, "-m", "denoise_cli", "shuffle", str(src)]
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    subprocess.run([*args, str(ref), "--shard-rows", "50"], check=True, capture_output=True)
    dur = time.perf_counter() - t0
    out = tmp_path / "o"
    for frac in (0.3, 0.6, 0.8, 0.95):
        p = subprocess.Popen(
            [*args, str(out), "--shard-rows", "50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(frac * dur)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        if (out / "denoise.json").exists():
            break  # finished before the kill: nothing more to interrupt
    if not (out / "denoise.json").exists():
        r = subprocess.run([*args, str(out), "--shard-rows", "50"], capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
    assert _digest(out) == _digest(ref)


def test_epochs_each_get_their_own_order(outputs: Outputs, tmp_path: Path) -> None:
    s = outputs(_cfg(epochs=2), tokenizer=T5_TINY)
    out = tmp_path / "sh"
    shuffle(str(s), str(out), seed=5, shard_rows=200)
    for e in range(2):
        ref = read_output_table(s / f"epoch-{e}")
        got = read_output_table(out / f"epoch-{e}")
        assert got.equals(ref.take(pa.array(_perm(ref.num_rows, 5, e))))
        a, b = open_dataset(s, epoch=e), open_dataset(out, epoch=e)
        np.testing.assert_array_equal(
            b[0 : len(b)]["input_ids"], a.take(_perm(len(a), 5, e))["input_ids"]
        )


def _block_reference(
    n: int, bs: int, seed: int, epoch: int, rank: int, world: int, drop: bool, pad: bool
) -> list[list[int]]:
    """Slow reference of shuffle="blocks": blocks, their seeded order, dealt to ranks."""
    blocks = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)]
    if drop and not pad:
        blocks = [b for b in blocks if len(b) == bs]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    order = list(rng.permutation(len(blocks)))
    mine = [blocks[order[i]] for i in range(rank, len(order), world)]
    if drop and not pad:
        mine = mine[: len(blocks) // world]
    if pad:
        nblocks = -(-n // bs)
        per = -(-nblocks // world)
        mine += [[]] * (per - len(mine))
    return mine


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 640, 1000])
@pytest.mark.parametrize("world", [1, 3])
@pytest.mark.parametrize("mode", ["drop", "keep", "pad"])
def test_block_plan_matches_reference(n: int, world: int, mode: str) -> None:
    drop, pad = mode == "drop", mode == "pad"
    seen: list[int] = []
    counts = set()
    for rank in range(world):
        got = epoch_batches(
            n, 64, shuffle="blocks", seed=9, epoch=2, rank=rank, world_size=world,
            drop_last=drop, pad_last=pad,
        )  # fmt: skip
        ref = _block_reference(n, 64, 9, 2, rank, world, drop, pad)
        assert [g.tolist() for g in got] == ref
        seen += [i for g in got for i in g.tolist()]
        counts.add(len(got))
    assert len(seen) == len(set(seen))  # no row on two ranks
    if mode == "keep":
        assert sorted(seen) == list(range(n))
    if mode != "keep":
        assert len(counts) == 1  # every rank takes the same number of steps
    a = epoch_batches(n, 64, shuffle="blocks", seed=9, epoch=3)
    b = epoch_batches(n, 64, shuffle="blocks", seed=9, epoch=2)
    if n >= 256:  # another epoch, another order of the same blocks
        assert [x.tolist() for x in a] != [x.tolist() for x in b]
        assert sorted(x.tolist() for x in a) == sorted(x.tolist() for x in b)
    with pytest.raises(ValueError, match="shuffle must be"):
        epoch_batches(n, 64, shuffle="rows")


def test_block_batches_are_views_and_equal_copies(src: Path, tmp_path: Path) -> None:
    from denoise_cli.torch_data import DenoiseBatches

    out = tmp_path / "sh"
    shuffle(str(src), str(out), seed=0, shard_rows=256)
    ds = open_dataset(out)
    ref = read_output_table(out)
    ids = np.stack(ref.column("input_ids").to_numpy(zero_copy_only=False))
    plan = epoch_batches(len(ds), 32, shuffle="blocks", seed=4, epoch=1)
    got = list(ds.iter_batches(32, shuffle="blocks", seed=4, epoch=1, columns=MODEL_COLS))
    assert len(got) == len(plan)
    views = 0
    for idx, b in zip(plan, got, strict=True):
        assert list(b) == list(MODEL_COLS)
        np.testing.assert_array_equal(b["input_ids"], ids[idx])
        if not b["input_ids"].flags.owndata:
            views += 1
            assert not b["input_ids"].flags.writeable  # read-only views of the mapping
    assert views >= len(plan) - len(open_dataset(out).manifest["shards"])  # all but crossings
    kw: dict[str, Any] = dict(shuffle="blocks", seed=4, epoch=1, columns=MODEL_COLS)
    zc = list(DenoiseBatches(ds, 32, long=False, zero_copy=True, **kw))
    cp = list(DenoiseBatches(out, 32, long=False, **kw))
    lg = list(DenoiseBatches(out, 32, **kw))
    assert len(zc) == len(cp) == len(lg) == len(plan)
    for z, c, g, idx in zip(zc, cp, lg, plan, strict=True):
        for k in MODEL_COLS:
            assert z[k].dtype == c[k].dtype and g[k].dtype == torch.int64
            assert torch.equal(z[k], c[k]) and torch.equal(g[k], c[k].long())
        np.testing.assert_array_equal(c["input_ids"].numpy(), ids[idx])
    # the zero-copy tensors share the dataset's mapping
    shared = ds.batch_view(0)["input_ids"].__array_interface__["data"][0]
    first = [z for z, idx in zip(zc, plan, strict=True) if idx[0] == 0]
    if first:
        assert first[0]["input_ids"].data_ptr() == shared
    with pytest.raises(ValueError, match="zero_copy needs long=False"):
        DenoiseBatches(out, 32, zero_copy=True)


@pytest.mark.parametrize(
    ("rank", "world", "drop", "resume"),
    [(0, 1, True, 0), (1, 2, False, 0), (0, 3, True, 2), (0, 1, False, 5)],
)
def test_zero_copy_block_path_equals_the_copied_plan(
    src: Path, tmp_path: Path, rank: int, world: int, drop: bool, resume: int
) -> None:
    """The zero-copy path of ``shuffle="blocks"`` (block numbers located at once, no row
    indices) yields the copied loader's batches, in its order: record batches of 100 rows put
    some 32-row blocks across two of them (copied there), ranks split the blocks, the short last
    block is kept or dropped, and a resumed loader continues where the state says."""
    from denoise_cli.torch_data import DenoiseBatches

    out = tmp_path / "sh"
    shuffle(str(src), str(out), seed=0, shard_rows=100)
    ds = open_dataset(out)
    kw: dict[str, Any] = dict(
        shuffle="blocks", seed=4, epoch=1, columns=MODEL_COLS, rank=rank, world_size=world,
        drop_last=drop,
    )  # fmt: skip
    zc_db = DenoiseBatches(ds, 32, long=False, zero_copy=True, **kw)
    cp_db = DenoiseBatches(ds, 32, long=False, **kw)
    if resume:
        state = {"epoch": 1, "batches": resume, "seed": 4, "rank": rank, "world_size": world}
        zc_db.load_state_dict(state)
        cp_db.load_state_dict(state)
    zc, cp = list(zc_db), list(cp_db)
    plan = epoch_batches(len(ds), 32, **{k: v for k, v in kw.items() if k != "columns"})
    assert len(zc) == len(cp) == len(plan) - resume > 0
    assert zc_db.state_dict()["batches"] == cp_db.state_dict()["batches"] == len(plan)
    views = 0
    for z, c, idx in zip(zc, cp, plan[resume:], strict=True):
        assert list(z) == list(MODEL_COLS)
        for k in MODEL_COLS:
            assert z[k].dtype == c[k].dtype and torch.equal(z[k], c[k])
        assert len(z["input_ids"]) == len(idx)
        bi = np.searchsorted(ds._starts, idx[0], side="right") - 1
        view = ds.batch_view(int(bi))["input_ids"]
        base = view.__array_interface__["data"][0]
        ptr = z["input_ids"].data_ptr()
        inside = idx[-1] < ds._starts[bi + 1]
        assert (base <= ptr < base + view.nbytes) == bool(inside)  # view iff in one batch
        views += bool(inside)
    assert 0 < views < len(zc) or world > 1  # both kinds were served
    # the numpy loader's block path: the same plan, views where the block is in one batch
    np_kw = {k: v for k, v in kw.items() if k not in ("world_size", "columns")}
    for cols in (MODEL_COLS, None):
        got = list(ds.iter_batches(32, world_size=world, columns=cols, **np_kw))
        assert len(got) == len(plan)
        for g, idx in zip(got, plan, strict=True):
            want = ds.take(idx, cols)
            assert list(g) == list(want)
            for k in want:
                np.testing.assert_array_equal(g[k], want[k])
    with pytest.raises(KeyError, match="no column 'nope'"):
        next(ds.iter_batches(32, shuffle="blocks", columns=["nope"]))


def test_zero_copy_block_path_in_a_dataloader_worker(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 of 2 takes every other batch of the plan on both paths."""
    import types

    import denoise_cli.load.torch_data as td

    out = tmp_path / "sh"
    shuffle(str(src), str(out), seed=0, shard_rows=100)
    ds = open_dataset(out)
    monkeypatch.setattr(td, "get_worker_info", lambda: types.SimpleNamespace(id=1, num_workers=2))
    kw: dict[str, Any] = dict(shuffle="blocks", seed=2, columns=MODEL_COLS, long=False)
    zc = list(td.DenoiseBatches(ds, 32, zero_copy=True, **kw))
    cp = list(td.DenoiseBatches(ds, 32, **kw))
    plan = epoch_batches(len(ds), 32, shuffle="blocks", seed=2)[1::2]
    assert len(zc) == len(cp) == len(plan) > 1
    for z, c, idx in zip(zc, cp, plan, strict=True):
        assert len(z["labels"]) == len(idx)
        assert all(torch.equal(z[k], c[k]) for k in MODEL_COLS)


def test_locate_many_and_epoch_blocks_match_their_scalar_forms(src: Path, tmp_path: Path) -> None:
    from denoise_cli.load import epoch_blocks

    out = tmp_path / "sh"
    shuffle(str(src), str(out), seed=0, shard_rows=100)
    ds = open_dataset(out)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(ds), 500)
    stops = np.minimum(starts + rng.integers(1, 150, 500), len(ds))
    bi, lo, hi = ds.locate_many(starts, stops)
    for s0, s1, b, lo_, hi_ in zip(starts, stops, bi, lo, hi, strict=True):
        loc = ds.locate(int(s0), int(s1))
        assert (loc is None) == (b < 0)
        if loc is not None:
            assert loc == (b, lo_, hi_)
    assert (bi < 0).any() and (bi >= 0).any()
    for rank, world, drop in [(0, 1, True), (1, 3, False), (2, 3, True)]:
        blocks = epoch_blocks(len(ds), 32, 7, 2, rank, world, drop)
        plan = epoch_batches(
            len(ds), 32, shuffle="blocks", seed=7, epoch=2, rank=rank, world_size=world,
            drop_last=drop,
        )  # fmt: skip
        assert [np.arange(b * 32, min(b * 32 + 32, len(ds))).tolist() for b in blocks] == [
            p.tolist() for p in plan
        ]


def test_open_refuses_swapped_or_reordered_shuffled_shards(src: Path, tmp_path: Path) -> None:
    """Two shards of the same size swapped keep every size and count: the per-shard digest of
    the (file, example) columns catches it at open, as the chain check does for ordinary
    outputs."""
    import shutil

    out = tmp_path / "sh"
    m = shuffle(str(src), str(out), seed=0, shard_rows=100)
    open_dataset(out)  # intact: opens
    a, b = (out / s["path"] for s in m["shards"][:2])
    assert a.stat().st_size == b.stat().st_size
    tmp = tmp_path / "t"
    shutil.move(a, tmp)
    shutil.move(b, a)
    shutil.move(tmp, b)
    with pytest.raises(OutputError, match="not the ones the shuffle wrote there"):
        open_dataset(out)
    open_dataset(out, verify="none")  # the check is the one verify="none" skips


def test_zero_copy_tensors_are_read_only_memory(src: Path, tmp_path: Path) -> None:
    """An in-place write into a zero-copy tensor must crash (SIGSEGV), never change what later
    batches of the same process read."""
    out = tmp_path / "sh"
    shuffle(str(src), str(out), seed=0)
    code = (
        "import sys\n"
        "from denoise_cli.torch_data import DenoiseBatches\n"
        "db = DenoiseBatches(sys.argv[1], 16, shuffle='blocks', long=False, zero_copy=True,"
        " columns=('input_ids',))\n"
        "b = next(iter(db))\n"
        "print('got', flush=True)\n"
        "b['input_ids'][0, 0] = 7\n"
        "print('wrote', flush=True)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True)
    assert r.stdout.splitlines() == ["got"]
    assert r.returncode == -signal.SIGSEGV


def test_cli_shuffle_and_one_line_errors(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "sh"
    cmd = [sys.executable, "-m", "denoise_cli", "shuffle", str(src), str(out)]
    r = subprocess.run([*cmd, "--seed", "4", "--shard-rows", "200"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rows" in r.stdout and r.stderr.count("shuffle: data/shuffled-") >= 2
    assert read_output_table(out).equals(
        read_output_table(src).take(pa.array(_perm(read_output_table(src).num_rows, 4)))
    )
    r = subprocess.run(cmd, capture_output=True, text=True)  # OUT now holds an output
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"denoise: error: {out} already holds a denoise output; shuffle into a new directory"
    ]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoise_cli",
            "shuffle",
            str(tmp_path / "nope"),
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()

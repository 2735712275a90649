"""A large Parquet file split into units of row groups (source.units): units chosen from the
file and the config only, -w 1 and -w 2 byte-identical, units really run in two processes,
resume inside a unit, verify --source regenerates them, small files keep their examples."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from test_read_parquet import T5_TINY, fineweb_rows, flip_text_chunk, write_jsonl_zst, write_parquet

from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import Interrupted, VerifyError
from denoise_cli.output.shards import read_shard
from denoise_cli.prepare.run import prepare
from denoise_cli.source.discover import InputFile, find_inputs
from denoise_cli.source.units import (
    InputUnit,
    plan_units,
    split_inputs,
    stream_key,
    unit_sha256,
)


def slow_plan(sizes: list[int], budget: int) -> list[tuple[int, int]]:
    """The obvious reference: walk the groups, close a block before the group that would take
    it over the budget (a block holds at least one group)."""
    blocks: list[list[int]] = []
    for i, n in enumerate(sizes):
        if blocks and sum(sizes[j] for j in blocks[-1]) + n <= budget:
            blocks[-1].append(i)
        else:
            blocks.append([i])
    return [(b[0], b[-1] + 1) for b in blocks]


@pytest.mark.parametrize(
    "sizes,budget",
    [
        ([], 10),
        ([5], 1),
        ([3, 3, 3, 3], 6),
        ([3, 3, 3, 3], 5),
        ([10, 1, 1, 10, 1], 10),
        ([7, 2, 9, 1, 1, 1, 30, 2], 11),
    ],
)
def test_plan_units_matches_the_reference(sizes: list[int], budget: int) -> None:
    got = plan_units(sizes, budget)
    assert got == slow_plan(sizes, budget)
    # consecutive, covering, never empty
    assert [a for a, _ in got] == [0, *[b for _, b in got[:-1]]][: len(got)]
    assert (got[-1][1] if got else 0) == len(sizes)
    assert all(a < b for a, b in got)


def test_plan_units_random_against_reference() -> None:
    import random

    rnd = random.Random(5)
    for _ in range(300):
        sizes = [rnd.randint(1, 50) for _ in range(rnd.randint(0, 30))]
        budget = rnd.randint(1, 120)
        assert plan_units(sizes, budget) == slow_plan(sizes, budget)


def cfg_of(unit_bytes: int) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=16,
        group_size=16,
        unit_bytes=unit_bytes,
    )


@pytest.fixture
def big(tmp_path: Path) -> tuple[Path, int]:
    """One Parquet file of 12 row groups and a small jsonl.zst file beside it; the budget that
    splits the Parquet file in about four units."""
    d = tmp_path / "in"
    d.mkdir()
    write_parquet(d / "big.parquet", fineweb_rows(1200), rg=100)
    write_jsonl_zst(d / "small.jsonl.zst", fineweb_rows(50, seed=3))
    assert pq.ParquetFile(d / "big.parquet").metadata.num_row_groups == 12
    return d, (d / "big.parquet").stat().st_size // 4 + 1


def shard_digests(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").iterdir())
    }


def rows_of(out: Path, m: dict[str, Any], idx: int) -> list[dict[str, Any]]:
    """A file's rows, without the file index column."""
    rows = []
    for s in m["shards"]:
        if s["source_files"] == [idx]:
            for b in read_shard(out / s["path"], m["format"]):
                rows += b.drop_columns(["source_file"]).to_pylist()
    assert rows
    return rows


def test_units_come_from_the_file_and_config(big: tuple[Path, int]) -> None:
    d, budget = big
    files = find_inputs([str(d)])
    units = split_inputs(files, budget)
    pu = [u for u in units if isinstance(u, InputUnit)]
    assert len(pu) >= 3 and [u.unit for u in pu] == list(range(len(pu)))
    assert [u.row_groups[0] for u in pu] == [0] + [u.row_groups[1] for u in pu[:-1]]
    assert pu[-1].row_groups[1] == 12
    assert all(u.file_size == files[0].size and u.name == "big.parquet" for u in pu)
    assert len({stream_key(u) for u in pu}) == len(pu)
    # the jsonl file and a file at or below the budget stay whole, keyed by name alone
    small = [u for u in units if not isinstance(u, InputUnit)]
    assert [f.name for f in small] == ["small.jsonl.zst"]
    assert split_inputs(files, files[0].size) == files
    assert split_inputs(files, 0) == files
    assert split_inputs(files, budget) == units  # the same again


def test_split_file_same_bytes_for_1_and_2_workers_and_verifies(
    big: tuple[Path, int], tmp_path: Path
) -> None:
    d, budget = big
    cfg = cfg_of(budget)
    outs = {}
    for w in (1, 2):
        outs[w] = tmp_path / f"w{w}"
        prepare([str(d)], str(outs[w]), cfg, tokenizer=T5_TINY, workers=w, progress=False)
    assert shard_digests(outs[1]) == shard_digests(outs[2])
    assert (outs[1] / "denoise.json").read_bytes() == (outs[2] / "denoise.json").read_bytes()
    m = orjson.loads((outs[1] / "denoise.json").read_bytes())
    units = [f["unit"] for f in m["files"] if "unit" in f]
    assert len(units) >= 3
    assert [u["row_groups"][0] for u in units] == [0] + [u["row_groups"][1] for u in units[:-1]]
    assert units[-1]["row_groups"][1] == 12
    # every unit wrote rows of its own (several shards per file, not one worker's tail)
    assert all(f["rows"] > 0 for f in m["files"])
    # the same documents and tokens as the file read whole (tails add up per unit)
    whole = prepare([str(d)], str(tmp_path / "whole"), cfg_of(0), tokenizer=T5_TINY, progress=False)
    for k in ("records", "docs", "tokens"):
        assert m["totals"][k] == whole["totals"][k], k
    small_split = [f for f in m["files"] if f["name"] == "small.jsonl.zst"]
    small_whole = [f for f in whole["files"] if f["name"] == "small.jsonl.zst"]
    assert small_split[0]["tokens"] == small_whole[0]["tokens"]
    # the small file's rows are the same whether the big one is split or not (but for the
    # file index column: the units of the big file come before it)
    assert rows_of(outs[1], m, small_split[0]["index"]) == rows_of(
        tmp_path / "whole", whole, small_whole[0]["index"]
    )
    rep = verify(outs[2], sources=[str(d)])
    assert rep.source_files == len(m["files"])


def test_verify_source_catches_a_unit_entry_that_lies(
    big: tuple[Path, int], tmp_path: Path
) -> None:
    d, budget = big
    out = tmp_path / "o"
    prepare([str(d)], str(out), cfg_of(budget), tokenizer=T5_TINY, workers=1, progress=False)
    p = out / "denoise.json"
    m = orjson.loads(p.read_bytes())
    u = next(f for f in m["files"] if "unit" in f)["unit"]
    u["row_groups"][1] += 1  # one more row group than the unit was made from
    p.write_bytes(orjson.dumps(m))
    with pytest.raises(VerifyError, match=r"file big.parquet unit 0, group 0\) draws"):
        verify(out, sources=[str(d)])


def _pid_unit(job: Any, i: int, report: Any) -> dict[str, Any]:
    from denoise_cli.prepare.worker import process_file

    rec = process_file(job, i, report)
    Path(job.out, f"pid-{i}").write_text(str(os.getpid()))
    return rec


def test_units_of_one_file_run_in_two_processes(big: tuple[Path, int], tmp_path: Path) -> None:
    """The engine gets units, not files: two units of the one Parquet file run in two worker
    processes (each records its pid next to the output)."""
    from denoise_cli.engines.local import run_files
    from denoise_cli.engines.progress import Progress
    from denoise_cli.output.layout import work_dirs
    from denoise_cli.prepare.job import make_job, resolve

    d, budget = big
    prep = resolve(cfg_of(budget), [str(d / "big.parquet")], T5_TINY)
    assert len(prep.files) >= 2 and all(isinstance(f, InputUnit) for f in prep.files)
    out = tmp_path / "o"
    for w in work_dirs(out):
        w.mkdir(parents=True)
    job = make_job(prep, out)
    todo = list(range(len(prep.files)))
    bar = Progress(sum(f.size for f in prep.files), len(todo), False)
    try:
        run_files(_pid_unit, job, todo, bar, workers=2)
    finally:
        bar.close()
    pids = {(out / f"pid-{i}").read_text() for i in todo}
    assert len(pids) == 2 and str(os.getpid()) not in pids


def test_kill_inside_a_unit_and_resume_is_byte_identical(
    big: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.resume as pl

    d, budget = big
    inp = [str(d / "big.parquet")]
    cfg = cfg_of(budget)
    ref = tmp_path / "ref"
    prepare(inp, str(ref), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    nparts = len(list((ref / ".denoise" / "parts").glob("*.json")))
    real = pl.atomic_write_bytes
    for kill_after in (1, nparts // 2):
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
        prepare(inp, str(out), cfg, tokenizer=T5_TINY, workers=2, progress=False)
        assert shard_digests(out) == shard_digests(ref)
        assert (out / "denoise.json").read_bytes() == (ref / "denoise.json").read_bytes()
    verify(tmp_path / f"cut{nparts // 2}", sources=inp)


def test_unit_fingerprint_sees_its_row_groups_only(big: tuple[Path, int], tmp_path: Path) -> None:
    """A unit's resume fingerprint changes when a page of its own row groups changes, and not
    for a page of another unit (the footer is the same: a page body changed in place)."""
    d, budget = big
    f = find_inputs([str(d / "big.parquet")])[0]
    units = split_inputs([f], budget)
    assert isinstance(units[0], InputUnit) and isinstance(units[-1], InputUnit)
    before = [unit_sha256(u) for u in units if isinstance(u, InputUnit)]
    assert all(n > 0 for n, _ in before)
    last_rg = units[-1].row_groups[1] - 1
    flip_text_chunk(d / "big.parquet", last_rg, 0x01)
    after = [unit_sha256(u) for u in units if isinstance(u, InputUnit)]
    assert after[-1] != before[-1]
    assert after[:-1] == before[:-1]


def test_small_files_keep_their_examples(tmp_path: Path) -> None:
    """Below the budget nothing changes: a file's shards are the same bytes with splitting off
    and on (the pinned digests of test_pipeline cover the default too)."""
    d = tmp_path / "in"
    d.mkdir()
    write_parquet(d / "a.parquet", fineweb_rows(300), rg=50)
    outs = []
    for ub in (0, 1 << 30):
        out = tmp_path / f"o{ub}"
        prepare([str(d)], str(out), cfg_of(ub), tokenizer=T5_TINY, progress=False)
        outs.append(out)
    assert shard_digests(outs[0]) == shard_digests(outs[1])
    assert isinstance(find_inputs([str(d)])[0], InputFile)


def test_unit_edited_in_place_between_kill_and_rerun_is_redone_not_mixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A kill inside a unit, then that unit's first document changes in place (same size,
    same footer: no statistics, no compression): the rerun redoes the unit (with a
    warning) and equals a fresh run on the edited file."""
    import logging

    import pyarrow as pa

    import denoise_cli.prepare.resume as pl

    d = tmp_path / "in"
    d.mkdir()
    src = d / "big.parquet"
    rows = fineweb_rows(1200)

    def write(rs: list[dict[str, Any]]) -> None:
        pq.write_table(
            pa.Table.from_pylist(rs),
            src,
            row_group_size=100,
            compression="none",
            use_dictionary=False,
            write_statistics=False,
        )

    write(rows)
    size, footer = src.stat().st_size, src.read_bytes()[-4096:]
    budget = size // 4 + 1
    inp = [str(src)]
    cfg = cfg_of(budget)
    out = tmp_path / "cut"
    real = pl.atomic_write_bytes
    calls = {"n": 0}

    def flaky(path: Path, data: bytes) -> None:
        if "/parts/" in str(path):
            calls["n"] += 1
            if calls["n"] > 1:
                raise KeyboardInterrupt("simulated kill")
        real(path, data)

    monkeypatch.setattr(pl, "atomic_write_bytes", flaky)
    with pytest.raises(Interrupted):
        prepare(inp, str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    monkeypatch.setattr(pl, "atomic_write_bytes", real)
    (part,) = list((out / ".denoise" / "parts").glob("*.json"))
    # the unit that committed a part (units run largest first): edit its first document
    unit = split_inputs(find_inputs(inp), budget)[int(orjson.loads(part.read_bytes())["file"])]
    assert isinstance(unit, InputUnit)
    first = unit.row_groups[0] * 100
    edited = [dict(r) for r in rows]
    edited[first]["text"] = rows[first]["text"].replace("e", "a")
    assert edited[first]["text"] != rows[first]["text"]
    write(edited)
    assert src.stat().st_size == size and src.read_bytes()[-4096:] == footer
    fresh = tmp_path / "fresh"
    prepare(inp, str(fresh), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    with caplog.at_level(logging.WARNING, logger="denoise_cli.prepare.worker"):
        prepare(inp, str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    assert shard_digests(out) == shard_digests(fresh)
    assert (out / "denoise.json").read_bytes() == (fresh / "denoise.json").read_bytes()
    assert "big.parquet changed since its parts were committed" in caplog.text


def test_units_over_two_machines_merge_to_the_single_machine_output(
    big: tuple[Path, int], tmp_path: Path
) -> None:
    """--num-shards balances units, not files: the two parts merge to the one-machine bytes."""
    from denoise_cli.prepare.merge import merge

    d, budget = big
    cfg = cfg_of(budget)
    ref = tmp_path / "ref"
    prepare([str(d)], str(ref), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    parts = []
    for k in range(2):
        parts.append(str(tmp_path / f"p{k}"))
        m = prepare(
            [str(d)], parts[-1], cfg, tokenizer=T5_TINY, progress=False, num_shards=2, shard_index=k
        )
        assert any("unit" in f for f in m["files"])  # each machine got units of the big file
    merge(parts, str(tmp_path / "merged"))
    assert shard_digests(tmp_path / "merged") == shard_digests(ref)
    verify(tmp_path / "merged", sources=[str(d)])


def test_limit_docs_ends_inside_a_unit(big: tuple[Path, int], tmp_path: Path) -> None:
    """--limit-docs whose prefix ends inside the second unit of a split file: the limit counts
    the unit's own rows (not the whole file's), so split and unsplit runs read the same N
    documents, and verify --source regenerates the rows."""
    from dataclasses import replace

    d, budget = big
    n = 450  # units of about 3 row groups of 100 rows: the prefix ends inside unit 1
    split = prepare(
        [str(d)],
        str(tmp_path / "split"),
        replace(cfg_of(budget), limit_docs=n),
        tokenizer=T5_TINY,
        progress=False,
    )
    whole = prepare(
        [str(d)],
        str(tmp_path / "whole"),
        replace(cfg_of(0), limit_docs=n),
        tokenizer=T5_TINY,
        progress=False,
    )
    assert split["totals"]["docs"] == whole["totals"]["docs"] == n
    assert split["totals"]["tokens"] == whole["totals"]["tokens"]
    assert any("unit" in f for f in split["files"])
    assert verify(tmp_path / "split", sources=[str(d)]).source_files == len(split["files"])

"""``denoise stats`` / ``verify`` / ``inspect`` on packed outputs (``prepare --pack``): good
outputs pass (also with ``--source``), the per-example figures are those of the unpacked view,
and corruptions of the packed structure are caught with a precise message."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from helpers import ONE, T5_TINY, Outputs, refresh_shard_entry, write_arrow_shard
from typer.testing import CliRunner

from denoise_cli.check.inspect import inspect_rows
from denoise_cli.check.packedcheck import packed_checks
from denoise_cli.check.spec import OutputSpec, unpacked_view
from denoise_cli.check.stats import compute
from denoise_cli.check.verify import verify
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import VerifyError
from denoise_cli.load import batch_arrays
from denoise_cli.output.shards import open_shard

T5TOK = T5_TINY
SHARD0 = "data/00000-00000.arrow"


@pytest.fixture(scope="module")
def outs(outputs: Outputs) -> dict[str, Path]:
    res = {}
    for name, ln in (
        ("ed", Lengths("encoder-decoder", 256, 160)),
        ("do", Lengths("decoder-only", seq_length=512)),
    ):
        cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=ln, pack_factor=4)
        res[name] = outputs(cfg, [ONE], tokenizer=T5TOK)
    return res


def _manifest(out: Path) -> dict[str, Any]:
    m: dict[str, Any] = orjson.loads((out / "denoise.json").read_bytes())
    return m


def _read(out: Path, rel: str = SHARD0) -> dict[str, np.ndarray]:
    _, batches = open_shard(out / rel, _manifest(out)["format"])
    parts = [batch_arrays(rb) for rb in batches]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _rewrite(out: Path, edit: Callable[[dict[str, np.ndarray]], None], rel: str = SHARD0) -> None:
    """Rewrite a shard with edited columns and update the manifest's size and sha256, so that
    only the semantic checks can notice."""
    p = out / rel
    a = {k: np.array(v) for k, v in _read(out, rel).items()}
    edit(a)
    write_arrow_shard(p, a)
    m = _manifest(out)
    refresh_shard_entry(m, rel, p)
    (out / "denoise.json").write_bytes(orjson.dumps(m))


def _problems(out: Path, **kw: object) -> str:
    with pytest.raises(VerifyError) as ei:
        verify(out, **kw)  # type: ignore[arg-type]
    return str(ei.value)


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize("name", ["ed", "do"])
def test_good_packed_outputs_pass(outs: dict[str, Path], name: str) -> None:
    rep = verify(outs[name], sources=[str(ONE)])
    m = _manifest(outs[name])
    assert m["packing"]["factor"] == 4
    assert rep.rows == m["totals"]["rows"]
    assert rep.tokens == m["totals"]["tokens_used"]
    assert any("packed segments" in c for c in rep.checks)
    assert "rows regenerated bit for bit" in rep.checks


@pytest.mark.parametrize("name", ["ed", "do"])
def test_unpacked_view_and_packed_checks(outs: dict[str, Path], name: str) -> None:
    m = _manifest(outs[name])
    spec = OutputSpec.from_manifest(m)
    assert spec.packed and spec.packed_widths == tuple(m["row_widths"])
    ex = m["packing"]["example_lengths"]
    assert spec.wi == ex.get("inputs_length", ex.get("seq_length"))
    a = _read(outs[name])
    msgs, ok = packed_checks(a, spec, 10)
    assert not msgs and ok.all()
    v = unpacked_view(a, spec)
    n = int(a["num_segments"].sum())
    assert len(v["denoiser"]) == n and v["input_ids"].shape == (n, spec.wi)
    # the examples of a group keep example order within a row, and all are there
    assert np.array_equal(np.sort(v["example_index"]), np.arange(n))
    first = a["segment_example_index"][:, 0]
    assert (np.diff(first) > 0).all()


def _problems_of(
    outs: dict[str, Path], tmp_path: Path, name: str, edit: Callable[[dict[str, np.ndarray]], None]
) -> str:
    out = _copy(outs[name], tmp_path)
    _rewrite(out, edit)
    return _problems(out)


def test_segment_ids_not_contiguous(outs: dict[str, Path], tmp_path: Path) -> None:
    a = _read(outs["ed"])
    col = int(a["segment_input_length"][2, 0])  # the first token of segment 2 of row 2

    def edit(a: dict[str, np.ndarray]) -> None:
        a["encoder_segment_ids"][2, col] = 1

    msg = _problems_of(outs, tmp_path, "ed", edit)
    assert f"{SHARD0} row 2: encoder_segment_ids[{col}] is 1, expected 2 (segment ids" in msg


def test_positions_restart(outs: dict[str, Path], tmp_path: Path) -> None:
    a = _read(outs["do"])
    col = int(a["segment_input_length"][1, 0])

    def edit(a: dict[str, np.ndarray]) -> None:
        a["positions"][1, col] = col  # continues the first segment's positions

    msg = _problems_of(outs, tmp_path, "do", edit)
    assert f"{SHARD0} row 1: positions[{col}] is {col}, expected 0 (positions restart" in msg


def test_attention_mask_and_padding_labels(outs: dict[str, Path], tmp_path: Path) -> None:
    a = _read(outs["ed"])
    r = 1 + int(np.flatnonzero(a["target_length"][1:] < a["labels"].shape[1])[0])
    tl = int(a["target_length"][r])

    def edit(a: dict[str, np.ndarray]) -> None:
        a["attention_mask"][0, 3] = 0
        a["labels"][r, tl] = 5

    msg = _problems_of(outs, tmp_path, "ed", edit)
    assert f"{SHARD0} row 0: attention_mask[3] is 0, not (encoder_segment_ids > 0)" in msg
    assert f"row {r}: labels[{tl}] is 5 on the padding after the segments, not -100" in msg


def test_segment_lengths_and_order(outs: dict[str, Path], tmp_path: Path) -> None:
    def edit(a: dict[str, np.ndarray]) -> None:
        a["segment_input_length"][0, 0] += 1  # the spans no longer match
        a["segment_example_index"][1, :2] = a["segment_example_index"][1, 1::-1]
        a["num_segments"][2] = 0

    msg = _problems_of(outs, tmp_path, "ed", edit)
    assert f"{SHARD0} row 0: input_length " in msg and "the segment lengths add up to" in msg
    assert f"{SHARD0} row 1: segment 2 holds example" in msg and "in example order" in msg
    assert (
        f"{SHARD0} row 2: num_segments 0 outside 1..{_manifest(outs['ed'])['packing']['max_segments']}"
        in msg
    )


def test_rows_out_of_order(outs: dict[str, Path], tmp_path: Path) -> None:
    def edit(a: dict[str, np.ndarray]) -> None:
        for v in a.values():
            v[[3, 4]] = v[[4, 3]]

    msg = _problems_of(outs, tmp_path, "do", edit)
    assert f"{SHARD0} row 4: its first example" in msg
    assert "rows are ordered by their first example" in msg


def test_chain_of_examples(outs: dict[str, Path], tmp_path: Path) -> None:
    a = _read(outs["ed"])
    ex = int(a["segment_example_index"][5, 1])

    def edit(a: dict[str, np.ndarray]) -> None:
        a["segment_token_offset"][5, 1] += 1

    msg = _problems_of(outs, tmp_path, "ed", edit)
    assert f"{SHARD0} row 5 segment 2: token_offset" in msg
    assert f"example {ex - 1} ends there" in msg


def test_example_checks_name_the_segment(outs: dict[str, Path], tmp_path: Path) -> None:
    a = _read(outs["ed"])
    end = int(a["segment_input_length"][0, 0]) - 1  # the EOS of segment 1

    def edit(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][0, end] = 7

    msg = _problems_of(outs, tmp_path, "ed", edit)
    assert f"{SHARD0} row 0 segment 1: input_ids[{end}] (last real token) is id 7, not EOS" in msg


def test_flipped_token_found_by_source(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    m = _manifest(out)
    spec = OutputSpec.from_manifest(m)
    a = _read(out)
    r = 3
    start = int(a["segment_input_length"][r, 0])  # segment 2 of row 3
    code = np.take(spec.lut, a["input_ids"][r, start : start + 40])
    col = start + int(np.flatnonzero(code == 0)[3])  # an ordinary token
    old = int(a["input_ids"][r, col])
    new = 11 if old != 11 else 12

    def edit(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][r, col] = new

    _rewrite(out, edit)
    verify(out)  # every count still holds
    msg = _problems(out, sources=[str(ONE)])
    assert f"{SHARD0} row {r} segment 2: rebuilt tokens differ from the source" in msg
    assert f"the row gives id {new}, en-prose-00.jsonl.zst gives id {old}" in msg


def test_regenerated_rows_bit_for_bit(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)

    def edit(a: dict[str, np.ndarray]) -> None:
        a["segment_denoiser"][0, 0] = (a["segment_denoiser"][0, 0] + 1) % 7

    _rewrite(out, edit)
    msg = _problems(out, sources=[str(ONE)])
    assert f"{SHARD0} row 0 segment 1: X(" in msg  # the mode token no longer fits
    assert (
        f"{SHARD0} row 0: not the row that (seed 0, file en-prose-00.jsonl.zst, group 0) gives: "
        "segment_denoiser[0] is"
    ) in msg


@pytest.mark.parametrize("recorded", ["first-fit-v1", None])
def test_source_refuses_rows_packed_by_another_algorithm(
    outs: dict[str, Path], tmp_path: Path, recorded: str | None
) -> None:
    """Which examples share a row depends on the packing algorithm: ``--source`` cannot
    regenerate rows packed by another one (or by a version that did not record it) and says so
    instead of reporting every row as different. The structural checks still run."""
    from denoise_cli.config import PACK_ALGORITHM as ALGORITHM

    out = _copy(outs["ed"], tmp_path)
    m = _manifest(out)
    assert m["packing"]["algorithm"] == ALGORITHM == m["config"]["pack_algorithm"]
    if recorded is None:
        del m["packing"]["algorithm"]
    else:
        m["packing"]["algorithm"] = recorded
    (out / "denoise.json").write_bytes(orjson.dumps(m))
    verify(out)
    msg = _problems(out, sources=[str(ONE)])
    assert f"rows were packed by 'first-fit-v1', this version packs with {ALGORITHM!r}" in msg


# --------------------------------------------------------------------------- stats


@pytest.mark.parametrize("name", ["ed", "do"])
def test_stats_packed(outs: dict[str, Path], name: str) -> None:
    out = outs[name]
    m = _manifest(out)
    a = _read(out)
    st = compute(out)
    n = int(a["num_segments"].sum())
    R = len(a["num_segments"])
    W, V = m["row_widths"]
    assert st.rows == n == sum(c.rows for c in st.components.values())
    assert st.raw_tokens == m["totals"]["tokens_used"]
    pk = st.packed_efficiency
    assert pk is not None and pk["rows"] == R == m["totals"]["rows"]
    assert pk["examples_per_row"] == pytest.approx(n / R)
    il, tl = int(a["input_length"].sum()), int(a["target_length"].sum())
    if name == "ed":
        assert pk["overall"] == pytest.approx((il + tl) / (R * (W + V)))
        assert pk["targets"] == pytest.approx(tl / (R * V))
    else:
        assert pk["overall"] == pytest.approx(il / (R * W))
    assert 0 < pk["overall"] <= 1 and 0 < pk["bound_overall"] <= 1
    # per-example figures at the example budget
    ex = m["packing"]["example_lengths"]
    wi = ex.get("inputs_length", ex.get("seq_length"))
    assert st.input_slots == n * wi and st.input_real == il
    d = st.to_dict()
    assert d["packed"]["rows"] == R
    both = st + st
    assert both.packed_efficiency is not None
    assert both.packed_efficiency["overall"] == pytest.approx(pk["overall"])
    res = CliRunner().invoke(app, ["stats", str(out)])
    assert res.exit_code == 0, res.output
    assert f"{n:,} examples in {R:,} packed rows" in res.output
    assert "examples per row; token efficiency of the packed rows" in res.output
    assert "unpacked, i.e. one example per row at the example budget" in res.output
    # component mixing, counted by hand from the per-segment columns
    seg = a["segment_denoiser"]
    distinct = sum(len(set(r[r >= 0].tolist())) for r in seg)
    assert pk["components_per_row"] == pytest.approx(distinct / R)
    probs = np.array([d["probability"] for d in m["config"]["mixture"]["denoisers"]])
    k = a["num_segments"].astype(np.int64)
    indep = float((1 - (1 - probs[None, :]) ** k[:, None]).sum()) / R
    assert pk["independent_components_per_row"] == pytest.approx(indep)
    assert pk["components_per_row"] > 0.9 * indep  # the packer keeps rows mixed
    assert f"packed rows mix {distinct / R:.2f} distinct components per row" in res.output


# --------------------------------------------------------------------------- inspect


def test_inspect_packed_row(outs: dict[str, Path]) -> None:
    a = _read(outs["ed"])
    k = int(a["num_segments"][2])
    text = inspect_rows(outs["ed"], row=2, width=100000)
    assert text.startswith(f"packed row 2 ({SHARD0} row 2): {k} examples, one after the other")
    for j in range(1, k + 1):
        assert f"row 2 segment {j} of {k} ({SHARD0} row 2) · " in text
    assert text.count("original (") == k
    assert "cannot rebuild" not in text


def test_inspect_packed_defaults(outs: dict[str, Path]) -> None:
    m = _manifest(outs["do"])
    text = inspect_rows(outs["do"], width=160)
    for c in m["components"]:
        assert f" · {c['denoiser']} {c['mode_token']} · " in text
    assert text.count("original (") == len(m["components"])
    one = inspect_rows(outs["do"], denoiser="S", n=2, width=100)
    assert one.count(" · S(") == 2
    res = CliRunner().invoke(app, ["inspect", str(outs["do"]), "--row", "0"])
    assert res.exit_code == 0, res.output
    assert "segment 1 of" in res.output


# --------------------------------------------------------------------------- plan --pack


def test_plan_pack_matches_the_packed_output(outs: dict[str, Path]) -> None:
    """``denoise plan --pack K`` shows what ``prepare --pack K`` will do: the example plans (the
    manifest's components), examples per row (its max_segments), the ratio bound (its expected
    efficiency) and, encoder-decoder, the targets lengths where the bound allows 98% on both
    sides."""
    from denoise_cli.rows.plan import plan, targets_length_window

    m = _manifest(outs["ed"])
    args = ["plan", "--mixture", "ul2", "-I", "256", "-T", "160", "--pack", "4"]
    args += ["--tokenizer", str(T5TOK)]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    t = orjson.loads(res.output)
    pk = t["packing"]
    assert pk["max_segments"] == m["packing"]["max_segments"]
    assert pk["example_lengths"] == m["packing"]["example_lengths"]
    assert pk["algorithm"] == m["packing"]["algorithm"]
    assert t["components"] == m["components"]
    assert t["expected_efficiency"] == pytest.approx(m["expected_efficiency"])
    lo, hi = targets_length_window(
        plan(load_mixture("ul2"), Lengths("encoder-decoder", 64, 64)), 256
    )
    assert pk["targets_length_98"] == [lo, hi] and 0 < lo <= hi < 256
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert "packed (--pack 4): examples planned for inputs 64, targets 64" in text.output
    assert f"up to {pk['max_segments']} per row" in text.output
    assert f"for targets length T in [{lo}, {hi}] at inputs 256" in text.output
    assert "packed rows can be at most (ratio bound): inputs" in text.output
    unpacked = CliRunner().invoke(app, [*args[:-4], "--tokenizer", str(T5TOK)])
    assert unpacked.exit_code == 0, unpacked.output
    assert "expected real tokens / slots: inputs" in unpacked.output
    assert "packed" not in unpacked.output

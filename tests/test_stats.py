"""``denoise stats``: every number against an independent computation from the rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from helpers import SAMPLE, T5_TINY, Outputs
from typer.testing import CliRunner

from denoise_cli import open_dataset
from denoise_cli.check.stats import Stats, collect, compute, hist_quantiles
from denoise_cli.check.stats_render import render
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.prepare.run import prepare


@pytest.fixture(scope="module")
def outs(outputs: Outputs) -> dict[str, Path]:
    def mk(name: str, **kw: object) -> Path:
        cfg = PrepareConfig(mixture=load_mixture("ul2"), **kw)  # type: ignore[arg-type]
        return outputs(cfg, tokenizer=T5_TINY)

    return {
        "ed": mk(
            "ed", lengths=Lengths("encoder-decoder", 256, 256), shard_rows=100, group_size=100
        ),
        "pq": mk(
            "pq",
            lengths=Lengths("encoder-decoder", 256, 256),
            shard_rows=100,
            group_size=100,
            format="parquet",
        ),
        "do": mk("do", lengths=Lengths("decoder-only", seq_length=512), seed=7),
    }


def _rows(out: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(out)
    return ds[0 : len(ds)] if ds.num_batches == 1 else ds.take(np.arange(len(ds)))


def _manifest(out: Path) -> dict:
    return orjson.loads((out / "denoise.json").read_bytes())


@pytest.mark.parametrize("name", ["ed", "do"])
def test_numbers_match_the_rows(outs: dict[str, Path], name: str) -> None:
    out = outs[name]
    m = _manifest(out)
    st = compute(out)
    d = st.to_dict()
    r = _rows(out)
    n = len(r["denoiser"])
    C = len(m["components"])
    assert st.rows == n == m["totals"]["rows"]
    # realised rows per component: the denoiser column counted with numpy
    counts = np.bincount(r["denoiser"], minlength=C)
    assert [c["rows"] for c in d["components"]] == counts.tolist()
    assert sum(c["share"] for c in d["components"]) == pytest.approx(1.0)
    probs = [c["probability"] for c in m["components"]]
    assert [c["configured_share"] for c in d["components"]] == pytest.approx(probs)
    # padding efficiency from the attention mask and the labels
    att, lab = r["attention_mask"], r["labels"]
    wi, wt = att.shape[1], lab.shape[1]
    eff = d["padding_efficiency"]
    assert eff["inputs"] == pytest.approx(att.sum() / (n * wi))
    assert eff["targets"] == pytest.approx((lab != -100).sum() / (n * wt))
    if m["layout"] == "encoder-decoder":
        assert eff["overall"] == pytest.approx((att.sum() + (lab != -100).sum()) / (n * (wi + wt)))
    else:
        assert eff["overall"] == pytest.approx(att.sum() / (n * wi))
    # raw tokens: what the manifest says was used; per shard too
    assert st.raw_tokens == m["totals"]["tokens_used"]
    assert [s.raw_tokens for s in st.shards] == [s["tokens"] for s in m["shards"]]
    assert [s.rows for s in st.shards] == [s["rows"] for s in m["shards"]]
    # per component: exact counts from the plan, lengths from the columns
    sent = np.asarray(m["tokenizer"]["sentinel_ids"])
    for c, cd in zip(m["components"], d["components"], strict=True):
        sel = r["denoiser"] == c["index"]
        k = int(sel.sum())
        if not k:
            continue
        il, tl = r["input_length"][sel], r["target_length"][sel]
        assert cd["raw_tokens"] == k * c["raw_length"]
        if c["spans"]:
            assert cd["noise_tokens"] == k * c["noise_tokens"]
            assert cd["spans"] == k * c["spans"]
            assert cd["corruption_rate"] == pytest.approx(c["noise_tokens"] / c["raw_length"])
            assert cd["mean_span"] == pytest.approx(c["noise_tokens"] / c["spans"])
            per_row = np.isin(r["input_ids"][sel], sent).sum(axis=1)
            assert (per_row == c["spans"] * (1 if m["layout"] == "encoder-decoder" else 2)).all()
        else:
            assert cd["noise_tokens"] == int((tl - 1).sum())
            assert cd["mean_span"] is None
        for key, v in (("input_length", il), ("target_length", tl)):
            q = cd[key]
            assert q["min"] == v.min() and q["max"] == v.max()
            assert q["median"] == np.percentile(v, 50, method="inverted_cdf")
            assert q["p99"] == np.percentile(v, 99, method="inverted_cdf")
            assert q["mean"] == pytest.approx(v.mean())
    used = np.isin(sent, r["input_ids"])
    assert d["max_sentinel_index"] == int(np.flatnonzero(used).max())
    assert d["sentinels_needed"] == m["sentinels_needed"]
    assert d["tokens_added"] == len(m["tokenizer"]["added_tokens"])
    # input accounting straight from the manifest
    t = m["totals"]
    assert d["input"]["records"] == t["records"] and d["input"]["files"] == 2
    assert d["input"]["tail_tokens"] == t["tail_tokens"]
    assert d["input"]["tokens"] == t["tokens_used"] + t["tail_tokens"]


def test_hist_quantiles_nearest_rank() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 7, 100, 1001):
        v = rng.integers(3, 60, size)
        q = hist_quantiles(np.bincount(v))
        for p, key in ((50, "median"), (99, "p99")):
            assert q[key] == np.percentile(v, p, method="inverted_cdf")
        assert (q["min"], q["max"]) == (v.min(), v.max())
    assert hist_quantiles(np.zeros(5, np.int64))["max"] == 0


def test_parquet_equals_arrow(outs: dict[str, Path]) -> None:
    a, b = compute(outs["ed"]).to_dict(), compute(outs["pq"]).to_dict()
    for k in ("outputs", "formats", "shards"):
        a.pop(k), b.pop(k)
    assert a == b
    assert len(compute(outs["pq"]).shards) > 2  # several shards per file


def test_several_outputs_are_summed(outs: dict[str, Path]) -> None:
    a, b = compute(outs["ed"]), compute(outs["do"])
    both = collect([str(outs["ed"]), str(outs["do"])])
    assert both.rows == a.rows + b.rows
    assert both.raw_tokens == a.raw_tokens + b.raw_tokens
    assert both.real == a.real + b.real and both.slots == a.slots + b.slots
    assert len(both.shards) == len(a.shards) + len(b.shards)
    assert both.accounting["records"] == a.accounting["records"] + b.accounting["records"]
    assert both.accounting["files"] == 4
    for name, c in both.components.items():
        assert c.rows == a.components[name].rows + b.components[name].rows
        assert (
            c.input_hist[: len(b.components[name].input_hist)] >= b.components[name].input_hist
        ).all()
        assert c.input_hist.sum() == c.rows
    assert both.to_dict()["components"][0]["configured_share"] == pytest.approx(1 / 7)
    # merging is associative and + is the same as collect
    assert (a + b).to_dict() == both.to_dict()
    assert (Stats() + a).rows == a.rows
    text = render(both)
    assert f"{outs['ed']}/data/00000-00000.arrow" in text and "total" in text


def test_cli_text_and_json(outs: dict[str, Path]) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["stats", str(outs["ed"])])
    assert res.exit_code == 0, res.output
    for word in (
        "share cfg",
        "R(3,0.15)",
        "S(0.25)",
        "padding efficiency",
        "sentinels 0..",
        "token(s) added to the vocabulary",
        "records read",
        "skipped: none",
        "in file tails",
    ):
        assert word in res.output
    res = runner.invoke(app, ["stats", str(outs["ed"]), str(outs["pq"]), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["rows"] == 2 * _manifest(outs["ed"])["totals"]["rows"]
    res = runner.invoke(app, ["stats", str(outs["ed"] / "nope")])
    assert res.exit_code != 0 and "denoise.json" in res.output


def test_plot(outs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    png = tmp_path / "s.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have = False
    else:
        have = True
    if have:
        res = runner.invoke(app, ["stats", str(outs["ed"]), "--plot", str(png)])
        assert res.exit_code == 0, res.output
        assert png.read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    res = runner.invoke(app, ["stats", str(outs["ed"]), "--plot", str(tmp_path / "t.png")])
    assert res.exit_code == 2
    assert "--plot needs matplotlib" in res.output and "denoise-cli[plot]" in res.output


def test_epochs_are_summed_with_the_input_once(tmp_path: Path) -> None:
    cfg = PrepareConfig(
        mixture=load_mixture("t5"), lengths=Lengths("encoder-decoder", 128, 48), epochs=3
    )
    one = SAMPLE / "en-prose-00.jsonl.zst"
    prepare([str(one)], str(tmp_path / "e"), cfg, tokenizer=str(T5_TINY), workers=1, progress=False)
    st = compute(tmp_path / "e")
    per = [compute(tmp_path / "e" / f"epoch-{k}") for k in range(3)]
    m = _manifest(tmp_path / "e")
    assert st.epochs == 3 and st.outputs == [str(tmp_path / "e")]
    assert st.rows == sum(p.rows for p in per) == sum(m["totals"]["rows_per_epoch"])
    assert st.accounting["records"] == per[0].accounting["records"] == m["totals"]["records"]
    assert st.accounting["tokens"] == m["totals"]["tokens"]
    assert [s.path for s in st.shards] == [f"epoch-{k}/data/00000-00000.arrow" for k in range(3)]
    assert "summed over 3 datasets/epochs" in render(st)


def test_truncated_shard_is_an_output_error(outputs: Outputs, tmp_path: Path) -> None:
    """``stats`` and ``inspect`` read shards through the one reader: a truncated shard is an
    OutputError naming it (exit code 4, one line), not a pyarrow traceback."""
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 128))
    out = outputs.copy(cfg, tmp_path / "o", tokenizer=T5_TINY)
    shard = out / json.loads((out / "denoise.json").read_text())["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    runner = CliRunner()
    for cmd in (["stats", str(out)], ["inspect", str(out), "-n", "3"]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 4, (cmd, res.output)
        assert "Traceback" not in res.output and shard.name in res.output, res.output
        assert "not a readable arrow shard" in res.output

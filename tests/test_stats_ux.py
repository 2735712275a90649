"""``denoise stats``: refusing outputs that do not add up, the unknown-token rate, notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from denoise_cli import open_dataset
from denoise_cli.check.stats import UNK_WARN, compute
from denoise_cli.check.stats_render import explain_components, incompatibilities
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.load import read_manifest
from denoise_cli.prepare.run import prepare

ROOT = Path(__file__).parent.parent
SAMPLE = ROOT / "examples" / "sample" / "en-prose-00.jsonl.zst"
T5TOK = ROOT / "tests" / "data" / "t5-tiny-tokenizer.json"


@pytest.fixture(scope="module")
def outs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("stats_ux")

    def mk(name: str, tok: str | None, I: int = 128, seed: int = 0) -> str:
        cfg = PrepareConfig(
            load_mixture("ul2"), lengths=Lengths("encoder-decoder", I, 128), seed=seed
        )
        prepare([str(SAMPLE)], str(base / name), cfg, tokenizer=tok, workers=1, progress=False)
        return str(base / name)

    return {
        "t5": mk("t5", str(T5TOK)),
        "t5b": mk("t5b", str(T5TOK), seed=3),
        "gpt2": mk("gpt2", None),
        "t5_256": mk("t5_256", str(T5TOK), I=256),
    }


def test_incompatible_outputs_are_refused(outs: dict[str, str]) -> None:
    assert incompatibilities([outs["t5"], outs["t5b"]]) == []  # another seed adds up
    diff = incompatibilities([outs["t5"], outs["gpt2"], outs["t5_256"]])
    assert [d.split(" (")[0] for d in diff] == ["tokenizer", "layout and lengths"]
    r = CliRunner().invoke(app, ["stats", outs["t5"], outs["gpt2"]])
    assert r.exit_code == 2 and "differ in tokenizer" in r.output and "--sum-mixed" in r.output
    r = CliRunner().invoke(app, ["stats", outs["t5"], outs["gpt2"], "--sum-mixed", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["stats", outs["t5"], outs["t5b"], "--json"])
    rows = compute(outs["t5"]).rows + compute(outs["t5b"]).rows
    assert r.exit_code == 0 and json.loads(r.output)["rows"] == rows


def test_unknown_token_rate(outs: dict[str, str]) -> None:
    st = compute(outs["t5"])
    unk = read_manifest(outs["t5"])["tokenizer"]["unk"]["id"]
    ids = np.asarray(open_dataset(outs["t5"])[:]["input_ids"])
    assert st.unk_tokens == int(np.count_nonzero(ids == unk)) > 0
    assert st.unk_rate is not None and st.unk_rate > UNK_WARN
    r = CliRunner().invoke(app, ["stats", outs["t5"]])
    assert "unknown tokens:" in r.output and "warning: above 1.0%" in r.output
    g = compute(outs["gpt2"])  # byte-level BPE: no unk token at all
    assert (
        g.unk_rate is None
        and "unknown tokens" not in CliRunner().invoke(app, ["stats", outs["gpt2"]]).output
    )


def test_unknown_token_denominator_is_one_figure(outs: dict[str, str]) -> None:
    """``stats`` and the ``prepare`` summary's sample count the same text tokens: the row's
    tokens less the mode token, the sentinels, the final EOS and the EOS separating documents
    (a slow per-row reference from the lengths and the manifest's ids)."""
    from denoise_cli.check.stats import unknown_token_sample

    out = outs["t5"]
    m = read_manifest(out)
    eos, unk = int(m["tokenizer"]["eos"]["id"]), int(m["tokenizer"]["unk"]["id"])
    sent = set(m["tokenizer"]["sentinel_ids"])
    a = open_dataset(out)[:]
    text = seps = 0
    for ids, il in zip(np.asarray(a["input_ids"]), np.asarray(a["input_length"]), strict=True):
        row = ids[: int(il)].tolist()
        assert row[-1] == eos
        s = sum(1 for t in row[:-1] if t == eos)
        text += len(row) - 2 - sum(1 for t in row if t in sent) - s
        seps += s
    assert seps > 0  # the sample has chunks spanning two documents: the case that differed
    st = compute(out)
    assert st.unk_base == text
    assert unknown_token_sample(out, max_rows=10**9) == (st.unk_tokens, text, st.rows)
    assert st.unk_tokens == int(np.count_nonzero(np.asarray(a["input_ids"]) == unk))


def test_number_formats_are_consistent(outs: dict[str, str]) -> None:
    """Counts with thousands separators, shares and rates as percentages with one decimal,
    sizes in MiB with two decimals: in every row of a column, the total included."""
    import re

    text = CliRunner().invoke(app, ["stats", outs["t5"], outs["t5b"]]).output
    lines = text.splitlines()
    shard_head = next(i for i, ln in enumerate(lines) if ln.startswith("shard "))
    body = lines[shard_head + 2 : lines.index("", shard_head)]
    assert body[-1].startswith("total") and len(body) >= 3
    for ln in body:
        *_, mib = ln.split()
        assert re.fullmatch(r"\d[\d,]*\.\d\d", mib), ln
    comp_head = next(i for i, ln in enumerate(lines) if ln.startswith("component "))
    comps = lines[comp_head + 2 : lines.index("", comp_head)]
    assert len(comps) == 7
    for ln in comps:
        cells = ln.split()
        assert all(re.fullmatch(r"\d+\.\d%", c) for c in cells[1:3] + cells[4:6]), ln
    # no count of 1,000 or more without separators, outside file names
    prose = [ln for ln in lines if "/" not in ln.split(":")[0]]
    assert not [ln for ln in prose if re.search(r"(?<![\d.,_-])\d{4,}(?![\d-])", ln)]
    assert re.search(r"tokens: \d{1,3}(,\d{3})+ read", text)


def test_explain_one_span_per_row() -> None:
    comp = {
        "name": "X(64,0.15)",
        "rows": 10,
        "spans": 10,
        "noise_tokens": 900,
        "raw_tokens": 6000,
        "mean_span": 90.0,
        "configured_mean_span": 64.0,
        "corruption_rate": 0.15,
        "configured_rate": 0.15,
    }
    (note,) = explain_components([comp])
    assert "by design" in note and "1.00 span(s) per row" in note
    assert explain_components([{**comp, "mean_span": 64.0, "noise_tokens": 640}]) == []


def test_plot_has_a_panel_per_component_and_the_summaries(
    outs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plt = pytest.importorskip("matplotlib.pyplot")
    from denoise_cli.check import stats_render as stats_mod

    seen: list[object] = []
    real_close = plt.close

    def keep(fig: object) -> None:
        seen.append(fig)
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    st = compute(outs["t5"])
    stats_mod.plot(st, str(tmp_path / "p.png"))
    (fig,) = seen
    titles = [ax.get_title() for ax in fig.axes]  # type: ignore[attr-defined]
    for name, c in st.components.items():
        assert f"{name}: {c.rows:,} rows" in titles
    assert "mixture: share of rows and of tokens" in titles
    assert "real tokens / slots (1 - padding)" in titles and "realised / configured" in titles
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_per_epoch_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--epochs K``: a last row with each component's share per epoch (checked against the
    epoch's own ``segment_denoiser`` counts) and packed titles that say what is counted."""
    plt = pytest.importorskip("matplotlib.pyplot")
    from denoise_cli.check import stats_render as stats_mod

    cfg = PrepareConfig(
        load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 128), epochs=2, pack_factor=2
    )
    out = str(tmp_path / "o")
    prepare([str(SAMPLE)], out, cfg, tokenizer=str(T5TOK), workers=1, progress=False)
    seen: list[object] = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (seen.append(fig), real_close(fig)))
    st = compute(out)
    stats_mod.plot(st, str(tmp_path / "p.png"))
    (fig,) = seen
    axes = {ax.get_title(): ax for ax in fig.axes}  # type: ignore[attr-defined]
    assert "mixture: share of examples and of tokens" in axes
    assert "real tokens / example slots (unpacked)" in axes
    assert "real tokens / slots of the packed rows" in axes
    ax = axes["share of examples per epoch (dashed: configured)"]
    names = [d["denoiser"] for d in read_manifest(out)["components"]]
    want = {}
    for e in range(2):
        d = np.asarray(open_dataset(Path(out) / f"epoch-{e}")[:]["segment_denoiser"]).ravel()
        counts = np.bincount(d[d >= 0], minlength=len(names))
        want[e] = counts / counts.sum()
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert sorted(lines) == sorted(names)
    for k, name in enumerate(names):
        np.testing.assert_allclose(lines[name].get_ydata(), [want[0][k], want[1][k]])
    assert fig.get_suptitle().endswith("2 epochs")  # type: ignore[attr-defined]


def test_prepare_summary_estimate_agrees_with_stats(outs: dict[str, str], tmp_path: Path) -> None:
    from denoise_cli.check.stats import unknown_token_sample

    st = compute(outs["t5"])
    sample = unknown_token_sample(outs["t5"], max_rows=10**9)
    assert sample is not None and sample[0] == st.unk_tokens and sample[2] == st.rows
    assert sample[1] == st.unk_base  # one definition of the text tokens
    assert unknown_token_sample(outs["gpt2"]) is None
    r = CliRunner().invoke(
        app,
        ["prepare", str(SAMPLE), str(tmp_path / "o"), "--tokenizer", str(T5TOK), "-w", "1"],
    )
    assert r.exit_code == 0, r.output
    assert "unknown tokens: " in r.output and "warning: above 1.0%" in r.output
    rows = compute(str(tmp_path / "o")).rows  # the sample is the whole output here
    assert f"(all {rows:,} rows)" in r.output

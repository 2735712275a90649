"""``denoise inspect``: decoded rows, special tokens by name, the original rebuilt from the row."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import zstandard
from helpers import ONE, Outputs
from typer.testing import CliRunner

from denoise_cli.check.inspect import inspect_rows, wrap
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def out(outputs: Outputs) -> Path:
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 256, 256))
    return outputs(cfg, [ONE])  # embedded GPT-2: readable text


@pytest.fixture(scope="module")
def docs() -> list[str]:
    raw = zstandard.ZstdDecompressor().decompress(ONE.read_bytes(), max_output_size=1 << 26)
    return [orjson.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def _manifest(out: Path) -> dict:
    return orjson.loads((out / "denoise.json").read_bytes())


def _original(text: str) -> str:
    """The rebuilt original block of a one-row, plain, unwrapped rendering."""
    return text.split("what the targets hold)\n", 1)[1]


def test_one_row_per_denoiser_by_default(out: Path) -> None:
    text = inspect_rows(out, width=160)
    m = _manifest(out)
    for c in m["components"]:
        assert f" · {c['denoiser']} {c['mode_token']} · " in text
    assert "│" in text  # side by side on a wide terminal
    assert not ANSI.search(text)
    assert text.count("original (") == len(m["components"])


def test_span_row(out: Path) -> None:
    text = inspect_rows(out, denoiser="R(3,0.15)", n=1, width=100000)
    m = _manifest(out)
    c = next(c for c in m["components"] if c["denoiser"] == "R(3,0.15)")
    assert text.startswith("row ")
    # every sentinel shown by name, twice (inputs and targets); the mode token first
    for k in range(c["spans"]):
        assert text.count(f"<extra_id_{k}>") == 2
    assert f"<extra_id_{c['spans']}>" not in text
    assert "[NLU]" in text
    # the original: exactly one marked run per span, no sentinel left in it
    orig = _original(text)
    assert orig.count("⟦") == orig.count("⟧") == c["spans"]
    assert "<extra_id_" not in orig and "[NLU]" not in orig


def test_original_is_the_source_text(out: Path, docs: list[str]) -> None:
    """An S row's original, markers removed, is running text of the input documents (pieces
    between EOS separators are substrings of a document)."""
    text = inspect_rows(out, denoiser="S", n=1, width=100000)
    orig = _original(text).replace("⟦", "").replace("⟧", "")
    parts = [p for p in orig.split("<|endoftext|>") if p.strip()]
    assert parts and sum(len(p) for p in parts) > 200
    for p in parts:
        assert any(p in d for d in docs), p[:80]


def test_narrow_terminal_and_colour(out: Path) -> None:
    narrow = inspect_rows(out, row=0, width=60)
    assert "│" not in narrow
    assert narrow.index("inputs (encoder)") < narrow.index("targets (decoder labels)")
    assert all(len(line) <= 60 for line in narrow.splitlines()[1:] if not line.startswith("─"))
    coloured = inspect_rows(out, row=0, width=60, color=True)
    assert ANSI.search(coloured) and "⟦" not in coloured  # colour marks the target tokens
    assert ANSI.sub("", coloured).splitlines()[:3] == narrow.splitlines()[:3]


def test_selection(out: Path) -> None:
    rows = _manifest(out)["totals"]["rows"]
    text = inspect_rows(out, n=4, denoiser="X", width=200)
    assert text.count("\nrow ") + text.startswith("row ") == 4
    assert all(" · X(" in h for h in re.findall(r"^row .*$", text, flags=re.M))
    last = inspect_rows(out, row=-1, width=200)
    assert last.startswith(f"row {rows - 1:,} ")
    with pytest.raises(ConfigError, match="out of range"):
        inspect_rows(out, row=rows)
    with pytest.raises(ConfigError, match=r"no denoiser 'Q\(1,2\)'.*0=R\(3,0.15\)"):
        inspect_rows(out, denoiser="Q(1,2)")


def test_wrap() -> None:
    lines = wrap(
        [("hello world ", None), ("<extra_id_0>", "sentinel"), ("x" * 25 + "\nnext", None)], 10
    )
    texts = ["".join(t for t, _ in line) for line in lines]
    assert all(len(t) <= 10 for t in texts)
    assert "".join(texts).replace(" ", "") == "helloworld<extra_id_0>" + "x" * 25 + "next"
    assert texts[-1] == "next"


def test_cli(out: Path) -> None:
    res = CliRunner().invoke(app, ["inspect", str(out), "--row", "3", "--width", "120"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("row 3 ")
    assert not ANSI.search(res.output)  # not a terminal: plain
    res = CliRunner().invoke(app, ["inspect", str(out), "--denoiser", "nope"])
    assert res.exit_code == 2 and "no denoiser 'nope'" in res.output

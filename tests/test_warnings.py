"""Warnings before a wasted run: degenerate components, padding, tokenizer changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from denoise_cli.check.report import plan_warnings, tokenizer_notes
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.rows.plan import plan

SAMPLE = Path(__file__).parent.parent / "examples" / "sample"


def cfg(I: int = 512, T: int = 512, mix: str = "ul2") -> PrepareConfig:
    return PrepareConfig(load_mixture(mix), lengths=Lengths("encoder-decoder", I, T))


def test_no_warnings_for_a_sane_plan() -> None:
    assert plan_warnings(cfg(512, 512)) == []


def test_short_chunks_warn_with_the_rate_and_a_length_that_fixes_it() -> None:
    ws = plan_warnings(cfg(4, 512, "R(3,0.15)@1"))
    assert len(ws) == 1 and "masks 1 of 2 raw tokens (50%, configured 15%)" in ws[0]
    fix = int(ws[0].split("use -I ")[1].split()[0])
    assert plan_warnings(cfg(fix, 512, "R(3,0.15)@1")) == []
    assert plan_warnings(cfg(fix - 1, 512, "R(3,0.15)@1")) != []


def test_single_short_span_warns() -> None:
    ws = plan_warnings(cfg(16, 512, "X(64,0.5)@1"))
    assert len(ws) == 1 and "configured mean span 64" in ws[0]


def test_inputs_mostly_padding_warn_with_a_targets_length() -> None:
    ws = plan_warnings(cfg(512, 64, "X(3,0.5)@1"))
    assert len(ws) == 1 and "inputs are 87% padding" in ws[0]
    t = int(ws[0].split("-T ")[-1].split()[0])
    (c,) = plan(load_mixture("X(3,0.5)@1"), Lengths("encoder-decoder", 512, t))
    assert c.mean_input_tokens >= 0.9 * 512
    (c,) = plan(load_mixture("X(3,0.5)@1"), Lengths("encoder-decoder", 512, t - 1))
    assert c.mean_input_tokens < 0.9 * 512


def test_plan_cli_prints_and_json_lists_warnings() -> None:
    r = CliRunner().invoke(app, ["plan", "-I", "512", "-T", "64"])
    assert r.exit_code == 0 and "warning: X(3,0.5): inputs are 87% padding" in r.output
    r = CliRunner().invoke(app, ["plan", "-I", "512", "-T", "64", "--json"])
    assert len(json.loads(r.output)["warnings"]) == 3


def test_prepare_warns_before_the_run(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "prepare",
            str(SAMPLE / "en-prose-00.jsonl.zst"),
            str(tmp_path / "o"),
            "-I",
            "512",
            "-T",
            "64",
            "-w",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "denoise: warning: X(3,0.5): inputs are 87% padding" in r.output


def _no_eos_tokenizer(path: Path) -> str:
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    p = path / "tokenizer.json"
    tok.save(str(p))
    return str(p)


def test_tokenizer_without_eos_and_resize_hint(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["plan", "--tokenizer", _no_eos_tokenizer(tmp_path), "--json"])
    tok = json.loads(r.output)["tokenizer"]
    notes = tokenizer_notes(tok)
    assert any("has no EOS token: added </s>" in n for n in notes)
    assert any(f"model.resize_token_embeddings({tok['vocab_size']})" in n for n in notes)
    r = CliRunner().invoke(app, ["plan", "--tokenizer", _no_eos_tokenizer(tmp_path)])
    assert "note: the tokenizer has no EOS token" in r.output

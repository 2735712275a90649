"""The command line's conventions: version, -h, choices, flag names in errors, early failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from denoise_cli import __version__
from denoise_cli.cli import INPUT_EXTENSIONS, app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.rows.plan import largest_length_for_sentinels as largest
from denoise_cli.rows.plan import plan, sentinels_needed

DATA = Path(__file__).parent / "data"
SAMPLE = str(Path(__file__).parent.parent / "examples" / "sample")


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.output


def test_version_and_short_help() -> None:
    assert run("--version") == (0, f"denoise {__version__}\n")
    code, out = run("prepare", "-h")
    assert code == 0 and "--inputs-length" in out


@pytest.mark.parametrize(
    ("cmd", "opt", "choices"),
    [
        ("prepare", "--format", "arrow|parquet"),
        ("prepare", "--layout", "encoder-decoder|decoder-only"),
        ("prepare", "--on-error", "skip|fail"),
        ("prepare", "--engine", "local|ray"),
        ("plan", "--layout", "encoder-decoder|decoder-only"),
    ],
)
def test_choices_are_shown(cmd: str, opt: str, choices: str) -> None:
    code, out = run(cmd, "-h", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    line = next(x for x in out.splitlines() if opt in x)
    assert choices in line
    code, out = run(cmd, opt, "nonsense")
    assert code == 2 and opt in out


def test_every_plan_option_has_help() -> None:
    import typer.main

    cmd = typer.main.get_command(app)
    plan_cmd = cmd.commands["plan"]  # type: ignore[attr-defined]
    missing = [p.name for p in plan_cmd.params if not getattr(p, "help", None)]
    assert missing == []


def test_input_extensions_in_help() -> None:
    _, out = run("prepare", "-h", env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    flat = " ".join(out.split())
    assert all(e in flat for e in INPUT_EXTENSIONS)


def test_shard_size_help_matches_default() -> None:
    _, out = run("prepare", "-h", env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    flat = " ".join(out.replace("│", " ").split())
    assert "256MiB = 256*2^20" in flat and "[default: 256MiB]" in flat


def test_length_errors_name_the_flags() -> None:
    code, out = run("plan", "--pack", "99")
    assert code == 2 and "--pack must be" in out
    with pytest.raises(ConfigError, match="-T/--targets-length must"):
        Lengths("encoder-decoder", 512, 3)
    with pytest.raises(ConfigError, match="--group-size must"):
        PrepareConfig(load_mixture("t5"), group_size=0)


def test_prepare_without_out_says_out_is_missing(tmp_path: Path) -> None:
    code, out = run("prepare", SAMPLE)
    assert code == 2 and "missing OUT" in out
    code, out = run("prepare")
    assert code == 2 and "missing INPUT" in out


def test_engine_ray_without_ray_fails_before_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a)
    )
    out = tmp_path / "out"
    code, text = run("prepare", SAMPLE, str(out), "--engine", "ray")
    assert code == 2 and "denoise-cli[ray]" in text
    assert not out.exists()


def test_no_color_is_honoured(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["plan", "--pack", "99"], env={"NO_COLOR": "1"}, color=True)
    assert r.exit_code == 2 and "\x1b[" not in r.output
    r = CliRunner().invoke(app, ["plan", "--pack", "99"], env={"NO_COLOR": ""}, color=True)
    assert "\x1b[" in r.output  # the same error is coloured without NO_COLOR


def test_largest_length_for_sentinels_is_the_boundary() -> None:
    mix = load_mixture("R(3,0.15)@1", mode_tokens=False)
    lengths = Lengths("encoder-decoder", 2048, 512)
    best = largest(mix, lengths, 20)
    assert sentinels_needed(plan(mix, Lengths("encoder-decoder", best, 512))) <= 20
    assert sentinels_needed(plan(mix, Lengths("encoder-decoder", best + 1, 512))) > 20


def test_sentinel_shortage_suggests_largest_inputs_length() -> None:
    tok = str(DATA / "t5-tiny-tokenizer.json")
    code, out = run(
        "plan", "--tokenizer", tok, "--no-add-tokens", "--no-mode-tokens", "-I", "4096", "-T", "512"
    )
    assert code == 2
    assert "the largest -I/--inputs-length that fits them is" in out
    best = int(out.split("fits them is ")[1].split(";")[0])
    code, out = run(
        "plan",
        "--tokenizer",
        tok,
        "--no-add-tokens",
        "--no-mode-tokens",
        "-I",
        str(best),
        "-T",
        "512",
    )
    assert code == 0, out

"""Progress lines and the run summary of ``prepare``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from denoise_cli.cli import app
from denoise_cli.engines.progress import READ_AHEAD_CAP, Progress, duration, human

SAMPLE = Path(__file__).parent.parent / "examples" / "sample"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_plain_lines_every_interval_and_no_carriage_returns() -> None:
    buf, clock = io.StringIO(), Clock()
    p = Progress(1000, 2, True, interval=10, stream=buf, clock=clock)
    for _ in range(30):  # 30 updates over 15 s: one line at 10 s
        clock.t += 0.5
        p.update(1, 100, 10)
    assert buf.getvalue().count("\n") == 1
    clock.t += 1
    p.file_done(600, 7)
    p.file_done(400, 5)
    p.close()
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and len(lines) == 2
    assert "files 2/2, 30 docs, 3.0k tokens" in lines[-1] and "12 rows written" in lines[-1]
    assert lines[-1].endswith("ETA 0s") and "100%" in lines[-1]


def test_read_ahead_does_not_show_done() -> None:
    p = Progress(1000, 2, False, interval=1, stream=io.StringIO(), clock=Clock())
    p.update(0, 0, 1000)  # every byte read, no file finished
    assert p.fraction() == READ_AHEAD_CAP
    p.file_done(500, 1)
    assert p.fraction() == 0.5 + READ_AHEAD_CAP * 0.5
    p.file_done(500, 1)
    assert p.fraction() == 1.0


def test_formats() -> None:
    assert (human(999), human(1234), human(2.5e6)) == ("999", "1.2k", "2.5M")
    assert (duration(5), duration(185), duration(7440)) == ("5s", "3m05s", "2h04m")


def test_prepare_json_has_run_figures(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["prepare", str(SAMPLE), str(out), "-w", "1", "--json", "-q"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{") :])
    run = d["run"]
    assert run["output"] == str(out.resolve())
    on_disk = sum(
        f.stat().st_size for f in out.rglob("*") if f.is_file() and ".denoise" not in f.parts
    )
    assert run["output_bytes"] == on_disk > 0
    assert run["tokens_per_s"] * run["elapsed_s"] == pytest.approx(d["tokens"], rel=0.01)


def test_prepare_summary_and_plain_progress(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app, ["prepare", str(SAMPLE), str(tmp_path / "o"), "-w", "1", "--progress-interval", "0.1"]
    )
    assert r.exit_code == 0, r.output
    assert "prepare: files 2/2" in r.output and "\r" not in r.output
    assert "done in " in r.output and "MiB in " + str((tmp_path / "o").resolve()) in r.output


def test_terminal_gets_one_bar_with_the_figures() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    p = Progress(100, 2, True, stream=buf, clock=Clock())
    p.update(1, 10, 50)
    p.file_done(50, 3)
    p.close()
    frames = buf.getvalue().split("\r")
    assert len(frames) > 2 and "files 1/2, 1 docs, 10 tokens" in frames[-1]
    assert "3 rows written" in frames[-1]


def test_ray_log_lines_never_land_inside_the_bar() -> None:
    """Ray's own log records (its handler would write into the bar's line: ``files 0/2<Ray's
    warning>``) go through ``Progress.note`` while ``--engine ray`` runs: cleared bar, the line,
    bar redrawn. Ray is not needed: the route works on the ``ray`` logger by name."""
    import logging

    from denoise_cli.engines.ray import RayLogRoute

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    ray_log = logging.getLogger("ray")
    ray_own = logging.StreamHandler(buf)  # stands for Ray's stderr handler
    ray_log.addHandler(ray_own)
    try:
        p = Progress(100, 2, True, stream=buf, clock=Clock())
        with RayLogRoute(p, private=False):
            assert ray_own not in ray_log.handlers
            logging.getLogger("ray._private.x").warning(
                "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled"
            )
            p.update(1, 10, 50)
            logging.getLogger("ray.y").warning("object store is using /tmp")
        with RayLogRoute(p, private=True):  # a private local instance: the notice is debug
            logging.getLogger("ray._private.x").warning(
                "Token authentication is enabled for this Ray cluster."
            )
            logging.getLogger("ray.y").info("started")
        p.close()
        assert ray_own in ray_log.handlers  # Ray's handlers are back
    finally:
        ray_log.removeHandler(ray_own)
    out = buf.getvalue()
    lines = out.split("\n")
    for msg in ("ray: Token authentication is enabled", "ray: object store is using /tmp"):
        (line,) = [ln for ln in lines if msg in ln]
        # its own line: what precedes it on the line is only the bar being cleared
        before, _, after = line.partition(msg)
        assert before.split("\r")[-1] == "" and "prepare |" not in after
    assert out.count("Token authentication") == 1 and "started" not in out
    assert "files 0/2, 1 docs" in out.split("\r")[-1]  # the bar goes on below

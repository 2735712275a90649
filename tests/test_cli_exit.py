"""``cli.exit_now``: the ``denoise`` command ends its process without freeing object by object,
yet with the exit status, the flushed output and the ``atexit`` handlers of an ordinary exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys, threading
from denoise_cli.cli import exit_now
atexit.register(lambda: open({mark!r}, "w").write("ran"))
sys.stdout.write("unflushed out")
sys.stderr.write("unflushed err")
if {thread}:
    threading.Thread(target=lambda: __import__("time").sleep(0.5)).start()
exit_now({code!r})
print("not reached")
"""


@pytest.mark.parametrize(
    ("code", "status"), [(0, 0), (3, 3), (None, 0), ("denoise: error: bad", 1)]
)
@pytest.mark.parametrize("thread", [False, True])
def test_exit_now_keeps_status_output_and_atexit(
    tmp_path: Path, code: int | str | None, status: int, thread: bool
) -> None:
    mark = tmp_path / "atexit-ran"
    src = SCRIPT.format(mark=str(mark), code=code, thread=thread)
    p = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=60)
    assert p.returncode == status, p.stderr
    assert p.stdout == "unflushed out"
    assert p.stderr.startswith("unflushed err"), p.stderr
    if isinstance(code, str):
        assert p.stderr.rstrip().endswith(code)
    assert mark.read_text() == "ran"


def test_the_command_exits_through_exit_now_with_its_status(tmp_path: Path) -> None:
    """A failing command keeps its status and one-line message through the fast exit."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoise_cli",
            "prepare",
            str(tmp_path / "none"),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode != 0
    assert p.stderr.startswith("denoise: error:"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


KEEP = """
import sys
from denoise_cli.config import TokenConfig, load_mixture
from denoise_cli.source import tokenize as tk
if {keep}:
    tk.keep_builds_until_exit()
info = tk.build_tokenizer(None, TokenConfig(), load_mixture("ul2"), 8)
kept = tk._KEPT or []
print(sum(t is info.built for t in kept))
"""


@pytest.mark.parametrize("keep", [False, True])
def test_the_command_keeps_its_tokenizer_builds_for_exit_now(keep: bool) -> None:
    """``main`` asks for it (exit_now never frees them); a library caller frees as usual."""
    p = subprocess.run(
        [sys.executable, "-c", KEEP.format(keep=keep)], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ("1" if keep else "0")


def test_main_asks_to_keep_builds() -> None:
    src = (
        "import sys; from denoise_cli import cli; from denoise_cli.source import tokenize as tk\n"
        "sys.argv = ['denoise', '--version']\n"
        "import atexit; atexit.register(lambda: print('kept' if tk._KEPT is not None else 'no'))\n"
        "cli.main()\n"
    )
    p = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("kept"), p.stdout


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_output_that_cannot_be_flushed_is_not_a_success(tmp_path: Path) -> None:
    """As CPython's own exit: stdout on a full disk (/dev/full) gives 120, not 0."""
    src = "from denoise_cli.cli import exit_now\nprint('x' * 10)\nexit_now(0)\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered: the
    with open("/dev/full", "w") as full:  # write succeeds, the flush at the end fails
        p = subprocess.run(
            [sys.executable, "-c", src], stdout=full, stderr=subprocess.PIPE, env=env
        )
    assert p.returncode == 120, p.stderr

"""``cli.exit_now``: the ``denoise`` command ends its process without freeing object by object,
yet with the exit status, the flushed output and the ``atexit`` handlers of an ordinary exit."""

from __future__ import annotations

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

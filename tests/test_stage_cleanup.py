"""Staging directories a killed run left behind (a URL ``OUT``: ``prepare.publish``) are removed
by the next run on the same host, and nothing else is: not another host's, not a live
process's, not one without a run's state, not a symlink or a file that merely looks like one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from denoise_cli.output.layout import STATE_DIR
from denoise_cli.prepare import publish
from denoise_cli.prepare.publish import STAGE_PREFIX, make_stage, remove_stale_stages


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def stage_like(base: Path, owner: str, pid: int, state: bool = True, tag: str = "abc123") -> Path:
    d = base / f"{STAGE_PREFIX}{owner}-{pid}-{tag}"
    d.mkdir()
    (d / "data").mkdir()
    (d / "data" / "shard.arrow").write_bytes(b"x" * 100)
    if state:
        (d / STATE_DIR).mkdir()
    return d


def test_only_dead_processes_stages_of_this_host_are_removed(tmp_path: Path) -> None:
    me = publish._host()
    dead = dead_pid()
    stale = stage_like(tmp_path, me, dead)
    live = stage_like(tmp_path, me, os.getpid())
    other_host = stage_like(tmp_path, "otherhost_1", dead)
    no_state = stage_like(tmp_path, me, dead, state=False, tag="nostate")
    target = tmp_path / "precious"
    target.mkdir()
    (target / STATE_DIR).mkdir()
    (target / "keep.txt").write_text("mine")
    link = tmp_path / f"{STAGE_PREFIX}{me}-{dead}-link01"
    link.symlink_to(target, target_is_directory=True)
    a_file = tmp_path / f"{STAGE_PREFIX}{me}-{dead}-file01"
    a_file.write_text("not a directory")
    odd = tmp_path / f"{STAGE_PREFIX}{me}-notapid-x"
    odd.mkdir()
    (odd / STATE_DIR).mkdir()
    empty = tmp_path / f"{STAGE_PREFIX}{me}-{dead}-empty1"  # killed before it held anything
    empty.mkdir()

    gone = remove_stale_stages(tmp_path)

    assert sorted(gone) == sorted([stale, empty]) and not stale.exists() and not empty.exists()
    for kept in (live, other_host, no_state, link, a_file, odd):
        assert kept.exists() or kept.is_symlink(), kept
    assert (target / "keep.txt").read_text() == "mine"


def test_make_stage_names_its_owner_and_cleans_first(tmp_path: Path) -> None:
    stale = stage_like(tmp_path, publish._host(), dead_pid())
    d = make_stage(str(tmp_path))
    assert not stale.exists()
    assert d.name.startswith(f"{STAGE_PREFIX}{publish._host()}-{os.getpid()}-")
    assert (d / STATE_DIR).is_dir()  # marked as a run's from the start
    assert remove_stale_stages(tmp_path) == []  # this process is alive: its stage stays


@pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="Linux PID namespaces")
def test_owner_names_the_pid_namespace() -> None:
    ns = os.stat("/proc/self/ns/pid").st_ino
    assert publish._host().endswith(f"_{ns}")

"""Nothing outlives the main process (kill -9, SIGTERM, SIGINT); interruption and resume say
what they did; a locally started Ray instance listens on loopback only.

The test process is a child subreaper, so orphans are reparented to it (and stay visible
until reaped) instead of vanishing into the container's init.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability import ARGS, make_corpus

from denoise_cli.engines.local import START_METHOD_ENV
from denoise_cli.engines.procs import Terminated, terminate_raises
from denoise_cli.prepare.resume import resume_point

PR_SET_CHILD_SUBREAPER = 36
RAY_ARGS = ("--engine", "ray", "--workers", "2")
CLI = (sys.executable, "-m", "denoise_cli", "prepare")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc, prctl")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None when it is gone."""
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = s[s.rindex(")") + 2 :].split()
    return f[0], int(f[1]), int(f[19])


def process_tree(root: int) -> dict[int, int]:
    """Descendants of ``root`` (via the ppid links in /proc/*/stat): pid -> start time."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            table[int(d)] = st
    out: dict[int, int] = {}
    todo = [root]
    while todo:
        p = todo.pop()
        for k, st in table.items():
            if st[1] == p and k not in out:
                out[k] = st[2]
                todo.append(k)
    return out


def still_running(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` that are alive (same start time, not a zombie); reaps ours."""
    alive = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is None or st[2] != start:
            continue
        if st[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)  # reparented to us (subreaper): reap it
            except ChildProcessError:
                pass
            continue
        alive.append(pid)
    return alive


@pytest.fixture(scope="module")
def subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # big enough that 2 workers need well over a few seconds
    return make_corpus(tmp_path_factory.mktemp("procs") / "in", files=4, docs=2000)


def _start(
    inp: Path, out: Path, log: Path, *extra: str, start: str | None = None
) -> subprocess.Popen[bytes]:
    # stderr to a file: an orphan holding a pipe would make communicate() hang
    env = dict(os.environ)
    env.pop(START_METHOD_ENV, None)
    if start:
        env[START_METHOD_ENV] = start
    return subprocess.Popen(
        [sys.executable, "-m", "denoise_cli", "prepare", str(inp), str(out), *ARGS, *extra],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )


def _wait_for_commit(p: subprocess.Popen[bytes], out: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll() is not None:
            pytest.fail(f"prepare ended (rc {p.returncode}) before a part was committed")
        if any((out / ".denoise" / "parts").glob("E*.json")):
            return
        time.sleep(0.1)
    pytest.fail("no part committed in time")


@linux_only
@pytest.mark.slow
@pytest.mark.parametrize("start", [None, "forkserver"], ids=["fork", "forkserver"])
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: signal.Signals(s).name
)
def test_nothing_outlives_the_main_process(
    subreaper: None, big_corpus: Path, tmp_path: Path, sig: signal.Signals, start: str | None
) -> None:
    out, log = tmp_path / "o", tmp_path / "err.txt"
    p = _start(big_corpus, out, log, "--workers", "2", start=start)
    _wait_for_commit(p, out)
    tree = process_tree(p.pid)
    kids = [k for k in tree if (st := _stat(k)) is not None and st[1] == p.pid]
    if start is None:  # the default: 2 workers forked from the main process, nothing else
        assert len(kids) == 2 and len(tree) == 2, tree
    else:  # forkserver and resource tracker, the workers under the server
        assert len(tree) >= 4 and len(kids) == 2, tree
    os.kill(p.pid, sig)
    rc = p.wait(timeout=60)
    deadline = time.time() + 10
    while still_running(tree) and time.time() < deadline:
        time.sleep(0.1)
    left = still_running(tree)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running 10 s after {sig.name} of the main process: {left}"
    err = log.read_text()
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
        return
    # SIGTERM/SIGINT: one line, the shell's exit code, and a rerun that says it resumes
    assert rc == 128 + sig, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    done, parts = resume_point(out, range(4))
    assert lines[0].startswith(f"denoise: interrupted; {done} of 4 files committed"), err
    assert lines[0].endswith("rerun the same command to resume"), err
    assert done + parts > 0
    q = _start(big_corpus, out, tmp_path / "err2.txt", "--workers", "2", start=start)
    assert q.wait(timeout=600) == 0, (tmp_path / "err2.txt").read_text()
    first = (tmp_path / "err2.txt").read_text().splitlines()[0]
    assert first.startswith(f"denoise: resuming: {done} of 4 files done"), first
    assert (out / "denoise.json").is_file()


def test_no_resuming_line_for_a_fresh_run(tmp_path: Path) -> None:
    inp = make_corpus(tmp_path / "in", files=1, docs=20)
    log = tmp_path / "err.txt"
    p = _start(inp, tmp_path / "o", log, "--workers", "1")
    assert p.wait(timeout=120) == 0, log.read_text()
    assert "resuming" not in log.read_text()
    q = _start(inp, tmp_path / "o", log, "--workers", "1")
    assert q.wait(timeout=120) == 0
    assert "resuming: 1 of 1 files done" in log.read_text()


def listening_sockets(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets the given processes listen on (/proc/net/tcp*)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            addr, port = f[1].split(":")
            raw = bytes.fromhex(addr)
            if table == "tcp":
                ip = ".".join(str(b) for b in raw[::-1])
            else:  # four little-endian 32-bit words
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                ip = b"".join(words).hex()
            found.add((ip, int(port, 16)))
    return found


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("0" * 31 + "1", "0" * 20 + "ffff7f000001")


@linux_only
@pytest.mark.slow
def test_local_ray_instance_listens_on_loopback_only(subreaper: None, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    inp = make_corpus(tmp_path / "in", files=4, docs=1500)
    out, log = tmp_path / "o", tmp_path / "err.txt"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.Popen(
        [sys.executable, "-m", "denoise_cli", "prepare", str(inp), str(out), *ARGS, *RAY_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )
    seen: set[tuple[str, int]] = set()
    tree: dict[int, int] = {}
    while p.poll() is None:
        now = process_tree(p.pid)
        tree.update(now)
        seen |= listening_sockets([p.pid, *now])
        time.sleep(0.2)
    assert p.returncode == 0, log.read_text()
    assert len(seen) >= 3, seen  # gcs, raylet, object manager...: the probe works
    public = sorted(s for s in seen if not is_loopback(s[0]))
    assert not public, f"listening beyond loopback: {public}"
    deadline = time.time() + 10
    while still_running(tree) and time.time() < deadline:
        time.sleep(0.2)
    assert not still_running(tree)


def test_sigterm_raises_in_the_block_and_an_ignored_sighup_stays_ignored() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(Terminated) as ei, terminate_raises():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup is respected
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        assert ei.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored
    finally:
        signal.signal(signal.SIGHUP, before)


@linux_only
@pytest.mark.slow
def test_sigterm_stops_a_ray_run_with_one_line_and_no_leftovers(
    subreaper: None, big_corpus: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    out, log = tmp_path / "o", tmp_path / "err.txt"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    p = subprocess.Popen(
        [*CLI, str(big_corpus), str(out), *ARGS, *RAY_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )
    _wait_for_commit(p, out)
    tree = process_tree(p.pid)
    os.kill(p.pid, signal.SIGTERM)
    rc = p.wait(timeout=120)
    err = log.read_text()
    assert rc == 143, err  # before: Ray's handler exited with 15 (or aborted, -6)
    assert err.strip().splitlines()[-1].startswith("denoise: interrupted; "), err
    deadline = time.time() + 10
    while still_running(tree) and time.time() < deadline:
        time.sleep(0.2)
    assert not still_running(tree)

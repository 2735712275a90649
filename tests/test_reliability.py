"""Fault injection: kill -9 (main process and a worker), full disk, concurrent runs.

Each test compares the final output with an uninterrupted run, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import zstandard

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import OutputError
from denoise_cli.output.layout import locked_output
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")
ARGS = [
    "--mixture",
    "ul2",
    "-I",
    "128",
    "-T",
    "128",
    "--tokenizer",
    T5_TINY,
    "--shard-size",
    "64",
    "--group-size",
    "64",
    "--quiet",
]


def make_corpus(d: Path, files: int = 3, docs: int = 150, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = np.array(
        [
            "the",
            "quick",
            "brown",
            "fox",
            "jumps",
            "over",
            "lazy",
            "dog",
            "and",
            "runs",
            "far",
            "away",
            "from",
            "home",
            "into",
            "woods",
        ]
    )
    d.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [
            orjson.dumps({"text": " ".join(rng.choice(words, int(rng.integers(50, 800))))})
            for _ in range(docs)
        ]
        (d / f"part-{f}.jsonl.zst").write_bytes(
            zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n")
        )
    return d


def run_cli(*args: str, **kw: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "denoise_cli", "prepare", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )  # type: ignore[call-overload]


def digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in (out / "data").iterdir() if p.is_file())
    res = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    res["denoise.json"] = hashlib.sha256((out / "denoise.json").read_bytes()).hexdigest()
    return res


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in map(int, kids):
        out += [k, *descendants(k)]
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], float]:
    base = tmp_path_factory.mktemp("rel")
    inp = make_corpus(base / "in")
    t0 = time.perf_counter()
    p = run_cli(str(inp), str(base / "ref"), *ARGS, "--workers", "2")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    return inp, digest(base / "ref"), time.perf_counter() - t0


def assert_no_partial_shards(out: Path, ref: dict[str, str]) -> None:
    """Every shard visible under its final name is complete: byte-identical to the shard of the
    uninterrupted run, and of the size its commit record says where it has one (a shard renamed
    just before its commit record was written has none yet)."""
    committed: dict[str, int] = {}
    for rec in (out / ".denoise" / "parts").glob("*.json"):
        r = orjson.loads(rec.read_bytes())
        if r["shard"]:
            committed[r["shard"]] = r["bytes"]
    for p in (out / "data").glob("*.arrow"):
        assert hashlib.sha256(p.read_bytes()).hexdigest() == ref[p.name], p.name
        if f"data/{p.name}" in committed:
            assert p.stat().st_size == committed[f"data/{p.name}"], p.name


@pytest.mark.slow
def test_kill9_main_process_repeatedly_then_resume(
    corpus: tuple[Path, dict[str, str], float], tmp_path: Path
) -> None:
    inp, ref, _ = corpus
    out = tmp_path / "o"
    rng = np.random.default_rng(1)
    kills = 0
    parts = out / ".denoise" / "parts"
    for _ in range(4):
        # kill after 1-3 more parts were committed: driven by progress, not by the clock, so a
        # loaded machine cannot make the run finish before the kill
        before = len(list(parts.glob("*.json"))) if parts.is_dir() else 0
        target = before + int(rng.integers(1, 4))
        p = run_cli(str(inp), str(out), *ARGS, "--workers", "2", start_new_session=True)
        while p.poll() is None and (not parts.is_dir() or len(list(parts.glob("*.json"))) < target):
            time.sleep(0.01)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the main process and its workers, no cleanup
            kills += 1
        p.communicate()
        assert_no_partial_shards(out, ref)
    assert kills >= 1
    p = run_cli(str(inp), str(out), *ARGS, "--workers", "2")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    assert digest(out) == ref
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.slow
def test_kill9_one_worker_then_resume(
    corpus: tuple[Path, dict[str, str], float], tmp_path: Path
) -> None:
    inp, ref, dur = corpus
    out = tmp_path / "o"
    p = run_cli(str(inp), str(out), *ARGS, "--workers", "2")
    victim = None
    deadline = time.time() + dur * 0.8
    while time.time() < deadline and victim is None:
        # workers are forked from the main process (main -> forkserver -> workers where
        # the pool starts from a forkserver: then they are its grandchildren)
        kids = descendants(p.pid)
        workers = [g for k in kids for g in descendants(k)] or kids
        if workers:
            victim = workers[-1]
        time.sleep(0.05)
    if victim is None:
        pytest.skip("run finished before a worker could be killed")
    time.sleep(0.3)
    os.kill(victim, signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    if p.returncode == 0:
        pytest.skip("the killed process was not doing work")
    assert p.returncode == 6, err.decode()
    assert "worker process died" in err.decode()
    q = run_cli(str(inp), str(out), *ARGS, "--workers", "2")
    _, err = q.communicate(timeout=300)
    assert q.returncode == 0, err.decode()
    assert digest(out) == ref


def _limit_file_size(nbytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.slow
def test_full_disk_fails_cleanly_and_rerun_completes(
    corpus: tuple[Path, dict[str, str], float], tmp_path: Path
) -> None:
    inp, _, _ = corpus
    args = [*ARGS, "--shard-size", "512", "--workers", "1"]
    p = run_cli(str(inp), str(tmp_path / "ref"), *args)
    assert p.communicate(timeout=300) and p.returncode == 0
    out = tmp_path / "o"
    # The tiny tokenizer.json (~350 KB) fits under a 400 KB file-size limit; a shard of 512 rows
    # (~600 KB) does not: the first shard write fails with EFBIG, as on a full disk.
    p = run_cli(str(inp), str(out), *args, preexec_fn=lambda: _limit_file_size(400_000))
    _, err = p.communicate(timeout=300)
    msg = err.decode()
    assert p.returncode == 4, msg
    assert "failed" in msg and "rerun" in msg and "Traceback" not in msg
    assert not (out / "denoise.json").exists()
    assert not list((out / "data").glob("*.arrow")), "no half-written shard under a final name"
    p = run_cli(str(inp), str(out), *args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()
    assert digest(out) == digest(tmp_path / "ref")
    assert not list(out.rglob(".tmp-*"))


def test_concurrent_run_is_refused(tmp_path: Path) -> None:
    inp = make_corpus(tmp_path / "in", files=1, docs=5)
    out = tmp_path / "o"
    out.mkdir()
    cfg = PrepareConfig(mixture=load_mixture("t5"), lengths=Lengths("encoder-decoder", 64, 32))
    with locked_output(out), pytest.raises(OutputError, match="locked by another running"):
        prepare([str(inp)], str(out), cfg, tokenizer=T5_TINY, workers=1, progress=False)


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    inp = make_corpus(tmp_path / "in", files=1, docs=5)
    p = run_cli(str(inp), str(tmp_path / "o"), "--mixture", "R(3,1.5)")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "rate must be in (0, 1)" in err.decode()
    p = run_cli(str(tmp_path / "missing"), str(tmp_path / "o"))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "missing" in err.decode() and "Traceback" not in err.decode()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jsonl").write_bytes(b'{"text": "fine text here"}\n{oops\n')
    p = run_cli(
        str(bad),
        str(tmp_path / "o2"),
        "--on-error",
        "fail",
        "--tokenizer",
        T5_TINY,
        "-m",
        "t5",
        "-I",
        "64",
        "-T",
        "32",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 3, err.decode()
    assert "x.jsonl" in err.decode() and "line 2" in err.decode()

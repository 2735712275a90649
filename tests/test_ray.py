"""``prepare --engine ray``: byte-identical to ``--engine local``, survives a killed worker,
propagates errors by type. One local Ray instance (2 CPUs, loopback) for the whole module."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zstandard

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, InputError, OutputError, WorkerError
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
WORDS = np.array(
    "the quick brown fox jumps over lazy dog and runs far away from home into woods".split()
)


def tree_digest(out: Path) -> dict[str, str]:
    """sha256 of every file of a dataset (shards, manifests, tokenizer, HF files), not .denoise."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


def cfg(**kw: Any) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 128, 128),
        shard_rows=64,
        group_size=64,
        **kw,
    )


def write_jsonl_zst(path: Path, words: int, docs: int, seed: int, extra: bytes = b"") -> None:
    rng = np.random.default_rng(seed)
    lines = [orjson.dumps({"text": " ".join(rng.choice(WORDS, words))}) for _ in range(docs)]
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(lines) + b"\n" + extra))


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    # Keep the test cluster on 127.0.0.1 (Ray otherwise binds the host's address): read when
    # ray is imported, and by the CLI subprocess that connects to this cluster.
    saved = os.environ.get(LOOPBACK)
    os.environ[LOOPBACK] = "0"
    try:
        yield from _cluster()
    finally:
        if saved is None:
            os.environ.pop(LOOPBACK, None)
        else:
            os.environ[LOOPBACK] = saved


def _cluster() -> Iterator[str]:
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
    )
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three files of unequal size (one large enough to kill a worker in the middle of it) and
    the ``--engine local`` output made from them."""
    base = tmp_path_factory.mktemp("corpus")
    inp = base / "in"
    inp.mkdir()
    write_jsonl_zst(inp / "big.jsonl.zst", words=1000, docs=150, seed=0)
    write_jsonl_zst(inp / "mid.jsonl.zst", words=400, docs=100, seed=1)
    write_jsonl_zst(inp / "small.jsonl.zst", words=300, docs=60, seed=2)
    ref = base / "local"
    prepare([str(inp)], str(ref), cfg(), tokenizer=T5_TINY, workers=2, progress=False)
    return inp, ref


@pytest.fixture(scope="module")
def sample_local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "local"
    prepare([str(SAMPLE)], str(out), cfg(), workers=2, progress=False)
    return out


# --------------------------------------------------------------------------- no Ray needed


def test_ray_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'denoise-cli\[ray\]'"):
        prepare([str(SAMPLE)], str(tmp_path / "o"), cfg(), engine="ray", progress=False)


def test_connect_starts_or_joins_the_right_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which ``ray.init`` call each setting makes (a stand-in for ray; no cluster needed)."""
    from denoise_cli.engines import ray as ray_engine

    class FakeRay:
        def __init__(self, initialized: bool = False, fail: bool = False) -> None:
            self.initialized, self.fail = initialized, fail
            self.calls: list[dict[str, Any]] = []

        def is_initialized(self) -> bool:
            return self.initialized

        def init(self, **kw: Any) -> None:
            if self.fail:
                raise ConnectionError("no cluster there")
            self.calls.append(kw)

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    r = FakeRay()
    assert ray_engine.connect(r, None, 3) is True  # a new local instance, shut down later
    assert r.calls == [
        {
            "address": "local",
            "num_cpus": 3,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            **quiet,
        }
    ]
    r = FakeRay()
    assert ray_engine.connect(r, "head:6379", 3) is True  # join; our connection is closed later
    assert r.calls == [{"address": "head:6379", **quiet}]
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    r = FakeRay()
    assert ray_engine.connect(r, None, None) is True  # Ray reads RAY_ADDRESS itself
    assert r.calls == [{"address": None, **quiet}]
    r = FakeRay(initialized=True)
    assert ray_engine.connect(r, "elsewhere:1", None) is False  # the caller's connection
    assert r.calls == []
    with pytest.raises(ConfigError, match=r"cannot start or connect to Ray.*no cluster there"):
        ray_engine.connect(FakeRay(fail=True), "head:6379", None)


# --------------------------------------------------------------------------- byte identity


@pytest.mark.parametrize("workers", [1, None])
def test_sample_ray_equals_local(
    ray_address: str, sample_local: Path, tmp_path: Path, workers: int | None
) -> None:
    out = tmp_path / "ray"
    m = prepare([str(SAMPLE)], str(out), cfg(), engine="ray", workers=workers, progress=False)
    assert m["totals"]["rows"] > 0
    assert tree_digest(out) == tree_digest(sample_local)
    assert (out / "denoise.json").read_bytes() == (sample_local / "denoise.json").read_bytes()


def test_epochs_ray_equals_local(ray_address: str, tmp_path: Path) -> None:
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    prepare([str(SAMPLE)], str(local), cfg(epochs=2), workers=1, progress=False)
    prepare([str(SAMPLE)], str(ray_out), cfg(epochs=2), engine="ray", progress=False)
    assert tree_digest(ray_out) == tree_digest(local)


@pytest.mark.slow
def test_corpus_ray_equals_local_and_reports_progress(
    ray_address: str,
    corpus: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from denoise_cli.prepare import run as pipeline

    inp, ref = corpus
    out = tmp_path / "ray"
    seen: list[tuple[int, int, int]] = []

    class Rec(pipeline.Progress):
        def update(self, docs: int, tokens: int, nbytes: int) -> None:
            seen.append((docs, tokens, nbytes))
            super().update(docs, tokens, nbytes)

    monkeypatch.setattr(pipeline, "Progress", Rec)
    caplog.set_level(logging.DEBUG, logger="denoise_cli.engines.ray")
    m = prepare([str(inp)], str(out), cfg(), tokenizer=T5_TINY, engine="ray", progress=False)
    assert tree_digest(out) == tree_digest(ref)
    assert not list(out.rglob(".tmp-*"))
    # progress: every document and input byte reached the driver
    docs, tokens, nbytes = (sum(x) for x in zip(*seen, strict=True))
    assert docs == m["totals"]["docs"] and tokens == m["totals"]["tokens"]
    assert nbytes == sum(f.stat().st_size for f in inp.iterdir())
    # each file ran once, in a Ray worker (not this process), with tokenizer threads off
    events = [r.__dict__ for r in caplog.records if hasattr(r, "file_idx")]
    assert sorted(e["file_idx"] for e in events) == [0, 1, 2]
    assert all(e["pid"] != os.getpid() and e["attempt"] == 1 for e in events)
    assert all(e["tokenizers_parallelism"] == "false" for e in events)


@pytest.mark.slow
def test_killed_worker_is_retried_and_resumes(
    ray_address: str,
    corpus: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL the worker running the largest file once two of its parts are committed: Ray
    retries the task, process_file resumes after the committed parts, the output is identical.

    The worker is found as the process that holds the big input file open (from /proc), not
    from the driver's log records: Ray forwards those late under load, too late to kill the
    worker before it finished the file."""
    inp, ref = corpus
    out = tmp_path / "ray"
    big = 0  # files are indexed by name: big, mid, small
    big_path = str((inp / "big.jsonl.zst").resolve())

    def reader_of(path: str) -> int | None:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                fds = os.listdir(f"/proc/{name}/fd")
                if any(os.readlink(f"/proc/{name}/fd/{fd}") == path for fd in fds):
                    return int(name)
            except OSError:
                continue
        return None

    killed: dict[str, Any] = {}
    parts = out / ".denoise" / "parts"
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            if (parts / f"E000-{big:05d}-00001.json").is_file():
                pid = reader_of(big_path)
                if pid is None:  # between two reads: look again
                    continue
                killed["done_before"] = (out / ".denoise" / "files" / f"{big:05d}.json").is_file()
                killed["part0"] = (parts / f"E000-{big:05d}-00000.json").stat().st_mtime_ns
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.005)

    caplog.set_level(logging.DEBUG, logger="denoise_cli.engines.ray")
    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        prepare([str(inp)], str(out), cfg(), tokenizer=T5_TINY, engine="ray", progress=False)
    finally:
        stop.set()
        th.join(10)
    assert "pid" in killed and not killed["done_before"], "the kill did not land mid-file"
    assert tree_digest(out) == tree_digest(ref)
    assert not list(out.rglob(".tmp-*"))  # the retry removed what the killed worker left
    # resumed, not restarted: the part committed before the kill was not rewritten
    assert (parts / f"E000-{big:05d}-00000.json").stat().st_mtime_ns == killed["part0"]
    events = [r.__dict__ for r in caplog.records if r.__dict__.get("file_idx") == big]
    assert [e["attempt"] for e in events] == [1, 2]  # one retry, logged as a warning
    assert events[1]["pid"] != killed["pid"] and events[1]["levelno"] == logging.WARNING


# --------------------------------------------------------------------------- errors


def test_input_error_propagates_as_input_error(ray_address: str, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    write_jsonl_zst(inp / "a.jsonl.zst", words=50, docs=20, seed=0, extra=b'{"text": "oops\n')
    write_jsonl_zst(inp / "b.jsonl.zst", words=50, docs=20, seed=1)
    c = cfg(on_error="fail")
    with pytest.raises(InputError) as local:
        prepare([str(inp)], str(tmp_path / "l"), c, tokenizer=T5_TINY, workers=1, progress=False)
    with pytest.raises(InputError) as remote:
        prepare([str(inp)], str(tmp_path / "r"), c, tokenizer=T5_TINY, engine="ray", progress=False)
    assert type(remote.value) is InputError  # the original, not Ray's wrapper
    assert str(remote.value) == str(local.value)
    assert (remote.value.path, remote.value.position, remote.value.reason) == (
        local.value.path,
        local.value.position,
        local.value.reason,
    )


def test_task_errors_map_to_denoise_errors(ray_address: str, tmp_path: Path) -> None:
    """What ``ray.get`` raises -> what ``run_files`` raises: a DenoiseError raised in a task
    is re-raised as itself; a task whose worker keeps dying becomes WorkerError."""
    import ray

    from denoise_cli.engines import ray as ray_engine
    from denoise_cli.prepare.job import make_job, resolve

    job = make_job(resolve(cfg(), [str(SAMPLE)], None), tmp_path)

    @ray.remote(max_retries=0)
    def fails() -> None:
        raise OutputError("disk full")

    @ray.remote(max_retries=0)
    def dies() -> None:
        os._exit(1)

    for fn, want in ((fails, OutputError), (dies, WorkerError)):
        with pytest.raises(Exception) as got:
            ray.get(fn.remote())
        with pytest.raises(want) as mapped:
            ray_engine.reraise(ray, got.value, job, 0)
        assert type(mapped.value) is want


# --------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_engine_ray(ray_address: str, sample_local: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "denoise_cli",
            "prepare",
            "--engine",
            "ray",
            "--ray-address",
            ray_address,
            str(SAMPLE),
            str(out),
            "--mixture",
            "ul2",
            "-I",
            "128",
            "-T",
            "128",
            "--shard-size",
            "64",
            "--group-size",
            "64",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert tree_digest(out) == tree_digest(sample_local)

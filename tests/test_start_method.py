"""How the local engine's pool starts (``engines.local.start_method``): forked from the main
process where that is safe, so workers reuse what it built; a forkserver otherwise. Both give the
same bytes, and a forked worker builds no tokenizer of its own."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_reliability import make_corpus

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.engines import local
from denoise_cli.engines.local import START_METHOD_ENV, start_method
from denoise_cli.errors import ConfigError
from denoise_cli.prepare.run import prepare
from denoise_cli.source import tokenize as tk

ROOT = Path(__file__).resolve().parent.parent
T5TOK = str(ROOT / "tests" / "data" / "t5-tiny-tokenizer.json")
PARALLEL = "TOKENIZERS_PARALLELISM"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(START_METHOD_ENV, raising=False)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    return monkeypatch


def _fresh_choice(env: dict[str, str]) -> str:
    """``start_method()`` in a fresh interpreter (this one may run other threads)."""
    code = "from denoise_cli.engines.local import start_method; print(start_method())"
    full = {k: v for k, v in os.environ.items() if k not in (START_METHOD_ENV, PARALLEL)}
    p = subprocess.run(
        [sys.executable, "-c", code], env={**full, **env}, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


@linux_only
@pytest.mark.parametrize("value", [None, "false", "0", "off", "no"])
def test_fork_when_alone_and_tokenizers_not_forced_parallel(value: str | None) -> None:
    assert _fresh_choice({} if value is None else {PARALLEL: value}) == "fork"


@linux_only
def test_fresh_process_forced_parallel_gets_a_forkserver() -> None:
    assert _fresh_choice({PARALLEL: "true"}) == "forkserver"


@linux_only
@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_no_fork_when_tokenizers_thread_pool_is_forced_on(
    clean_env: pytest.MonkeyPatch, value: str
) -> None:
    # a child of a process that used the forced-on pool deadlocks in its first batch encode
    clean_env.setenv("TOKENIZERS_PARALLELISM", value)
    assert start_method() == "forkserver"


@linux_only
def test_no_fork_while_another_python_thread_runs(clean_env: pytest.MonkeyPatch) -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert start_method() == "forkserver"
    finally:
        stop.set()
        t.join()


def test_the_environment_overrides_and_a_bad_value_is_refused(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv(START_METHOD_ENV, "spawn")
    assert start_method() == "spawn"
    clean_env.setenv(START_METHOD_ENV, "teleport")
    with pytest.raises(ConfigError, match="teleport"):
        start_method()


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "data").rglob("*")):
        if p.is_file():
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _tokenizer(which: str | None, tmp_path: Path) -> str | None:
    """``None`` (embedded GPT-2: byte-level fast engine), T5 (HF), ``"sp"`` (a Llama-style
    SentencePiece BPE: the ``fastsp`` engine, whose spec travels to a forkserver as JSON)."""
    if which != "sp":
        return which
    import orjson
    from test_fastsp import variant

    path = tmp_path / "sp-tokenizer.json"
    path.write_bytes(orjson.dumps(variant("metaspace")))
    return str(path)


@linux_only
@pytest.mark.parametrize("which", [None, T5TOK, "sp"])  # fast (GPT-2), HF (T5), fast (Llama-style)
def test_fork_forkserver_spawn_and_in_process_give_the_same_bytes(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, which: str | None
) -> None:
    tokenizer = _tokenizer(which, tmp_path)
    inp = make_corpus(tmp_path / "in", files=3, docs=60)
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 64))
    digests = {}
    for how in ("in-process", "fork", "forkserver", "spawn"):
        if how != "in-process":
            clean_env.setenv(START_METHOD_ENV, how)
        out = tmp_path / how
        workers = 1 if how == "in-process" else 2
        m = prepare([str(inp)], str(out), cfg, tokenizer=tokenizer, workers=workers, progress=False)
        assert m["tokenizer_backend"]["used"] == ("hf" if which == T5TOK else "fast")
        digests[how] = _digest(out)
    assert len(set(digests.values())) == 1, digests


@linux_only
@pytest.mark.parametrize("which", [None, T5TOK, "sp"])
def test_forked_workers_build_no_tokenizer(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, which: str | None
) -> None:
    """Every tokenizer build (HF or tiktoken) is logged with its process id: with the pool
    forked from this process, only this process builds; the workers use its build."""
    tokenizer = _tokenizer(which, tmp_path)
    log = tmp_path / "builds.txt"
    real = tk._tokenizers()
    import tiktoken

    def note() -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def from_str(text: str) -> Any:
        note()
        return real.Tokenizer.from_str(text)

    def from_buffer(data: bytes) -> Any:
        note()
        return real.Tokenizer.from_buffer(data)

    class Logged:
        """The ``tokenizers`` module, with its ``Tokenizer`` builds logged."""

        Tokenizer = SimpleNamespace(from_str=from_str, from_buffer=from_buffer)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    plain_encoding = tiktoken.Encoding

    def logged_encoding(*a: Any, **k: Any) -> Any:
        note()
        return plain_encoding(*a, **k)

    clean_env.setattr(tk, "_tokenizers", lambda: Logged())
    clean_env.setattr(tiktoken, "Encoding", logged_encoding)
    inp = make_corpus(tmp_path / "in", files=3, docs=40)
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 64))
    clean_env.setenv(START_METHOD_ENV, "fork")
    plain_init = local._worker_init

    def init(*a: Any) -> None:
        with open(tmp_path / "workers.txt", "a") as f:
            f.write(f"{os.getpid()}\n")
        plain_init(*a)

    clean_env.setattr(local, "_worker_init", init)
    prepare([str(inp)], str(tmp_path / "o"), cfg, tokenizer=tokenizer, workers=2, progress=False)
    seen = [int(x) for x in (tmp_path / "workers.txt").read_text().split()]
    builders = {int(x) for x in log.read_text().split()}
    assert len(seen) == 2 and os.getpid() not in seen
    assert builders == {os.getpid()}, (builders, seen)


@linux_only
def test_the_terminal_progress_bar_starts_no_thread() -> None:
    """A tqdm bar starts a monitor thread by default, which would rule the fork out for every
    run on a terminal: the bar is made without one."""
    code = (
        "import io, threading\n"
        "from denoise_cli.engines.progress import Progress\n"
        "from denoise_cli.engines.local import start_method\n"
        "class Tty(io.StringIO):\n"
        "    def isatty(self): return True\n"
        "p = Progress(100, 2, True, stream=Tty())\n"
        "p.update(1, 10, 50)\n"
        "assert p.bar is not None\n"
        "print(threading.active_count(), start_method())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (START_METHOD_ENV, PARALLEL)}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "fork"]

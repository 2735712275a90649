#!/usr/bin/env python
"""Throughput, scaling and memory of ``denoise prepare`` against a bare-tokenizer baseline.

Every figure is a *ratio of runs made side by side in this one invocation* (this kind of
machine is small and shared: absolute tokens/s are only context). What it measures:

1. bare tokenizer: the pipeline's tokenizer source (embedded GPT-2 unless ``--tokenizer``),
   ``Tokenizer.from_str`` + ``encode_batch_fast(texts, add_special_tokens=False)`` on exactly the
   pipeline's batches (``read.iter_batches``, ~1 MB of text each), in N forkserver processes that
   pull one *file* per task, largest first, like the pipeline. Texts are read and the tokenizer
   is loaded before a barrier; only encoding is timed.
2. ``pipeline.prepare(...)`` (mixture ul2, encoder-decoder I=T=512, progress off) with the same
   N, end to end (tokenizer build, pool start, fsync'ed shards, manifest); ratio to (1).
3. 1 worker vs N workers (pipeline), next to the same ratio for the bare tokenizer (the
   ceiling this machine allows at that moment).
4. peak RSS of a worker for input X (one shard) and 4X (the shard concatenated 4 times into one
   file; and 4 shards in one worker); for the pool run, the peak of the pool's worker processes.
5. where the time goes inside one worker for one file: the stage functions called in a loop
   that mirrors ``pipeline.process_file``.

Every run is a fresh child process of this script (``--child``), so runs do not share caches,
a forkserver, or memory, and the parent gets exact resource usage from ``os.wait4``.

Usage (from the repository root)::

    python benchmarks/bench_prepare.py            # all shards, ~6-10 min here
    python benchmarks/bench_prepare.py --quick    # 1 shard, no scaling, ~2 min

See ``benchmarks/README_prepare.md`` for a recorded run and its interpretation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Each process runs the tokenizer single-threaded (as the pipeline's workers do); this must be
# set before `tokenizers` is first imported in any process (children inherit the environment).
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "corpus" / "en-prose"
RESULT = "RESULT "
TARGET_RATIO = 0.90
TARGET_SCALING = 1.8
TARGET_RSS_GROWTH = 1.10  # "flat": 4x the input may cost at most 10% more peak RSS


# =========================================================================== helpers


def _cfg(mixture: str) -> Any:
    from denoise_cli.config import Lengths, PrepareConfig, load_mixture

    return PrepareConfig(
        mixture=load_mixture(mixture), lengths=Lengths("encoder-decoder", 512, 512)
    )


def _cpu_self() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    return s.ru_utime + s.ru_stime


def _cpu_now() -> float:
    """CPU seconds of this process plus its reaped descendants."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _status_kb(pid: int | str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stop_forkserver() -> None:
    """Stop (and ``waitpid``) this process's forkserver. The pool's workers are the
    forkserver's children, which it reaps; once it is reaped too, their CPU time and peak RSS
    show up in ``RUSAGE_CHILDREN`` of this process."""
    try:
        from multiprocessing import forkserver

        forkserver._forkserver._stop()  # type: ignore[attr-defined]
    except Exception:
        pass


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds (0.0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _WorkerHWM(threading.Thread):
    """Samples VmHWM (peak RSS) and CPU time of the forkserver's children (= the pool's
    workers) every ``interval`` s. Both only grow, so the last sample before a worker exits is
    its value up to that moment (at most ``interval`` early)."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.own_cpu = 0.0  # this thread's CPU, subtracted from the main process's
        self._halt = threading.Event()

    def run(self) -> None:
        from multiprocessing import forkserver

        t0 = time.thread_time()
        while not self._halt.wait(self.interval):
            self.own_cpu = time.thread_time() - t0
            fs = getattr(forkserver._forkserver, "_forkserver_pid", None)
            if not fs:
                continue
            try:
                with open(f"/proc/{fs}/task/{fs}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            for k in kids:
                v = _status_kb(k, "VmHWM")
                if v:
                    self.peaks[k] = max(self.peaks.get(k, 0), v)
                c = _proc_cpu(k)
                if c:
                    self.cpu[k] = max(self.cpu.get(k, 0.0), c)

    def stop(self) -> tuple[list[int], list[float]]:
        self._halt.set()
        self.join()
        return sorted(self.peaks.values()), sorted(self.cpu.values())


# =========================================================================== children


def _bare_worker(
    files: list[str], tokenizer: str | None, tasks: Any, results: Any, barrier: Any
) -> None:
    import tokenizers

    from denoise_cli.source.discover import find_inputs
    from denoise_cli.source.read import FileStats, iter_batches
    from denoise_cli.source.tokenize import load_tokenizer_json

    tok = tokenizers.Tokenizer.from_str(load_tokenizer_json(tokenizer)[0])
    texts: list[list[list[str]]] = []
    for p in files:
        f = find_inputs([p])[0]
        texts.append([b.texts for b in iter_batches(f, stats=FileStats()) if b.texts])
    barrier.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    ntok = nfiles = 0
    while True:
        i = tasks.get()
        if i is None:
            break
        nfiles += 1
        for batch in texts[i]:
            ntok += sum(map(len, tok.encode_batch_fast(batch, add_special_tokens=False)))
    results.put(
        {
            "tokens": ntok,
            "cpu": time.process_time() - c0,
            "busy": time.perf_counter() - t0,
            "files": nfiles,
        }
    )


def child_bare(spec: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing as mp

    files: list[str] = spec["files"]
    n = int(spec["procs"])
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in sorted(range(len(files)), key=lambda i: -os.path.getsize(files[i])):
        tasks.put(i)
    for _ in range(n):
        tasks.put(None)
    barrier = ctx.Barrier(n + 1)
    process = ctx.Process  # type: ignore[attr-defined]
    procs = [
        process(target=_bare_worker, args=(files, spec.get("tokenizer"), tasks, results, barrier))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    res = [results.get() for _ in range(n)]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return {
        "wall": wall,
        "tokens": sum(r["tokens"] for r in res),
        "cpu": sum(r["cpu"] for r in res),
        "crit": max(r["cpu"] for r in res),
        "workers": res,
    }


def child_pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    from denoise_cli.prepare.run import prepare

    cfg = _cfg(spec["mixture"])
    rss_before = _status_kb("self", "VmRSS")
    sampler = _WorkerHWM()
    sampler.start()
    self0 = _cpu_self()
    cpu0 = _cpu_now()
    t0 = time.perf_counter()
    if spec.get("preload"):
        # experiment: what prepare() would gain by starting its forkserver first, with the
        # pipeline's imports preloaded (workers fork with numpy/pyarrow/tokenizers imported),
        # so that those imports overlap the main process's resolve()
        import multiprocessing as mp
        from multiprocessing import forkserver

        mp.get_context("forkserver").set_forkserver_preload(list(spec["preload"]))
        forkserver.ensure_running()
    man = prepare(
        spec["files"],
        spec["out"],
        cfg,
        tokenizer=spec.get("tokenizer"),
        workers=int(spec["workers"]),
        overwrite=True,
        progress=False,
    )
    wall = time.perf_counter() - t0
    _stop_forkserver()
    hwm, wcpu = sampler.stop()
    cpu = _cpu_now() - cpu0 - sampler.own_cpu
    main_cpu = _cpu_self() - self0 - sampler.own_cpu
    # CPU critical path: what the run would take on an idle machine with >= N free cores
    # (main process + forkserver serially, workers in parallel; I/O waits not counted)
    crit = cpu if not wcpu else cpu - sum(wcpu) + max(wcpu)
    tot = man["totals"]
    return {
        "wall": wall,
        "cpu": cpu,
        "tokens": tot.get("tokens", 0),
        "docs": tot.get("docs", 0),
        "rows": tot.get("rows", 0),
        "files": tot.get("files", len(spec["files"])),
        "rss_before_kb": rss_before,
        "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        # max over the forkserver and everything it reaped (the pool's workers); 0 in-process
        "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "worker_hwm_kb": hwm,
        "worker_cpu": wcpu,
        "main_cpu": main_cpu,
        "crit": crit,
    }


def child_tree(spec: dict[str, Any]) -> dict[str, Any]:
    """``denoise prepare`` as a user runs it (``command.main``: how it ends the process is part of
    what is measured) and nothing else: the parent (a subreaper) measures the CPU of this
    process and of every process under it (workers; a forkserver and the resource tracker where
    the pool starts from one). The result line is printed by an ``atexit`` handler, since the
    command ends the process."""
    import atexit

    try:  # as the `denoise` console script does before anything loads numpy
        from denoise_cli.command import single_threaded_blas
    except ImportError:  # a --baseline revision from before denoise_cli.command
        pass
    else:
        single_threaded_blas()
    timing = spec.get("encode_dir")
    if timing:
        # encode_batch_fast timed inside prepare's own processes (this one, and the pool's
        # workers); its build is not counted
        import denoise_cli.engines.local as local

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        os.environ["BENCH_ENCODE_DIR"] = timing
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
        )
        import encode_timer  # noqa: F401

        plain: Any = local._mp_context

        # (forked workers have it from this process; a forkserver imports it as a preload;
        # a --baseline revision from before the start-method choice passes no method)
        def with_timer(*args: Any) -> Any:
            return plain(*args[:-1], [*args[-1], "encode_timer"])

        local._mp_context = with_timer  # type: ignore[assignment]

    def report() -> None:
        from denoise_cli.output.manifest import read_manifest

        tot = read_manifest(Path(spec["out"]))["totals"]
        res = {"tokens": tot.get("tokens", 0), "docs": tot.get("docs", 0)}
        if timing:
            from encode_timer import read_totals

            res["encode_cpu"], res["encode_tokens"] = read_totals(timing)
        print(RESULT + json.dumps(res), flush=True)

    atexit.register(report)
    sys.argv = ["denoise", "prepare", "--mixture", spec["mixture"], *spec["files"], spec["out"]]
    sys.argv += ["--inputs-length", "512", "--targets-length", "512", "--overwrite", "-q"]
    sys.argv += ["--workers", str(spec["workers"])]
    if spec.get("tokenizer"):
        sys.argv += ["--tokenizer", spec["tokenizer"]]
    if spec.get("backend"):
        sys.argv += ["--tokenizer-backend", spec["backend"]]
    from denoise_cli.cli import main

    main()
    raise AssertionError("denoise's main() returned")


class _TimedTok:
    """Proxy for the Encoder's tokenizer that times ``encode_batch_fast``."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.wall = 0.0
        self.cpu = 0.0

    def encode_batch_fast(self, *a: Any, **k: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        r = self._tok.encode_batch_fast(*a, **k)
        self.wall += time.perf_counter() - t
        self.cpu += time.process_time() - c
        return r

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


def child_stages(spec: dict[str, Any]) -> dict[str, Any]:
    """``prepare(workers=1)`` on one file, in-process, with the stage functions that
    ``pipeline.process_file`` calls wrapped by timers (wall and CPU). The wrappers replace the
    names in ``denoise_cli.pipeline``'s namespace in this child only, so the real, current
    ``process_file`` runs unchanged; a stage whose name is gone is reported as missing."""
    import tokenizers

    import denoise_cli.prepare.run as P
    from denoise_cli.source.tokenize import load_tokenizer_json

    wall: dict[str, float] = {}
    cpus: dict[str, float] = {}
    clk, cpu = time.perf_counter, time.process_time
    missing: list[str] = []

    def acc(key: str, w0: float, c0: float) -> None:
        wall[key] = wall.get(key, 0.0) + clk() - w0
        cpus[key] = cpus.get(key, 0.0) + cpu() - c0

    inside = [0]  # > 0 while process_file runs

    def timed_fn(key: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            w, c = clk(), cpu()
            try:
                return fn(*a, **k)
            finally:
                acc(key if key != "state" or inside[0] else "outside_io", w, c)

        return wrapper

    def timed_process_file(fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            inside[0] += 1
            try:
                return timed_fn("process_file", fn)(*a, **k)
            finally:
                inside[0] -= 1

        return wrapper

    def timed_gen(key: str, gen: Any) -> Any:
        while True:
            w, c = clk(), cpu()
            try:
                x = next(gen)
            except StopIteration:
                acc(key, w, c)
                return
            acc(key, w, c)
            yield x

    def patch(name: str, make: Any) -> None:
        if hasattr(P, name):
            setattr(P, name, make(getattr(P, name)))
        else:
            missing.append(name)

    encoders: list[Any] = []

    def make_encoder(Base: Any) -> Any:
        class TimedEncoder(Base):  # type: ignore[misc]
            def __init__(self, *a: Any, **k: Any) -> None:
                super().__init__(*a, **k)
                encoders.append(self)

            @property
            def tokenizer(self) -> Any:
                if not isinstance(getattr(self, "_tok", None), _TimedTok):
                    w, c = clk(), cpu()
                    real = Base.tokenizer.fget(self)
                    acc("tokenizer_load", w, c)
                    self._tok = _TimedTok(real)
                return self._tok

            def encode(self, texts: Any) -> Any:
                tok = self.tokenizer  # its one-time load is counted apart
                w, c, rw, rc = clk(), cpu(), tok.wall, tok.cpu
                try:
                    return super().encode(texts)
                finally:
                    acc("encode_post", w, c)
                    wall["encode_post"] -= tok.wall - rw
                    cpus["encode_post"] -= tok.cpu - rc
                    wall["encode_rust"] = wall.get("encode_rust", 0.0) + tok.wall - rw
                    cpus["encode_rust"] = cpus.get("encode_rust", 0.0) + tok.cpu - rc

        return TimedEncoder

    def make_packer(Base: Any) -> Any:
        class TimedPacker(Base):  # type: ignore[misc]
            def push(self, tokens: Any) -> Any:
                return timed_gen("pack", super().push(tokens))

            def finish(self) -> Any:
                w, c = clk(), cpu()
                try:
                    return super().finish()
                finally:
                    acc("pack", w, c)

        return TimedPacker

    def make_writer(Base: Any) -> Any:
        class TimedWriter(Base):  # type: ignore[misc]
            def __init__(self, *a: Any, **k: Any) -> None:
                w, c = clk(), cpu()
                super().__init__(*a, **k)
                acc("write", w, c)

            def write(self, batch: Any) -> None:
                w, c = clk(), cpu()
                super().write(batch)
                acc("write", w, c)

            def commit(self) -> Any:
                w, c = clk(), cpu()
                try:
                    return super().commit()
                finally:
                    acc("commit", w, c)

        return TimedWriter

    patch("resolve", lambda f: timed_fn("resolve", f))
    patch("process_file", timed_process_file)
    patch("iter_batches", lambda f: lambda *a, **k: timed_gen("read", f(*a, **k)))
    patch("Encoder", make_encoder)
    patch("join_documents", lambda f: timed_fn("join", f))
    patch("Chunker", make_packer)
    patch("corrupt_mixture", lambda f: timed_fn("corrupt", f))
    patch("record_batch", lambda f: timed_fn("arrow", f))
    patch("ShardWriter", make_writer)
    patch("atomic_save_npy", lambda f: timed_fn("state", f))
    patch("atomic_write_bytes", lambda f: timed_fn("state", f))

    cfg = _cfg(spec["mixture"])
    w0, c0 = clk(), cpu()
    man = P.prepare(
        [spec["file"]],
        spec["out"],
        cfg,
        tokenizer=spec.get("tokenizer"),
        workers=1,
        overwrite=True,
        progress=False,
    )
    total, total_cpu = clk() - w0, cpu() - c0
    if not encoders:
        missing.append("Encoder (not constructed through denoise_cli.pipeline.Encoder)")

    # Tokenizer alone, CPU seconds, on a few batches, alternating the order batch by batch: the
    # bare GPT-2 tokenizer (no added tokens, default flags) vs the pipeline's extended tokenizer
    # (added special tokens, encode_special_tokens=True).
    from denoise_cli.source.discover import find_inputs
    from denoise_cli.source.read import FileStats, iter_batches

    nb = int(spec.get("compare_batches", 3))
    sub = []
    for bt in iter_batches(find_inputs([spec["file"]])[0], stats=FileStats()):
        if bt.texts:
            sub.append(bt.texts)
        if len(sub) >= nb:
            break
    bare = tokenizers.Tokenizer.from_str(load_tokenizer_json(spec.get("tokenizer"))[0])
    ext = encoders[0].tokenizer._tok if encoders else None
    cmp_t = {"bare": 0.0, "ext": 0.0}
    cmp_n = {"bare": 0, "ext": 0}
    if ext is not None:
        for i, b in enumerate(sub * 2):
            for name in ("bare", "ext") if i % 2 == 0 else ("ext", "bare"):
                t = bare if name == "bare" else ext
                c1 = cpu()
                n = sum(map(len, t.encode_batch_fast(b, add_special_tokens=False)))
                cmp_t[name] += cpu() - c1
                cmp_n[name] += n
    tot = man["totals"]
    return {
        "wall": wall,
        "cpu": cpus,
        "total": total,
        "total_cpu": total_cpu,
        "tokens": tot.get("tokens", 0),
        "docs": tot.get("docs", 0),
        "missing": missing,
        "cmp_batches": len(sub),
        "cmp_cpu": cmp_t,
        "cmp_tokens": cmp_n,
    }


def child_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """cProfile of prepare(workers=1) on one file (optional, --profile): top functions by own time."""
    import cProfile
    import io
    import pstats

    from denoise_cli.prepare.run import prepare

    cfg = _cfg(spec["mixture"])
    pr = cProfile.Profile()
    pr.enable()
    prepare(
        [spec["file"]],
        spec["out"],
        cfg,
        tokenizer=spec.get("tokenizer"),
        workers=1,
        overwrite=True,
        progress=False,
    )
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
    return {"text": s.getvalue()}


CHILDREN = {
    "tree": child_tree,
    "bare": child_bare,
    "pipeline": child_pipeline,
    "stages": child_stages,
    "profile": child_profile,
}


# =========================================================================== parent


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER (Linux): orphaned descendants (a forkserver, its workers) are
    re-parented to this process, so reaping them adds their CPU to ``RUSAGE_CHILDREN``."""
    try:
        import ctypes

        return int(ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def run_tree(
    kind: str, spec: dict[str, Any], log: Path, pythonpath: str | None = None
) -> dict[str, Any]:
    """:func:`run_child`, plus ``tree_cpu``: CPU seconds of the child and of every process
    under it (this process must be a subreaper; the orphans are reaped here)."""
    before = _children_cpu()
    res = run_child(kind, spec, log, pythonpath)
    while True:  # re-parented descendants: they exit with the child (parent-death signals)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    res["tree_cpu"] = _children_cpu() - before
    return res


def run_child(
    kind: str, spec: dict[str, Any], log: Path, pythonpath: str | None = None
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; add its wait4 rusage. ``pythonpath``: where
    that interpreter imports ``denoise_cli`` from (another revision), else the environment's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)]
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    with open(log, "ab") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO, env=env)
        assert p.stdout is not None
        out = p.stdout.read().decode()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(
            f"child {kind} failed (exit {p.returncode}); see {log}:\n"
            + log.read_text(errors="replace")[-3000:]
        )
    line = next(x for x in reversed(out.splitlines()) if x.startswith(RESULT))
    res: dict[str, Any] = json.loads(line[len(RESULT) :])
    res["wait4_maxrss_kb"] = ru.ru_maxrss  # max over the child and all descendants it reaped
    res["wait4_cpu"] = ru.ru_utime + ru.ru_stime
    return res


def _decompress(src: str) -> bytes:
    if not src.endswith(".zst"):
        import gzip

        return (
            gzip.decompress(Path(src).read_bytes())
            if src.endswith(".gz")
            else Path(src).read_bytes()
        )
    import zstandard

    with open(src, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def _write_zst(dst: Path, data: bytes) -> None:
    import zstandard

    dst.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))


def first_docs(src: str, dst: Path, docs: int) -> None:
    lines = _decompress(src).split(b"\n")[:docs]
    _write_zst(dst, b"\n".join(lines) + b"\n")


def fmt_rate(tok: float, sec: float) -> str:
    return f"{tok / sec / 1e3:,.0f}k"


def mb(kb: int) -> str:
    return f"{kb / 1024:,.0f} MB"


def verdict(ok: bool) -> str:
    return "MEETS" if ok else "MISSES"


def overhead_main(a: argparse.Namespace) -> None:
    """``--overhead``: per repeat, interleaved: the bare tokenizer (``encode_batch_fast`` on the
    pipeline's batches, in ``--bare-procs`` processes, encode CPU only), then ``prepare()`` of each revision
    (``--baseline`` first when given; ``--tokenizer-backend hf``: this measures the HF path, the
    one tokenizers without a fast engine take), each as the CPU of its whole process tree."""
    import statistics

    if not become_subreaper():
        sys.exit("--overhead needs PR_SET_CHILD_SUBREAPER (Linux)")
    inp = Path(a.input)
    shards = sorted(str(p) for p in inp.iterdir() if p.name.endswith(".jsonl.zst"))
    files = shards[: 1 if a.quick else (a.files or len(shards))]
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-", dir=a.tmp))
    log = tmp / "children.log"
    # HF tokenizers in prepare too: the overhead is against HF's own encode calls (a tokenizer
    # with a fast engine would otherwise leave the timer only the self-check's calls)
    base = {"mixture": a.mixture, "tokenizer": a.tokenizer, "backend": "hf"}
    revs = [("before", a.baseline)] if a.baseline else []
    revs.append(("after" if a.baseline else "this", None))
    print(
        f"input: {len(files)} file(s) of {inp}; tokenizer {a.tokenizer or 'embedded GPT-2'}; "
        f"workers {a.workers}; repeats {a.repeats}; loadavg before "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    # as installed (pip compiles bytecode): cached .pyc files, written by one untimed warm-up
    # run per revision (PYTHONDONTWRITEBYTECODE would have every run compile denoise_cli anew)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = tmp / "warm"
    warm.mkdir()
    first_docs(files[0], warm / "w.jsonl.zst", 3)
    for _, path in revs:
        spec = {**base, "files": [str(warm / "w.jsonl.zst")], "workers": 1, "out": str(tmp / "w")}
        run_tree("tree", spec, log, path)
        shutil.rmtree(tmp / "w", ignore_errors=True)
    rows: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for rep in range(a.repeats):
        # as many bare processes as prepare has workers, each on whole files: two processes on
        # this machine's two vCPUs each encode ~5-15% slower than one alone, and the bare
        # baseline should pay that too (--bare-procs 1: the baseline of the figures before
        # 2026-12-01 22:00 UTC)
        procs = a.bare_procs or a.workers
        bare = run_tree("bare", {**base, "files": files, "procs": procs}, log)
        row = {"bare": float(bare["cpu"])}
        for name, path in revs:
            out = str(tmp / f"out-{name}")
            enc = tmp / f"encode-{name}-{rep}"
            enc.mkdir()
            spec = {**base, "files": files, "workers": a.workers, "out": out}
            r = run_tree("tree", {**spec, "encode_dir": str(enc)}, log, path)
            shutil.rmtree(out, ignore_errors=True)
            row[name] = float(r["tree_cpu"])
            row[name + "_encode"] = float(r["encode_cpu"])
            row[name + "_tokens"] = float(r["tokens"])  # documents' tokens + one EOS each
        rows.append(row)
        print(
            f"[{time.perf_counter() - t0:5.0f}s] repeat {rep + 1}: bare encode ({procs} proc.) "
            f"{row['bare']:.2f} CPU-s; "
            + "; ".join(
                f"prepare {n} {row[n]:.2f} CPU-s = bare + {row[n] / row['bare'] - 1:.1%}, "
                f"= its own encode_batch_fast {row[n + '_encode']:.2f} + "
                f"{row[n] / row[n + '_encode'] - 1:.1%}"
                for n, _ in revs
            ),
            flush=True,
        )
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"(tokens: bare {bare['tokens']:,} from encode_batch_fast; prepare's manifest "
        + ", ".join(f"{n} {int(rows[-1][n + '_tokens']):,}" for n, _ in revs)
        + f" (+1 EOS per document: {int(rows[-1][revs[-1][0] + '_tokens']) - bare['tokens']:,}))"
    )
    print(
        f"\nprepare's own overhead (process-tree CPU / bare encode CPU - 1), median of "
        f"{len(rows)}; {bare['tokens']:,} document tokens; loadavg after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    for n, _ in revs:
        ratios = [r[n] / r["bare"] - 1 for r in rows]
        each = ", ".join(f"{x:.1%}" for x in ratios)
        print(
            f"  {n:7s} vs the bare process      {statistics.median(ratios):7.1%}   (per repeat: {each})"
        )
        ratios = [r[n] / r[n + "_encode"] - 1 for r in rows]
        each = ", ".join(f"{x:.1%}" for x in ratios)
        print(
            f"  {n:7s} vs its own encode calls  {statistics.median(ratios):7.1%}   (per repeat: {each})"
        )
    print(
        "  (vs the bare process: another process's encode CPU, so load changes between the runs "
        "move it;\n   vs its own encode calls: encode_batch_fast timed inside the same run's "
        "processes, the same documents and batches)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--input",
        default=str(DEFAULT_INPUT),
        help="directory of .jsonl.zst shards (default: %(default)s)",
    )
    ap.add_argument("--files", type=int, default=0, help="use the first K shards (0 = all)")
    ap.add_argument(
        "--bare-procs",
        type=int,
        default=0,
        help="with --overhead: processes of the bare tokenizer run (default: --workers)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="N for the parallel runs (default: cores = %(default)s)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="repeat the timed runs (interleaved) and keep each one's fastest wall",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 shard, no scaling section (parallelism is one file per task)",
    )
    ap.add_argument("--mixture", default="ul2")
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="as `denoise prepare --tokenizer` (default: embedded GPT-2)",
    )
    ap.add_argument("--no-rss", action="store_true", help="skip the 1-shard / 4x-shard RSS runs")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown")
    ap.add_argument(
        "--profile", action="store_true", help="also cProfile process_file on one shard"
    )
    ap.add_argument("--tmp", default=None, help="scratch directory (default: system temp)")
    ap.add_argument(
        "--json", default=None, metavar="PATH", help="also write every run's raw figures here"
    )
    ap.add_argument(
        "--overhead",
        action="store_true",
        help="only the pipeline's overhead: CPU of the whole process tree of prepare() over "
        "the bare tokenizer's encode CPU on the same documents, interleaved per repeat",
    )
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="DIR",
        help="with --overhead: also run prepare() from the denoise_cli under DIR (PYTHONPATH)",
    )
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        res = CHILDREN[a.child[0]](json.loads(a.child[1]))
        print(RESULT + json.dumps(res), flush=True)
        return
    if a.overhead:
        overhead_main(a)
        return

    inp = Path(a.input)
    shards = sorted(
        str(p)
        for p in inp.iterdir()
        if p.name.endswith((".jsonl.zst", ".json.zst", ".jsonl", ".jsonl.gz"))
    )
    if not shards:
        sys.exit(f"no shards in {inp}")
    k = 1 if a.quick else (a.files or len(shards))
    files = shards[:k]
    n = max(1, a.workers)
    scaling = not a.quick and len(files) >= 2 and n >= 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir=a.tmp))
    log = tmp / "children.log"
    base = {"mixture": a.mixture, "tokenizer": a.tokenizer}
    t_start = time.perf_counter()

    def outdir(tag: str) -> str:
        return str(tmp / f"out-{tag}")

    def pipe(tag: str, fs: list[str], w: int, **extra: Any) -> dict[str, Any]:
        r = run_child(
            "pipeline", {**base, **extra, "files": fs, "workers": w, "out": outdir(tag)}, log
        )
        shutil.rmtree(outdir(tag), ignore_errors=True)
        return r

    def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
        r = dict(min(runs, key=lambda x: x["wall"]))
        r["walls"] = [x["wall"] for x in runs]
        r["crit_best"] = min(x["crit"] for x in runs)
        return r

    print(
        f"input: {inp} ({len(files)} of {len(shards)} shards, "
        f"{sum(os.path.getsize(f) for f in files) / 2**20:.1f} MiB compressed); N = {n}; "
        f"repeats = {a.repeats}; cores = {os.cpu_count()}; loadavg before = "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )

    # ---- 1-3: timed runs, interleaved so that load changes hit all of them alike
    runs: dict[str, list[dict[str, Any]]] = {"bareN": [], "pipeN": [], "bare1": [], "pipe1": []}
    for rep in range(a.repeats):
        print(f"[{time.perf_counter() - t_start:5.0f}s] repeat {rep + 1}: bare x{n}", flush=True)
        runs["bareN"].append(run_child("bare", {**base, "files": files, "procs": n}, log))
        print(
            f"[{time.perf_counter() - t_start:5.0f}s] repeat {rep + 1}: pipeline x{n}", flush=True
        )
        runs["pipeN"].append(pipe(f"N{rep}", files, n))
        if scaling:
            print(f"[{time.perf_counter() - t_start:5.0f}s] repeat {rep + 1}: bare x1", flush=True)
            runs["bare1"].append(run_child("bare", {**base, "files": files, "procs": 1}, log))
            print(
                f"[{time.perf_counter() - t_start:5.0f}s] repeat {rep + 1}: pipeline x1", flush=True
            )
            runs["pipe1"].append(pipe(f"1-{rep}", files, 1))
    bN, pN = best(runs["bareN"]), best(runs["pipeN"])
    b1 = best(runs["bare1"]) if scaling else None
    p1 = best(runs["pipe1"]) if scaling else None

    # ---- fixed cost of a run: the same pipeline on files of one document each
    tiny_dir = tmp / "tiny"
    tiny_dir.mkdir()
    tiny = []
    for i in range(max(n, 1)):
        dst = tiny_dir / f"tiny{i:02d}.jsonl.zst"
        first_docs(files[i % len(files)], dst, 1)
        tiny.append(str(dst))
    print(
        f"[{time.perf_counter() - t_start:5.0f}s] fixed cost: {n} one-doc files, workers={n} and 1",
        flush=True,
    )
    fixN = pipe("fixN", tiny, n)
    fix1 = pipe("fix1", tiny[:1], 1)
    fixP = None
    if n > 1:
        fixP = pipe("fixP", tiny, n, preload=["denoise_cli.pipeline"])

    # ---- 4: memory
    rss: dict[str, dict[str, Any]] = {}
    xdocs = 0
    if not a.no_rss:
        # X = shard 0 (with --quick: its first quarter); 4X = X concatenated 4 times in one file
        # (4x the documents, rows and parts of the stream in one worker). The scaling run's
        # 1-worker pass over all shards adds "several files in one worker".
        lines = _decompress(files[0]).rstrip(b"\n").split(b"\n")
        xdocs = max(1, len(lines) // 4) if a.quick else len(lines)
        x = b"\n".join(lines[:xdocs]) + b"\n"
        rdir = tmp / "rss"
        rdir.mkdir()
        _write_zst(rdir / "x1.jsonl.zst", x)
        _write_zst(rdir / "x4cat.jsonl.zst", x * 4)
        print(f"[{time.perf_counter() - t_start:5.0f}s] rss: X, 1 worker", flush=True)
        rss["x1"] = pipe("rss1", [str(rdir / "x1.jsonl.zst")], 1)
        print(
            f"[{time.perf_counter() - t_start:5.0f}s] rss: X x4 in one file, 1 worker", flush=True
        )
        rss["x4cat"] = pipe("rss4c", [str(rdir / "x4cat.jsonl.zst")], 1)
        if p1 is not None:
            rss["all"] = p1

    # ---- 5: stages
    st = None
    if not a.no_stages:
        print(f"[{time.perf_counter() - t_start:5.0f}s] stages: {Path(files[0]).name}", flush=True)
        st = run_child("stages", {**base, "file": files[0], "out": outdir("stages")}, log)
        shutil.rmtree(outdir("stages"), ignore_errors=True)
    prof = None
    if a.profile:
        prof = run_child("profile", {**base, "file": files[0], "out": outdir("prof")}, log)
        shutil.rmtree(outdir("prof"), ignore_errors=True)
    elapsed = time.perf_counter() - t_start
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        raw = {
            "runs": runs,
            "fixed": {"pool": fixN, "in_process": fix1, "preload": fixP},
            "rss": rss,
            "stages": st,
            "files": files,
            "workers": n,
            "elapsed": elapsed,
        }
        Path(a.json).write_text(json.dumps(raw, indent=1))

    # ================================================================ report
    W = 78
    print()
    print("=" * W)
    print(
        f"denoise prepare benchmark  (mixture {a.mixture}, encoder-decoder I=T=512, "
        f"tokenizer {a.tokenizer or 'embedded GPT-2'})"
    )
    print(
        f"{len(files)} shard(s), {pN['docs']:,} docs, {pN['tokens']:,} tokens (manifest), "
        f"N = {n} processes, best of {a.repeats}; total {elapsed:.0f} s; "
        f"loadavg after {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("=" * W)

    def walls(r: dict[str, Any]) -> str:
        return "/".join(f"{w:.1f}" for w in r["walls"])

    def share(r: dict[str, Any], procs: int) -> float:
        return float(r["cpu"]) / (procs * float(r["wall"]))

    def row(label: str, r: dict[str, Any], procs: int) -> str:
        return (
            f"  {label:30s}{r['wall']:8.2f}{fmt_rate(r['tokens'], r['wall']):>8s}"
            f"{share(r, procs):8.0%}{r['cpu']:8.1f}{fmt_rate(r['tokens'], r['cpu']):>9s}"
            f"{r['crit_best']:8.2f}   walls {walls(r)}"
        )

    nb = min(n, len(files))  # processes that get a file
    busy = min([share(bN, nb), *(share(b, 1) for b in runs["bare1"])])
    print(
        f"\n1-2) throughput, same texts, N = {n}   wall s   tok/s  CPU/N*wall  CPU-s tok/CPU-s  crit s"
    )
    print(row(f"bare encode_batch_fast x{n}", bN, nb))
    print(row(f"pipeline.prepare workers={n}", pN, nb))
    paired = [b["wall"] / q["wall"] for b, q in zip(runs["bareN"], runs["pipeN"], strict=True)]
    ratio = bN["wall"] / pN["wall"]
    ratio_crit = bN["crit_best"] / pN["crit_best"]
    ratio_cpu = (pN["tokens"] / pN["cpu"]) / (bN["tokens"] / bN["cpu"])
    print(
        f"  pipeline / bare, measured walls (best of each):  {ratio:6.1%}   target >= "
        f"{TARGET_RATIO:.0%}: {verdict(ratio >= TARGET_RATIO)}   (per repeat: "
        f"{', '.join(f'{x:.1%}' for x in paired)})"
    )
    print(
        f"  pipeline / bare, CPU critical path:             {ratio_crit:6.1%}   target >= "
        f"{TARGET_RATIO:.0%}: {verdict(ratio_crit >= TARGET_RATIO)}"
    )
    print(f"  pipeline / bare, tokens per CPU-second:         {ratio_cpu:6.1%}")
    pool = n > 1 and len(files) > 1  # else prepare() runs the file(s) in-process
    fx = fixN if pool else fix1
    print(
        f"  fixed cost of a run (same pipeline on one-doc files): workers={n} pool "
        f"{fixN['wall']:.2f} s wall / {fixN['crit']:.2f} s crit / {fixN['cpu']:.2f} CPU-s;\n"
        f"    workers=1 in-process {fix1['wall']:.2f} s / {fix1['crit']:.2f} s / {fix1['cpu']:.2f} CPU-s; "
        f"the {'pool' if pool else 'in-process'} one is {fx['crit'] / pN['crit_best']:.1%} of the "
        f"pipeline's crit above"
    )
    if fixP is not None:
        print(
            f"  experiment, pool on one-doc files, forkserver started first with denoise_cli.pipeline "
            f"preloaded:\n    {fixP['wall']:.2f} s wall / {fixP['cpu']:.2f} CPU-s, workers' CPU "
            f"{'+'.join(f'{c:.2f}' for c in fixP['worker_cpu'])} (as is: {fixN['wall']:.2f} / "
            f"{fixN['cpu']:.2f}, workers {'+'.join(f'{c:.2f}' for c in fixN['worker_cpu'])}; crit does "
            f"not apply: the forkserver overlaps resolve)"
        )
    steady = bN["crit_best"] / max(pN["crit_best"] - fx["crit"], 1e-9)
    steady_cpu = (pN["tokens"] / max(pN["cpu"] - fx["cpu"], 1e-9)) / (bN["tokens"] / bN["cpu"])
    print(
        f"  pipeline / bare without the fixed cost (per-token overhead only): crit {steady:6.1%}, "
        f"per CPU-second {steady_cpu:6.1%}"
    )
    print(
        f"  (bare tokens {bN['tokens']:,} = document tokens; the manifest adds one EOS per doc: "
        f"+{pN['tokens'] - bN['tokens']:,})"
    )

    if scaling:
        assert b1 is not None and p1 is not None
        sp, sb = p1["wall"] / pN["wall"], b1["wall"] / bN["wall"]
        cp, cb = p1["crit_best"] / pN["crit_best"], b1["crit_best"] / bN["crit_best"]
        print(
            f"\n3) scaling 1 -> {n} workers ({len(files)} files)   wall x1   wall x{n}  speed-up"
            f"   crit x1   crit x{n}  speed-up"
        )
        print(
            f"  pipeline.prepare             {p1['wall']:9.2f}{pN['wall']:9.2f}{sp:9.2f}x"
            f"{p1['crit_best']:10.2f}{pN['crit_best']:9.2f}{cp:9.2f}x"
        )
        print(
            f"  bare tokenizer (ceiling)     {b1['wall']:9.2f}{bN['wall']:9.2f}{sb:9.2f}x"
            f"{b1['crit_best']:10.2f}{bN['crit_best']:9.2f}{cb:9.2f}x"
        )
        print(
            f"  target >= {TARGET_SCALING}x: measured walls {verdict(sp >= TARGET_SCALING)}, "
            f"CPU critical path {verdict(cp >= TARGET_SCALING)}; pipeline/bare speed-up "
            f"{sp / sb:.1%} (walls), {cp / cb:.1%} (crit)"
        )
        print(
            f"  (x1 walls: pipeline {walls(p1)}, bare {walls(b1)}; one process, pipeline / bare: "
            f"wall {b1['wall'] / p1['wall']:.1%}, crit {b1['crit_best'] / p1['crit_best']:.1%})"
        )
    else:
        print(
            "\n3) scaling: skipped (needs >= 2 files and N >= 2; the pipeline parallelises per file)"
        )
    print(
        f"\n  machine check: the bare runs got {busy:.0%} of the cores they asked for (CPU-s / "
        f"(procs x wall), worst run); "
        + (
            "walls are usable."
            if busy >= 0.9
            else "OTHER LOAD INFLATED THE WALLS: judge by the CPU critical path (crit)."
        )
    )
    print(
        "  crit = CPU critical path: main process + forkserver CPU, plus the busiest worker's CPU "
        "(bare: the\n  busiest process's encoding CPU) = the wall on an idle machine, I/O waits "
        "aside."
    )
    rates = [f"x{n} {fmt_rate(bN['tokens'], bN['cpu'])}"]
    if b1 is not None:
        rates.append(f"x1 {fmt_rate(b1['tokens'], b1['cpu'])}")
    if st and st["cmp_cpu"]["bare"] > 0:
        rates.append(f"section 5 {fmt_rate(st['cmp_tokens']['bare'], st['cmp_cpu']['bare'])}")
    print(
        f"  CPU time is not load-proof either (SMT siblings, caches): bare tokenizer tokens per "
        f"CPU-second in\n  this run's processes: {', '.join(rates)}. Spread here = noise of "
        f"the cross-run ratios above;\n  section 5 compares stages inside one process and is "
        f"the precise one."
    )

    if rss:
        x1 = rss["x1"]["wait4_maxrss_kb"]
        print(
            "\n4) peak RSS of a worker; workers=1 runs in-process, so it is the child's exact "
            "peak (wait4 ru_maxrss)"
        )
        print(f"  {'input':50s}{'tokens':>12s}{'peak RSS':>11s}{'vs X':>8s}")
        xname = (
            f"X   = {'first ' + str(xdocs) + ' docs of ' if a.quick else ''}{Path(files[0]).name}"
        )
        print(f"  {xname:50s}{rss['x1']['tokens']:>12,}{mb(x1):>11s}{'1.00x':>8s}")
        growth = []
        for key, label in (
            ("x4cat", "4X  = X concatenated 4 times, one file"),
            ("all", f"all {len(files)} shards, one worker (run of section 3)"),
        ):
            if key in rss:
                v = rss[key]["wait4_maxrss_kb"]
                growth.append(v / x1)
                print(f"  {label:50s}{rss[key]['tokens']:>12,}{mb(v):>11s}{v / x1:>7.2f}x")
        print(
            f"  (of which before prepare() starts, after imports: {mb(rss['x1']['rss_before_kb'])})"
        )
        g = max(growth) if growth else 1.0
        print(
            f"  target flat (every larger input <= {TARGET_RSS_GROWTH:.2f} x X): "
            f"{verdict(g <= TARGET_RSS_GROWTH)}"
        )
    if pN["worker_hwm_kb"] or pN["children_maxrss_kb"]:
        hw = ", ".join(mb(v) for v in pN["worker_hwm_kb"])
        print(
            f"  pool run of section 2 (workers={n}, {pN['files']} files): VmHWM sampled per pool "
            f"process [{hw}];\n  exact max over the forkserver and its reaped workers "
            f"{mb(pN['children_maxrss_kb'])}; main process {mb(pN['self_maxrss_kb'])}"
        )

    if st:
        tm, tc = st["wall"], st["cpu"]
        tot, totc = st["total"], st["total_cpu"]
        pf, pfc = tm.get("process_file", tot), tc.get("process_file", totc)
        print(
            f"\n5) one worker, one file ({Path(files[0]).name}: {st['docs']:,} docs, {st['tokens']:,} tokens):"
            f"\n   prepare(workers=1) in-process, the functions process_file calls wrapped by timers"
        )
        labels = [
            ("read", "read+parse: zstd, lines, orjson     read.iter_batches"),
            ("encode_rust", "tokenize: encode_batch_fast (Rust)  Encoder.encode"),
            ("encode_post", "tokenize: Encodings -> int32, isin  Encoder.encode"),
            ("join", "join documents (+EOS)               pack.join_documents"),
            ("pack", "pack into groups                    Chunker.push/finish"),
            ("corrupt", "corrupt: masks, rows                corrupt.corrupt_mixture"),
            ("arrow", "Arrow record batch                  write.record_batch"),
            ("write", "IPC stream write + sha256           ShardWriter.write"),
            ("commit", "shard commit: fsync, rename         ShardWriter.commit"),
            ("state", "checkpoints: part records, carry    atomic_write_bytes/_npy"),
        ]
        print(
            f"  {'stage (share of process_file)':60s}{'wall s':>7s}{'share':>7s}{'CPU s':>7s}{'share':>7s}"
        )
        inner_w = inner_c = 0.0
        for key, lab in labels:
            w, c = tm.get(key, 0.0), tc.get(key, 0.0)
            inner_w += w
            inner_c += c
            print(f"  {lab:60s}{w:7.2f}{w / pf:7.1%}{c:7.2f}{c / pfc:7.1%}")
        w, c = tm.get("tokenizer_load", 0.0), tc.get("tokenizer_load", 0.0)
        inner_w += w
        inner_c += c
        print(
            f"  {'tokenizer from_str (once per worker)  Encoder.tokenizer':60s}{w:7.2f}{w / pf:7.1%}{c:7.2f}{c / pfc:7.1%}"
        )
        ow, oc = pf - inner_w, pfc - inner_c
        print(f"  {'(rest of process_file)':60s}{ow:7.2f}{ow / pf:7.1%}{oc:7.2f}{oc / pfc:7.1%}")
        print(f"  {'process_file total':60s}{pf:7.2f}{1:7.1%}{pfc:7.2f}{1:7.1%}")
        er, erc = tm.get("encode_rust", 0.0), tc.get("encode_rust", 0.0)
        print(
            f"  everything besides encode_batch_fast: {1 - er / pf:.1%} of process_file's wall, "
            f"{1 - erc / pfc:.1%} of its CPU"
        )
        print(
            f"  => a worker's throughput relative to the bare tokenizer (same process, same batches): "
            f"{erc / pfc:.1%} by CPU\n     (target >= {TARGET_RATIO:.0%}: {verdict(erc / pfc >= TARGET_RATIO)}); "
            f"plus, per run, the pool's fixed cost of section 2"
        )
        rw = tm.get("resolve", 0.0)
        oi = tm.get("outside_io", 0.0)
        print(
            f"  around it in prepare(): resolve (load + extend the tokenizer) {rw:.2f} s; atomic "
            f"writes (tokenizer.json, manifest, ...) {oi:.2f} s; the rest {tot - pf - rw - oi:.2f} s;"
            f"\n  prepare total {tot:.2f} s wall, {totc:.2f} CPU-s"
        )
        if st["missing"]:
            print(
                f"  NOT instrumented (name not found in denoise_cli.pipeline): {', '.join(st['missing'])}"
            )
        cb, ce = st["cmp_cpu"]["bare"], st["cmp_cpu"]["ext"]
        if cb > 0:
            same = st["cmp_tokens"]["bare"] == st["cmp_tokens"]["ext"]
            print(
                f"  encode_batch_fast alone, {st['cmp_batches']} batches x2, order alternated, CPU s: "
                f"bare GPT-2 {cb:.2f} vs the pipeline's extended tokenizer (added specials, "
                f"encode_special_tokens) {ce:.2f} -> {ce / cb:.3f}x"
                f"{'' if same else ' (token counts DIFFER)'}"
            )
    if prof:
        print("\ncProfile of process_file (top 15 by own time):")
        print(prof["text"])


if __name__ == "__main__":
    main()

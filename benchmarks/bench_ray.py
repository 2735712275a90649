#!/usr/bin/env python
"""``prepare --engine ray`` on a local 2-CPU Ray cluster against ``--engine local --workers 2``.

Same input, same config (mixture ul2, encoder-decoder I=T=512, embedded GPT-2 tokenizer), same
machine, one invocation; runs are interleaved A B B A so that load drifting on a shared machine
hits both engines alike:

1. local engine, 2 workers (no Ray processes running)
2. start a local Ray instance (2 CPUs, no dashboard, on 127.0.0.1); its start-up time is
   printed but not counted: a cluster is started once and serves many jobs
3. ray engine, cold (Ray starts its worker processes during this run)
4. ray engine, warm (worker processes reused)
5. shut Ray down; local engine again

Each run is ``pipeline.prepare`` end to end (tokenizer build, workers, fsync'ed shards,
manifest) into a fresh directory. Throughput = input tokens / wall seconds, and input tokens /
CPU seconds of the whole process tree (driver + pool workers, or driver + every Ray process:
gcs, raylet, agents, workers, the progress actor), which is what to read on a machine that
other jobs share (wall time there mostly measures the neighbours). The ray outputs are checked
byte for byte against the local output. Overhead = 1 - ray/local throughput, from the best run
of each engine (the least disturbed) and from the means, by wall and by CPU; target < 15%.

Usage (from the repository root; needs ``pip install -e '.[ray]'``)::

    python benchmarks/bench_ray.py                 # ../shared/corpus/en-prose
    python benchmarks/bench_ray.py PATH... [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

# Ray binds the host's address unless this is set before it is imported; keep it on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO.parent / "shared" / "corpus" / "en-prose"
TARGET_OVERHEAD = 0.15
WORKERS = 2


class Run(NamedTuple):
    engine: str
    wall: float
    cpu: float
    tokens: int

    def rate(self, by: str) -> float:
        return self.tokens / (self.wall if by == "wall" else self.cpu)


def _cfg() -> Any:
    from denoise_cli.config import Lengths, PrepareConfig, load_mixture

    return PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 512, 512))


def _digest(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


class TreeCPU:
    """CPU seconds (user + system) used by this process and all its descendants while running:
    pool workers, or Ray's gcs/raylet/agents/workers (all children of the driver when it
    starts the local instance). /proc is sampled every ``interval`` s; a process that exits
    loses at most its last interval."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.seen: dict[tuple[int, int], int] = {}  # (pid, start time) -> last cpu ticks
        self.base: dict[tuple[int, int], int] = {}
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _scan() -> dict[tuple[int, int], int]:
        stats: dict[int, tuple[int, int, int]] = {}  # pid -> (ppid, start, ticks)
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]))
        tree, todo = set(), [os.getpid()]
        kids: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            kids.setdefault(ppid, []).append(pid)
        while todo:
            p = todo.pop()
            if p in stats and p not in tree:
                tree.add(p)
                todo += kids.get(p, [])
        return {(p, stats[p][1]): stats[p][2] for p in tree}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.seen.update(self._scan())

    def __enter__(self) -> TreeCPU:
        self.base = self._scan()
        self.seen = dict(self.base)
        self._th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._th.join()
        self.seen.update(self._scan())

    @property
    def seconds(self) -> float:
        ticks = sum(v - self.base.get(k, 0) for k, v in self.seen.items())
        return ticks / self.TICK


def _run(inputs: list[str], out: Path, engine: str) -> tuple[float, float, int]:
    """(wall seconds, cpu seconds of the process tree, input tokens)."""
    from denoise_cli.prepare.run import prepare

    shutil.rmtree(out, ignore_errors=True)
    with TreeCPU() as cpu:
        t0 = time.perf_counter()
        m = prepare(inputs, str(out), _cfg(), workers=WORKERS, progress=False, engine=engine)
        wall = time.perf_counter() - t0
    return wall, cpu.seconds, int(m["totals"]["tokens"])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("inputs", nargs="*", help=f"input files/dirs (default {DEFAULT_INPUT})")
    ap.add_argument("--rounds", type=int, default=1, help="A B B A rounds (default 1)")
    args = ap.parse_args()
    inputs = args.inputs or [str(DEFAULT_INPUT)]
    if not args.inputs and not DEFAULT_INPUT.exists():
        ap.error(f"{DEFAULT_INPUT} does not exist: pass input paths")
    try:
        import ray
    except ImportError:
        print("ray is not installed: pip install 'denoise-cli[ray]'", file=sys.stderr)
        return 2
    import numpy
    import tokenizers

    from denoise_cli.source.discover import find_inputs

    files = find_inputs(inputs)
    size = sum(f.size for f in files)
    print(
        f"# denoise ray engine benchmark: {len(files)} file(s), {size / 2**20:.1f} MiB compressed, "
        f"from {', '.join(inputs)}"
    )
    print(
        f"# mixture ul2, encoder-decoder I=T=512, GPT-2 tokenizer, {WORKERS} workers / {WORKERS} "
        f"Ray CPUs; {os.cpu_count()} cores"
    )
    print(
        f"# python {platform.python_version()}, ray {ray.__version__}, numpy {numpy.__version__}, "
        f"tokenizers {tokenizers.__version__}"
    )
    print(f"# load average (1 min) before: {os.getloadavg()[0]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    runs: list[Run] = []
    ref: dict[str, str] | None = None
    identical = True

    def record(engine: str, label: str) -> None:
        nonlocal ref, identical
        out = tmp / engine
        dt, cpu, tokens = _run(inputs, out, engine)
        runs.append(Run(engine, dt, cpu, tokens))
        d = _digest(out)
        if ref is None:
            ref = d
        elif d != ref:
            identical = False
        print(
            f"  {label:<26} {dt:7.2f} s wall {tokens / dt / 1e6:6.3f} M tok/s | {cpu:7.2f} s cpu "
            f"{tokens / cpu / 1e6:6.3f} M tok/cpu-s | load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    try:
        for r in range(args.rounds):
            record("local", f"[{r}] local, {WORKERS} workers")
            t0 = time.perf_counter()
            ray.init(
                num_cpus=WORKERS,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            print(
                f"  [{r}] ray.init (not counted)     {time.perf_counter() - t0:7.2f} s", flush=True
            )
            try:
                record("ray", f"[{r}] ray, cold workers")
                record("ray", f"[{r}] ray, warm workers")
            finally:
                ray.shutdown()
            record("local", f"[{r}] local, {WORKERS} workers")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def rates(engine: str, by: str) -> list[float]:
        return [run.rate(by) for run in runs if run.engine == engine]

    print()
    print("| engine | runs | best M tok/s (wall) | mean | best M tok/cpu-s | mean |")
    print("|---|---|---|---|---|---|")
    verdict = {}
    for what in ("wall", "cpu"):
        loc, ray_ = rates("local", what), rates("ray", what)
        verdict[what] = (
            1 - max(ray_) / max(loc),
            1 - (sum(ray_) / len(ray_)) / (sum(loc) / len(loc)),
        )
    for engine, name in (("local", f"local ({WORKERS} workers)"), ("ray", f"ray ({WORKERS} CPUs)")):
        cells = []
        for what in ("wall", "cpu"):
            v = rates(engine, what)
            cells += [f"{max(v) / 1e6:.3f}", f"{sum(v) / len(v) / 1e6:.3f}"]
        print(f"| {name} | {len(rates(engine, 'wall'))} | " + " | ".join(cells) + " |")
    print()
    for what, (best, mean) in verdict.items():
        ok = "MET" if best < TARGET_OVERHEAD else "NOT MET"
        print(
            f"ray overhead vs local by {what:<4}: {best:+6.1%} (best runs), {mean:+6.1%} (means); "
            f"target < {TARGET_OVERHEAD:.0%} -> {ok}"
        )
    print(f"outputs byte-identical across engines: {identical}")
    print(f"# load average (1 min) after: {os.getloadavg()[0]:.2f}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

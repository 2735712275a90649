"""Progress of ``denoise prepare``: files k/N, documents, tokens, tokens/s, rows written, ETA.

On a terminal: one tqdm bar (carriage-return frames) on stderr. Otherwise (Slurm logs, CI,
``| tee``): a plain line every ``interval`` seconds and one at the end, never a ``\\r``.

The fraction done counts input bytes, but a file's bytes are read ahead of its processing (the
reader decompresses whole blocks), so the bytes of unfinished files count at most
:data:`READ_AHEAD_CAP` of their size until the file is done: the bar and the ETA do not sit at
100% while the last documents are still being processed. Other lines (a library's warnings)
go through :meth:`Progress.note`, never into the bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: Share of an unfinished file's bytes the fraction done may credit (see the module doc).
READ_AHEAD_CAP = 0.8


def human(n: float) -> str:
    """1234567 -> '1.2M' (k, M, G, T; plain below 1000)."""
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def duration(s: float) -> str:
    """Seconds -> '45s', '3m05s', '2h04m'."""
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """The ``progress`` object of ``pipeline.run_files`` / ``ray_engine.run_files_ray``:
    ``update`` per batch read, ``file_done`` per finished file, ``close`` at the end."""

    def __init__(
        self,
        total_bytes: int,
        nfiles: int,
        enabled: bool,
        *,
        interval: float | None = None,
        stream: TextIO | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.total_bytes = max(int(total_bytes), 1)
        self.nfiles = nfiles
        self.files_done = 0
        self.done_bytes = 0  # sizes of finished files
        self.read_bytes = 0  # bytes read, all files
        self.docs = 0
        self.tokens = 0
        self.rows = 0
        self.clock = clock
        self.t0 = clock()
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        #: seconds between plain lines (not a terminal); None: a tqdm bar
        self.interval = None if (tty and interval is None) else (interval or 30.0)
        self.last_line = self.t0
        self.bar: Any = None
        if enabled and self.interval is None:
            from tqdm import tqdm

            class Bar(tqdm):  # type: ignore[misc]
                # no monitor thread: the pool's workers are forked only from a process
                # with no other thread (engines.local.start_method)
                monitor_interval = 0

            self.bar = Bar(
                total=1000,
                desc=f"files 0/{nfiles}",
                bar_format="prepare |{bar:20}| {desc}",
                dynamic_ncols=True,
                file=self.stream,
            )

    # ----------------------------------------------------------------- figures

    def fraction(self) -> float:
        """Share of the work done: finished files whole, unfinished ones by bytes read (capped)."""
        if self.files_done >= self.nfiles:
            return 1.0
        undone = self.total_bytes - self.done_bytes
        pending = min(self.read_bytes - self.done_bytes, READ_AHEAD_CAP * undone)
        return min(max((self.done_bytes + max(pending, 0)) / self.total_bytes, 0.0), 1.0)

    def eta(self) -> float | None:
        f, dt = self.fraction(), self.clock() - self.t0
        if f <= 0 or dt <= 0:
            return None
        return 0.0 if f >= 1 else dt * (1 - f) / f

    def line(self) -> str:
        dt = max(self.clock() - self.t0, 1e-9)
        eta = self.eta()
        return (
            f"files {self.files_done}/{self.nfiles}, {self.docs:,} docs, "
            f"{human(self.tokens)} tokens ({human(self.tokens / dt)} tok/s), "
            f"{self.rows:,} rows written, {self.fraction():.0%}, "
            f"elapsed {duration(dt)}" + ("" if eta is None else f", ETA {duration(eta)}")
        )

    # ----------------------------------------------------------------- events

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        self.read_bytes += nbytes
        self._show()

    def file_done(self, size: int, rows: int) -> None:
        """A file finished: its whole size counts, its rows are written."""
        self.files_done += 1
        self.done_bytes += size
        self.read_bytes = max(self.read_bytes, self.done_bytes)
        self.rows += rows
        self._show()

    def note(self, line: str) -> None:
        """Print a line of its own (a library's warning, say) outside the bar: on a terminal the
        bar is cleared, the line printed and the bar redrawn below it. Printed even when
        progress is off: notes are warnings, not progress."""
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def _show(self, final: bool = False) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = round(1000 * self.fraction())
            self.bar.set_description_str(self.line(), refresh=False)
            self.bar.refresh()
            return
        now = self.clock()
        if final or now - self.last_line >= (self.interval or 30.0):
            self.last_line = now
            print(f"prepare: {self.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self._show()
            self.bar.close()
        else:
            self._show(final=True)


def file_rows(rec: dict[str, Any]) -> int:
    """Rows a finished file record wrote (all epochs)."""
    return sum(int(e.get("rows", 0)) for e in rec.get("epochs", []))

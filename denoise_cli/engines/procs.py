"""Process lifetime: nothing this package starts outlives the process that started it.

Linux: each helper process asks the kernel for ``SIGKILL`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so the chain main -> forkserver -> workers dies with the main
process whatever killed it (``kill -9`` included); the resource tracker then exits when its pipe
closes. The forkserver learns that it is one from ``FORKSERVER_PARENT_ENV`` (the main process's
pid, set before the server starts) when it imports this module as a preload. Other systems: no
parent-death signal; the pool is still torn down on SIGINT/SIGTERM.

SIGTERM (and SIGHUP) in the main process raise :class:`Terminated`, like Ctrl-C raises
``KeyboardInterrupt``, so the same teardown runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

FORKSERVER_PARENT_ENV = "DENOISE_FORKSERVER_PARENT"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent exits (Linux). If ``parent`` (a pid
    that must still be alive) is already gone, exit now: the signal would never come. Returns
    whether the parent-death signal is in place."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
    if parent is not None and not pid_alive(parent):
        os._exit(1)
    return ok


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Terminated(BaseException):
    """SIGTERM/SIGHUP in the main process (Ctrl-C raises ``KeyboardInterrupt``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (so
    ``finally`` blocks and pool teardown run). A no-op outside the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    # a signal ignored on purpose (``nohup``) stays ignored
    wanted = [s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) != signal.SIG_IGN]
    saved = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


# imported as a forkserver preload: the server dies with the main process
if os.environ.get(FORKSERVER_PARENT_ENV) == str(os.getppid()):
    die_with_parent(os.getppid())

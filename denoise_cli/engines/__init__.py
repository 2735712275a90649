"""Engines run the per-file units of ``prepare`` (:func:`denoise_cli.prepare.worker.process_file`)
and report progress; the run itself (lock, identity, finalize) is the same for all of them. A new
engine is one module here with a ``run_files(job, todo, progress, *, workers, address)`` and a
line in :data:`ENGINES`. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

#: engine name -> module (imported on use: Ray is an optional dependency)
ENGINES: dict[str, str] = {"local": "denoise_cli.engines.local", "ray": "denoise_cli.engines.ray"}


def engine(name: str) -> Callable[..., Any]:
    """The ``run_files`` of an engine."""
    if name not in ENGINES:
        raise ConfigError(f"engine must be {' or '.join(map(repr, ENGINES))}, got {name!r}")
    fn: Callable[..., Any] = importlib.import_module(ENGINES[name]).run_files
    return fn

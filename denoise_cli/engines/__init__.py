"""Engines run per-file units and report progress. ``prepare`` hands its unit
(``prepare.worker.process_file``) and its job to an engine, so engines know nothing of what a
unit does; the run itself (lock, identity, finalize) is the same for all of them. A new engine
is one module here with ``run_files(unit, job, todo, progress, *, workers, address)`` and a line
in :data:`ENGINES`. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

#: reports (documents, tokens, input bytes) done since the last report
Report = Callable[[int, int, int], None]
#: the unit of work: (job, file index, report) -> the file's record; picklable by reference
Unit = Callable[[Any, int, Report], dict[str, Any]]

#: engine name -> module (imported on use: Ray is an optional dependency)
ENGINES: dict[str, str] = {"local": "denoise_cli.engines.local", "ray": "denoise_cli.engines.ray"}


def engine(name: str) -> Callable[..., Any]:
    """The ``run_files`` of an engine."""
    if name not in ENGINES:
        raise ConfigError(f"engine must be {' or '.join(map(repr, ENGINES))}, got {name!r}")
    fn: Callable[..., Any] = importlib.import_module(ENGINES[name]).run_files
    return fn


def check_ray() -> None:
    """``--engine ray`` without Ray fails here, before any bar or output directory."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "--engine ray needs Ray, which is not installed: pip install 'denoise-cli[ray]' "
            "(or use --engine local)"
        )

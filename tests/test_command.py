"""The ``denoise`` console script's entry (denoise_cli/command.py) and the light package import
it relies on: ``import denoise_cli`` loads no numpy, the command asks OpenBLAS for one thread
before numpy loads (a user's own setting wins), and library callers are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import denoise_cli

REPO = Path(__file__).resolve().parents[1]


def _py(code: str, **env: str | None) -> str:
    full = {**os.environ, "PYTHONPATH": str(REPO)}
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_package_import_loads_no_numpy() -> None:
    out = _py(
        "import sys, denoise_cli, denoise_cli.command\n"
        "print(sorted(m for m in ('numpy', 'pyarrow', 'tokenizers') if m in sys.modules))"
    )
    assert out == "[]"


def test_lazy_names_are_the_load_modules() -> None:
    from denoise_cli.load import DenoiseDataset, open_dataset
    from denoise_cli.load.collator import DataCollatorForUL2

    assert denoise_cli.open_dataset is open_dataset
    assert denoise_cli.DenoiseDataset is DenoiseDataset
    assert denoise_cli.DataCollatorForUL2 is DataCollatorForUL2
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = denoise_cli.no_such_name  # type: ignore[attr-defined]
    assert set(denoise_cli.__all__) <= set(dir(denoise_cli)) | {
        "DenoiseDataset",
        "open_dataset",
        "DataCollatorForUL2",
    }


_THREADS_AFTER_NUMPY = (
    "import os, sys\n"
    "{pre}\n"
    "import numpy\n"
    "numpy.ones((64, 64)) @ numpy.ones((64, 64))\n"
    "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/task")
def test_command_asks_openblas_for_one_thread() -> None:
    setup = "import denoise_cli.command as c; c.single_threaded_blas()"
    env_value, threads = _py(
        _THREADS_AFTER_NUMPY.format(pre=setup), OPENBLAS_NUM_THREADS=None
    ).split()
    assert env_value == "1"
    assert int(threads) == 1
    if (os.cpu_count() or 1) > 1:  # the control: without it numpy's OpenBLAS starts a pool
        env_value, threads = _py(
            _THREADS_AFTER_NUMPY.format(pre="import denoise_cli"), OPENBLAS_NUM_THREADS=None
        ).split()
        assert env_value == "None"
        assert int(threads) > 1


def test_a_users_setting_wins() -> None:
    setup = "import denoise_cli.command as c; c.single_threaded_blas()"
    out = _py(_THREADS_AFTER_NUMPY.format(pre=setup), OPENBLAS_NUM_THREADS="2")
    assert out.split()[0] == "2"


def test_python_dash_m_runs_the_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "denoise_cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"denoise {denoise_cli.__version__}"


def test_console_script_is_the_command_entry() -> None:
    from importlib.metadata import entry_points

    (ep,) = entry_points(group="console_scripts", name="denoise")
    assert ep.value == "denoise_cli.command:main"

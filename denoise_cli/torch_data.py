"""Compatibility: ``denoise_cli.torch_data`` lives in :mod:`denoise_cli.load.torch_data`."""

from __future__ import annotations

from .load.torch_data import *  # noqa: F403
from .load.torch_data import __all__  # noqa: F401

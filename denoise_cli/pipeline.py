"""Compatibility: ``denoise_cli.pipeline.prepare`` is now :func:`denoise_cli.prepare.prepare`."""

from __future__ import annotations

from .prepare.run import prepare

__all__ = ["prepare"]

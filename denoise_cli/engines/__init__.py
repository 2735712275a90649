"""Engines that run the per-file units: a local process pool and Ray (see docs/architecture.md)."""

"""Loading an output for training: the numpy loader (``open_dataset``), ``torch_data`` and the
attention helpers (see docs/architecture.md)."""

from __future__ import annotations

from .dataset import (
    PAD_FILL,
    DenoiseDataset,
    batch_arrays,
    epoch_batches,
    epoch_order,
    open_dataset,
    read_manifest,
)

__all__ = [
    "PAD_FILL",
    "DenoiseDataset",
    "batch_arrays",
    "epoch_batches",
    "epoch_order",
    "open_dataset",
    "read_manifest",
]

"""Loading an output for training: the numpy loader (``open_dataset``), ``torch_data`` and the
attention helpers (see docs/architecture.md)."""

from __future__ import annotations

from ..output.manifest import read_manifest
from ..output.shards import batch_arrays
from .dataset import (
    PAD_FILL,
    DenoiseDataset,
    epoch_batches,
    epoch_blocks,
    epoch_order,
    open_dataset,
)

__all__ = [
    "PAD_FILL",
    "DenoiseDataset",
    "batch_arrays",
    "epoch_batches",
    "epoch_blocks",
    "epoch_order",
    "open_dataset",
    "read_manifest",
]

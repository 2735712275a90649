"""denoise: offline UL2 mixture-of-denoisers preprocessing.

``read -> tokenize -> pack -> corrupt -> write -> stats``: raw ``*.jsonl.zst`` text in,
pre-corrupted fixed-shape Arrow/Parquet shards out, so any trainer loads batches with zero CPU
work. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .load import DenoiseDataset, open_dataset

__all__ = ["DenoiseDataset", "__version__", "open_dataset"]

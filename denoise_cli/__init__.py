"""denoise: offline UL2 mixture-of-denoisers preprocessing.

``read -> tokenize -> chunk -> corrupt -> write -> stats``: raw ``*.jsonl.zst`` text in,
pre-corrupted fixed-shape Arrow/Parquet shards out, so any trainer loads batches with zero CPU
work. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from .load import DenoiseDataset, open_dataset

__all__ = ["DataCollatorForUL2", "DenoiseDataset", "__version__", "open_dataset"]


def __getattr__(name: str) -> Any:
    # lazy: the on-the-fly collator is for training scripts; importing the package stays light
    if name == "DataCollatorForUL2":
        from .load.collator import DataCollatorForUL2

        return DataCollatorForUL2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

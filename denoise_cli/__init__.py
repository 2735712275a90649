"""denoise: offline UL2 mixture-of-denoisers preprocessing.

``read -> tokenize -> chunk -> corrupt -> write -> stats``: raw ``*.jsonl.zst`` text in,
pre-corrupted fixed-shape Arrow/Parquet shards out, so any trainer loads batches with zero CPU
work. See README.md.

The package's names are imported on first use (``__getattr__``): ``import denoise_cli`` loads
neither numpy nor pyarrow, so the ``denoise`` command (:mod:`.command`) can set what must be
set before numpy loads.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .load import DenoiseDataset, open_dataset
    from .load.collator import DataCollatorForUL2

__all__ = ["DataCollatorForUL2", "DenoiseDataset", "__version__", "open_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("DenoiseDataset", "open_dataset"):
        from . import load

        return getattr(load, name)
    if name == "DataCollatorForUL2":  # the on-the-fly collator, for training scripts
        from .load.collator import DataCollatorForUL2

        return DataCollatorForUL2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

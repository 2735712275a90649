"""The model rows every denoiser writes (:class:`Rows`), the special ids it writes them with
(:class:`SpecialIds`), the ignore index of the labels and the row widths of a layout."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import Lengths

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the denoisers write. ``sentinels[k]`` is the id of ``<extra_id_k>``."""

    eos: int
    pad: int
    sentinels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    mode: dict[str, int] = field(default_factory=dict)


@dataclass
class Rows:
    """A batch of output rows (numpy arrays, one row per example)."""

    input_ids: np.ndarray  # int32 [B, I] or [B, S]
    labels: np.ndarray  # int32 [B, T] or [B, S]
    attention_mask: np.ndarray  # int8  [B, I] or [B, S]
    input_length: np.ndarray  # int32 [B] real tokens in input_ids
    target_length: np.ndarray  # int32 [B] tokens with a label (targets + EOS)
    prefix_length: np.ndarray  # int32 [B] decoder-only: mode + inputs; enc-dec: inputs w/o EOS


def row_widths(lengths: Lengths) -> tuple[int, int]:
    if lengths.layout == "encoder-decoder":
        return lengths.inputs_length, lengths.targets_length
    return lengths.seq_length, lengths.seq_length

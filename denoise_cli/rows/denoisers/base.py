"""What a denoiser kind provides: whether a raw chunk of ``L`` tokens fits the row lengths, the
lengths of its rows at that ``L`` (for the plan), its smallest example (for packing), and the
corruption itself (raw chunks -> :class:`~denoise_cli.rows.base.Rows`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import Denoiser, Lengths
from ..base import Rows, SpecialIds


@dataclass(frozen=True)
class KindPlan:
    """A component's lengths at its raw length (see ``rows.plan.ComponentPlan``)."""

    noise_tokens: int
    spans: int
    prefix_min: int
    prefix_max: int
    input_length: int
    target_length: int
    mean_input_tokens: float
    mean_target_tokens: float


class DenoiserKind:
    """A kind of denoiser; one instance per kind in ``rows.denoisers.KINDS``."""

    #: whether its rows hold sentinels (span corruption) or not (prefix-LM)
    uses_sentinels: bool = False

    def fits(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> bool:
        """Whether rows from raw chunks of ``L`` tokens (``m`` mode tokens) fit ``lengths``."""
        raise NotImplementedError

    def plan(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> KindPlan:
        """The lengths of its rows at raw length ``L`` (``ConfigError`` if they cannot exist)."""
        raise NotImplementedError

    def min_example(self, c: Any, layout: str) -> tuple[int, int]:
        """Smallest (input tokens, target tokens) an example of component plan ``c`` can have."""
        raise NotImplementedError

    def corrupt(
        self,
        tokens: np.ndarray,
        d: Denoiser,
        mode_id: int | None,
        special: SpecialIds,
        lengths: Lengths,
        rng: np.random.Generator,
    ) -> Rows:
        """Rows from raw chunks ``[B, L]``, drawing from ``rng``."""
        raise NotImplementedError

"""Denoiser kinds behind a registry: a new kind is one module here (a :class:`DenoiserKind`:
fit, plan lengths, smallest example, corruption, and for reading rows back its expected
lengths, structure checks, inversion and stats counts) and a line in :data:`KINDS` (plus its
letter in ``config.Denoiser``); ``check/`` asks the kind and needs no code. See
docs/architecture.md."""

from __future__ import annotations

from ...config import Denoiser
from .base import DenoiserKind, KindPlan
from .prefix import PREFIX
from .span import SPAN

#: denoiser kind letter -> its implementation
KINDS: dict[str, DenoiserKind] = {"R": SPAN, "X": SPAN, "S": PREFIX}


def kind_of(d: Denoiser | str) -> DenoiserKind:
    """The kind of a denoiser (or of a kind letter / denoiser name such as ``"R(3,0.15)"``)."""
    letter = d.kind if isinstance(d, Denoiser) else d[:1]
    return KINDS[letter]


__all__ = ["KINDS", "DenoiserKind", "KindPlan", "kind_of"]

"""The exact fast engines behind ``--tokenizer-backend fast|auto``, both on ``tiktoken``.

A tokenizer.json gets at most one: byte-level BPE (GPT-2, Llama 3, Qwen2: :mod:`.fastbpe`, ranks
are ids) or SentencePiece-style BPE with byte fallback (Llama 1/2, Mistral v1: :mod:`.fastsp`,
ranks mapped back to ids). :func:`analyze` picks the analysis by the tokenizer's look (byte
fallback or Metaspace: SentencePiece-style) so that its refusal names the relevant reason;
:func:`build_engine` and :func:`encode_texts` dispatch on the :class:`~.fastbpe.FastSpec`'s
``kind``. Whatever is chosen, ``backend.choose_backend`` still runs the self-check against HF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import fastbpe, fastsp
from .fastbpe import FastSpec

__all__ = ["FastSpec", "analyze", "build_engine", "encode_texts"]


def analyze(d: dict[str, Any]) -> FastSpec | str:
    """The :class:`~.fastbpe.FastSpec` of the engine that reproduces this tokenizer.json, or the
    reason (one line) why none does."""
    if fastsp.is_sentencepiece_style(d):
        return fastsp.analyze_sp(d)
    return fastbpe.analyze(d)


def build_engine(d: dict[str, Any], spec: FastSpec) -> Any:
    """The engine of ``spec``: a tiktoken ``Encoding`` or a :class:`~.fastsp.SpEngine`."""
    if spec.kind == fastsp.KIND:
        return fastsp.build_sp_engine(d, spec)
    return fastbpe.build_encoding(d, spec)


def encode_texts(engine: Any, spec: FastSpec, texts: Sequence[str]) -> list[np.ndarray]:
    """Each document's ids as a uint32 array, by the engine of ``spec``."""
    if spec.kind == fastsp.KIND:
        return fastsp.encode_sp(engine, spec, texts)
    return fastbpe.encode_texts(engine, spec, texts)

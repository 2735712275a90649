"""Which engine encodes a run's documents: tiktoken where it provably gives HF's ids, else HF.

:func:`choose_backend` rules tiktoken out from the model's head when it can (no JSON parse),
else parses the tokenizer JSON once for :func:`~.fastengine.analyze` and, when the tokenizer
qualifies, the engine (a tiktoken ``Encoding``, or :class:`~.fastsp.SpEngine` for
SentencePiece-style BPE); then it runs the self-check: both engines on the built-in
torture texts and the run's first documents, any difference falling back to HF with a warning
naming the text. The choice (:class:`BackendChoice`) is recorded in the manifest; the
``Encoding`` it built travels with it to the run's in-process encoder (never pickled). See
docs/tokenize.md and benchmarks/README_tokenize.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .fastbpe import TORTURE_TEXTS, bpe_options_reason, first_difference
from .fastengine import FastSpec, analyze, build_engine
from .tokenize import Encoder

BACKENDS = ("auto", "hf", "fast")


@dataclass(frozen=True)
class BackendChoice:
    """Which engine encodes documents, and why (recorded in the manifest)."""

    requested: str
    used: str  # "hf" or "fast"
    reason: str  # why fast is not used, or what was checked
    spec: FastSpec | None = None
    checked_texts: int = 0
    warning: str | None = None
    #: the tiktoken ``Encoding`` the self-check built (the run's in-process encoder takes it);
    #: not pickled, not compared
    engine: Any = field(repr=False, compare=False, default=None)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["engine"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"requested": self.requested, "used": self.used, "reason": self.reason}
        if self.spec is not None:
            import tiktoken

            d["engine"] = f"tiktoken {tiktoken.__version__}"
            d.update(self.spec.to_dict())
        # nothing that depends on which file came first: merged parts equal one machine's run
        return d


def _ruled_out(head: dict[str, Any]) -> str | None:
    """:func:`~.fastengine.analyze`'s reason when the model's head alone rules tiktoken out (the
    same reason, from the checks it makes first); None when the whole JSON must be analyzed."""
    if not head:
        return None
    if head.get("type") == "BPE" and (head.get("dropout") or head.get("byte_fallback")):
        return None  # dropout: its reason quotes the JSON's float; byte fallback: fastsp's case
    # the byte-level analysis's first checks, less the two above (a built model's head holds
    # no ignore_merges)
    return bpe_options_reason(
        head, ("unk_token", "continuing_subword_prefix", "end_of_word_suffix")
    )


def choose_backend(
    tokenizer_json: str,
    requested: str,
    sample: Sequence[str] | Callable[[], Sequence[str]] = (),
    model: dict[str, Any] | None = None,
    built: Any = None,
) -> BackendChoice:
    """Pick the document encoder. ``fast`` when :func:`~.fastengine.analyze` accepts the tokenizer
    and tiktoken gives HF's ids on the torture texts and ``sample`` (a run's first documents, or
    a function that reads them: called only when the tokenizer qualifies);
    a difference falls back to HF with a warning naming the first differing text. ``hf``: always
    HF. ``fast``: ConfigError naming the reason when not reproducible (self-check included).
    ``model`` (``TokenizerInfo.model_head``) lets a non-BPE model be ruled out unparsed;
    ``built``: the HF ``Tokenizer`` already built from ``tokenizer_json`` in this process (the
    self-check's reference then needs no second build)."""
    import orjson

    if requested not in BACKENDS:
        raise ConfigError(
            f"--tokenizer-backend must be one of {', '.join(BACKENDS)}, got {requested!r}"
        )
    if requested == "hf":
        return BackendChoice(requested, "hf", "requested")
    # ``model``: ``TokenizerInfo.model_head``; spares parsing a huge vocabulary's JSON
    ruled_out = _ruled_out(model or {})
    parsed: dict[str, Any] = {}
    spec: FastSpec | str
    if ruled_out is None:
        parsed = orjson.loads(tokenizer_json)  # once: for the analysis and the engine
        spec = analyze(parsed)
    else:
        spec = ruled_out
    if isinstance(spec, str):
        if requested == "fast":
            raise ConfigError(
                f"--tokenizer-backend fast: tiktoken cannot reproduce this tokenizer: {spec}"
            )
        return BackendChoice(requested, "hf", spec)
    texts = [*TORTURE_TEXTS, *(sample() if callable(sample) else sample)]
    hf = Encoder(tokenizer_json, np.zeros(0, np.int32), None, built=built)
    engine = build_engine(parsed, spec)
    del parsed
    fast = Encoder(tokenizer_json, np.zeros(0, np.int32), None, fast=spec, engine=engine)
    bad = first_difference(texts, hf.encode_lists, fast.encode_lists)
    if bad is not None:
        shown = texts[bad][:80]
        where = "built-in torture text" if bad < len(TORTURE_TEXTS) else "first documents"
        msg = (
            f"tiktoken and HF tokenizers differ on a {where} ({shown!r}"
            f"{'...' if len(texts[bad]) > 80 else ''}): using HF tokenizers"
        )
        if requested == "fast":
            raise ConfigError(f"--tokenizer-backend fast: {msg.split(': using')[0]}")
        return BackendChoice(requested, "hf", "self-check failed: " + msg, None, len(texts), msg)
    return BackendChoice(
        requested,
        "fast",
        "reproducible: identical ids on the self-check",
        spec,
        len(texts),
        engine=engine,
    )

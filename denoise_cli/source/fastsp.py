"""Exact fast SentencePiece-style BPE (Llama 1/2, Mistral v1, ...) on ``tiktoken``.

These tokenizers map ``" "`` to ``"▁"`` (the Metaspace pre-tokenizer, or the older
``Prepend + Replace`` normalizer), prepend one ``"▁"``, and run BPE over *characters* with byte
fallback: a character that is not in the vocabulary becomes its UTF-8 bytes as ``<0xXX>``
tokens. tiktoken merges *bytes* by the rank of the concatenation, so the tokenizer is recast as
ranks (:class:`SpEngine`): first the proper prefixes of every multi-byte vocabulary character
(so each known character is assembled from its bytes before any other merge), then the single
bytes (an ASCII vocabulary character, else the byte's ``<0xXX>`` id), then the multi-byte
characters, then the multi-character tokens in id order; a rank maps back to its id (a prefix
of an unknown character back to its ``<0xXX>`` ids). Text is split where no vocabulary token can
span (before a ``"▁"`` that follows another character), which is how HF's whole-document BPE
factors into pieces. :func:`analyze_sp` proves the rest or names why not: byte fallback with
all 256 byte tokens, every token's characters in the vocabulary, no ``"▁"`` after another
character in a token, HF's
merge order equal to tiktoken's rank order on a complete merges list (``fastbpe.merge_rule``)
and every token encoding to itself. Residual risk (equal-rank overlapping pairs, as for
byte-level BPE) is caught by the self-check. Cost: one ``str.replace`` and one table lookup per
document besides tiktoken itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fastbpe import (
    NEVER_SPECIAL,
    FastSpec,
    bpe_options_reason,
    merge_rule,
    parse_merges,
    plain_added_reason,
)

__all__ = [
    "KIND",
    "SP_REFUSED",
    "SpEngine",
    "analyze_sp",
    "build_sp_engine",
    "byte_token",
    "encode_sp",
    "is_sentencepiece_style",
    "sp_text",
]

KIND = "sentencepiece-bpe"
#: the BPE options this engine refuses (an unk token is fine: byte fallback covers every byte)
SP_REFUSED = ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges")
_MULTI = 0xFFFFFFFF  # a rank that stands for several ids (a prefix of an unknown character)
_NO_SPECIAL: frozenset[str] = frozenset()


def byte_token(b: int) -> str:
    """The byte-fallback token of byte ``b``: ``<0x41>``."""
    return f"<0x{b:02X}>"


def is_sentencepiece_style(d: dict[str, Any]) -> bool:
    """Whether the tokenizer looks SentencePiece-style (byte fallback or a Metaspace
    pre-tokenizer): :func:`analyze_sp` then gives the reason, not the byte-level analysis."""
    model = d.get("model") or {}
    pre = d.get("pre_tokenizer") or {}
    return bool(model.get("byte_fallback")) or (
        isinstance(pre, dict) and pre.get("type") == "Metaspace"
    )


def _text_rule(d: dict[str, Any]) -> tuple[str, str, bool] | str:
    """``(replacement, prepend, split)`` of the Metaspace pre-tokenizer or of the legacy
    ``Prepend + Replace`` normalizer, or the reason why the text rule is not one of them."""
    norm, pre = d.get("normalizer"), d.get("pre_tokenizer")
    if isinstance(pre, dict) and pre.get("type") == "Metaspace":
        if norm is not None:
            return f"normalizer {norm.get('type') if isinstance(norm, dict) else norm} before Metaspace"
        rep = str(pre.get("replacement", "\u2581"))
        scheme = str(
            pre.get("prepend_scheme", "always" if pre.get("add_prefix_space", True) else "never")
        )
        if scheme not in ("first", "always", "never"):
            return f"Metaspace prepend_scheme {scheme!r}"
        # one section per document (special tokens are encoded as text): "always" is "first"
        return rep, "never" if scheme == "never" else "first", bool(pre.get("split", True))
    if pre is not None:
        t = pre.get("type") if isinstance(pre, dict) else pre
        return f"pre-tokenizer {t} is not Metaspace"
    steps: list[Any] = (
        list(norm.get("normalizers") or [])
        if isinstance(norm, dict) and norm.get("type") == "Sequence"
        else [norm]
    )
    kinds = [s.get("type") if isinstance(s, dict) else None for s in steps]
    if kinds == ["Prepend", "Replace"] or kinds == ["Replace"]:
        rep_step = steps[-1]
        pat = (rep_step.get("pattern") or {}).get("String")
        rep = str(rep_step.get("content", ""))
        if pat != " " or len(rep) != 1:
            return "Replace normalizer is not ' ' -> one character"
        if kinds[0] == "Prepend" and steps[0].get("prepend") != rep:
            return "Prepend normalizer does not prepend the replacement character"
        return rep, "always" if kinds[0] == "Prepend" else "never", False
    return "normalizer " + "+".join(str(k) for k in kinds) + " is not Prepend + Replace"


def analyze_sp(d: dict[str, Any]) -> FastSpec | str:
    """A :class:`~.fastbpe.FastSpec` of kind ``sentencepiece-bpe`` when the tokenizer is provably
    reproduced by :class:`SpEngine` (see the module docstring), else the reason (one line)."""
    model = d.get("model") or {}
    why = bpe_options_reason(model, SP_REFUSED)
    if why:
        return why
    if not model.get("byte_fallback"):
        return "BPE model without byte fallback and without a byte-level vocabulary"
    rule = _text_rule(d)
    if isinstance(rule, str):
        return rule
    rep, prepend, split = rule
    why = plain_added_reason(d)
    if why:
        return why
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        return "BPE vocabulary is not a token -> id map"
    if len(set(vocab.values())) != len(vocab):
        return "vocabulary has duplicate ids"
    missing = [b for b in range(256) if byte_token(b) not in vocab]
    if missing:
        return f"vocabulary lacks byte token {byte_token(missing[0])} ({len(missing)} missing)"
    outside = _outside(d)
    chars = {t for t in vocab if len(t) == 1}
    both = sorted(chars & outside)
    if both:  # HF's model would still look the character up as an initial symbol
        return f"added token {both[0]!r} is a single vocabulary character"
    try:
        merges = parse_merges(model.get("merges") or [])
    except (IndexError, ValueError, TypeError, AttributeError):
        return "merges list is not pairs of tokens"
    for a, b in merges:
        if a in outside or b in outside or a + b in outside:
            return f"merge {(a, b)} involves a byte or added token"
    for tok in vocab:
        if tok in outside or len(tok) < 2:
            continue
        bad = next((c for c in tok if c not in chars), None)
        if bad is not None:
            return f"token {tok!r} has character {bad!r}, which is not a vocabulary token"
        if not split and rep in tok.lstrip(rep):
            return f"token {tok!r} has {rep!r} after another character (would span a split)"
    why = merge_rule(model, merges)
    if why:
        return why
    bad_tok = _self_encoding(vocab, merges, outside)
    if bad_tok is not None:
        return f"token {bad_tok!r} does not encode to itself by merges (tiktoken looks pieces up)"
    r = f"\\x{{{ord(rep):x}}}"
    pattern = f"{r}[^{r}]*|[^{r}]+" if split else f"{r}*[^{r}]+|{r}+"
    return FastSpec(
        pattern=pattern,
        pattern_name="metaspace-split" if split else "metaspace",
        normalizer=None,
        kind=KIND,
        prepend=prepend,
        replacement=rep,
    )


def _self_encoding(
    vocab: dict[str, int], merges: list[tuple[str, str]], outside: set[str]
) -> str | None:
    """The first multi-character token (not in ``outside``) that HF's own BPE model does not
    encode to itself, or None: tiktoken looks a whole piece up first, HF always merges. HF's
    model is the reference here (~0.2 CPU-s for 32k tokens; a Python merge loop took 0.8)."""
    import tokenizers

    bpe = tokenizers.models.BPE(vocab=vocab, merges=merges, byte_fallback=True)
    for tok in vocab:
        if len(tok) > 1 and tok not in outside:
            got = bpe.tokenize(tok)
            if len(got) != 1 or got[0].value != tok:
                return tok
    return None


def _outside(d: dict[str, Any]) -> set[str]:
    """The vocabulary entries tiktoken never makes from text: byte tokens and added tokens."""
    added = {str(a["content"]) for a in d.get("added_tokens") or []}
    return added | {byte_token(b) for b in range(256)}


@dataclass
class SpEngine:
    """The tiktoken ``Encoding`` of a SentencePiece-style BPE and its rank -> ids tables. Ranks
    below ``n_multi`` (the prefixes of multi-byte characters) stand for several byte ids, found
    only where tiktoken stopped inside an unknown character; every other rank is one id."""

    enc: Any
    #: rank -> id (``_MULTI`` for the ranks below ``n_multi``)
    single: np.ndarray
    n_multi: int
    #: rank (< ``n_multi``) -> its byte ids: ``multi_ids[multi_start[r] : multi_start[r + 1]]``
    multi_start: np.ndarray
    multi_ids: np.ndarray

    def ids(self, ranks: np.ndarray) -> np.ndarray:
        """The ids of tiktoken's ``ranks`` (uint32), vectorized."""
        out: np.ndarray = self.single[ranks]
        if not len(ranks) or int(ranks.min()) >= self.n_multi:
            return out
        at = np.flatnonzero(ranks < self.n_multi)  # the few prefixes of unknown characters
        r = ranks[at].astype(np.int64)
        first, lens = self.multi_start[r], self.multi_start[r + 1] - self.multi_start[r]
        sizes = np.ones(len(ranks), dtype=np.int64)
        sizes[at] = lens
        starts = np.cumsum(sizes) - sizes  # where each rank's ids begin in the result
        res = np.repeat(out, sizes)
        k = np.repeat(np.arange(len(at)), lens)
        within = np.arange(len(k)) - np.repeat(np.cumsum(lens) - lens, lens)
        res[starts[at][k] + within] = self.multi_ids[first[k] + within]
        return res


def build_sp_engine(d: dict[str, Any], spec: FastSpec) -> SpEngine:
    """The :class:`SpEngine` of a tokenizer :func:`analyze_sp` accepted."""
    import tiktoken

    vocab: dict[str, int] = d["model"]["vocab"]
    outside = _outside(d)
    byte_id = [vocab[byte_token(b)] for b in range(256)]
    ranks: dict[bytes, int] = {}
    ids: list[list[int]] = []

    def add(key: bytes, these: list[int]) -> None:
        if key not in ranks:
            ranks[key] = len(ids)
            ids.append(these)

    chars = sorted((t for t in vocab if len(t) == 1 and t not in outside), key=vocab.__getitem__)
    for c in chars:  # proper prefixes of multi-byte characters: assembled first
        raw = c.encode("utf-8")
        for k in range(2, len(raw)):
            add(raw[:k], [byte_id[x] for x in raw[:k]])
    for b in range(256):
        ch = chr(b) if b < 128 else ""
        add(bytes([b]), [vocab[ch]] if ch in vocab and ch not in outside else [byte_id[b]])
    for c in chars:
        add(c.encode("utf-8"), [vocab[c]])
    for tok, i in sorted(vocab.items(), key=lambda x: x[1]):
        if len(tok) > 1 and tok not in outside:
            add(tok.encode("utf-8"), [i])
    n_multi = next((r for r, x in enumerate(ids) if len(x) == 1), len(ids))
    assert all(len(x) == 1 for x in ids[n_multi:])  # the prefixes come first, then single ids
    single = np.array([x[0] if len(x) == 1 else _MULTI for x in ids], dtype=np.uint32)
    multi_start = np.zeros(n_multi + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids[:n_multi]], out=multi_start[1:])
    multi_ids = np.array([i for x in ids[:n_multi] for i in x], dtype=np.uint32)
    enc = tiktoken.Encoding(
        "denoise-" + spec.pattern_name,
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens={NEVER_SPECIAL: len(ids)},
    )
    return SpEngine(enc, single, n_multi, multi_start, multi_ids)


def sp_text(text: str, spec: FastSpec) -> str:
    """What tiktoken splits and merges: spaces replaced, the replacement prepended by the rule
    (a non-empty ``text``)."""
    rep = spec.replacement or "\u2581"
    s = text.replace(" ", rep)
    if spec.prepend == "always" or (spec.prepend == "first" and not s.startswith(rep)):
        s = rep + s
    return s


def encode_sp(engine: SpEngine, spec: FastSpec, texts: Sequence[str]) -> list[np.ndarray]:
    """Encode documents one by one, each as a uint32 array of ids: ``" "`` -> the replacement,
    the prepend rule, tiktoken, then the rank -> id tables."""
    f = engine.enc.encode_to_numpy
    out: list[np.ndarray] = []
    for t in texts:
        if not t:  # HF gives no ids for an empty text (nothing to prepend to)
            out.append(np.zeros(0, dtype=np.uint32))
            continue
        s = sp_text(t, spec)
        try:
            r = f(s, allowed_special=_NO_SPECIAL, disallowed_special=())
        except UnicodeEncodeError:  # tiktoken's own repair in ``encode_ordinary``
            s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            r = f(s, allowed_special=_NO_SPECIAL, disallowed_special=())
        out.append(engine.ids(r))
    return out

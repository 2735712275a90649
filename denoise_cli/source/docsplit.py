"""Where a long document may be cut so that encoding the pieces gives exactly the ids of encoding
it whole (:class:`DocSplitter`, used by ``tokenize.Encoder`` for documents longer than its
``piece_chars``). A cut goes only at a space between two non-space characters, where the
pre-tokenizer provably splits (or, for BPE without a split, where no vocabulary piece spans the
cut), no added token touches it and normalization does not change across it; a tokenizer this
cannot prove safe for is never cut. Design and edge cases: docs/tokenize.md ("Huge documents").
"""

from __future__ import annotations

import json
import re
from typing import Any

# Split regexes known to end every pre-token containing a non-space character before a space
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CANDIDATE = re.compile(r"(?<=\S) (?=\S)")


def _pre_tokenizer_kind(pre: dict[str, Any] | None) -> tuple[str, str]:
    """("split", "") when the pre-tokenizer always splits before a single space between
    non-spaces; ("vocab", replacement) when it does not split there but maps the space to
    ``replacement`` (the vocabulary decides); ("", "") when unknown."""
    if pre is None:
        return "vocab", " "
    t = pre.get("type")
    if t in ("WhitespaceSplit", "Whitespace"):
        return "split", ""
    if t == "ByteLevel":
        return ("split", "") if pre.get("use_regex", True) else ("", "")
    if t == "Split":
        pat = pre.get("pattern", {}).get("Regex")
        ok = pat == GPT2_PATTERN and pre.get("behavior") == "Isolated" and not pre.get("invert")
        return ("split", "") if ok else ("", "")
    if t == "Metaspace":
        rep = str(pre.get("replacement", "\u2581"))
        return ("split", "") if pre.get("split", True) else ("vocab", rep)
    if t == "Sequence":
        kinds = [_pre_tokenizer_kind(p) for p in pre.get("pretokenizers", [])]
        if any(k == "split" for k, _ in kinds):
            # a later step may only map characters, never join what an earlier step split
            rest = [p.get("type") for p in pre.get("pretokenizers", [])]
            if all(
                r in ("WhitespaceSplit", "Whitespace", "Split", "ByteLevel", "Metaspace")
                for r in rest
            ):
                return "split", ""
        return "", ""
    return "", ""


class DocSplitter:
    """Where a long document may be cut so that encoding the pieces gives exactly the ids of
    encoding it whole (see the module docstring). Built from a loaded ``tokenizers.Tokenizer``."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        pre = tok.pre_tokenizer
        state = None if pre is None else json.loads(pre.__getstate__())
        self.kind, self._rep = _pre_tokenizer_kind(state)
        self._vocab: set[str] = set()
        self._max_piece = 1
        if self.kind == "vocab":
            model = type(tok.model).__name__
            # BPE: no merge can cross a cut that no vocabulary piece spans (exact). Unigram
            # without a split is NOT cut: its floating-point Viterbi was seen to choose another
            # segmentation around a cut on a vocabulary with space-spanning pieces.
            if model != "BPE":
                self.kind = ""
            else:
                self._vocab = set(tok.get_vocab(with_added_tokens=False))
                self._max_piece = max((len(p) for p in self._vocab), default=1)
        self._added = {str(a.content) for a in tok.get_added_tokens_decoder().values()}
        self._max_added = max((len(a) for a in self._added), default=0)
        self._norm = tok.normalizer

    def _normalize(self, s: str) -> str:
        return s if self._norm is None else str(self._norm.normalize_str(s))

    def safe_at(self, text: str, i: int) -> bool:
        """Whether ``text`` may be cut before position ``i`` (``text[i]`` is a space between
        two non-space characters)."""
        if not self.kind:
            return False
        # no added token (matched in raw text) may touch or cross the boundary
        L = self._max_added
        if L:
            for a in range(max(0, i - L), i + 2):
                for b in range(max(a + 1, i), min(len(text), a + L) + 1):
                    if text[a:b] in self._added:
                        return False
        W = 2 * self._max_piece + 16
        left, right = text[max(0, i - W) : i], text[i : i + W]
        nl, nr = self._normalize(left), self._normalize(right)
        if nl + nr != self._normalize(left + right) or not nr.startswith(" "):
            return False
        if self.kind == "split":
            return True
        rep = self._rep
        joined = (nl + nr).replace(" ", rep)
        j, M, vocab = len(nl), self._max_piece, self._vocab
        for a in range(max(0, j - M + 1), j):
            for b in range(j + 1, min(len(joined), a + M) + 1):
                if joined[a:b] in vocab:
                    return False
        return True

    def cuts(self, text: str, piece_chars: int) -> list[int]:
        """Cut positions (each the index of a space) splitting ``text`` into pieces of at
        least ``piece_chars`` characters, where possible."""
        out: list[int] = []
        if not self.kind:
            return out
        pos = piece_chars
        n = len(text)
        while pos < n - 1:
            m = _CANDIDATE.search(text, pos)
            while m is not None and not self.safe_at(text, m.start()):
                m = _CANDIDATE.search(text, m.start() + 1)
            if m is None:
                break
            out.append(m.start())
            pos = m.start() + piece_chars
        return out

"""Exact fast byte-level BPE: when a ``tokenizer.json`` is provably one ``tiktoken`` reproduces.

:func:`analyze` reads the tokenizer.json dict and returns a :class:`FastSpec` or the reason why
not. Reproducible means: normalizer none or a Unicode normal form (applied with ``unicodedata``);
pre-tokenizer byte-level with a known split regex (``ByteLevel(use_regex=true)``, i.e. GPT-2's,
or ``Split(known regex, Isolated)`` + ``ByteLevel(use_regex=false)``: GPT-2, Llama-3/cl100k,
Qwen2) without a prefix space; a BPE model without dropout, unk, subword prefix/suffix or byte
fallback, whose vocabulary is byte-level (all 256 bytes present); every added token special
(documents are encoded with ``encode_special_tokens=True``, which leaves non-special added tokens
matched in text, something tiktoken's ``encode_ordinary`` does not do).

The merge rule must be the same. HF merges the adjacent pair with the lowest *merge index*;
tiktoken the adjacent pair whose *concatenation* has the lowest rank (rank = id here). The two
agree when (1) merge results have non-decreasing ids along the merges list and (2) the list is
**complete**: every split of a vocabulary token into two vocabulary tokens is a merge (so HF can
merge exactly the pairs tiktoken can). Tokenizers converted from tiktoken ranks (the embedded
GPT-2: 108,299 merges for 50,256 tokens) are complete; a trained HF merges list (one merge per
token) is refused, since equivalence would then rest on how it was trained. tiktoken also looks a whole pre-token up in the
vocabulary first: that is HF's ``ignore_merges=true``; with ``ignore_merges=false`` every
vocabulary token must encode to itself by merges, which is checked.

Residual risk (equal-rank overlapping pairs, regex-engine differences between oniguruma and
fancy-regex, Unicode-table versions) is caught by :func:`first_difference` on
:data:`TORTURE_TEXTS` and on a run's first documents.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
KNOWN_PATTERNS = {GPT2_PATTERN: "gpt2", LLAMA3_PATTERN: "llama3", QWEN2_PATTERN: "qwen2"}
NORMAL_FORMS = ("NFC", "NFD", "NFKC", "NFKD")

# Whitespace runs, digits, contractions, emoji (ZWJ, flags, skin tones), CJK, combining marks,
# replaced lone surrogates (U+FFFD), special-token look-alikes, control characters.
TORTURE_TEXTS: tuple[str, ...] = (
    "Hello world! It's a test: we'll see, they've done it, I'm sure, she'd've gone, 'S 'LL 'Re.",
    "  leading spaces,   inner   runs,\ttabs\t\t,\n\nnew lines\r\n\r\n  \n trailing   ",
    "   ",
    "\n",
    "",
    "digits 0 12 345 6789 1234567890 3.14159 1,000,000 ١٢٣٤ ४५६ 12th 2nd",
    "emoji 😀😃 👍🏽 👩‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ✈︎ 🏳️‍🌈 a😀b",
    "中文文本，日本語のテキスト、한국어 텍스트。　全角スペース",
    "combining: e\u0301 a\u0308 n\u0303 Å Å ḱṷ \u0301start Z\u0336\u0335 ﬁ ﬃ ｱ ①",
    "replaced surrogates: \ufffd\ufffd a\ufffdb",
    "<extra_id_5> <extra_id_0><extra_id_99> [NLU] [S2S] </s> <pad> <unk> <s> <mask>",
    "<|endoftext|> text<|endoftext|>more <|begin_of_text|><|eot_id|> <|im_start|>user",
    "Ελληνικά, Русский текст, עברית, العربية, हिन्दी, ไทย, Tiếng Việt, Ꭰ, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "code: def f(x):\n    return x**2  # comment\n\tif a != b && c >= d { s += '\\n'; }",
    "URLs https://example.com/a?b=c&d=e#f, e-mail a.b@c.de, paths C:\\dir\\file.txt ~/x/y",
    "punctuation!!! ??? ... --- *** ((())) [[]] {{}} «quotes» „Anführung“ ‘single’ “double”",
    "control \x00\x01\x7f \u200b\u200c\u200d \ufeff \u2028 \u00a0nbsp \u3000ideo",
    "MIXED case DON'T WON'T Y'ALL O'Neil rock'n'roll '' ' '",
    "a" * 300 + " " + "ab" * 150 + " " + "🙂" * 50,
    # runs of one character: where two different pairs can make the same token and overlap
    # (``▁▁▁ + ▁`` / ``▁ + ▁▁▁``, ``-- + -`` / ``- + --``), the merge rules' residual risk
    "w" + "".join(" " * k + "w" for k in range(1, 41)) + "\n" + "\t" * 9 + "\n" * 7,
    " ".join(c * k for c in "-=._0*#~" for k in range(1, 21)),
)


@dataclass(frozen=True)
class FastSpec:
    """What the fast engine needs besides the vocabulary (picklable, small)."""

    pattern: str
    pattern_name: str
    normalizer: str | None  # a Unicode normal form, or None
    #: ``byte-level`` (this module) or ``sentencepiece-bpe`` (:mod:`.fastsp`)
    kind: str = "byte-level"
    #: sentencepiece-bpe: ``first`` (Metaspace: prepend the replacement unless the text starts
    #: with it), ``always`` (the ``Prepend`` normalizer) or ``never``
    prepend: str | None = None
    replacement: str | None = None  # sentencepiece-bpe: what a space becomes ("▁")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"pattern": self.pattern_name, "normalizer": self.normalizer}
        if self.kind != "byte-level":  # byte-level manifests stay as they were
            d.update(kind=self.kind, prepend=self.prepend)
        return d


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _pattern(pre: Any) -> tuple[str, str] | str:
    """The split regex of a byte-level pre-tokenizer, as (pattern, name), or a reason."""
    if not isinstance(pre, dict):
        return "no pre-tokenizer (not byte-level)"
    if pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space"):
            return "ByteLevel pre-tokenizer adds a prefix space"
        if not pre.get("use_regex", True):
            return "ByteLevel pre-tokenizer without a split regex"
        return GPT2_PATTERN, "gpt2"
    if pre.get("type") != "Sequence":
        return f"pre-tokenizer {pre.get('type')} is not byte-level"
    steps = pre.get("pretokenizers") or []
    if len(steps) != 2 or [s.get("type") for s in steps] != ["Split", "ByteLevel"]:
        return "pre-tokenizer is not Split(regex) + ByteLevel: " + "+".join(
            str(s.get("type")) for s in steps
        )
    split, bl = steps
    if bl.get("add_prefix_space"):
        return "ByteLevel pre-tokenizer adds a prefix space"
    if bl.get("use_regex", True):
        return "ByteLevel after Split also splits with its own regex"
    if split.get("behavior") != "Isolated" or split.get("invert"):
        return (
            f"Split behavior {split.get('behavior')} (invert={split.get('invert')}), not Isolated"
        )
    pat = (split.get("pattern") or {}).get("Regex")
    if pat not in KNOWN_PATTERNS:
        return f"split regex {str(pat)[:60]!r} is not one of the known ones (gpt2, llama3, qwen2)"
    return pat, KNOWN_PATTERNS[pat]


def _normalizer(norm: Any) -> tuple[str | None] | str:
    if norm is None:
        return (None,)
    if isinstance(norm, dict) and norm.get("type") in NORMAL_FORMS:
        return (str(norm["type"]),)
    t = norm.get("type") if isinstance(norm, dict) else norm
    return f"normalizer {t} cannot be applied outside HF tokenizers"


def parse_merges(raw: Sequence[Any]) -> list[tuple[str, str]]:
    return [(m[0], m[1]) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in raw]


def merge_rule(model: dict[str, Any], parsed: list[tuple[str, str]] | None = None) -> str | None:
    """None when HF's merges give exactly tiktoken's rank rule (see the module docstring)."""
    vocab: dict[str, int] = model["vocab"]
    try:
        merges = parsed if parsed is not None else parse_merges(model.get("merges") or [])
        res = [vocab[a + b] for a, b in merges]
    except (KeyError, IndexError, ValueError, TypeError):
        return "a merge makes a token that is not in the vocabulary"
    if not set(itertools.chain.from_iterable(merges)) <= vocab.keys():
        return "a merge names a token that is not in the vocabulary"
    for i in range(1, len(res)):
        if res[i] < res[i - 1]:
            return (
                f"merge #{i} {merges[i]} makes id {res[i]} after a merge that made id "
                f"{res[i - 1]}: merge order is not id order"
            )
    mset = set(merges)
    # every merge is a split of a vocabulary token into two vocabulary tokens (checked above),
    # so the list is complete when there are no more such splits than distinct merges
    if split_candidates(list(vocab)) == len(mset):
        return None
    missing = 0  # the exact count (and an example) for the reason
    example = ""
    for tok in vocab:
        for k in range(1, len(tok)):
            x, y = tok[:k], tok[k:]
            if x in vocab and y in vocab and (x, y) not in mset:
                missing += 1
                example = example or f"{x!r}+{y!r}"
    if missing:
        return (
            f"merges list is not complete: {missing:,} splits of vocabulary tokens into two "
            f"vocabulary tokens are not merges (e.g. {example}); tiktoken would merge them"
        )
    return None


_HASH_BASE = 0x9E3779B97F4A7C15  # odd: invertible modulo 2**64


def split_candidates(tokens: Sequence[str]) -> int:
    """An upper bound on the number of splits ``(t[:k], t[k:])``, ``0 < k < len(t)``, of the
    ``tokens`` into two of the ``tokens``: a split counts when both halves' polynomial hashes
    (mod 2**64) are hashes of tokens. Equal strings have equal hashes, so every real split is
    counted; a collision can only add one. Vectorized; the exact loop is ~5x slower."""
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    if not len(tokens) or int(lens.max()) < 2:
        return 0
    chars = np.frombuffer("".join(tokens).encode("utf-32-le"), dtype=np.uint32)
    c = chars.astype(np.uint64) + np.uint64(1)
    n = len(c)
    ends = np.cumsum(lens)
    starts = ends - lens
    with np.errstate(over="ignore"):
        base = np.full(n, _HASH_BASE, dtype=np.uint64)
        inv = np.full(n, pow(_HASH_BASE, -1, 1 << 64), dtype=np.uint64)
        pw = np.ones(n + 1, dtype=np.uint64)
        np.cumprod(base, out=pw[1:])  # B**i
        ipw = np.ones(n, dtype=np.uint64)
        np.cumprod(inv[:-1], out=ipw[1:])  # B**-i
        g = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(c * ipw, out=g[1:])

        def h(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            """Hash of chars [a, b): sum of c[i] * B**(b-1-i)."""
            out: np.ndarray = (g[b] - g[a]) * pw[b - 1]
            return out

        known = np.unique(h(starts, ends))  # sorted
        per = np.maximum(lens - 1, 0)  # splits of each token
        first = np.repeat(starts, per)
        cut = first + 1 + np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
        last = np.repeat(ends, per)

        def member(x: np.ndarray) -> np.ndarray:
            found: np.ndarray = known[np.searchsorted(known, x) % len(known)] == x
            return found

        ok = member(h(first, cut))
        ok &= member(h(cut, last))
    return int(np.count_nonzero(ok))


def self_encoding(vocab: dict[str, int], merges: list[tuple[str, str]]) -> str | None:
    """With ``ignore_merges=false``: every token must come out of its own bytes by merges (as
    tiktoken's whole-piece lookup assumes). Returns the first token that does not, or None."""
    rank = {(a, b): i for i, (a, b) in reversed(list(enumerate(merges)))}
    for tok in vocab:
        if len(tok) > 1 and hf_bpe(tok, rank) != [tok]:
            return tok
    return None


def hf_bpe(word: str, rank: dict[tuple[str, str], int]) -> list[str]:
    """HF's merge loop on one pre-token (lowest merge index first, then leftmost)."""
    parts = list(word)
    while len(parts) > 1:
        cands = [(rank[p], i) for i, p in enumerate(itertools.pairwise(parts)) if p in rank]
        if not cands:
            break
        _, i = min(cands)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


#: The BPE model options a fast engine may refuse, as its reason names them.
BPE_OPTIONS: dict[str, str] = {
    "dropout": "BPE dropout",
    "unk_token": "an unk token",
    "continuing_subword_prefix": "a continuing-subword prefix",
    "end_of_word_suffix": "an end-of-word suffix",
    "byte_fallback": "byte fallback",
    "ignore_merges": "ignore_merges (whole words looked up first)",
}


def bpe_options_reason(model: dict[str, Any], refused: Sequence[str]) -> str | None:
    """The reason when ``model`` is not BPE or sets one of the ``refused`` options (checked in
    that order, named as in :data:`BPE_OPTIONS`), else None. ``model`` may be the parsed JSON's
    ``model`` or ``special.model_head``'s summary of a built one: the same reason either way."""
    if model.get("type") != "BPE":
        return f"model is {model.get('type')}, not BPE"
    for key in refused:
        if model.get(key):
            return f"BPE model has {BPE_OPTIONS[key]} ({model[key]!r})"
    return None


def plain_added_reason(d: dict[str, Any]) -> str | None:
    """The reason when the tokenizer has non-special added tokens (HF matches them in text,
    even with ``encode_special_tokens=True``; no fast engine does), else None."""
    plain = [a["content"] for a in d.get("added_tokens") or [] if not a.get("special")]
    if not plain:
        return None
    return (
        f"{len(plain)} non-special added token(s) (e.g. {plain[0]!r}) are matched in text by "
        "HF tokenizers"
    )


def analyze(d: dict[str, Any]) -> FastSpec | str:
    """A :class:`FastSpec` when tiktoken reproduces this tokenizer.json's encoding, else the
    reason (one line) why not."""
    model = d.get("model") or {}
    why = bpe_options_reason(
        model,
        (
            "dropout",
            "unk_token",
            "continuing_subword_prefix",
            "end_of_word_suffix",
            "byte_fallback",
        ),
    )
    if why:
        return why
    norm = _normalizer(d.get("normalizer"))
    if isinstance(norm, str):
        return norm
    pat = _pattern(d.get("pre_tokenizer"))
    if isinstance(pat, str):
        return pat
    why = plain_added_reason(d)
    if why:
        return why
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        return "BPE vocabulary is not a token -> id map"
    inv = {c: b for b, c in bytes_to_unicode().items()}
    if not set("".join(vocab)) <= inv.keys() or "" in vocab:
        tok = next(t for t in vocab if not t or any(ch not in inv for ch in t))
        return f"vocabulary is not byte-level (token {tok[:20]!r})"
    if any(ch not in vocab for ch in inv):
        return "vocabulary lacks some of the 256 byte tokens"
    if len(set(vocab.values())) != len(vocab):
        return "vocabulary has duplicate ids"
    why = merge_rule(model)
    if why:
        return why
    if not model.get("ignore_merges"):
        bad = self_encoding(vocab, parse_merges(model.get("merges") or []))
        if bad is not None:
            return (
                f"ignore_merges=false and token {bad!r} does not encode to itself by merges "
                "(tiktoken looks whole pre-tokens up)"
            )
    return FastSpec(pattern=pat[0], pattern_name=pat[1], normalizer=norm[0])


def mergeable_ranks(d: dict[str, Any]) -> dict[bytes, int]:
    """The byte-level vocabulary as tiktoken ranks (rank = id)."""
    # each vocabulary character stands for one byte: map it to the character of that byte's
    # code point, then latin-1 turns the string into exactly those bytes (``analyze`` checked
    # that every character is one of the 256)
    table = {ord(c): b for b, c in bytes_to_unicode().items()}
    vocab: dict[str, int] = d["model"]["vocab"]
    return {tok.translate(table).encode("latin-1"): int(i) for tok, i in vocab.items()}


#: The one special token of the tiktoken ``Encoding``: never allowed, so never produced (text that
#: spells it is encoded as text). It exists because tiktoken's special-token search with *no*
#: special token at all tries every position (an empty regex), which makes the array output
#: (:func:`encode_texts`) slower than the list output it replaces.
NEVER_SPECIAL = "<|denoise: never a special token|>"


def build_encoding(d: dict[str, Any], spec: FastSpec) -> Any:
    """The tiktoken ``Encoding``: the vocabulary as ranks and :data:`NEVER_SPECIAL` (documents
    are encoded as plain text, no special token is ever allowed)."""
    import tiktoken

    ranks = mergeable_ranks(d)
    return tiktoken.Encoding(
        "denoise-" + spec.pattern_name,
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens={NEVER_SPECIAL: max(ranks.values()) + 1},
    )


_NO_SPECIAL: frozenset[str] = frozenset()


def encode_texts(enc: Any, spec: FastSpec, texts: Sequence[str]) -> list[np.ndarray]:
    """Encode documents one by one in this thread (``encode_ordinary_batch`` would start a
    thread pool; workers are single-threaded by design), each as a uint32 array.

    ``encode_to_numpy`` with no special token allowed and none refused is tiktoken's
    ``encode_ordinary`` (the same split and merges; a special token is only ever cut out of the
    text when it is allowed) without building a Python list per document. A text that cannot be
    UTF-8 encoded (lone surrogates) is repaired as ``encode_ordinary`` repairs it."""
    if spec.normalizer is not None:
        form = spec.normalizer
        texts = [unicodedata.normalize(form, t) for t in texts]  # type: ignore[arg-type]
    f = enc.encode_to_numpy
    out: list[np.ndarray] = []
    for t in texts:
        try:
            out.append(f(t, allowed_special=_NO_SPECIAL, disallowed_special=()))
        except UnicodeEncodeError:  # tiktoken's own repair in ``encode_ordinary``
            t = t.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            out.append(f(t, allowed_special=_NO_SPECIAL, disallowed_special=()))
    return out


def first_difference(
    texts: Sequence[str],
    reference: Callable[[Sequence[str]], Sequence[Sequence[int]]],
    candidate: Callable[[Sequence[str]], Sequence[Sequence[int]]],
) -> int | None:
    """Index of the first text whose ids differ between the two encoders, or None."""
    want = reference(texts)
    got = candidate(texts)
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        if list(a) != list(b):
            return i
    return None

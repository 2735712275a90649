"""The SentencePiece-style fast engine (``fastsp``) is exact: identical ids to HF ``tokenizers``.

The tokenizers here are built in the test (no ``../shared``): the first GPT-2 ranks recast as
SentencePiece pieces (``" "`` -> ``"▁"``), a few multi-byte characters and tokens made of them,
all 256 ``<0xXX>`` byte tokens, and a complete merges list in id order, as Hugging Face's
converter writes Llama's. Characters outside the vocabulary (``ß``, ``丁``, which shares its
first two bytes with ``中``, most emoji) exercise byte fallback; the real Llama 32k tokenizer is
checked on the real corpus when ``../shared`` is there.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fastbpe import gpt2_json, repo_texts

from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.prepare.run import prepare
from denoise_cli.source import fastsp
from denoise_cli.source.backend import choose_backend
from denoise_cli.source.fastbpe import TORTURE_TEXTS, bytes_to_unicode
from denoise_cli.source.fastengine import FastSpec, analyze
from denoise_cli.source.tokenize import Encoder

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
SHARED = REPO.parent / "shared"
LLAMA = SHARED / "tokenizers" / "llama-bpe-32k" / "tokenizer.json"
M = "\u2581"
EXTRA_CHARS = ["é", "ü", "中", "文", "😀", "—"]
EXTRA_TOKENS = ["中文", M + "中", M + "中文", M + "é", "é" + "t", M + "ü"]
EDGE_TEXTS = [
    "",
    " ",
    M,
    "  x",
    " " + M + "a",
    "\n",
    "a" * 3000,
    " " * 70,
    "x" + " " * 33 + "y" + "\t" * 5,
    "-" * 100 + " " + "=" * 77 + " " + "0" * 40,
    "中文 丁丂 ß straße 😀😃 é ü — <0x41> <s> </s> <unk>",
    "a" + M + M + "b" + M + " " + M,
]


@cache
def sp_dict(n: int = 4000) -> dict[str, Any]:
    """A Llama-style tokenizer.json (Metaspace, prepend "first", no split) as a dict."""
    dec = {c: b for b, c in bytes_to_unicode().items()}
    pieces: list[str] = []
    for t, _ in sorted(orjson.loads(gpt2_json())["model"]["vocab"].items(), key=lambda x: x[1]):
        try:
            s = bytes(dec[c] for c in t).decode("utf-8").replace(" ", M)
        except (UnicodeDecodeError, KeyError):
            continue
        if s and s.isprintable() and M not in s.lstrip(M):
            pieces.append(s)
        if len(pieces) >= n:
            break
    chars = {p for p in pieces if len(p) == 1} | set(EXTRA_CHARS) | {M}
    pieces = [p for p in pieces if set(p) <= chars]
    specials = ["<unk>", "<s>", "</s>"]
    vocab: dict[str, int] = {}
    for tok in [
        *specials,
        *(fastsp.byte_token(b) for b in range(256)),
        *sorted(chars),
        *pieces,
        *EXTRA_TOKENS,
    ]:
        vocab.setdefault(tok, len(vocab))
    merges: list[list[str]] = []
    for tok, _ in sorted(vocab.items(), key=lambda x: x[1]):
        if tok in specials or tok.startswith("<0x"):
            continue
        ok = [(tok[:k], tok[k:]) for k in range(1, len(tok))]
        ok = [(a, b) for a, b in ok if a in vocab and b in vocab]
        merges += [[a, b] for a, b in sorted(ok, key=lambda p: (vocab[p[0]], vocab[p[1]]))]
    added = [
        {"id": vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for s in specials
    ]  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Metaspace",
            "replacement": M,
            "prepend_scheme": "first",
            "split": False,
        },
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def variant(kind: str) -> dict[str, Any]:
    """``metaspace`` (Llama 2 as converted today), ``split`` (Metaspace split=True), ``legacy``
    (the older ``Prepend + Replace`` normalizer, no pre-tokenizer), ``never`` (no prepend)."""
    d = copy.deepcopy(sp_dict())
    if kind == "split":
        d["pre_tokenizer"]["split"] = True
    elif kind == "never":
        d["pre_tokenizer"]["prepend_scheme"] = "never"
    elif kind == "legacy":
        d["pre_tokenizer"] = None
        d["normalizer"] = {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": M},
                {"type": "Replace", "pattern": {"String": " "}, "content": M},
            ],
        }
    return d


VARIANTS = ["metaspace", "split", "legacy", "never"]


@cache
def encoders(kind: str) -> tuple[Encoder, Encoder]:
    tok_json = orjson.dumps(variant(kind)).decode()
    spec = analyze(orjson.loads(tok_json))
    assert isinstance(spec, FastSpec), spec
    none = np.zeros(0, np.int32)
    return Encoder(tok_json, none, None), Encoder(tok_json, none, None, fast=spec)


def _same(kind: str, texts: list[str]) -> None:
    hf, fast = encoders(kind)
    want, got = hf.encode_lists(texts), fast.encode_lists(texts)
    for t, a, b in zip(texts, want, got, strict=True):
        assert a == b, (kind, t[:80])


# --------------------------------------------------------------------------- analyze


@pytest.mark.parametrize("kind", VARIANTS)
def test_sentencepiece_style_variants_are_reproducible(kind: str) -> None:
    spec = analyze(variant(kind))
    assert isinstance(spec, FastSpec), spec
    assert spec.kind == "sentencepiece-bpe" and spec.replacement == M
    assert spec.prepend == {"legacy": "always", "never": "never"}.get(kind, "first")
    assert spec.pattern_name == ("metaspace-split" if kind == "split" else "metaspace")
    assert spec.to_dict()["kind"] == "sentencepiece-bpe"


def _edit(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return f


def _add_token(tok: str) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        v = d["model"]["vocab"]
        v[tok] = len(v)

    return f


def _drop_merge(d: dict[str, Any]) -> None:
    d["model"]["merges"].pop(len(d["model"]["merges"]) // 2)


def _drop_byte(d: dict[str, Any]) -> None:
    del d["model"]["vocab"]["<0x0A>"]


def _plain_added(d: dict[str, Any]) -> None:
    d["added_tokens"].append(
        {"id": 99999, "content": "[X]", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False}
    )  # fmt: skip


def _special_char(d: dict[str, Any]) -> None:
    d["added_tokens"].append(
        {"id": d["model"]["vocab"]["x"], "content": "x", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_edit(("model", "dropout"), 0.1), "BPE dropout"),
        (_edit(("model", "ignore_merges"), True), "ignore_merges"),
        (_edit(("model", "byte_fallback"), False), "without byte fallback"),
        (_edit(("model", "continuing_subword_prefix"), "##"), "continuing-subword prefix"),
        (_edit(("normalizer",), {"type": "NFKC"}), "normalizer NFKC before Metaspace"),
        (_edit(("pre_tokenizer", "prepend_scheme"), "sometimes"), "prepend_scheme"),
        (_edit(("pre_tokenizer",), {"type": "Whitespace"}), "Whitespace is not Metaspace"),
        (_drop_byte, "lacks byte token <0x0A>"),
        (_drop_merge, "not complete"),
        (_add_token("a" + M + "b"), "after another character"),
        (_add_token("aß"), "which is not a vocabulary token"),
        (_plain_added, "non-special added token"),
        (_add_token("zqzq"), "does not encode to itself"),  # no merge makes it
        (_edit(("model", "merges"), [["a"], 3]), "not pairs of tokens"),
        (_special_char, "single vocabulary character"),
    ],
)
def test_analyze_refuses_what_the_engine_does_not_reproduce(
    edit: Callable[[dict[str, Any]], None], reason: str
) -> None:
    d = copy.deepcopy(sp_dict())
    edit(d)
    why = analyze(d)
    assert isinstance(why, str) and reason in why, why


def test_legacy_normalizer_shapes_are_checked() -> None:
    d = variant("legacy")
    d["normalizer"]["normalizers"][1]["content"] = "__"
    assert "one character" in str(analyze(d))
    d = variant("legacy")
    d["normalizer"]["normalizers"][0]["prepend"] = "#"
    assert "does not prepend the replacement" in str(analyze(d))
    d = variant("legacy")
    d["normalizer"]["normalizers"].insert(0, {"type": "NFKC"})
    assert "is not Prepend + Replace" in str(analyze(d))


# --------------------------------------------------------------------------- identical ids


@pytest.mark.parametrize("kind", VARIANTS)
def test_torture_edge_and_repo_texts_identical(kind: str) -> None:
    _same(kind, [*TORTURE_TEXTS, *EDGE_TEXTS, *repo_texts()])


def test_unknown_characters_fall_back_to_their_bytes() -> None:
    """``丁`` (E4 B8 81) is not in the vocabulary but shares its first two bytes with ``中``
    (E4 B8 AD): tiktoken stops at the two-byte prefix, which maps back to two byte ids."""
    hf, fast = encoders("metaspace")
    v = sp_dict()["model"]["vocab"]
    want = [v[M + "中"], v[fastsp.byte_token(0xE4)], v[fastsp.byte_token(0xB8)]]
    want += [v[fastsp.byte_token(0x81)]]
    assert fast.encode_lists(["中丁"]) == hf.encode_lists(["中丁"]) == [want]


def test_rank_to_ids_table_matches_a_slow_reference() -> None:
    """``SpEngine.ids`` (vectorized) against the obvious per-rank expansion, on random ranks
    with many prefixes of unknown characters among them."""
    _, fast = encoders("metaspace")
    eng = fast.engine
    assert isinstance(eng, fastsp.SpEngine) and eng.n_multi > 0
    rng = np.random.default_rng(5)
    n = len(eng.single)

    def slow(ranks: np.ndarray) -> list[int]:
        out: list[int] = []
        for r in ranks.tolist():
            if r < eng.n_multi:
                out += eng.multi_ids[eng.multi_start[r] : eng.multi_start[r + 1]].tolist()
            else:
                out.append(int(eng.single[r]))
        return out

    for size in (0, 1, 7, 500):
        for share in (0.0, 0.3, 1.0):
            multi = rng.random(size) < share
            ranks = np.where(
                multi, rng.integers(0, eng.n_multi, size), rng.integers(eng.n_multi, n, size)
            ).astype(np.uint32)
            assert eng.ids(ranks).tolist() == slow(ranks)


ALPHABET = [" ", "  ", M, "\n", "\t", "a", "b", "e", "t", "h", "the", "ing", "-", "0", "1", ".", "<",
            ">", "x", "A", "é", "ü", "中", "文", "丁", "丂", "ß", "Ж", "😀", "😃", "👍🏽", "—", "\u0301",
            "\x00", "\ufffd"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.sampled_from(ALPHABET), max_size=40).map("".join), min_size=1, max_size=6),
    st.sampled_from(VARIANTS),
)
def test_property_random_texts_identical(texts: list[str], kind: str) -> None:
    _same(kind, texts)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_property_any_unicode_identical(text: str) -> None:
    _same("metaspace", [text])


def test_long_documents_cut_into_pieces_identical() -> None:
    """Documents longer than ``piece_chars`` are encoded in pieces (cut where the ids cannot
    change): the fast engine's pieces give HF's whole-document ids."""
    tok_json = orjson.dumps(variant("metaspace")).decode()
    spec = analyze(orjson.loads(tok_json))
    assert isinstance(spec, FastSpec)
    texts = [" ".join(repo_texts()[:40])[:200_000], "中文 " * 5000]
    none = np.zeros(0, np.int32)
    whole = Encoder(tok_json, none, None, piece_chars=0)
    cut = Encoder(tok_json, none, None, piece_chars=2000, fast=spec)
    want, _, _ = whole.encode(texts)
    got, _, _ = cut.encode(texts)
    assert len(cut.splitter.cuts(texts[0], 2000)) > 10  # it was cut
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- backend, pipeline


def test_choose_backend_takes_the_sentencepiece_engine() -> None:
    tok_json = orjson.dumps(variant("metaspace")).decode()
    c = choose_backend(tok_json, "auto", ["first document", "中丁 second"])
    assert c.used == "fast" and c.spec is not None and c.spec.kind == "sentencepiece-bpe"
    assert isinstance(c.engine, fastsp.SpEngine)
    assert c.to_dict()["kind"] == "sentencepiece-bpe" and c.to_dict()["prepend"] == "first"
    d = copy.deepcopy(sp_dict())
    d["model"]["dropout"] = 0.1
    with pytest.raises(ConfigError, match="BPE dropout"):
        choose_backend(orjson.dumps(d).decode(), "fast")


@pytest.mark.slow
def test_prepare_fast_equals_hf_for_a_sentencepiece_tokenizer(tmp_path: Path) -> None:
    tok = tmp_path / "tokenizer.json"
    tok.write_bytes(orjson.dumps(variant("metaspace")))
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 128))
    outs = {}
    for b in ("hf", "fast"):
        out = tmp_path / b
        m = prepare(
            [str(SAMPLE)], str(out), cfg, tokenizer=str(tok), workers=2, progress=False,
            tokenizer_backend=b,
        )  # fmt: skip
        assert m["tokenizer_backend"]["used"] == b
        outs[b] = out
    shards = sorted(p.name for p in (outs["hf"] / "data").iterdir())
    assert shards
    for name in shards:
        a = (outs["hf"] / "data" / name).read_bytes()
        assert a == (outs["fast"] / "data" / name).read_bytes()
    be = orjson.loads((outs["fast"] / "denoise.json").read_bytes())["tokenizer_backend"]
    assert be["kind"] == "sentencepiece-bpe" and be["pattern"] == "metaspace"


# --------------------------------------------------------------------------- the real Llama


@pytest.mark.slow
@pytest.mark.skipif(not LLAMA.exists(), reason="needs ../shared (the Llama 32k tokenizer)")
def test_real_llama_tokenizer_identical_on_the_real_corpus() -> None:
    import zstandard

    tok_json = LLAMA.read_text(encoding="utf-8")
    spec = analyze(orjson.loads(tok_json))
    assert isinstance(spec, FastSpec) and spec.kind == "sentencepiece-bpe", spec
    none = np.zeros(0, np.int32)
    hf, fast = Encoder(tok_json, none, None), Encoder(tok_json, none, None, fast=spec)
    docs = 0
    for path in sorted((SHARED / "corpus" / "en-prose").glob("*.jsonl.zst")):
        with path.open("rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            texts = [orjson.loads(line)["text"] for line in io.TextIOWrapper(reader, "utf-8")]
        for i in range(0, len(texts), 200):
            chunk = texts[i : i + 200]
            want, got = hf.encode_lists(chunk), fast.encode_lists(chunk)
            for j, (a, b) in enumerate(zip(want, got, strict=True)):
                assert a == b, f"{path.name} document {i + j}"
        docs += len(texts)
    assert docs > 2000
    # and random text over several scripts, spaces, emoji, combining marks, controls
    rng = np.random.default_rng(11)
    blocks = [(0x20, 0x7F), (0xA0, 0x250), (0x370, 0x530), (0x4E00, 0x4F00), (0x1F600, 0x1F650),
              (0x300, 0x370), (0x0, 0x20), (0x2580, 0x2590), (0xAC00, 0xAD00)]  # fmt: skip
    randoms = []
    for _ in range(3000):
        lo, hi = blocks[rng.integers(len(blocks))], blocks[rng.integers(len(blocks))]
        cps = np.concatenate([rng.integers(*lo, 20), rng.integers(*hi, 20), [32] * 8])
        randoms.append("".join(map(chr, rng.permutation(cps)[: rng.integers(1, 48)])))
    randoms += list(TORTURE_TEXTS) + EDGE_TEXTS
    assert hf.encode_lists(randoms) == fast.encode_lists(randoms)


def test_cli_summary_names_the_engine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from denoise_cli.cli import app

    tok = tmp_path / "tokenizer.json"
    tok.write_bytes(orjson.dumps(variant("metaspace")))
    out = tmp_path / "o"
    args = ["prepare", str(SAMPLE), str(out), "--tokenizer", str(tok), "--workers", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "tokenizer backend: fast (sentencepiece-bpe on tiktoken" in res.output
    hf_args = [*args[:2], str(tmp_path / "h"), *args[3:], "--tokenizer-backend", "hf"]
    res = CliRunner().invoke(app, hf_args)
    assert res.exit_code == 0, res.output
    assert "tokenizer backend: hf (HF tokenizers; requested)" in res.output

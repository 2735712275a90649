"""The fast backend's shortcuts give what the plain ways give: ids as tiktoken arrays (through a
special token that is never allowed) vs ``encode_ordinary``'s lists and HF's ids, the byte
ranks by ``str.translate`` vs the per-character map, the self-check reusing the HF build and
handing its tiktoken ``Encoding`` on, and the ``Encoding`` a forkserver builds for its workers."""

from __future__ import annotations

import os
import pickle
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from denoise_cli.config import TokenConfig, load_mixture
from denoise_cli.source import fastbpe
from denoise_cli.source import tokenize as tk
from denoise_cli.source.backend import choose_backend
from denoise_cli.source.discover import find_inputs
from denoise_cli.source.read import FileStats, iter_batches
from denoise_cli.source.tokenize import (
    Encoder,
    TokenizerInfo,
    build_shared_tokenizer,
    build_tokenizer,
    share_with_workers,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample"
SHARED_00 = ROOT.parent / "shared" / "corpus" / "en-prose" / "00.jsonl.zst"
NEVER = fastbpe.NEVER_SPECIAL
# texts that spell the never-allowed special token (alone, repeated, cut, next to text)
SPELLED = [
    NEVER,
    NEVER * 3,
    f"a{NEVER}b {NEVER[:-1]} {NEVER[1:]}",
    f"<|endoftext|>{NEVER}<extra_id_0>",
    "<|denoise: never|> <|" + NEVER,
]


@cache
def info() -> TokenizerInfo:
    """The embedded GPT-2 with the ul2 special tokens added, as prepare builds it."""
    return build_tokenizer(None, TokenConfig(), load_mixture("ul2"), 100)


@cache
def spec() -> fastbpe.FastSpec:
    s = fastbpe.analyze(orjson.loads(info().json))
    assert isinstance(s, fastbpe.FastSpec), s
    return s


def sample_texts() -> list[str]:
    texts: list[str] = []
    for f in find_inputs([str(SAMPLE)]):
        for b in iter_batches(f, stats=FileStats()):
            texts += b.texts
    return texts


def reference_ranks(d: dict[str, object]) -> dict[bytes, int]:
    """The obvious per-character map (the implementation before ``str.translate``)."""
    inv = {c: b for b, c in fastbpe.bytes_to_unicode().items()}
    vocab = d["model"]["vocab"]  # type: ignore[index]
    return {bytes(inv[ch] for ch in tok): int(i) for tok, i in vocab.items()}


def test_ranks_by_translate_equal_the_per_character_map() -> None:
    d = orjson.loads(info().json)
    assert fastbpe.mergeable_ranks(d) == reference_ranks(d)


def test_arrays_equal_encode_ordinary_and_hf_even_when_text_spells_the_special() -> None:
    enc = fastbpe.build_encoding(orjson.loads(info().json), spec())
    texts = [*fastbpe.TORTURE_TEXTS, *SPELLED, *sample_texts()]
    arrays = fastbpe.encode_texts(enc, spec(), texts)
    assert all(a.dtype == np.uint32 for a in arrays)
    # the arrays are tiktoken's plain-text encoding ...
    assert [a.tolist() for a in arrays] == [enc.encode_ordinary(t) for t in texts]
    # ... and HF's ids: the spelled special token is text, never its (out-of-vocabulary) id
    hf = Encoder(info().json, np.zeros(0, np.int32), None)
    assert [a.tolist() for a in arrays] == hf.encode_lists(texts)
    never_id = max(fastbpe.mergeable_ranks(orjson.loads(info().json)).values()) + 1
    assert all(int(a.max(initial=0)) < never_id for a in arrays)


def test_lone_surrogates_are_repaired_as_encode_ordinary_repairs_them() -> None:
    enc = fastbpe.build_encoding(orjson.loads(info().json), spec())
    texts = ["a\ud800b", "\udfff", "x \ud83d\ude00 \ud83d y"]
    got = fastbpe.encode_texts(enc, spec(), texts)
    assert [a.tolist() for a in got] == [enc.encode_ordinary(t) for t in texts]


def test_encode_flat_equals_the_list_path() -> None:
    """Encoder.encode (flat int32 ids, offsets, reserved ids replaced) with the array path vs the
    same texts through HF, pieces of long documents included."""
    i = info()
    unk = i.unk[1] if i.unk else None
    texts = [*fastbpe.TORTURE_TEXTS, *SPELLED, *sample_texts()]
    hf = Encoder(i.json, i.reserved_ids(), unk, piece_chars=3000)
    fast = Encoder(i.json, i.reserved_ids(), unk, piece_chars=3000, fast=spec())
    assert any(len(t) > 3000 for t in texts)  # some documents are encoded in pieces
    a, b = hf.encode(texts), fast.encode(texts)
    assert b[0].dtype == np.int32 and b[0].flags.writeable
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_self_check_reuses_the_built_tokenizer_and_hands_its_encoding_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    i = build_tokenizer(None, TokenConfig(), load_mixture("ul2"), 100)
    builds: list[str] = []
    real_from_str = tk._tokenizers().Tokenizer.from_str

    class Counting:
        @staticmethod
        def from_str(text: str) -> object:
            builds.append("hf")
            return real_from_str(text)

    class Module:
        Tokenizer = Counting

    monkeypatch.setattr(tk, "_tokenizers", lambda: Module)
    c = choose_backend(i.json, "auto", ["Some first document."], i.model_head, i.built)
    assert c.used == "fast" and c.engine is not None and builds == []  # no second HF build
    enc = i.encoder(c.spec, c.engine)
    assert enc.engine is c.engine  # the in-process run encodes with it, no second tiktoken build
    fresh = Encoder(i.json, i.reserved_ids(), i.unk[1] if i.unk else None, fast=c.spec)
    texts = sample_texts()
    x, y = enc.encode(texts), fresh.encode(texts)
    assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    # neither the choice nor the encoder carries the engine to a worker
    assert pickle.loads(pickle.dumps(c)).engine is None
    assert pickle.loads(pickle.dumps(enc))._enc is None


def test_forkserver_builds_the_fast_encoding_once_for_the_same_json_and_spec() -> None:
    i = info()
    other = build_tokenizer(None, TokenConfig(), load_mixture("t5"), 100)
    tk._SHARED.clear()
    tk._SHARED_FAST.clear()
    try:
        with share_with_workers(i.json, spec()):
            assert tk.SHARED_FAST_ENV in os.environ
            build_shared_tokenizer()  # what a forkserver does when it imports the module
            assert tk.SHARED_TOKENIZER_ENV not in os.environ
            assert tk.SHARED_FAST_ENV not in os.environ
        assert not tk._SHARED and len(tk._SHARED_FAST) == 1
        shared = tk._SHARED_FAST[0][2]
        # another tokenizer's encoder, or an HF one, does not take it
        assert Encoder(other.json, other.reserved_ids(), None, fast=spec()).engine is not shared
        assert Encoder(i.json, i.reserved_ids(), None).tokenizer is not shared
        assert tk._SHARED_FAST
        enc = pickle.loads(pickle.dumps(Encoder(i.json, i.reserved_ids(), None, fast=spec())))
        assert enc.engine is shared and not tk._SHARED_FAST
        fresh = Encoder(i.json, i.reserved_ids(), None, fast=spec())
        texts = [*fastbpe.TORTURE_TEXTS, *sample_texts()]
        assert np.array_equal(enc.encode(texts)[0], fresh.encode(texts)[0])
    finally:
        tk._SHARED.clear()
        tk._SHARED_FAST.clear()
        os.environ.pop(tk.SHARED_TOKENIZER_ENV, None)
        os.environ.pop(tk.SHARED_FAST_ENV, None)


@pytest.mark.skipif(not SHARED_00.is_file(), reason="needs ../shared (real corpus)")
def test_real_corpus_arrays_equal_hf() -> None:
    """The first ~2,000 documents of a real shard: array path == HF ids, document by document."""
    i = info()
    enc = fastbpe.build_encoding(orjson.loads(i.json), spec())
    hf = Encoder(i.json, np.zeros(0, np.int32), None)
    n = 0
    for f in find_inputs([str(SHARED_00)]):
        for b in iter_batches(f, stats=FileStats()):
            got = fastbpe.encode_texts(enc, spec(), b.texts)
            assert [a.tolist() for a in got] == hf.encode_lists(b.texts)
            n += len(b.texts)
            if n >= 2000:
                return


def exact_splits(tokens: list[str]) -> int:
    """The obvious count of splits of a token into two tokens."""
    v = set(tokens)
    return sum(1 for t in v for k in range(1, len(t)) if t[:k] in v and t[k:] in v)


@pytest.mark.parametrize("which", ["gpt2", "gpt2-merges"])
def test_split_candidates_count_the_real_splits(which: str) -> None:
    d = orjson.loads(info().json)
    tokens = list(d["model"]["vocab"])
    if which == "gpt2-merges":  # the tokens that merges make, a vocabulary with gaps
        tokens = sorted({a + b for a, b in fastbpe.parse_merges(d["model"]["merges"])})[:5000]
        tokens += [chr(c) for c in range(32, 600)]
    assert fastbpe.split_candidates(tokens) == exact_splits(tokens)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab\u0100\U0001f600", min_size=1, max_size=7), max_size=40))
def test_split_candidates_on_random_vocabularies(tokens: list[str]) -> None:
    tokens = list(dict.fromkeys(tokens))  # a vocabulary has each token once
    assert fastbpe.split_candidates(tokens) == exact_splits(tokens)


def test_an_incomplete_merges_list_is_still_refused_with_the_exact_count() -> None:
    d = orjson.loads(info().json)
    merges = d["model"]["merges"]
    d["model"]["merges"] = merges[:100] + merges[101:]  # one valid split is not a merge
    why = fastbpe.analyze(d)
    assert isinstance(why, str) and "not complete: 1 splits" in why

"""The tiktoken backend is exact: identical ids to HF ``tokenizers`` wherever it is chosen."""

from __future__ import annotations

import copy
import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from denoise_cli.config import Lengths, PrepareConfig, TokenConfig, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.prepare.run import prepare
from denoise_cli.source import backend, fastbpe
from denoise_cli.source import tokenize as tkz
from denoise_cli.source.backend import choose_backend
from denoise_cli.source.discover import find_inputs
from denoise_cli.source.read import FileStats, iter_batches
from denoise_cli.source.tokenize import (
    Encoder,
    build_tokenizer,
    load_tokenizer_json,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
T5_TINY = REPO / "tests" / "data" / "t5-tiny-tokenizer.json"
LOOKALIKES = ["<extra_id_5>", "<|endoftext|>", "<pad>", "</s>", "[NLU]", "<|begin_of_text|>"]


@cache
def gpt2_json() -> str:
    return load_tokenizer_json(None)[0]


@cache
def gpt2_extended() -> tkz.TokenizerInfo:
    """The embedded GPT-2 with the ul2 sentinels, mode tokens and pad added (as prepare does)."""
    mix = load_mixture("ul2")
    return build_tokenizer(None, TokenConfig(), mix, 100)


@cache
def llama3_style_json(n: int = 3000, ignore_merges: bool = True) -> str:
    """A small Llama-3-style tokenizer: the first ``n`` GPT-2 ranks, a complete merges list in
    rank order (as converted from tiktoken), the Llama-3 split regex + ByteLevel(no regex) and
    special tokens after the vocabulary."""
    full = orjson.loads(gpt2_json())["model"]["vocab"]
    vocab = {t: i for t, i in full.items() if i < n}
    merges = []
    for tok, _ in sorted(vocab.items(), key=lambda x: x[1]):
        splits = [(tok[:k], tok[k:]) for k in range(1, len(tok))]
        ok = [(a, b) for a, b in splits if a in vocab and b in vocab]
        merges += sorted(ok, key=lambda p: (vocab[p[0]], vocab[p[1]]))
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    d = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": n + k,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for k, s in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": fastbpe.LLAMA3_PATTERN},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }
    return orjson.dumps(d).decode()


def encoders(tok_json: str) -> tuple[Encoder, Encoder]:
    spec = fastbpe.analyze(orjson.loads(tok_json))
    assert isinstance(spec, fastbpe.FastSpec), spec
    return Encoder(tok_json, np.zeros(0, np.int32), None), Encoder(
        tok_json, np.zeros(0, np.int32), None, fast=spec
    )


def repo_texts() -> list[str]:
    texts: list[str] = []
    for f in find_inputs([str(SAMPLE)]):
        for b in iter_batches(f, stats=FileStats()):
            texts += b.texts
    texts += [p.read_text(encoding="utf-8") for p in REPO.glob("*.md")]
    texts += [p.read_text(encoding="utf-8") for p in (REPO / "docs").glob("*.md")]
    return texts


# --------------------------------------------------------------------------- analyze


def test_embedded_gpt2_and_llama3_style_are_reproducible() -> None:
    spec = fastbpe.analyze(orjson.loads(gpt2_json()))
    assert isinstance(spec, fastbpe.FastSpec) and spec.pattern_name == "gpt2"
    spec = fastbpe.analyze(orjson.loads(gpt2_extended().json))
    assert isinstance(spec, fastbpe.FastSpec), spec
    spec = fastbpe.analyze(orjson.loads(llama3_style_json()))
    assert isinstance(spec, fastbpe.FastSpec) and spec.pattern_name == "llama3"
    # ignore_merges=false is accepted when every token encodes to itself by merges
    spec = fastbpe.analyze(orjson.loads(llama3_style_json(ignore_merges=False)))
    assert isinstance(spec, fastbpe.FastSpec), spec


def _mutate(d: dict[str, Any], what: str) -> None:
    m = d["model"]
    if what in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        m[what] = 0.1 if what == "dropout" else "##"
    elif what == "byte_fallback":
        m["byte_fallback"] = True
    elif what == "normalizer":
        d["normalizer"] = {"type": "Lowercase"}
    elif what == "prefix_space":
        d["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = True
    elif what == "regex":
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    elif what == "behavior":
        d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"
    elif what == "plain_added":
        d["added_tokens"].append(
            {"id": 99999, "content": "  ", "special": False, "normalized": False}
        )
    elif what == "incomplete":
        m["merges"].pop(len(m["merges"]) // 2)
    elif what == "order":
        i = next(k for k in range(len(m["merges"]) - 1) if m["merges"][k + 1] != m["merges"][k])
        j = len(m["merges"]) - 1
        m["merges"][i], m["merges"][j] = m["merges"][j], m["merges"][i]
    elif what == "not_byte_level":
        m["vocab"]["\u2581the"] = len(m["vocab"]) + 10
    elif what == "self_encoding":
        m["ignore_merges"] = False
        # a token no merge makes: tiktoken's whole-piece lookup would emit it, HF would not
        m["vocab"]["zqzq"] = len(m["vocab"]) + 10
    else:  # pragma: no cover
        raise AssertionError(what)


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("dropout", "dropout"),
        ("unk_token", "unk"),
        ("continuing_subword_prefix", "continuing-subword"),
        ("end_of_word_suffix", "end-of-word"),
        ("byte_fallback", "byte fallback"),
        ("normalizer", "normalizer Lowercase"),
        ("prefix_space", "prefix space"),
        ("regex", "not one of the known"),
        ("behavior", "not Isolated"),
        ("plain_added", "non-special added"),
        ("incomplete", "not complete"),
        ("order", "not id order"),
        ("not_byte_level", "not byte-level"),
        ("self_encoding", "does not encode to itself"),
    ],
)
def test_analyze_refuses_what_tiktoken_does_not_reproduce(what: str, reason: str) -> None:
    d = copy.deepcopy(orjson.loads(llama3_style_json(600)))
    assert isinstance(fastbpe.analyze(copy.deepcopy(d)), fastbpe.FastSpec)
    _mutate(d, what)
    got = fastbpe.analyze(d)
    assert isinstance(got, str) and reason in got, got


def test_unigram_is_refused_and_auto_uses_hf() -> None:
    text = T5_TINY.read_text(encoding="utf-8")
    assert "not BPE" in str(fastbpe.analyze(orjson.loads(text)))
    c = choose_backend(text, "auto")
    assert c.used == "hf" and c.spec is None and "not BPE" in c.reason
    with pytest.raises(ConfigError, match="not BPE"):
        choose_backend(text, "fast")
    assert choose_backend(gpt2_json(), "hf").used == "hf"
    with pytest.raises(ConfigError, match="tokenizer-backend"):
        choose_backend(gpt2_json(), "tiktoken")


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("which", ["gpt2", "gpt2-extended", "llama3-style"])
def test_torture_and_repo_texts_identical(which: str) -> None:
    tok_json = {
        "gpt2": gpt2_json,
        "gpt2-extended": lambda: gpt2_extended().json,
        "llama3-style": llama3_style_json,
    }[which]()
    hf, fast = encoders(tok_json)
    texts = [*fastbpe.TORTURE_TEXTS, *repo_texts()]
    assert len(texts) > 40
    assert fastbpe.first_difference(texts, hf.encode_lists, fast.encode_lists) is None
    # the look-alikes really are split as text (not one special id)
    ids = fast.encode_lists(["<|endoftext|>"])[0]
    assert len(ids) > 1


text_st = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.text(alphabet=" \t\n\r0123456789'sltdvmre", max_size=20),
        st.sampled_from(LOOKALIKES),
    ),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(text_st, min_size=1, max_size=4))
def test_property_gpt2_full_encode_identical(texts: list[str]) -> None:
    """The whole Encoder.encode (ids, offsets, reserved-id handling) over random unicode."""
    info = gpt2_extended()
    hf, fast = _cached_pair(info.json, info.unk[1] if info.unk else None)
    texts = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
    a, b = hf.encode(texts), fast.encode(texts)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


@cache
def _cached_pair(tok_json: str, unk: int | None) -> tuple[Encoder, Encoder]:
    spec = fastbpe.analyze(orjson.loads(tok_json))
    assert isinstance(spec, fastbpe.FastSpec)
    reserved = gpt2_extended().reserved_ids()
    return Encoder(tok_json, reserved, unk), Encoder(tok_json, reserved, unk, fast=spec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(text_st, min_size=1, max_size=4))
def test_property_llama3_style_identical(texts: list[str]) -> None:
    hf, fast = _llama_pair()
    texts = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]
    assert hf.encode_lists(texts) == fast.encode_lists(texts)


@cache
def _llama_pair() -> tuple[Encoder, Encoder]:
    return encoders(llama3_style_json())


def test_nfc_normalizer_is_applied() -> None:
    d = orjson.loads(llama3_style_json())
    d["normalizer"] = {"type": "NFKC"}
    hf, fast = encoders(orjson.dumps(d).decode())
    texts = ["ﬁ ｱ ① Å e\u0301", *fastbpe.TORTURE_TEXTS]
    assert hf.encode_lists(texts) == fast.encode_lists(texts)
    assert fast.encode_lists(["ﬁ"]) == fast.encode_lists(["fi"])


# --------------------------------------------------------------------------- fallback, pickling


def test_self_check_difference_falls_back_naming_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    real = tkz.encode_texts

    def broken(enc: Any, spec: Any, texts: Any) -> list[list[int]]:
        out = real(enc, spec, texts)
        return [[*ids, 0] if "CANARY" in t else ids for ids, t in zip(out, texts, strict=True)]

    monkeypatch.setattr(tkz, "encode_texts", broken)
    c = choose_backend(llama3_style_json(), "auto", ["fine text", "a CANARY document"])
    assert c.used == "hf" and c.spec is None
    assert c.warning and "CANARY" in c.warning and "first documents" in c.warning
    with pytest.raises(ConfigError, match="CANARY"):
        choose_backend(llama3_style_json(), "fast", ["a CANARY document"])
    ok = choose_backend(llama3_style_json(), "auto", ["fine text"])
    assert ok.used == "fast" and ok.warning is None
    assert ok.checked_texts == len(fastbpe.TORTURE_TEXTS) + 1


def test_encoder_pickles_without_the_engine() -> None:
    _, fast = encoders(gpt2_json())
    want = fast.encode_lists(["Hello pickled world"])
    blob = pickle.dumps(fast)
    assert len(blob) < len(gpt2_json().encode()) + 10_000  # the JSON, not a built engine
    again = pickle.loads(blob)
    assert again.backend == "fast" and again.encode_lists(["Hello pickled world"]) == want


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_prepare_fast_equals_hf_and_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[int] = []
    real = backend.first_difference

    def spy(texts: Any, ref: Any, cand: Any) -> int | None:
        checked.append(len(texts))
        return real(texts, ref, cand)

    monkeypatch.setattr(backend, "first_difference", spy)
    cfg = PrepareConfig(mixture=load_mixture("ul2"), lengths=Lengths("encoder-decoder", 128, 128))
    outs = {}
    for b in ("hf", "fast"):
        out = tmp_path / b
        m = prepare([str(SAMPLE)], str(out), cfg, workers=2, progress=False, tokenizer_backend=b)
        outs[b] = out
        assert m["tokenizer_backend"]["used"] == b
    shards = sorted(p.name for p in (outs["hf"] / "data").iterdir())
    assert shards
    for name in shards:
        assert (outs["hf"] / "data" / name).read_bytes() == (
            outs["fast"] / "data" / name
        ).read_bytes()
    m = orjson.loads((outs["fast"] / "denoise.json").read_bytes())
    be = m["tokenizer_backend"]
    assert be["engine"].startswith("tiktoken") and be["pattern"] == "gpt2"
    assert checked and checked[0] > len(fastbpe.TORTURE_TEXTS)  # the run's first documents too


def test_cli_fast_refuses_with_the_reason(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from denoise_cli.cli import app

    args = ["prepare", str(SAMPLE), str(tmp_path / "o"), "--tokenizer", str(T5_TINY)]
    res = CliRunner().invoke(app, [*args, "--tokenizer-backend", "fast"])
    assert res.exit_code == 2
    assert "not BPE" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "denoise.json").exists()
    res = CliRunner().invoke(app, [*args, "--tokenizer-backend", "nope"])
    # a choice option: click names the bad value and the choices
    assert res.exit_code == 2 and "'nope'" in res.output and "'fast'" in res.output

"""The shortcuts that keep `prepare`'s own overhead small give what the plain ways give:
special ids from a built tokenizer vs from the parsed JSON, the backend reason from the model
head vs the full analysis, the encoder reusing an already built tokenizer (in-process and
through a forkserver's shared build), and the tokenizer file read as bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tokenizers

from denoise_cli.config import TokenConfig, load_mixture
from denoise_cli.source import tokenize as tk
from denoise_cli.source.backend import choose_backend
from denoise_cli.source.fastengine import analyze
from denoise_cli.source.special import model_head, special_ids_of, special_token_ids
from denoise_cli.source.tokenize import (
    Encoder,
    build_shared_tokenizer,
    build_tokenizer,
    load_tokenizer_json,
    share_with_workers,
)

ROOT = Path(__file__).resolve().parent.parent
T5TOK = str(ROOT / "tests" / "data" / "t5-tiny-tokenizer.json")
TEXTS = [
    "Hello world, this is <extra_id_0> and <pad> and </s> spelled out.",
    "Unicode: naïve café – 東京 \u2581 tabs\tand\nnewlines  double  spaces",
    "",
    "a" * 300,
]


def _with_vocab_entries(spec: str | None, names: list[str]) -> str:
    """The tokenizer JSON with ``names`` appended to the model's vocabulary (list or map)."""
    d = orjson.loads(load_tokenizer_json(spec)[0])
    vocab = d["model"]["vocab"]
    n = len(vocab) + len(d.get("added_tokens") or [])
    for k, name in enumerate(names):
        if isinstance(vocab, dict):
            vocab[name] = n + k
        else:
            vocab.append([name, -20.0])
    return json.dumps(d)


@pytest.mark.parametrize("spec", [None, T5TOK])
@pytest.mark.parametrize("template", ["<extra_id_{}>", "<s_{}>", '<q"\\{}>', "[S{}]"])
@pytest.mark.parametrize("mixture", ["t5", "ul2"])
def test_special_ids_of_a_built_tokenizer_equal_the_parsed_json(
    spec: str | None, template: str, mixture: str
) -> None:
    info = build_tokenizer(spec, TokenConfig(sentinel_template=template), load_mixture(mixture), 3)
    assert info.specials == tuple(sorted(special_token_ids(info.json, template)))
    # and on a vocabulary holding sentinel-like pieces that are not added tokens
    js = json.dumps(orjson.loads(info.json))  # other whitespace than to_str: scan is by literal
    tok = tokenizers.Tokenizer.from_str(info.json)
    assert special_ids_of(tok, info.json, template) == special_token_ids(js, template)


def test_sentinel_like_vocabulary_pieces_are_found_by_the_scan(tmp_path: Path) -> None:
    names = ["<extra_id_150>", "<extra_id_x>", "<s_12>", "extra_id_3", '<s_"4>']
    for spec in (None, T5TOK):
        js = _with_vocab_entries(spec, names)
        tok = tokenizers.Tokenizer.from_str(js)
        ext = tok.to_str()
        for template in ("<extra_id_{}>", "<s_{}>"):
            want = special_token_ids(ext, template)
            assert special_ids_of(tok, ext, template) == want
            assert "<extra_id_150>" in want.values()
            assert ("<s_12>" in want.values()) == (template == "<s_{}>")


@pytest.mark.parametrize("case", ["unigram", "byte_fallback", "unk", "dropout", "gpt2"])
def test_backend_reason_from_the_model_head_is_the_full_analysis(case: str) -> None:
    if case == "unigram":
        js = load_tokenizer_json(T5TOK)[0]
    else:
        d = orjson.loads(load_tokenizer_json(None)[0])
        if case == "byte_fallback":
            d["model"]["byte_fallback"] = True
        elif case == "unk":
            d["model"]["unk_token"] = "<|endoftext|>"
        elif case == "dropout":
            d["model"]["dropout"] = 0.1
            d["model"]["byte_fallback"] = True
        js = json.dumps(d)
    tok = tokenizers.Tokenizer.from_str(js)
    full = analyze(orjson.loads(js))
    quick = choose_backend(js, "auto", (), model_head(tok))
    plain = choose_backend(js, "auto")
    assert quick == plain
    if isinstance(full, str):
        assert quick.reason == full and quick.used == "hf"
    else:
        assert quick.used == "fast"


def _encode(enc: Encoder) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    return enc.encode(TEXTS)


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2])


@pytest.mark.parametrize("spec", [None, T5TOK])
def test_encoder_reuses_the_built_tokenizer_with_the_same_ids(spec: str | None) -> None:
    info = build_tokenizer(spec, TokenConfig(), load_mixture("ul2"), 4)
    enc = info.encoder()
    assert enc.tokenizer is info.built  # no second build in this process
    fresh = Encoder(info.json, info.reserved_ids(), info.unk[1] if info.unk else None)
    assert _same(_encode(enc), _encode(fresh))
    # pickled (to a worker), the built tokenizer stays behind
    import pickle

    clone = pickle.loads(pickle.dumps(info.encoder()))
    assert clone._built is None and _same(_encode(clone), _encode(fresh))
    assert pickle.loads(pickle.dumps(info)).built is None


def test_shared_build_is_used_only_for_the_same_json() -> None:
    info = build_tokenizer(T5TOK, TokenConfig(), load_mixture("ul2"), 4)
    other = build_tokenizer(None, TokenConfig(), load_mixture("ul2"), 4)
    tk._SHARED.clear()
    try:
        with share_with_workers(info.json):
            path = os.environ[tk.SHARED_TOKENIZER_ENV]
            assert Path(path).read_text(encoding="utf-8") == info.json
            build_shared_tokenizer()  # what a forkserver does when it imports the module
            assert tk.SHARED_TOKENIZER_ENV not in os.environ  # popped: built once
            shared = tk._SHARED[0][1]
            # pickled encoders, as a worker gets them: another tokenizer's does not take it
            enc_other = Encoder(other.json, other.reserved_ids(), None)
            assert enc_other.tokenizer is not shared and tk._SHARED
            enc = Encoder(info.json, info.reserved_ids(), info.unk[1] if info.unk else None)
            assert enc.tokenizer is shared and not tk._SHARED
        fresh = Encoder(info.json, info.reserved_ids(), info.unk[1] if info.unk else None)
        assert _same(_encode(enc), _encode(fresh))
    finally:
        tk._SHARED.clear()
        os.environ.pop(tk.SHARED_TOKENIZER_ENV, None)


def test_shared_build_never_raises_on_a_bad_file(monkeypatch: pytest.MonkeyPatch) -> None:
    tk._SHARED.clear()
    monkeypatch.setenv(tk.SHARED_TOKENIZER_ENV, "/nonexistent/denoise-test")
    build_shared_tokenizer()
    assert not tk._SHARED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_tokenizer_file_read_as_bytes_equals_read_text(tmp_path: Path, newline: str) -> None:
    text = Path(T5TOK).read_text(encoding="utf-8")
    p = tmp_path / "tokenizer.json"
    p.write_bytes(text.replace("\n", newline).encode("utf-8"))
    got, _ = load_tokenizer_json(str(p))
    assert got == p.read_text(encoding="utf-8")

"""Huge documents are encoded in pieces: the ids must equal those of encoding the document whole,
for each kind of tokenizer the project bundles or is used with (byte-level BPE, SentencePiece-style
BPE with ``Metaspace``, Unigram), on real text (the bundled sample)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import zstandard

from denoise_cli.source.tokenize import DocSplitter, Encoder, load_tokenizer_json

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample" / "en-prose-00.jsonl.zst"
T5_TINY = REPO / "tests" / "data" / "t5-tiny-tokenizer.json"
PIECE = 3000  # small pieces, so the sample text is cut ~70 times


def sample_texts() -> list[str]:
    with open(SAMPLE, "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
    return [orjson.loads(line)["text"] for line in raw.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def doc() -> str:
    return "\n\n".join(sample_texts())


def trained(model: str) -> str:
    """A small tokenizer trained on the sample, SentencePiece style: ``Metaspace`` without
    ``split``, so the model sees whole documents and learns pieces that span spaces."""
    import tokenizers as tk

    if model == "bpe":
        tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>", byte_fallback=False))
        trainer: Any = tk.trainers.BpeTrainer(vocab_size=3000, special_tokens=["<unk>"])
    else:
        tok = tk.Tokenizer(tk.models.Unigram())
        trainer = tk.trainers.UnigramTrainer(
            vocab_size=2000, special_tokens=["<unk>"], unk_token="<unk>", max_piece_length=12
        )
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = tk.decoders.Metaspace(prepend_scheme="first", split=False)
    texts = sample_texts()
    tok.train_from_iterator(texts[:200], trainer=trainer)
    return str(tok.to_str())


def whole_ids(enc: Encoder, text: str) -> np.ndarray:
    return np.asarray(enc.tokenizer.encode(text, add_special_tokens=False).ids, np.int32)


def check_pieces_equal_whole(tokenizer_json: str, doc: str, kind: str) -> int:
    enc = Encoder(tokenizer_json, np.zeros(0, np.int32), None, piece_chars=PIECE)
    assert enc.splitter.kind == kind
    cuts = enc.splitter.cuts(doc, PIECE)
    assert len(cuts) > len(doc) // PIECE // 2  # really cut, many times
    short = doc[:200]
    values, offsets, _ = enc.encode([short, doc, short])
    assert np.array_equal(values[offsets[1] : offsets[2]], whole_ids(enc, doc))
    assert np.array_equal(values[: offsets[1]], whole_ids(enc, short))
    assert np.array_equal(values[offsets[2] :], whole_ids(enc, short))
    return len(cuts)


def test_pieces_equal_whole_byte_level_bpe(doc: str) -> None:
    js, _ = load_tokenizer_json(None)  # the embedded GPT-2
    check_pieces_equal_whole(js, doc, "split")


def test_pieces_equal_whole_metaspace_bpe(doc: str) -> None:
    js = trained("bpe")
    check_pieces_equal_whole(js, doc, "vocab")


def test_pieces_equal_whole_unigram_t5(doc: str) -> None:
    check_pieces_equal_whole(T5_TINY.read_text(encoding="utf-8"), doc, "split")


@pytest.mark.slow
def test_pieces_equal_whole_unigram_multiword_pieces(doc: str) -> None:
    import tokenizers as tk

    js = trained("unigram")
    vocab = tk.Tokenizer.from_str(js).get_vocab()
    # the attack: pieces that span a space, so not every space is a boundary
    spanning = [p for p in vocab if "\u2581" in p[1:] and p[0] != "\u2581"]
    spanning += [p for p in vocab if "\u2581" in p.lstrip("\u2581")]
    assert spanning
    # a Unigram whose pieces span spaces is encoded whole: cutting it was seen to change ids
    enc = Encoder(js, np.zeros(0, np.int32), None, piece_chars=PIECE)
    assert enc.splitter.kind == "" and enc.splitter.cuts(doc, PIECE) == []
    values, _offsets, _ = enc.encode([doc])
    assert np.array_equal(values, whole_ids(enc, doc))


def test_cut_never_where_a_piece_spans() -> None:
    import tokenizers as tk

    s = "\u2581"
    vocab = {"x": 0, "a": 1, s: 2, "b": 3, "a" + s: 4, "a" + s + "b": 5, s + "a": 6}
    merges = [("a", s), ("a" + s, "b"), (s, "a")]
    tok = tk.Tokenizer(tk.models.BPE(vocab, merges))
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(prepend_scheme="never", split=False)
    sp = DocSplitter(tok)
    text = "xa b a a"
    assert not sp.safe_at(text, 2)  # "a▁b" spans it
    assert sp.safe_at(text, 4)


def test_unknown_pre_tokenizer_is_not_cut(doc: str) -> None:
    import tokenizers as tk

    tok = tk.Tokenizer.from_str(T5_TINY.read_text(encoding="utf-8"))
    tok.pre_tokenizer = tk.pre_tokenizers.Punctuation()
    enc = Encoder(str(tok.to_str()), np.zeros(0, np.int32), None, piece_chars=PIECE)
    assert enc.splitter.cuts(doc, PIECE) == []
    values, _, _ = enc.encode([doc])
    assert np.array_equal(values, whole_ids(enc, doc))


def test_prepending_normalizer_is_not_cut(doc: str) -> None:
    import tokenizers as tk

    tok = tk.Tokenizer.from_str(trained("bpe"))
    tok.normalizer = tk.normalizers.Prepend("\u2581")  # legacy Llama: would add one per piece
    enc = Encoder(str(tok.to_str()), np.zeros(0, np.int32), None, piece_chars=PIECE)
    assert enc.splitter.cuts(doc, PIECE) == []


def test_added_token_with_space_is_not_cut() -> None:
    import tokenizers as tk

    tok = tk.Tokenizer.from_str(T5_TINY.read_text(encoding="utf-8"))
    tok.add_tokens(["new york"])
    sp = DocSplitter(tok)
    text = "in new york big city"
    assert not sp.safe_at(text, 6)
    assert not sp.safe_at(text, 11)  # touches its end
    assert sp.safe_at(text, 15)


def peak_rss_mb(args: list[str], env: dict[str, str]) -> float:
    """Peak RSS (MB) of a child process (and the children it waited for), from wait4."""
    import subprocess

    p = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, p.stderr.read() if p.stderr else ""
    return usage.ru_maxrss / 1024


@pytest.mark.slow
def test_huge_single_line_document_has_bounded_memory(tmp_path: Path) -> None:
    """The attack: one 20 MB JSON line. Encoding it whole took ~64x its size; now the peak stays
    within a small multiple of the line (measured: 100 MB line -> ~1.0 GB peak), and nothing is
    lost: every token of the document is in the output."""
    import sys

    texts = sample_texts()
    base = "\n\n".join(texts)
    doc = ("\n\n".join([base] * (20_000_000 // len(base) + 1)))[:20_000_000]
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    (big / "a.jsonl").write_bytes(orjson.dumps({"text": doc}) + b"\n")
    (small / "a.jsonl").write_bytes(orjson.dumps({"text": base[:20000]}) + b"\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "denoise_cli", "prepare", "-w", "1", "-q", "-m", "t5"]
    idle = peak_rss_mb([*cmd, str(small), str(tmp_path / "o-small")], env)
    peak = peak_rss_mb([*cmd, str(big), str(tmp_path / "o-big")], env)
    line_mb = (big / "a.jsonl").stat().st_size / 1e6
    assert peak - idle < 12 * line_mb, (idle, peak, line_mb)
    m = orjson.loads((tmp_path / "o-big" / "denoise.json").read_bytes())
    js, _ = load_tokenizer_json(None)
    enc = Encoder(js, np.zeros(0, np.int32), None)
    n = len(enc.encode([doc])[0])
    assert m["totals"]["docs"] == 1
    assert m["totals"]["tokens"] == n + 1  # the document and its EOS, nothing lost

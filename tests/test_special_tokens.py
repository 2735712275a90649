"""Literal special tokens in text (issue 13 item 7): every special id of the tokenizer - all
``<extra_id_k>``, BOS/EOS/pad, mode tokens, any added special token - is reserved when text spells
it (replaced by unk and counted in ``reserved_replaced``), and ``verify`` flags a special id
inside the text even without ``--source``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from helpers import refresh_shard_entry, write_arrow_shard

from denoise_cli import open_dataset
from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths, PrepareConfig, TokenConfig, load_mixture
from denoise_cli.errors import VerifyError
from denoise_cli.prepare.run import prepare
from denoise_cli.source.tokenize import Encoder, build_tokenizer, load_tokenizer_json

ROOT = Path(__file__).resolve().parent.parent
T5TOK = str(ROOT / "tests" / "data" / "t5-tiny-tokenizer.json")
WORDS = ["the", "a", "of", "in", "to", "and", "is", "it"]


def _tok_json(spec: str) -> Any:
    import tokenizers

    return tokenizers.Tokenizer.from_str(load_tokenizer_json(spec)[0])


def _texts(spelled: str, n: int = 30) -> list[str]:
    rng = np.random.default_rng(1)
    return [
        " ".join(rng.choice(WORDS, 80)) + f" {spelled} " + " ".join(rng.choice(WORDS, 80))
        for _ in range(n)
    ]


def _prepare(tmp_path: Path, texts: list[str], tokenizer: str, mixture: str = "t5") -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.jsonl").write_bytes(b"\n".join(orjson.dumps({"text": t}) for t in texts) + b"\n")
    out = tmp_path / "out"
    cfg = PrepareConfig(mixture=load_mixture(mixture), lengths=Lengths("encoder-decoder", 64, 32))
    prepare([str(inp)], str(out), cfg, tokenizer=tokenizer, workers=1, progress=False)
    return out


def _all_ids(out: Path) -> np.ndarray:
    ds = open_dataset(out)
    assert len(ds) > 10
    rows = ds[0 : len(ds)]
    return np.concatenate([rows["input_ids"].ravel(), rows["labels"].ravel()])


def test_every_special_of_t5_is_reserved() -> None:
    info = build_tokenizer(T5TOK, TokenConfig(), load_mixture("t5"), 1)
    tok = _tok_json(T5TOK)
    reserved = set(info.reserved_ids().tolist())
    assert info.unk is not None and info.unk[1] not in reserved  # unk stands for text
    want = {tok.token_to_id(f"<extra_id_{k}>") for k in range(100)}
    want |= {tok.token_to_id("</s>"), tok.token_to_id("<pad>")}
    assert want <= reserved
    assert len(info.sentinels) == 1  # the mixture itself needs one: the others are reserved too


def test_spelled_sentinels_and_specials_never_reach_the_rows(tmp_path: Path) -> None:
    spelled = "<extra_id_50> <extra_id_99> </s> <pad> <unk>"
    texts = _texts(spelled)
    out = _prepare(tmp_path, texts, T5TOK)
    m = open_dataset(out).manifest
    tok = _tok_json(T5TOK)
    used = set(m["tokenizer"]["sentinel_ids"])
    ids = _all_ids(out)
    for name in ("<extra_id_50>", "<extra_id_99>"):
        i = tok.token_to_id(name)
        assert i not in used and not np.isin(ids, [i]).any(), name
    # five spelled special tokens per document, each replaced (or, for <unk>, counted) once
    assert m["totals"]["reserved_replaced"] == 5 * len(texts)
    verify(out)
    verify(out, sources=[str(tmp_path / "in")])


def test_added_special_tokens_bos_and_reserved(tmp_path: Path) -> None:
    """Any token the tokenizer marks special (here a BOS and a ``<|reserved_7|>``), even one the
    model turns spelled text into, is reserved."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "</s>", "<unk>", "<s>", "<|reserved_7|>"]
    vocab = {w: i for i, w in enumerate([*specials, *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.add_special_tokens([AddedToken(s, special=True) for s in specials])
    path = tmp_path / "tok.json"
    tk.save(str(path))
    texts = _texts("<s> <|reserved_7|>")
    out = _prepare(tmp_path, texts, str(path))
    m = open_dataset(out).manifest
    assert m["totals"]["reserved_replaced"] == 2 * len(texts)
    assert not np.isin(_all_ids(out), [vocab["<s>"], vocab["<|reserved_7|>"]]).any()
    verify(out)


def test_encoder_counts_a_spelled_unk_only() -> None:
    info = build_tokenizer(T5TOK, TokenConfig(), load_mixture("t5"), 1)
    assert info.unk is not None
    enc = Encoder(info.json, info.reserved_ids(), info.unk[1])
    ids, _, counts = enc.encode(["b b b"])  # 'b' is not in the tiny vocab: unk, not spelled
    assert (ids == info.unk[1]).any() and "reserved_replaced" not in counts
    _, _, counts = enc.encode(["the <unk> of"])
    assert counts["reserved_replaced"] == 1


def _rewrite_shard(out: Path, rel: str, edit: Any) -> None:
    """Rewrite one Arrow shard with edited columns and recompute its size and sha256 in the
    manifest, so that only the row checks can notice."""
    from denoise_cli.output.shards import batch_arrays, open_shard

    p = out / rel
    _, batches = open_shard(p, "arrow")
    parts = [batch_arrays(rb) for rb in batches]
    a = {k: np.concatenate([x[k] for x in parts]).copy() for k in parts[0]}
    edit(a)
    write_arrow_shard(p, a)
    mp = out / "denoise.json"
    m = orjson.loads(mp.read_bytes())
    refresh_shard_entry(m, rel, p)
    mp.write_bytes(orjson.dumps(m))


@pytest.mark.parametrize("column", ["input_ids", "labels"])
def test_verify_flags_a_special_id_inside_the_text(tmp_path: Path, column: str) -> None:
    out = _prepare(tmp_path, _texts("plain"), T5TOK)
    verify(out)
    m = open_dataset(out).manifest
    bad = _tok_json(T5TOK).token_to_id("<extra_id_50>")
    sent = m["tokenizer"]["sentinel_ids"]

    def edit(a: dict[str, np.ndarray]) -> None:
        row = a[column][0]
        n = int(a["input_length" if column == "input_ids" else "target_length"][0])
        j = next(j for j in range(1, n - 1) if row[j] not in sent)  # a text token
        row[j] = bad

    _rewrite_shard(out, m["shards"][0]["path"], edit)
    with pytest.raises(VerifyError, match=r"<extra_id_50>.*special token of the tokenizer"):
        verify(out)


def test_mode_tokens_and_sentinels_reserved_with_added_tokens() -> None:
    """With the embedded GPT-2, the added mode tokens and sentinels are reserved; text spelling
    them is encoded as plain text (nothing to replace), so normal text is unchanged."""
    info = build_tokenizer(None, TokenConfig(), load_mixture("ul2"), 8)
    reserved = set(info.reserved_ids().tolist())
    assert set(info.mode_tokens.values()) <= reserved and set(info.sentinels) <= reserved
    enc = Encoder(info.json, info.reserved_ids(), None)
    ids, _, counts = enc.encode(["[NLU] <extra_id_0> <|endoftext|> hello"])
    assert not counts and not np.isin(ids, info.reserved_ids()).any()

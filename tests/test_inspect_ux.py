"""``inspect`` text: display-width wrapping (CJK) and the rebuilt original decoded whole."""

from __future__ import annotations

import numpy as np
import pytest

from denoise_cli.check.inspect import cells, split_decoded, wrap
from denoise_cli.source.tokenize import load_tokenizer_json


def test_wrap_counts_display_cells() -> None:
    text = "日本語のテキストを折り返す。" * 6 + " and some English words to wrap as well"
    lines = wrap([(text, None)], 20)
    widths = [sum(cells(t) for t, _ in line) for line in lines]
    assert max(widths) <= 20 and max(widths) >= 19
    assert "".join(t for line in lines for t, _ in line).replace(" ", "") == text.replace(" ", "")
    assert cells("日本") == 4 and cells("ab") == 2


def test_side_by_side_columns_line_up_with_cjk() -> None:
    from denoise_cli.check.inspect import side_by_side

    lines = side_by_side(
        ("left", [("日本語のテキスト" * 8, None)]),
        ("right", [("ascii text " * 8, None)]),
        81,
        False,
    )
    cols = {cells(x.split(" │ ")[0]) for x in lines if " │ " in x}
    assert cols == {39}


def test_split_decoded_keeps_characters_whole() -> None:
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer.from_str(load_tokenizer_json(None)[0])
    text = "猫が好き。犬も好き。"
    ids = tok.encode(text).ids
    assert len(ids) > len(text) // 2  # byte-level pieces: some characters span two tokens
    for cut in range(1, len(ids)):
        noise = np.zeros(len(ids), dtype=bool)
        noise[cut:] = True
        parts = split_decoded(tok, ids, tok.decode(ids), noise)
        assert "".join(p for p, _ in parts) == text
        assert all("\ufffd" not in p for p, _ in parts)
        assert [f for _, f in parts] == [False, True]

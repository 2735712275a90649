"""Special tokens of a tokenizer: which ids are special (added tokens marked special, and every
entry that looks like a sentinel, ``<extra_id_k>`` or the configured template), read either
from the tokenizer JSON or, cheaper, from an already built tokenizer plus a scan of its JSON
text. ``prepare`` reserves these ids: a special token spelled in a document's text never becomes
a special id (see docs/tokenize.md). Also the model head (type and BPE options) that the fast
backend's choice checks before parsing a vocabulary.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from typing import Any

SENTINEL_LIKE = re.compile(r"<extra_id_\d+>")


def find_token(tok: Any, names: Sequence[str]) -> tuple[str, int] | None:
    """The first of ``names`` the built tokenizer knows, with its id."""
    for n in names:
        i = tok.token_to_id(n)
        if i is not None:
            return n, int(i)
    return None


def special_token_ids(
    tokenizer_json: str, sentinel_template: str = "<extra_id_{}>"
) -> dict[int, str]:
    """``{id: token}`` of every special token of a tokenizer JSON: the added tokens marked
    special and every vocabulary or added entry that looks like a sentinel (``<extra_id_k>`` or
    ``sentinel_template`` with a number), special or not. Unk is included (callers drop it).
    Read from the JSON (``orjson``, ~0.3 s for a 262k vocabulary) rather than by building the
    tokenizer (~5 s for the same file)."""
    import orjson

    d = orjson.loads(tokenizer_json)
    added = d.get("added_tokens") or []
    out = {int(a["id"]): str(a["content"]) for a in added if a.get("special")}
    head, sep, tail = sentinel_template.partition("{}")
    pats = [SENTINEL_LIKE]
    if sep:
        pats.append(re.compile(re.escape(head) + r"\d+" + re.escape(tail)))
    vocab = (d.get("model") or {}).get("vocab") or {}
    names: Any = (
        vocab.items()
        if isinstance(vocab, dict)
        else ((p[0], i) for i, p in enumerate(vocab) if isinstance(p, list) and p)
    )
    for name, i in itertools.chain(names, ((a["content"], a["id"]) for a in added)):
        if isinstance(name, str) and name.endswith(">") and any(p.fullmatch(name) for p in pats):
            out[int(i)] = name
    return out


def _json_string_pattern(head: str, tail: str) -> re.Pattern[str]:
    """A JSON string literal ``"head<digits>tail"`` as ``tokenizers`` serializes it (``"``, ``\\``
    and control characters escaped, everything else literal)."""

    def esc(x: str) -> str:
        return re.escape(json.dumps(x, ensure_ascii=False)[1:-1])

    return re.compile('"(' + esc(head) + r"\d+" + esc(tail) + ')"')


def special_ids_of(tok: Any, tokenizer_json: str, sentinel_template: str) -> dict[int, str]:
    """:func:`special_token_ids` of a built tokenizer whose ``to_str()`` is ``tokenizer_json``,
    the same ids without parsing the JSON: the added tokens come from the tokenizer, and the
    sentinel-like vocabulary entries are the names a scan of the JSON text finds (every
    vocabulary entry is a string literal there) that the model knows (``token_to_id``). (A
    name listed twice in a Unigram vocabulary yields only the id the model maps it to: the other
    one can never come out of encoding.)"""
    out: dict[int, str] = {}
    pats = [SENTINEL_LIKE]
    head, sep, tail = sentinel_template.partition("{}")
    if sep:
        pats.append(re.compile(re.escape(head) + r"\d+" + re.escape(tail)))
    for i, a in tok.get_added_tokens_decoder().items():
        name = str(a.content)
        if a.special or (name.endswith(">") and any(p.fullmatch(name) for p in pats)):
            out[int(i)] = name
    scans = [_json_string_pattern("<extra_id_", ">")]
    if sep:
        scans.append(_json_string_pattern(head, tail))
    names: set[str] = set()
    for scan in scans:
        names.update(scan.findall(tokenizer_json))
    model = tok.model
    for lit in names:
        name = json.loads(f'"{lit}"')
        if not (name.endswith(">") and any(p.fullmatch(name) for p in pats)):
            continue
        i = model.token_to_id(name)
        if i is not None:
            out.setdefault(int(i), name)
    return out


def model_head(tok: Any) -> dict[str, Any]:
    """The model's type and the BPE options :func:`~.fastengine.analyze` checks first."""
    m = tok.model
    head: dict[str, Any] = {"type": type(m).__name__}
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        head[key] = getattr(m, key, None)
    head["byte_fallback"] = getattr(m, "byte_fallback", False)
    return head


def reserved_from_json(
    tokenizer_json: str, sentinel_template: str, unk: int | None
) -> dict[int, str]:
    """:func:`special_token_ids` less ``unk``: what ``prepare`` reserves besides the eos, pad,
    sentinel and mode ids (which are special there too)."""
    ids = special_token_ids(tokenizer_json, sentinel_template)
    if unk is not None:
        ids.pop(int(unk), None)
    return ids

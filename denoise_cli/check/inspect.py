"""``denoise inspect OUT``: decode rows to see what each denoiser did.

For each chosen row: a header (global row, shard and row, component, mode token, source file,
example and stream offset, lengths), then the inputs and the targets - side by side when the
terminal has at least 100 columns, one after the other otherwise - and the original text
rebuilt from the two (``rowcheck.RowChecker.rebuild``: the kind's inversion), with the tokens that went to the targets
marked (colour, or ``⟦...⟧`` in plain text). Sentinels, mode tokens and EOS are shown by name and
highlighted with ``typer.style`` colours when ``color`` is on (the CLI turns it on only for a
terminal).

Rows are decoded with the output's own extended tokenizer (``OUT/tokenizer.json``), so the
sentinel and mode ids are exactly the ones written. Decoding is done per run of ordinary tokens
(one ``decode_batch`` call per row), so a special token never merges with its neighbours.
Selection: ``row`` (a global row index), else the first ``n`` rows (of ``denoiser`` if given),
else the first row of every component - one example of each denoiser at a glance. Packed outputs: every
example of a packed row is shown as a row of its own, labelled ``row R segment j of k``;
``row`` shows all the examples of that packed row one after the other; ``n`` and ``denoiser``
select examples. Rows are read one record batch at a time and the scan stops as soon as the selection is complete.
A shuffled output shows its source's rows by the source's row ids (``output.shuffled``).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..output.manifest import datasets, split_path
from ..output.remote import is_output_url, localize
from ..output.shards import batch_arrays
from ..output.shuffled import logical_shards
from .rowcheck import RowChecker
from .spec import EOS, MODE, PAD, SENT0, OutputSpec, unpacked_view

Piece = tuple[str, str | None]  # (text, style name)

_STYLES: dict[str, dict[str, Any]] = {
    "sentinel": {"fg": "cyan", "bold": True},
    "mode": {"fg": "magenta", "bold": True},
    "eos": {"fg": "blue", "dim": True},
    "pad": {"dim": True},
    "noise": {"fg": "yellow"},
    "head": {"bold": True},
    "label": {"fg": "green", "bold": True},
    "error": {"fg": "red", "bold": True},
}
_CLASS_STYLE = {EOS: "eos", PAD: "pad", MODE: "mode"}


@dataclass
class _Row:
    index: int  # global row
    shard: str
    row: int  # within the shard
    a: dict[str, np.ndarray]  # the row's columns, as 1-row arrays
    segment: int = -1  # packed output: the example's segment in the row (0-based); -1 unpacked
    segments: int = 0  # packed output: examples in the row


def _select_components(spec: OutputSpec, denoiser: str | None) -> list[int] | None:
    if denoiser is None:
        return None
    key = denoiser.strip()
    comps = spec.comps
    if key.isdigit() and int(key) < len(comps):
        return [int(key)]
    hit = [
        c.index for c in comps if c.name.replace(" ", "").lower() == key.replace(" ", "").lower()
    ]
    if not hit:
        hit = [c.index for c in comps if c.name[0].upper() == key.upper()]  # a family: R, X or S
    if not hit:
        hit = [c.index for c in comps if (c.mode_token or "").lower() == key.lower()]
    if not hit:
        names = ", ".join(f"{c.index}={c.name}" for c in comps)
        raise ConfigError(
            f"no denoiser {denoiser!r} in this output; use a name, index or family: {names}"
        )
    return hit


def _iter_rows(
    out: Path, m: dict[str, Any], start: int = 0, spec: OutputSpec | None = None
) -> Iterator[_Row]:
    """Rows from global row ``start`` on; for a packed output (``spec.packed``) the examples of
    each packed row, one ``_Row`` per segment (``index`` / ``row`` are the packed row's). A
    shuffled output's rows are its source's, in the source's order (``logical_shards``)."""
    g = 0
    for ls in logical_shards(out, m):
        sh = ls.entry
        rows = int(sh["rows"])
        if g + rows <= start:
            g += rows
            continue
        if not ls.exists():
            if ls.path is None:
                raise OutputError(f"{out}: a shard of this shuffled output is missing")
            raise OutputError(f"{ls.path}: shard listed in the manifest is missing")
        _, batches = ls.open()
        r = 0
        for rb in batches:
            n = rb.num_rows
            if g + r + n <= start:
                r += n
                continue
            a = batch_arrays(rb)
            if spec is not None and spec.packed:
                v = unpacked_view(a, spec)
                ns = a["num_segments"]
                lo = max(0, start - g - r)
                for e in np.flatnonzero(v["packed_row"] >= lo):
                    i = int(v["packed_row"][e])
                    yield _Row(
                        g + r + i,
                        ls.rel,
                        r + i,
                        {k: x[e : e + 1] for k, x in v.items()},
                        int(v["segment"][e]),
                        int(ns[i]),
                    )
                r += n
                continue
            for i in range(max(0, start - g - r), n):
                yield _Row(g + r + i, ls.rel, r + i, {k: v[i : i + 1] for k, v in a.items()})
            r += n
        g += rows


def choose_rows(
    out: Path,
    m: dict[str, Any],
    spec: OutputSpec,
    n: int | None,
    row: int | None,
    denoiser: str | None,
) -> list[_Row]:
    total = int(m["totals"]["rows"])
    if row is not None:
        if not -total <= row < total:
            raise ConfigError(f"row {row} is out of range: {out} has {total:,} rows")
        row = row % total
        if not spec.packed:
            return [next(_iter_rows(out, m, row))]
        segs: list[_Row] = []  # every example of the packed row
        for r in _iter_rows(out, m, row, spec):
            if r.index != row:
                break
            segs.append(r)
        return segs
    want = _select_components(spec, denoiser)
    rows: list[_Row] = []
    if want is None and n is None:  # one example of each component
        left = set(range(len(spec.comps)))
        for r in _iter_rows(out, m, 0, spec):
            d = int(r.a["denoiser"][0])
            if d in left:
                rows.append(r)
                left.discard(d)
                if not left:
                    break
        return sorted(rows, key=lambda r: int(r.a["denoiser"][0]))
    count = 3 if n is None else n
    if count <= 0:
        return []
    for r in _iter_rows(out, m, 0, spec):
        if want is None or int(r.a["denoiser"][0]) in want:
            rows.append(r)
            if len(rows) >= count:
                break
    return rows


# --------------------------------------------------------------------------- pieces of text


def _pieces(
    tok: Any,
    spec: OutputSpec,
    ids: np.ndarray,
    noise: np.ndarray | None = None,
    flags: list[bool] | None = None,
) -> list[Piece]:
    """Runs of ordinary tokens decoded together; special tokens by name, each its own piece;
    ``noise`` marks the tokens that came from the targets (rebuilt original only); ``flags``
    receives the noise flag of every piece."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return []
    code = np.take(spec.lut, np.clip(ids, 0, len(spec.lut) - 1))
    special = code != 0
    nz = noise if noise is not None else np.zeros(len(ids), dtype=bool)
    # a new run starts at every special token and after it; ordinary runs are decoded whole (a
    # byte-level piece split at a noise boundary would decode to U+FFFD) and then cut where the
    # noise flag changes (split_decoded)
    brk = np.ones(len(ids), dtype=bool)
    brk[1:] = special[1:] | special[:-1]
    starts = np.flatnonzero(brk)
    ends = np.append(starts[1:], len(ids))
    runs = [ids[s:e].tolist() for s, e in zip(starts, ends, strict=True)]
    texts = tok.decode_batch(runs, skip_special_tokens=False)
    out: list[Piece] = []
    for s, e, run, text in zip(starts, ends, runs, texts, strict=True):
        c = int(code[s])
        if c:
            if flags is not None:
                flags.append(bool(nz[s]))
            out.append((text, "sentinel" if c >= SENT0 else _CLASS_STYLE.get(c)))
            continue
        for part, now in split_decoded(tok, run, text, nz[s:e]):
            if flags is not None:
                flags.append(now)
            out.append((part, "noise" if now else None))
    return out


def split_decoded(tok: Any, run: list[int], text: str, noise: np.ndarray) -> list[tuple[str, bool]]:
    """Cut ``text`` (``run`` decoded whole) where ``noise`` changes: at the characters the
    tokens before each change decode to (a character split between tokens goes to the side
    where it ends)."""
    cuts = [int(i) for i in np.flatnonzero(noise[1:] != noise[:-1]) + 1]
    if not cuts:
        return [(text, bool(noise[0]))]
    prefixes = tok.decode_batch([run[:c] for c in cuts], skip_special_tokens=False)
    out: list[tuple[str, bool]] = []
    pos, start_tok = 0, 0
    for c, prefix in zip(cuts, prefixes, strict=True):
        p = len(prefix.rstrip("\ufffd"))
        p = p if text.startswith(prefix[:p]) else pos  # decoders that clean up spaces
        p = max(p, pos)
        out.append((text[pos:p], bool(noise[start_tok])))
        pos, start_tok = p, c
    out.append((text[pos:], bool(noise[start_tok])))
    return out


def _mark_noise(pieces: list[Piece], flags: list[bool], color: bool) -> list[Piece]:
    """Plain text: wrap each run of target tokens in ⟦ ⟧ (colour shows them otherwise)."""
    if color:
        return pieces
    out: list[Piece] = []
    prev = False
    for (text, style), now in zip(pieces, flags, strict=True):
        if now and not prev:
            out.append(("⟦", None))
        if prev and not now:
            out.append(("⟧", None))
        out.append((text, style))
        prev = now
    if prev:
        out.append(("⟧", None))
    return out


_WORD = re.compile(r"\n|[^\S\n]*[^\s]+|[^\S\n]+")


def _clean(text: str) -> str:
    return text.replace("\t", "    ").replace("\r", "")


def cells(text: str) -> int:
    """Display width in terminal cells (CJK and emoji take two; combining marks none), by
    ``rich`` (installed with typer); plain ``len`` without it."""
    try:
        from rich.cells import cell_len
    except ImportError:  # pragma: no cover - typer-slim without rich
        return len(text)
    return int(cell_len(text))


def _cut(word: str, take: int) -> int:
    """How many characters of ``word`` fit in ``take`` cells (0 when not even the first)."""
    n, w = 0, 0
    for ch in word:
        cw = cells(ch)
        if w + cw > take:
            break
        n, w = n + 1, w + cw
    return n


def wrap(pieces: list[Piece], width: int) -> list[list[Piece]]:
    """Greedy word wrap of styled pieces into lines of at most ``width`` terminal cells (display
    width: CJK takes two); newlines in the text start a new line; longer words are cut."""
    width = max(width, 8)
    lines: list[list[Piece]] = [[]]
    col = 0
    for text, style in pieces:
        for word in _WORD.findall(_clean(text)):
            if word == "\n":
                lines.append([])
                col = 0
                continue
            while cells(word) > width - col:
                if col > 0 and cells(word) <= width:
                    lines.append([])
                    col = 0
                    word = word.lstrip(" ") or word
                    continue
                take = _cut(word, width - col)
                if take == 0 and col == 0:
                    take = 1  # a character wider than the line: show it anyway
                if take:
                    lines[-1].append((word[:take], style))
                lines.append([])
                col = 0
                word = word[take:]
            if word:
                lines[-1].append((word, style))
                col += cells(word)
    return lines


def _style(text: str, style: str | None, color: bool) -> str:
    if not color or style is None or not text:
        return text
    import typer

    return typer.style(text, **_STYLES[style])


def _line(pieces: list[Piece], color: bool, pad_to: int = 0) -> str:
    vis = sum(cells(t) for t, _ in pieces)
    s = "".join(_style(t, st, color) for t, st in pieces)
    return s + " " * max(0, pad_to - vis)


def _block(title: str, pieces: list[Piece], width: int, color: bool) -> list[str]:
    return [_line(p, color) for p in wrap([(title, "label")], width) + wrap(pieces, width)]


def side_by_side(
    left: tuple[str, list[Piece]], right: tuple[str, list[Piece]], width: int, color: bool
) -> list[str]:
    w = (width - 3) // 2
    a: list[list[Piece]] = [[(left[0], "label")], *wrap(left[1], w)]
    b: list[list[Piece]] = [[(right[0], "label")], *wrap(right[1], w)]
    n = max(len(a), len(b))
    a += [[] for _ in range(n - len(a))]
    b += [[] for _ in range(n - len(b))]
    return [
        (_line(x, color, w) + " │ " + _line(y, color)).rstrip() for x, y in zip(a, b, strict=True)
    ]


# --------------------------------------------------------------------------- rows


def render_row(
    r: _Row,
    m: dict[str, Any],
    spec: OutputSpec,
    checker: RowChecker,
    tok: Any,
    width: int,
    color: bool,
) -> str:
    a = r.a
    d = int(a["denoiser"][0])
    il, tl = int(a["input_length"][0]), int(a["target_length"][0])
    files = {int(f["index"]): f["name"] for f in m["files"]}
    comp = spec.comps[d] if 0 <= d < len(spec.comps) else None
    name = comp.name if comp else f"denoiser {d}?"
    where = (
        f"row {r.index:,} ({r.shard} row {r.row})"
        if r.segment < 0
        else f"row {r.index:,} segment {r.segment + 1} of {r.segments} ({r.shard} row {r.row})"
    )
    head = (
        f"{where} · {name}"
        f"{' ' + comp.mode_token if comp and comp.mode_token else ''} · "
        f"{files.get(int(a['source_file'][0]), '?')} example {int(a['example_index'][0]):,} at token "
        f"{int(a['token_offset'][0]):,} · input {il} / target {tl} tokens"
    )
    lines = [_style(head, "head", color)]
    ids, lab = a["input_ids"][0], a["labels"][0]
    if spec.enc_dec:
        inp, tgt = ids[:il], lab[:tl]
        left_t, right_t = "inputs (encoder)", "targets (decoder labels)"
    else:
        pl = int(a["prefix_length"][0])
        inp, tgt = ids[:pl], ids[pl:il]
        left_t, right_t = f"prefix ({pl} tokens, bidirectional)", "targets (loss on these)"
    left = (left_t, _pieces(tok, spec, inp))
    right = (right_t, _pieces(tok, spec, tgt))
    if width >= 100:
        lines += side_by_side(left, right, width, color)
    else:
        lines += _block(left[0], left[1], width, color) + _block(right[0], right[1], width, color)
    msgs, ok = checker.check(a, 1)
    if comp is not None and ok[0]:
        chunk, noise = checker.rebuild(a, np.array([0]), comp)
        flags: list[bool] = []
        pieces = _mark_noise(_pieces(tok, spec, chunk[0], noise[0], flags), flags, color)
        lines += _block(
            f"original ({comp.raw} tokens rebuilt from inputs + targets; "
            f"{'highlighted' if color else '⟦marked⟧'}: what the targets hold)",
            pieces,
            width,
            color,
        )
    else:
        lines.append(
            _style(
                f"cannot rebuild the original: {msgs[0][1] if msgs else 'unknown denoiser'}",
                "error",
                color,
            )
        )
    return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, mtime_ns: int, size: int) -> Any:
    """The output's tokenizer, cached per (path, mtime, size): loading GPT-2's takes ~0.3 s."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tokenizers

    return tokenizers.Tokenizer.from_file(path)


def inspect_rows(
    out: str | Path,
    *,
    n: int | None = None,
    row: int | None = None,
    denoiser: str | None = None,
    color: bool = False,
    width: int | None = None,
    epoch: int = 0,
    split: str | None = None,
) -> str:
    """Decoded rows of an output (see the module docstring); ``epoch`` picks the dataset of
    an output written with ``prepare --epochs K``, ``split`` that of ``prepare --split``."""
    import shutil

    eps = datasets(split_path(localize(str(out)) if is_output_url(out) else Path(out), split))
    if not 0 <= epoch < len(eps):
        raise ConfigError(f"epoch {epoch} is out of range: {out} holds {len(eps)} epoch(s)")
    _, outp, m = eps[epoch]
    spec = OutputSpec.from_manifest(m)
    tp = outp / "tokenizer.json"
    if not tp.is_file():
        raise OutputError(f"{tp} is missing: cannot decode the rows")
    st = tp.stat()
    tok = _tokenizer(str(tp), st.st_mtime_ns, st.st_size)
    w = width or shutil.get_terminal_size((100, 24)).columns
    rows = choose_rows(outp, m, spec, n, row, denoiser)
    if not rows:
        return "no rows selected"
    checker = RowChecker(spec)
    sep = "\n" + ("─" * min(w, 120)) + "\n"
    text = sep.join(render_row(r, m, spec, checker, tok, w, color) for r in rows)
    if spec.packed and row is not None:
        r0 = rows[0]
        W, V = spec.packed_widths
        il = sum(int(r.a["input_length"][0]) for r in rows)
        tl = sum(int(r.a["target_length"][0]) for r in rows)
        sides = f"input {il} / {W}, target {tl} / {V}" if spec.enc_dec else f"{il} / {W}"
        head = (
            f"packed row {r0.index:,} ({r0.shard} row {r0.row}): {len(rows)} examples, one "
            f"after the other ({sides} tokens; each attends only within its segment)"
        )
        text = _style(head, "head", color) + sep + text
    return text

"""``denoise verify OUT``: prove that an output is complete, intact and exactly what its manifest
says - or name the shard, the row and what is wrong.

Checks, cheapest first; each problem is one line ``shard row R: what`` (rows counted from 0
within the shard), up to ``max_problems`` are collected, then :class:`VerifyError` lists them.

1. Manifest: internal sums (rows, tokens = used + tail, records = docs + skipped), one source
   file per shard, ``OUT/tokenizer.json`` matches the manifest's sha256, every shard listed exists
   with the recorded size and sha256, no unlisted file in ``data/``, ``state.json`` lists the
   same shards.
2. Rows (every row, vectorized per record batch - numpy over the ``[n, W]`` columns, one
   ``np.take`` of a small lookup table turns ids into classes: normal, EOS, pad, mode, sentinel
   ``k``): schema and fixed shapes; ids within the (extended) vocabulary; attention mask and
   padding only after ``input_length``; ``-100`` exactly where it belongs (encoder-decoder: from
   ``target_length`` on; decoder-only: outside ``[prefix_length, input_length)``, and labels equal
   the ids inside); the lengths the component's parameters dictate (span rows: exactly
   ``mode + raw - noise + spans + 1`` / ``noise + spans + 1``; S rows: a prefix in
   ``[prefix_min, prefix_max]``, both parts adding up to ``raw_length``); the mode token first and
   EOS last; no pad or mode token inside the text, nor any other special id of ``OUT/tokenizer.json``
   (an ``<extra_id_k>`` the mixture does not use, BOS, ``<|reserved_k|>``...: ``prepare`` reserves
   them all, :func:`tokenizer_specials`); span rows hold sentinels ``0..s-1`` in order
   in the inputs and in the targets with no empty span or kept segment, S rows none.
   Each row gets the message of the first check it fails, so one bad row is one line.
3. Rebuild: inputs + targets of every valid row are merged back into the raw chunk (a scatter:
   a kept token at input column ``j`` of segment ``k`` goes to ``j - k + (tpos_k - k)``, a noise
   token at target column ``j`` of span ``k`` to ``j - k - 1 + (ipos_k - k)``, where ``ipos``/``tpos``
   are the sentinel columns); chunk ``i+1`` of a file starts where chunk ``i`` ends
   (``token_offset[i+1] == token_offset[i] + raw_length(i)``, ``example_index`` consecutive, the
   first at 0, the last ending at the file's ``tokens_used``), per shard the raw tokens add up
   to the manifest's ``tokens``.
4. With ``sources``: each input file is read and tokenized again exactly as ``prepare`` does
   (``read.iter_batches`` -> ``tokenize.Encoder`` from ``OUT/tokenizer.json`` ->
   ``pack.join_documents``) and packed into groups with ``pack.Packer`` from (seed, file,
   group). For every row: the drawn component and ``token_offset`` must match, the rebuilt chunk
   must equal the source stream at that offset (``rebuilt tokens differ from the source`` names the
   column and stream offset), and finally the whole row must equal, bit for bit, the row
   ``corrupt_mixture`` regenerates - which catches a row from another run even when every
   checksum was recomputed. Then every token is accounted for: tokens read = used + tail, the
   records/docs/skip counters and the row count equal the manifest's.

Packed outputs (``prepare --pack``, manifest ``packing``): the schema is ``packing.packed_schema``;
every batch first gets :func:`packed_checks` (``num_segments`` in ``1..K``, per-segment metadata
exactly on the first ``num_segments`` slots, segments in example order, segment ids ``1..k`` in
contiguous runs of the segment lengths with 0 only on the padding at the end, positions
restarting at 0, pad / -100 on the padding, ``attention_mask == segment ids > 0``, row lengths =
sums of segment lengths, decoder-only ``prefix_mask``); the rows that pass are turned into the
unpacked per-example view (:func:`unpacked_view`) and get steps 2-3 at the example budget
(messages ``shard row R segment j: ...``). Rows must be ordered by their first example; the
file's examples, sorted by ``example_index``, must be ``0..n-1`` and chain. With ``sources``
each group is regenerated at the example lengths and packed again with ``packing.pack_rows``:
per example the component, offset and rebuilt chunk are compared, then the packed rows bit for
bit.

Trade-offs: without ``sources`` a changed ordinary token that keeps every count intact cannot be
detected (nothing in an encoder-decoder row is redundant; decoder-only labels duplicate the
target ids, so there it is caught); the sha256 check catches it unless the checksum was
recomputed. With ``sources`` the cost is the tokenizer's (single process).

Measured on this machine (2 cores shared with other jobs, load average ~6, so about 2-3x slower
than an idle machine; ``ul2`` enc-dec 512/512, GPT-2, page cache warm, best of 3):

- the 21,261-row, 94 MiB Arrow output of ``shared/corpus/en-prose/*.jsonl.zst``: checks 1-3 in
  2.3 s (~9,200 rows/s, ~43 MB/s; sha256 alone 0.39 s; 1.4 s = 15,400 rows/s at a lower load);
- the 5,370-row output of ``00.jsonl.zst``: 0.51 s (~10,500 rows/s); its Parquet twin: 0.53 s;
- with ``sources`` on that file: 37 s, against 44 s for ``prepare -w 1`` of the same file under
  the same load - re-reading and tokenizing dominate (the row checks and the regeneration add
  little); files are checked one after the other in one process.

Per 1024-row batch the cost is ~15 whole-array numpy passes over ``[1024, 512]`` plus two
lookup-table gathers (~2.5 ms each); the per-component structure checks and the rebuild work on
the much smaller sentinel-position arrays ``[b, s]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError, VerifyError
from .layout import output_path
from .load import MANIFEST, batch_arrays, read_manifest, sha256_file

IGNORE = -100

# classes of token ids (values of the lookup table)
NORMAL, EOS, PAD, MODE = 0, 1, 2, 3
OTHER = 4  # any other special id of the tokenizer (never in text: prepare reserves them)
SENT0 = 16  # sentinel k -> SENT0 + k

_FIXED = ("input_ids", "labels", "attention_mask")


class _Enough(Exception):
    """Raised internally once ``max_problems`` problems have been collected."""


@dataclass(frozen=True)
class Component:
    """What a manifest component dictates about its rows."""

    index: int
    name: str
    span: bool  # R/X (span corruption) or S (prefix-LM)
    mode: int  # 1 if a mode token is prepended
    mode_id: int  # -1 without a mode token
    mode_token: str | None
    raw: int
    noise: int
    spans: int
    prefix_min: int
    prefix_max: int


@dataclass(frozen=True)
class OutputSpec:
    """The parts of a manifest the row checks need, with lookup tables."""

    layout: str
    wi: int
    wt: int
    vocab: int
    eos: int
    pad: int
    sentinels: np.ndarray
    comps: tuple[Component, ...]
    names: dict[int, str]  # special ids -> token names (messages)
    lut: np.ndarray  # int16 [vocab]: NORMAL / EOS / PAD / MODE / OTHER / SENT0 + k
    # packed output (manifest "packing"): wi / wt above are the *example* budget; these are the
    # packed rows' widths, the example and row Lengths, and K (0 = unpacked)
    packed_widths: tuple[int, int] = (0, 0)
    example_lengths: Any = None
    row_lengths: Any = None
    max_segments: int = 0

    @property
    def packed(self) -> bool:
        return self.max_segments > 0

    @property
    def enc_dec(self) -> bool:
        return self.layout == "encoder-decoder"

    def tok(self, i: int) -> str:
        name = self.names.get(int(i))
        return f"{name} ({i})" if name else f"id {i}"

    def table(self, attr: str) -> np.ndarray:
        """A per-component attribute as an int64 array indexed by denoiser."""
        return np.array([int(getattr(c, attr)) for c in self.comps], dtype=np.int64)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], others: dict[int, str] | None = None) -> OutputSpec:
        """``others``: the tokenizer's other special ids (class OTHER), see
        :func:`tokenizer_specials`."""
        tok = m["tokenizer"]
        vocab = int(tok["vocab_size"])
        eos, pad = int(tok["eos"]["id"]), int(tok["pad"]["id"])
        sent = np.asarray(tok["sentinel_ids"], dtype=np.int64)
        modes = {str(k): int(v) for k, v in tok["mode_tokens"].items()}
        tmpl = str(tok.get("sentinel_template", "<extra_id_{}>"))
        names = {eos: str(tok["eos"]["token"]), pad: str(tok["pad"]["token"])}
        names.update({v: k for k, v in modes.items()})
        names.update({int(i): tmpl.format(k) for k, i in enumerate(sent)})
        lut = np.zeros(max(vocab, 1), dtype=np.int16)
        for i, name in (others or {}).items():
            if 0 <= i < vocab:
                lut[i] = OTHER
                names.setdefault(i, name)
        for k, i in enumerate(sent):
            if 0 <= i < vocab:
                lut[i] = SENT0 + k
        for i in modes.values():
            if 0 <= i < vocab:
                lut[i] = MODE
        if 0 <= pad < vocab:
            lut[pad] = PAD
        if 0 <= eos < vocab:
            lut[eos] = EOS
        comps = []
        for c in m["components"]:
            mt = c.get("mode_token")
            comps.append(
                Component(
                    index=int(c["index"]),
                    name=str(c["denoiser"]),
                    span=not str(c["denoiser"]).startswith("S"),
                    mode=0 if mt is None else 1,
                    mode_id=-1 if mt is None else modes[mt],
                    mode_token=mt,
                    raw=int(c["raw_length"]),
                    noise=int(c["noise_tokens"]),
                    spans=int(c["spans"]),
                    prefix_min=int(c["prefix_min"]),
                    prefix_max=int(c["prefix_max"]),
                )
            )
        wi, wt = (int(x) for x in m["row_widths"])
        pk = m.get("packing")
        if not pk:
            return cls(str(m["layout"]), wi, wt, vocab, eos, pad, sent, tuple(comps), names, lut)
        from .corrupt import row_widths

        ex = lengths_from(pk["example_lengths"])
        ewi, ewt = row_widths(ex)
        return cls(
            str(m["layout"]),
            ewi,
            ewt,
            vocab,
            eos,
            pad,
            sent,
            tuple(comps),
            names,
            lut,
            (wi, wt),
            ex,
            lengths_from(m["lengths"]),
            int(pk["max_segments"]),
        )


def lengths_from(d: dict[str, Any]) -> Any:
    """A :class:`~denoise_cli.config.Lengths` from its manifest dict."""
    from .config import Lengths

    return Lengths(
        d["layout"],
        int(d.get("inputs_length", 512)),
        int(d.get("targets_length", 512)),
        int(d.get("seq_length", 1024)),
    )


# --------------------------------------------------------------------------- packed outputs


def unpacked_view(a: dict[str, np.ndarray], spec: OutputSpec) -> dict[str, np.ndarray]:
    """The examples of a batch of packed rows as the columns of an unpacked output at the
    example budget (``packing.unpack_rows`` plus ``denoiser`` / ``example_index`` /
    ``token_offset`` / ``source_file`` from the ``segment_*`` columns), in (row, segment) order,
    with ``packed_row`` (index in the batch) and ``segment`` (0-based) of every example. The rows
    must be well formed (:func:`packed_checks`)."""
    from .packing import unpack_rows

    ns = a["num_segments"].astype(np.int64)
    K = a["segment_denoiser"].shape[1]
    valid = np.arange(K)[None, :] < ns[:, None]
    rows = unpack_rows(a, spec.example_lengths, spec.pad)
    r, j = np.nonzero(valid)
    out = {
        "input_ids": rows.input_ids,
        "labels": rows.labels,
        "attention_mask": rows.attention_mask,
    }
    if not spec.enc_dec:
        out["prefix_length"] = rows.prefix_length
    out.update(
        input_length=rows.input_length,
        target_length=rows.target_length,
        denoiser=a["segment_denoiser"][valid],
        source_file=a["source_file"][r],
        example_index=a["segment_example_index"][valid],
        token_offset=a["segment_token_offset"][valid],
        packed_row=r,
        segment=j,
    )
    return out


def _expected_side(
    seglen: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From per-segment lengths ``[R, K]`` (0 = none): (the segments fit ``width`` ``[R]``,
    expected segment ids ``[R, width]``, expected positions, real-token mask, total)."""
    R, K = seglen.shape
    sl = np.maximum(seglen.astype(np.int64), 0)
    tot = sl.sum(axis=1)
    fits = tot <= width
    sl = np.where(fits[:, None], sl, 0)
    real = np.arange(width)[None, :] < np.where(fits, tot, 0)[:, None]
    flat = sl.ravel()
    segno = np.repeat(np.tile(np.arange(1, K + 1, dtype=np.int32), R), flat)
    starts = np.cumsum(flat) - flat
    pos = np.arange(int(flat.sum()), dtype=np.int64) - np.repeat(starts, flat)
    es = np.zeros((R, width), dtype=np.int32)
    es[real] = segno
    ep = np.zeros((R, width), dtype=np.int32)
    ep[real] = pos
    return fits, es, ep, real, tot


def packed_checks(
    a: dict[str, np.ndarray], spec: OutputSpec, limit: int
) -> tuple[list[tuple[int, str]], np.ndarray]:
    """Structure of packed rows: ``num_segments`` in ``1..K``; per-segment lengths within the
    example budget and metadata set exactly on the first ``num_segments`` slots; segments in
    example order; on each side, segment ids ``1..k`` in contiguous runs of the segment lengths
    and 0 only on the padding at the end, positions restarting at 0 per segment, pad / -100 on
    the padding, ``attention_mask == (segment ids > 0)``, row lengths = sums of the segment
    lengths; decoder-only ``prefix_mask`` = each segment's first ``prefix_length`` tokens.
    Returns (row, message) and the mask of rows that pass (only those can be unpacked)."""
    s = spec
    W, V = s.packed_widths
    K = s.max_segments
    C = len(s.comps)
    ns = a["num_segments"].astype(np.int64)
    n = len(ns)
    ok = np.ones(n, dtype=bool)
    msgs: list[tuple[int, str]] = []

    def flag(bad: Any, describe: Callable[[int], str]) -> None:
        bad = np.asarray(bad, dtype=bool) & ok
        if bad.any():
            for r in np.flatnonzero(bad)[:limit]:
                msgs.append((int(r), describe(int(r))))
            ok[bad] = False

    flag(
        (ns < 1) | (ns > K),
        lambda r: f"num_segments {ns[r]} outside 1..{K} (the manifest's packing.max_segments)",
    )
    valid = np.arange(K)[None, :] < np.where(ok, ns, 0)[:, None]
    sil = a["segment_input_length"].astype(np.int64)
    stl = a["segment_target_length"].astype(np.int64)
    den = a["segment_denoiser"].astype(np.int64)
    ex, off = a["segment_example_index"], a["segment_token_offset"]
    spl = a["segment_prefix_length"].astype(np.int64) if not s.enc_dec else None
    bad_seg = valid & (
        (sil < 1) | (sil > s.wi) | (stl < 1) | (stl > s.wt) | (den < 0) | (den >= C) | (ex < 0)
    )
    bad_seg |= valid & (off < 0)
    if spl is not None:
        bad_seg |= valid & ((spl < 0) | (spl > sil))

    def seg_desc(r: int) -> str:
        j = _first_col(bad_seg[r])
        return (
            f"segment {j + 1}: input/target length {sil[r, j]}/{stl[r, j]}"
            + (f", prefix_length {spl[r, j]}" if spl is not None else "")
            + f", denoiser {den[r, j]}, example_index {ex[r, j]}, token_offset {off[r, j]} "
            f"(lengths must be in 1..{s.wi}/1..{s.wt}, the example budget; denoiser 0..{C - 1})"
        )

    flag(bad_seg.any(axis=1), seg_desc)
    empty = ~valid & ((sil != 0) | (stl != 0) | (den != -1) | (ex != -1) | (off != -1))
    if spl is not None:
        empty |= ~valid & (spl != 0)
    flag(
        empty.any(axis=1),
        lambda r: (
            f"segment slot {_first_col(empty[r]) + 1} is beyond num_segments {ns[r]} but not empty "
            "(lengths 0, metadata -1)"
        ),
    )
    order = valid[:, 1:] & (ex[:, 1:] <= ex[:, :-1])
    flag(
        order.any(axis=1),
        lambda r: (
            f"segment {_first_col(order[r]) + 2} holds example {ex[r, _first_col(order[r]) + 1]} "
            f"after example {ex[r, _first_col(order[r])]} (segments are numbered in example order)"
        ),
    )
    okv = ok[:, None] & valid

    def mismatch(
        bad: np.ndarray, got: np.ndarray, col: str, tail: Callable[[int, int], str]
    ) -> None:
        flag(
            bad.any(axis=1),
            lambda r: (
                f"{col}[{_first_col(bad[r])}] is {got[r, _first_col(bad[r])]}"
                + tail(r, _first_col(bad[r]))
            ),
        )

    def side(
        segc: str, posc: str, sl: np.ndarray, width: int, tokc: str, fill: int, lenc: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fits, es, ep, real, tot = _expected_side(sl, width)
        flag(
            ~fits,
            lambda r: f"the segments hold {tot[r]} tokens of {tokc}, the row has {width} slots",
        )
        seg, pos, tok = a[segc], a[posc], a[tokc]
        rl = a[lenc].astype(np.int64)
        flag(rl != tot, lambda r: f"{lenc} {rl[r]}, the segment lengths add up to {tot[r]}")
        mismatch(
            seg != es,
            seg,
            segc,
            lambda r, j: (
                f", expected {es[r, j]} (segment ids 1..num_segments in contiguous runs of the "
                "segment lengths, 0 only on the padding at the end)"
            ),
        )
        mismatch(
            pos != ep,
            pos,
            posc,
            lambda r, j: (
                f", expected {ep[r, j]} (positions restart at 0 in every segment, 0 on the padding)"
            ),
        )
        mismatch(
            ~real & (tok != fill),
            tok,
            tokc,
            lambda r, j: f" on the padding after the segments, not {fill}",
        )
        return real, ep, fits

    sil0 = np.where(okv, sil, 0)
    real, ep, fits = side(
        "encoder_segment_ids" if s.enc_dec else "segment_ids",
        "encoder_positions" if s.enc_dec else "positions",
        sil0,
        W,
        "input_ids",
        s.pad,
        "input_length",
    )
    segname = "encoder_segment_ids" if s.enc_dec else "segment_ids"
    att = a["attention_mask"]
    mismatch(att != real, att, "attention_mask", lambda r, j: f", not ({segname} > 0)")
    if s.enc_dec:
        stl0 = np.where(okv, stl, 0)
        side(
            "decoder_segment_ids",
            "decoder_positions",
            stl0,
            V,
            "labels",
            IGNORE,
            "target_length",
        )
    elif spl is not None:
        lab = a["labels"]
        mismatch(~real & (lab != IGNORE), lab, "labels", lambda r, j: " on the padding, not -100")
        ptok = np.zeros(real.shape, dtype=np.int64)
        ptok[real] = np.repeat(
            np.where(okv, spl, 0).ravel(), np.where(fits[:, None], sil0, 0).ravel()
        )
        pmask = a["prefix_mask"]
        mismatch(
            pmask != (real & (ep < ptok)),
            pmask,
            "prefix_mask",
            lambda r, j: ", expected 1 exactly on each segment's first prefix_length tokens",
        )
        tl = a["target_length"].astype(np.int64)
        tsum = np.where(okv, stl, 0).sum(axis=1)
        flag(
            tl != tsum,
            lambda r: f"target_length {tl[r]}, the segment target lengths add up to {tsum[r]}",
        )
    return sorted(msgs), ok


# --------------------------------------------------------------------------- reading shards


def shard_schema(m: dict[str, Any]) -> pa.Schema:
    from .write import schema

    lengths = lengths_from(m["lengths"])
    if m.get("packing"):
        from .packing import packed_schema

        return packed_schema(lengths, int(m["packing"]["max_segments"]))
    return schema(lengths)


def open_shard(
    path: Path, fmt: str, columns: Sequence[str] | None = None
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """A shard's schema and its record batches, reading only ``columns`` (Arrow IPC: memory-mapped,
    zero-copy; Parquet: only those column chunks are decoded)."""
    if fmt == "parquet":
        pf = pq.ParquetFile(str(path))
        cols = list(columns) if columns is not None else None
        return pf.schema_arrow, pf.iter_batches(batch_size=8192, columns=cols)
    reader = pa.ipc.open_stream(pa.memory_map(str(path), "r"))

    def gen() -> Iterator[pa.RecordBatch]:
        for rb in reader:
            yield rb.select(list(columns)) if columns is not None else rb

    return reader.schema, gen()


# --------------------------------------------------------------------------- row checks


def _first_col(mask_row: np.ndarray) -> int:
    return int(np.flatnonzero(mask_row)[0])


class RowChecker:
    """Vectorized checks of one record batch; see the module docstring (step 2)."""

    def __init__(self, spec: OutputSpec) -> None:
        self.s = spec
        self.isspan = np.array([c.span for c in spec.comps], dtype=bool)
        self.m = spec.table("mode")
        self.mode_id = spec.table("mode_id")
        self.raw = spec.table("raw")
        self.noise = spec.table("noise")
        self.spans = spec.table("spans")
        self.pmin = spec.table("prefix_min")
        self.pmax = spec.table("prefix_max")

    def check(
        self, a: dict[str, np.ndarray], limit: int
    ) -> tuple[list[tuple[int, str]], np.ndarray]:
        """(row, message) for up to ``limit`` rows per check, and the mask of rows that pass."""
        s = self.s
        ids, lab, att = a["input_ids"], a["labels"], a["attention_mask"]
        il, tl, den = (
            a["input_length"].astype(np.int64),
            a["target_length"].astype(np.int64),
            a["denoiser"],
        )
        pl = a["prefix_length"].astype(np.int64) if "prefix_length" in a else None
        n = len(den)
        ok = np.ones(n, dtype=bool)
        msgs: list[tuple[int, str]] = []

        def flag(bad: Any, describe: Callable[[int], str]) -> None:
            bad = np.asarray(bad, dtype=bool) & ok
            if bad.any():
                for r in np.flatnonzero(bad)[:limit]:
                    msgs.append((int(r), describe(int(r))))
                ok[bad] = False

        C = len(s.comps)
        flag(
            (den < 0) | (den >= C),
            lambda r: f"denoiser {den[r]} is not a mixture component (0..{C - 1})",
        )
        dc = np.where(ok, den, 0).astype(np.int64)
        comp = s.comps

        flag(
            (ids.view(np.uint32) >= s.vocab).any(axis=1),
            lambda r: (
                f"input_ids column {_first_col(ids[r].view(np.uint32) >= s.vocab)} holds "
                f"{ids[r][_first_col(ids[r].view(np.uint32) >= s.vocab)]}, outside the vocabulary "
                f"of {s.vocab:,} (manifest tokenizer.vocab_size)"
            ),
        )
        lbad = (lab != IGNORE) & (lab.view(np.uint32) >= s.vocab)
        flag(
            lbad.any(axis=1),
            lambda r: (
                f"labels column {_first_col(lbad[r])} holds {lab[r][_first_col(lbad[r])]}, neither -100 "
                f"nor within the vocabulary of {s.vocab:,}"
            ),
        )
        bad_len = (il < 1) | (il > s.wi) | (tl < 1) | (tl > s.wt)
        if pl is not None:
            bad_len |= (pl < 0) | (pl > il)
        flag(
            bad_len,
            lambda r: (
                f"input_length {il[r]} / target_length {tl[r]}"
                + (f" / prefix_length {pl[r]}" if pl is not None else "")
                + f" outside the row widths {s.wi}/{s.wt}"
            ),
        )
        ilc = np.clip(il, 1, s.wi)[:, None]
        tlc = np.clip(tl, 1, s.wt)[:, None]
        col = np.arange(s.wi)[None, :]
        real = col < ilc
        abad = (att != 0) != real
        flag(
            abad.any(axis=1),
            lambda r: (
                f"attention_mask[{_first_col(abad[r])}] is {att[r][_first_col(abad[r])]}, expected "
                f"{int(_first_col(abad[r]) < il[r])} (input_length {il[r]})"
            ),
        )
        pbad = (ids != s.pad) & ~real
        flag(
            pbad.any(axis=1),
            lambda r: (
                f"padding only at the end: input_ids[{_first_col(pbad[r])}] is "
                f"{s.tok(ids[r][_first_col(pbad[r])])} after input_length {il[r]}"
            ),
        )
        if s.enc_dec:
            colt = np.arange(s.wt)[None, :]
            ign = lab == IGNORE
            lbad2 = ign != (colt >= tlc)
            flag(
                lbad2.any(axis=1),
                lambda r: (
                    f"labels[{_first_col(lbad2[r])}] is {lab[r][_first_col(lbad2[r])]}: -100 must be "
                    f"exactly from target_length {tl[r]} on"
                ),
            )
        else:
            assert pl is not None
            want = np.where((col >= pl[:, None]) & real, ids, IGNORE)
            lbad2 = lab != want
            flag(
                lbad2.any(axis=1),
                lambda r: (
                    f"labels[{_first_col(lbad2[r])}] is {lab[r][_first_col(lbad2[r])]}, expected "
                    f"{want[r][_first_col(lbad2[r])]} (labels = input_ids on [prefix_length "
                    f"{pl[r]}, input_length {il[r]}), -100 elsewhere)"
                ),
            )

        # lengths the component's parameters dictate
        m, L, nz, sp = self.m[dc], self.raw[dc], self.noise[dc], self.spans[dc]
        span = self.isspan[dc]
        if s.enc_dec:
            p = il - m - 1
            exp_il = np.where(span, m + L - nz + sp + 1, il)
            exp_tl = np.where(span, nz + sp + 1, L - p + 1)
            exp_pl = None
        else:
            assert pl is not None
            p = pl - m
            exp_il = np.where(span, m + L + 2 * sp + 1, m + L + 1)
            exp_tl = np.where(span, nz + sp + 1, L - p + 1)
            exp_pl = np.where(span, m + L - nz + sp, pl)
        pbad_s = ~span & ((p < self.pmin[dc]) | (p > self.pmax[dc]))
        flag(
            pbad_s,
            lambda r: (
                f"{comp[dc[r]].name}: prefix of {p[r]} tokens outside [{comp[dc[r]].prefix_min}, "
                f"{comp[dc[r]].prefix_max}] (input_length {il[r]})"
            ),
        )
        flag(
            il != exp_il,
            lambda r: (
                f"{comp[dc[r]].name}: input_length {il[r]}, its parameters give {exp_il[r]}"
                + (
                    f" (mode {m[r]} + raw {L[r]} - noise {nz[r]} + {sp[r]} sentinels + EOS)"
                    if span[r] and s.enc_dec
                    else ""
                )
            ),
        )
        flag(
            tl != exp_tl,
            lambda r: (
                f"{comp[dc[r]].name}: target_length {tl[r]}, its parameters give {exp_tl[r]}"
                + (
                    f" (noise {nz[r]} + {sp[r]} sentinels + EOS)"
                    if span[r]
                    else f" (raw {L[r]} - prefix {p[r]} + EOS)"
                )
            ),
        )
        if exp_pl is not None:
            assert pl is not None
            flag(
                pl != exp_pl,
                lambda r: (
                    f"{comp[dc[r]].name}: prefix_length {pl[r]}, its parameters give {exp_pl[r]}"
                ),
            )

        # mode token first, EOS last
        mid = self.mode_id[dc]
        flag(
            (m == 1) & (ids[:, 0] != mid),
            lambda r: (
                f"input_ids[0] is {s.tok(ids[r, 0])}, {comp[dc[r]].name} rows start with "
                f"{comp[dc[r]].mode_token}"
            ),
        )
        rows = np.arange(n)
        last = ids[rows, np.clip(il, 1, s.wi) - 1]
        flag(
            last != s.eos,
            lambda r: f"input_ids[{il[r] - 1}] (last real token) is {s.tok(last[r])}, not EOS",
        )
        if s.enc_dec:
            lastt = lab[rows, np.clip(tl, 1, s.wt) - 1]
            flag(
                lastt != s.eos,
                lambda r: f"labels[{tl[r] - 1}] (last target) is {s.tok(lastt[r])}, not EOS",
            )

        # classes of the ids inside the text
        code = np.take(s.lut, ids, mode="clip")
        inside = (col >= m[:, None]) & (col < ilc - 1)
        obad = (code == OTHER) & inside
        flag(
            obad.any(axis=1),
            lambda r: (
                f"input_ids[{_first_col(obad[r])}] is {s.tok(ids[r][_first_col(obad[r])])}, a "
                "special token of the tokenizer, where only text may stand"
            ),
        )
        rbad = ((code == PAD) | (code == MODE)) & inside
        flag(
            rbad.any(axis=1),
            lambda r: (
                f"input_ids[{_first_col(rbad[r])}] is {s.tok(ids[r][_first_col(rbad[r])])} inside the "
                f"row's tokens (pad and mode tokens only belong at the end / in column 0)"
            ),
        )
        sent_in = (code >= SENT0) & inside
        lcode: np.ndarray | None = None
        if s.enc_dec:
            lcode = np.take(s.lut, lab, mode="clip")
            linside = np.arange(s.wt)[None, :] < tlc - 1
            lobad = (lcode == OTHER) & linside
            flag(
                lobad.any(axis=1),
                lambda r: (
                    f"labels[{_first_col(lobad[r])}] is {s.tok(lab[r][_first_col(lobad[r])])}, a "
                    "special token of the tokenizer, where only text may stand"
                ),
            )
            lrbad = ((lcode == PAD) | (lcode == MODE)) & linside
            flag(
                lrbad.any(axis=1),
                lambda r: (
                    f"labels[{_first_col(lrbad[r])}] is {s.tok(lab[r][_first_col(lrbad[r])])} inside the targets"
                ),
            )
            sent_t = (lcode >= SENT0) & linside
            has_sent = sent_in.any(axis=1) | sent_t.any(axis=1)
        else:
            has_sent = sent_in.any(axis=1)
        flag(
            ~span & has_sent,
            lambda r: (
                f"{comp[dc[r]].name} row holds sentinel "
                f"{s.tok(ids[r][_first_col(sent_in[r])] if sent_in[r].any() else lab[r][_first_col(sent_t[r])])}"
                " (S rows split once and have no sentinels)"
            ),
        )

        # span rows: sentinels 0..s-1 in order in the inputs and in the targets, no empty part
        for c in comp:
            if not c.span:
                continue
            idx = np.flatnonzero(ok & (dc == c.index))
            if not len(idx):
                continue
            for r, msg in self._span_structure(c, ids, lab, code, lcode, idx)[:limit]:
                if ok[r]:
                    msgs.append((r, msg))
                    ok[r] = False
        return sorted(msgs), ok

    def regions(
        self,
        c: Component,
        ids: np.ndarray,
        lab: np.ndarray,
        idx: np.ndarray,
        code: np.ndarray | None = None,
        lcode: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """Inputs and targets of span rows ``idx`` (fixed widths), their classes, and the column
        where each starts in its array."""
        s = self.s
        wi_c = c.raw - c.noise + c.spans
        wt_c = c.noise + c.spans
        i0 = c.mode
        inp = ids[idx, i0 : i0 + wi_c]
        ci = code[idx, i0 : i0 + wi_c] if code is not None else np.take(s.lut, inp, mode="clip")
        if s.enc_dec:
            t0 = 0
            tgt = lab[idx, :wt_c]
            ct = lcode[idx, :wt_c] if lcode is not None else np.take(s.lut, tgt, mode="clip")
        else:
            t0 = i0 + wi_c
            tgt = ids[idx, t0 : t0 + wt_c]
            ct = code[idx, t0 : t0 + wt_c] if code is not None else np.take(s.lut, tgt, mode="clip")
        return inp, tgt, ci, ct, i0, t0

    def _span_structure(
        self,
        c: Component,
        ids: np.ndarray,
        lab: np.ndarray,
        code: np.ndarray,
        lcode: np.ndarray | None,
        idx: np.ndarray,
    ) -> list[tuple[int, str]]:
        s = self.s
        _, _, ci, ct, i0, t0 = self.regions(c, ids, lab, idx, code, lcode)
        tname = "input_ids" if not s.enc_dec else "labels"
        k = c.spans
        out: list[tuple[int, str]] = []
        si, st = ci >= SENT0, ct >= SENT0
        ni, nt = si.sum(axis=1), st.sum(axis=1)
        bad = (ni != k) | (nt != k)
        for j in np.flatnonzero(bad):
            out.append(
                (
                    int(idx[j]),
                    f"{c.name}: {ni[j]} sentinels in the inputs and {nt[j]} in the "
                    f"targets, its parameters give {k} spans",
                )
            )
        good = np.flatnonzero(~bad)
        if not len(good):
            return out
        ci, ct, si, st = ci[good], ct[good], si[good], st[good]
        b = len(good)
        ipos = np.nonzero(si)[1].reshape(b, k)
        tpos = np.nonzero(st)[1].reshape(b, k)
        want = np.arange(k)
        ik = np.take_along_axis(ci, ipos, axis=1) - SENT0
        tk = np.take_along_axis(ct, tpos, axis=1) - SENT0
        wi_c, wt_c = ci.shape[1], ct.shape[1]
        checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
            (
                (ik != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in input_ids: column {i0 + ipos[j][_first_col(ik[j] != want)]} "
                    f"holds {s.tok(s.sentinels[ik[j][_first_col(ik[j] != want)]])} where "
                    f"{s.tok(s.sentinels[_first_col(ik[j] != want)])} belongs"
                ),
            ),
            (
                (tk != want).any(axis=1),
                lambda j: (
                    f"sentinels out of order in {tname}: column {t0 + tpos[j][_first_col(tk[j] != want)]} "
                    f"holds {s.tok(s.sentinels[tk[j][_first_col(tk[j] != want)]])} where "
                    f"{s.tok(s.sentinels[_first_col(tk[j] != want)])} belongs"
                ),
            ),
            (
                ipos[:, -1] != wi_c - 1,
                lambda j: (
                    f"{c.name}: the inputs do not end with the last sentinel (input_ids[{i0 + wi_c - 1}])"
                ),
            ),
            (
                tpos[:, 0] != 0,
                lambda j: f"{c.name}: the targets do not start with sentinel 0 ({tname}[{t0}])",
            ),
            (
                (ipos[:, 0] == 0) | (np.diff(ipos, axis=1) == 1).any(axis=1),
                lambda j: (
                    f"{c.name}: empty kept segment before sentinel "
                    f"{_first_col(np.diff(np.concatenate([[-1], ipos[j]])) == 1)} in input_ids"
                ),
            ),
            (
                (np.diff(tpos, axis=1) == 1).any(axis=1) | (tpos[:, -1] == wt_c - 1),
                lambda j: (
                    f"{c.name}: empty noise span after sentinel "
                    f"{_first_col(np.diff(np.concatenate([tpos[j], [wt_c]])) == 1)} in {tname}"
                ),
            ),
        ]
        flagged = np.zeros(b, dtype=bool)
        for bad_j, describe in checks:
            bad_j = bad_j & ~flagged
            for j in np.flatnonzero(bad_j):
                out.append((int(idx[good[j]]), describe(int(j))))
            flagged |= bad_j
        return out

    def rebuild(
        self, a: dict[str, np.ndarray], idx: np.ndarray, c: Component
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw chunks ``[len(idx), raw]`` of valid rows ``idx`` of component ``c``, and the
        noise/target mask (True where the token came from the targets)."""
        s = self.s
        ids, lab = a["input_ids"], a["labels"]
        b, L = len(idx), c.raw
        col = np.arange(L)[None, :]
        if not c.span:
            if s.enc_dec:
                p = a["input_length"][idx].astype(np.int64) - c.mode - 1
                head = ids[idx, c.mode : c.mode + L]
                wt = lab.shape[1]
                tail = np.take_along_axis(lab[idx], np.clip(col - p[:, None], 0, wt - 1), axis=1)
                return np.where(col < p[:, None], head, tail), col >= p[:, None]
            p = a["prefix_length"][idx].astype(np.int64) - c.mode
            return ids[idx, c.mode : c.mode + L].copy(), col >= p[:, None]
        inp, tgt, ci, ct, _, _ = self.regions(c, ids, lab, idx)
        k = c.spans
        si, st = ci >= SENT0, ct >= SENT0
        ipos = np.nonzero(si)[1].reshape(b, k)
        tpos = np.nonzero(st)[1].reshape(b, k)
        kk = np.arange(k)
        # kept token at input column j of segment g: j - g + (noise before segment g = tpos_g - g)
        seg = np.cumsum(si, axis=1)
        pos_i = (
            np.arange(inp.shape[1])[None, :]
            - seg
            + np.take_along_axis(tpos - kk, np.minimum(seg, k - 1), axis=1)
        )
        # noise token at target column j of span g: j - g - 1 + (kept through segment g = ipos_g - g)
        spn = np.cumsum(st, axis=1) - 1
        pos_t = (
            np.arange(tgt.shape[1])[None, :]
            - spn
            - 1
            + np.take_along_axis(ipos - kk, np.maximum(spn, 0), axis=1)
        )
        out = np.empty((b, L), dtype=inp.dtype)
        noise = np.zeros((b, L), dtype=bool)
        ri, rt = np.nonzero(~si), np.nonzero(~st)
        out[ri[0], pos_i[~si]] = inp[~si]
        out[rt[0], pos_t[~st]] = tgt[~st]
        noise[rt[0], pos_t[~st]] = True
        return out, noise


# --------------------------------------------------------------------------- problems / report


class Problems:
    """Collects messages (each prefixed with ``prefix``: the epoch directory, if any) and stops
    the scan once ``limit`` are in."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.items: list[str] = []
        self.truncated = False
        self.prefix = ""

    @property
    def left(self) -> int:
        return self.limit - len(self.items)

    def add(self, msg: str) -> None:
        self.items.append(self.prefix + msg)
        if len(self.items) >= self.limit:
            self.truncated = True
            raise _Enough


@dataclass
class VerifyReport:
    out: str
    shards: int = 0
    rows: int = 0
    bytes: int = 0
    tokens: int = 0
    files: int = 0
    source_files: int = 0
    source_tokens: int = 0
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"OK: {self.out}: {self.rows:,} rows in {self.shards} shard(s) from {self.files} file(s), "
            f"{self.tokens:,} raw tokens, {self.bytes / 2**20:,.1f} MiB "
            f"({self.seconds:.2f} s, {rate:,.0f} rows/s)",
            "checked: " + "; ".join(self.checks),
        ]
        return "\n".join(lines)


@dataclass
class _FileChain:
    """Where the next row of a file must start."""

    example: int = 0
    offset: int = 0
    rows: int = 0
    where: str = ""


# --------------------------------------------------------------------------- verify


def epoch_outputs(
    out: Path, probs: Problems | None = None
) -> list[tuple[str, Path, dict[str, Any]]]:
    """The datasets of an output: ``[("", out, manifest)]``, or for ``prepare --epochs K`` one
    ``("epoch-k/", out/epoch-k, its manifest)`` per epoch (each a complete dataset). With
    ``probs``, the top-level manifest is checked against the epochs' (rows per epoch, epoch
    numbers, shared configuration and tokenizer)."""
    m = read_manifest(out)
    dirs = m.get("epoch_dirs")
    if not dirs:
        return [("", out, m)]
    res = []
    for k, d in enumerate(dirs):
        ep = output_path(out, d, f"{MANIFEST}: epoch_dirs entry")
        em = read_manifest(ep)
        res.append((f"{d}/", ep, em))
        if probs is None:
            continue
        probs.prefix = f"{d}/"
        if em.get("epoch") != k:
            probs.add(
                f"{MANIFEST}: epoch {em.get('epoch')}, the output's epoch_dirs put epoch {k} here"
            )
        rows = m.get("totals", {}).get("rows_per_epoch", [])
        if k < len(rows) and em["totals"]["rows"] != rows[k]:
            probs.add(
                f"{MANIFEST}: {em['totals']['rows']:,} rows, the top-level manifest says {rows[k]:,}"
            )
        for key in ("config", "components", "tokenizer", "seed", "layout", "format"):
            if em.get(key) != m.get(key):
                probs.add(f"{MANIFEST}: {key} differs from the top-level manifest's")
    if probs is not None:
        probs.prefix = ""
        data = out / "data"
        if data.is_dir() and any(data.iterdir()):
            probs.add(
                "data/: holds files, but this output keeps its shards in the epoch directories"
            )
    return res


def verify(
    out: str | Path,
    *,
    sources: Sequence[str] | None = None,
    max_problems: int = 20,
    checksums: bool = True,
) -> VerifyReport:
    """Check an output directory (see the module docstring). Returns a report, or raises
    :class:`VerifyError` listing up to ``max_problems`` problems (``shard row R: what``)."""
    import time

    t0 = time.perf_counter()
    outp = Path(out)
    rep = VerifyReport(str(out))
    probs = Problems(max_problems)
    try:
        try:
            datasets = epoch_outputs(outp, probs)
        except OutputError as e:  # no (or an unreadable) manifest: not a complete output
            probs.add(str(e))
            raise _Enough from None
        for prefix, path, m in datasets:
            probs.prefix = prefix
            if not _check_paths(path, m, probs):
                raise _Enough  # read nothing a crafted path leads to
            try:
                _check_manifest(path, m, probs, rep)
                spec = OutputSpec.from_manifest(m, tokenizer_specials(path, m))
            except (KeyError, TypeError, ValueError, IndexError) as e:
                probs.add(f"{MANIFEST}: malformed ({type(e).__name__}: {e})")
                raise _Enough from None
            _check_files(path, m, probs, rep, checksums)
            ok_rows = _check_rows(path, m, spec, probs, rep)
            if sources:
                _check_sources(path, m, spec, sources, probs, rep, ok_rows)
    except _Enough:
        pass
    rep.seconds = time.perf_counter() - t0
    if probs.items:
        more = " (stopped there; raise --max-problems to see more)" if probs.truncated else ""
        raise VerifyError(
            f"{outp}: {len(probs.items)} problem(s) found{more}:\n  " + "\n  ".join(probs.items)
        )
    return rep


def tokenizer_specials(out: Path, m: dict[str, Any]) -> dict[int, str]:
    """Every special id of ``OUT/tokenizer.json`` that ``prepare`` reserves (all but unk, see
    :func:`denoise_cli.tokenize.special_token_ids`); empty when the file is missing or does not
    match the manifest's sha256 (already a problem of its own)."""
    from .tokenize import reserved_from_json

    p = out / "tokenizer.json"
    tok = m["tokenizer"]
    if not p.is_file():
        return {}
    data = p.read_bytes()
    if hashlib.sha256(data).hexdigest() != tok["sha256"]:
        return {}
    unk = int(tok["unk"]["id"]) if tok.get("unk") else None
    try:
        return reserved_from_json(
            data.decode("utf-8"), str(tok.get("sentinel_template", "<extra_id_{}>")), unk
        )
    except Exception:  # an unreadable tokenizer: the row checks run without the extra class
        return {}


def _check_paths(out: Path, m: dict[str, Any], probs: Problems) -> bool:
    """Every path the manifest and ``state.json`` list must stay inside the output
    (``layout.output_path``); False (with the problems added) if one does not."""
    rels: list[tuple[str, object]] = []
    try:
        rels += [(f"{MANIFEST}: shard path", s["path"]) for s in m["shards"]]
    except (KeyError, TypeError) as e:
        probs.add(f"{MANIFEST}: malformed ({type(e).__name__}: {e})")
        return False
    st = out / "state.json"
    if st.is_file():
        try:
            rels += [
                ("state.json: data file", d["filename"])
                for d in orjson.loads(st.read_bytes())["_data_files"]
            ]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass  # reported as malformed by _check_files
    ok = True
    for what, rel in rels:
        try:
            output_path(out, rel, what)
        except OutputError as e:
            probs.add(str(e))
            ok = False
    return ok


def _check_manifest(out: Path, m: dict[str, Any], probs: Problems, rep: VerifyReport) -> None:
    shards, files, tot = m["shards"], m["files"], m["totals"]
    rep.files = len(files)
    rep.shards += len(shards)
    if m.get("format") not in ("arrow", "parquet"):
        probs.add(f"{MANIFEST}: unknown format {m.get('format')!r}")
    nsum = sum(int(s["rows"]) for s in shards)
    fsum = sum(int(f["rows"]) for f in files)
    if not nsum == fsum == int(tot["rows"]):
        probs.add(
            f"{MANIFEST}: row counts disagree: shards {nsum:,}, files {fsum:,}, totals {tot['rows']:,}"
        )
    for key in ("tokens", "tokens_used", "tail_tokens", "records", "docs"):
        s = sum(int(f[key]) if key in f else int(f["stats"][key]) for f in files)
        if s != int(tot[key]):
            probs.add(f"{MANIFEST}: totals.{key} is {tot[key]:,}, the files add up to {s:,}")
    for f in files:
        name = f"file {f['index']} ({f['name']})"
        if int(f["tokens"]) != int(f["tokens_used"]) + int(f["tail_tokens"]):
            probs.add(
                f"{MANIFEST}: {name}: tokens {f['tokens']:,} != used {f['tokens_used']:,} + "
                f"tail {f['tail_tokens']:,}"
            )
        st = f["stats"]
        if int(st["records"]) != int(st["docs"]) + sum(int(v) for v in st["skipped"].values()):
            probs.add(
                f"{MANIFEST}: {name}: records {st['records']:,} != docs {st['docs']:,} + "
                f"skipped {sum(st['skipped'].values()):,}"
            )
        own = [s for s in shards if s["source_files"] == [f["index"]]]
        rsum = sum(int(s["rows"]) for s in own)
        if rsum != int(f["rows"]):
            probs.add(f"{MANIFEST}: {name}: {f['rows']:,} rows, its shards list {rsum:,}")
        tsum = sum(int(s["tokens"]) for s in own)
        if tsum != int(f["tokens_used"]):
            probs.add(
                f"{MANIFEST}: {name}: tokens_used {f['tokens_used']:,}, its shards list {tsum:,}"
            )
    idx = {int(f["index"]) for f in files}
    seen: set[str] = set()
    for s in shards:
        if len(s["source_files"]) != 1 or s["source_files"][0] not in idx:
            probs.add(
                f"{s['path']}: source_files {s['source_files']} is not one file of the manifest"
            )
        if s["path"] in seen:
            probs.add(f"{s['path']}: listed twice in the manifest")
        seen.add(s["path"])
    if len({c["index"] for c in m["components"]}) != len(m["components"]) or any(
        c["index"] != i for i, c in enumerate(m["components"])
    ):
        probs.add(f"{MANIFEST}: components are not numbered 0..{len(m['components']) - 1}")
    tok = out / "tokenizer.json"
    want = m["tokenizer"]["sha256"]
    if not tok.is_file():
        probs.add(f"tokenizer.json: missing (the manifest's tokenizer sha256 is {want[:12]}...)")
    else:
        got = hashlib.sha256(tok.read_bytes()).hexdigest()
        if got != want:
            probs.add(
                f"tokenizer.json: sha256 {got[:12]}... does not match the manifest's {want[:12]}..."
            )
    for c in ("manifest sums", "tokenizer sha256"):
        if c not in rep.checks:
            rep.checks.append(c)


def _check_files(
    out: Path, m: dict[str, Any], probs: Problems, rep: VerifyReport, checksums: bool
) -> None:
    listed = set()
    for s in m["shards"]:
        rel = s["path"]
        listed.add(rel)
        p = out / rel
        if not p.is_file():
            probs.add(f"{rel}: missing (listed in the manifest with {s['rows']:,} rows)")
            continue
        size = p.stat().st_size
        rep.bytes += size
        if size != int(s["bytes"]):
            probs.add(
                f"{rel}: {size:,} bytes, the manifest says {s['bytes']:,} (truncated or rewritten)"
            )
        elif checksums:
            got = sha256_file(p)
            if got != s["sha256"]:
                probs.add(
                    f"{rel}: sha256 {got[:12]}... does not match the manifest's {s['sha256'][:12]}..."
                )
    data = out / "data"
    if data.is_dir():
        for p in sorted(data.iterdir()):
            rel = f"data/{p.name}"
            if rel not in listed:
                probs.add(f"{rel}: not listed in the manifest (left over from another run?)")
    if m["format"] == "arrow" and (out / "state.json").is_file():
        try:
            st = orjson.loads((out / "state.json").read_bytes())
            files = [d["filename"] for d in st["_data_files"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            probs.add(f"state.json: malformed ({e})")
        else:
            if files != [s["path"] for s in m["shards"]]:
                probs.add("state.json: its data files differ from the manifest's shards")
    c = "shard sizes" + (" and sha256" if checksums else "")
    if c not in rep.checks:
        rep.checks.append(c)


def _file_names(m: dict[str, Any]) -> dict[int, str]:
    return {int(f["index"]): str(f["name"]) for f in m["files"]}


def _check_rows(
    out: Path, m: dict[str, Any], spec: OutputSpec, probs: Problems, rep: VerifyReport
) -> dict[str, np.ndarray]:
    """Steps 2-3 over every shard; returns, per shard, the mask of rows that passed."""
    checker = RowChecker(spec)
    want_schema = shard_schema(m)
    raw = checker.raw
    files = {int(f["index"]): f for f in m["files"]}
    chains: dict[int, _FileChain] = {}
    ok_rows: dict[str, np.ndarray] = {}
    packs: dict[int, _PackedFile] = {}
    for sh in m["shards"]:
        rel = sh["path"]
        p = out / rel
        if not p.is_file():
            continue
        fidx = int(sh["source_files"][0]) if sh["source_files"] else -1
        ch = chains.setdefault(fidx, _FileChain())
        nrows = 0
        tokens = 0
        oks: list[np.ndarray] = []
        try:
            schema, batches = open_shard(p, m["format"])
            if not schema.equals(want_schema):
                probs.add(
                    f"{rel}: schema differs from the one this manifest implies:\n    got  {schema}\n"
                    f"    want {want_schema}".replace("\n", "\n    ")
                )
                continue
            for rb in batches:
                n = rb.num_rows
                if spec.packed:
                    tokens += _packed_batch(
                        batch_arrays(rb), rel, nrows, fidx, spec, checker, probs, oks, packs
                    )
                    nrows += n
                    continue
                a = batch_arrays(rb)
                msgs, ok = checker.check(a, probs.left)
                for r, msg in msgs:
                    probs.add(f"{rel} row {nrows + r}: {msg}")
                oks.append(ok)
                den = a["denoiser"].astype(np.int64)
                dsafe = np.clip(den, 0, len(raw) - 1)
                ex, off, sf = a["example_index"], a["token_offset"], a["source_file"]
                rl = raw[dsafe]
                tokens += int(rl.sum())
                # chain: consecutive rows of the file
                prev_ex = np.concatenate([[ch.example - 1], ex[:-1]])
                prev_end = np.concatenate([[ch.offset], off[:-1] + rl[:-1]])
                bad_sf = sf != fidx
                bad_ex = ex != prev_ex + 1
                bad_off = off != prev_end
                for r in np.flatnonzero(bad_sf | bad_ex | bad_off)[: probs.left]:
                    r = int(r)
                    if bad_sf[r]:
                        probs.add(
                            f"{rel} row {nrows + r}: source_file {sf[r]}, but the shard holds rows "
                            f"of file {fidx} only"
                        )
                    elif bad_ex[r]:
                        probs.add(
                            f"{rel} row {nrows + r}: example_index {ex[r]}, expected {prev_ex[r] + 1} "
                            "(rows are written in order per file)"
                        )
                    else:
                        what = (
                            "the file's first chunk starts at 0"
                            if ch.rows == 0 and r == 0
                            else f"the previous chunk ends there: raw_length {rl[r - 1] if r else '...'} "
                            f"after token_offset {off[r - 1] if r else '...'}"
                        )
                        probs.add(
                            f"{rel} row {nrows + r}: token_offset {off[r]}, expected {prev_end[r]} ({what})"
                        )
                if n:
                    ch.example = int(ex[-1]) + 1
                    ch.offset = int(off[-1] + rl[-1])
                    ch.rows += n
                    ch.where = f"{rel} row {nrows + n - 1}"
                nrows += n
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as e:
            probs.add(f"{rel}: unreadable after row {nrows} ({type(e).__name__}: {e})")
            continue
        finally:
            rep.rows += nrows
            rep.tokens += tokens
            if oks:
                ok_rows[rel] = np.concatenate(oks)
        if spec.packed:
            ch.rows += nrows
            ch.where = f"{rel} row {nrows - 1}"
        if nrows != int(sh["rows"]):
            probs.add(f"{rel}: holds {nrows:,} rows, the manifest says {sh['rows']:,}")
        elif spec.packed and packs.get(fidx, _PackedFile()).broken:
            pass  # the examples of the rows that failed are not counted
        elif tokens != int(sh["tokens"]):
            probs.add(
                f"{rel}: its rows hold {tokens:,} raw tokens, the manifest says {sh['tokens']:,}"
            )
    for fidx, pf in packs.items():
        if not pf.broken:
            chains[fidx].offset = _packed_chain(pf, probs)
    for fidx, ch in chains.items():
        f = files.get(fidx)
        if f is None or packs.get(fidx, _PackedFile()).broken:
            continue
        if ch.rows == int(f["rows"]) and ch.offset != int(f["tokens_used"]):
            probs.add(
                f"{ch.where}: the file's last chunk ends at token {ch.offset:,}, "
                f"file {fidx} ({f['name']}) used {f['tokens_used']:,} tokens"
            )
    rep.checks += [
        c
        for c in (
            "schema",
            "vocabulary",
            "padding/attention",
            "labels -100",
            "lengths per component",
            "mode/EOS",
            "sentinel order and spans",
            "rebuilt chunk lengths and offsets",
            *(
                ["packed segments (ids, positions, masks, lengths, example order)"]
                if spec.packed
                else []
            ),
        )
        if c not in rep.checks
    ]
    return ok_rows


@dataclass
class _PackedFile:
    """A packed file's examples, gathered over its shards (the chain is checked in example
    order at the end: a row holds examples from anywhere in its group)."""

    broken: bool = False  # some row failed the packed structure checks
    last_first: int = -1  # first example of the previous row
    parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    where: list[str] = field(default_factory=list)


def _packed_batch(
    pa_: dict[str, np.ndarray],
    rel: str,
    start: int,
    fidx: int,
    spec: OutputSpec,
    checker: RowChecker,
    probs: Problems,
    oks: list[np.ndarray],
    packs: dict[int, _PackedFile],
) -> int:
    """Row checks of one batch of packed rows: the packed structure, then every example with the
    unpacked checks at the example budget; gathers the examples for the chain check. Returns
    the batch's raw tokens."""
    pf = packs.setdefault(fidx, _PackedFile())
    pmsgs, pok = packed_checks(pa_, spec, probs.left)
    for r, msg in pmsgs:
        probs.add(f"{rel} row {start + r}: {msg}")
    sf = pa_["source_file"]
    bad_sf = pok & (sf != fidx)
    for r in np.flatnonzero(bad_sf)[: probs.left]:
        probs.add(
            f"{rel} row {start + int(r)}: source_file {sf[r]}, but the shard holds rows of file "
            f"{fidx} only"
        )
    pok &= ~bad_sf
    if not pok.all():
        pf.broken = True
    rowid = np.flatnonzero(pok)
    a = unpacked_view({k: v[rowid] for k, v in pa_.items()}, spec)
    prow = rowid[a["packed_row"]]
    pseg = a["segment"]
    msgs, ok = checker.check(a, probs.left)
    for r, msg in msgs:
        probs.add(f"{rel} row {start + int(prow[r])} segment {int(pseg[r]) + 1}: {msg}")
    rok = pok.copy()
    rok[prow[~ok]] = False
    oks.append(rok)
    # rows in the order of their first example
    first = pa_["segment_example_index"][rowid, 0]
    prev = np.concatenate([[pf.last_first], first[:-1]])
    bad = first <= prev
    for i in np.flatnonzero(bad)[: probs.left]:
        probs.add(
            f"{rel} row {start + int(rowid[i])}: its first example {first[i]} comes after "
            f"example {prev[i]} of the previous row (rows are ordered by their first example)"
        )
    if len(first):
        pf.last_first = int(first[-1])
    rl = checker.raw[np.clip(a["denoiser"].astype(np.int64), 0, len(checker.raw) - 1)]
    pf.where.append(rel)
    pf.parts.append(
        (
            a["example_index"].astype(np.int64),
            a["token_offset"].astype(np.int64),
            rl,
            np.full(len(rl), len(pf.where) - 1),
            start + prow,
            pseg,
        )
    )
    return int(rl.sum())


def _packed_chain(pf: _PackedFile, probs: Problems) -> int:
    """The examples of a packed file, in example order, must be 0..n-1 and chain (each starts
    where the previous one ends, the first at 0); returns where the last one ends."""
    if not pf.parts:
        return 0
    ex, off, rl, shard, row, seg = (np.concatenate([p[k] for p in pf.parts]) for k in range(6))
    o = np.argsort(ex, kind="stable")
    ex, off, rl, shard, row, seg = ex[o], off[o], rl[o], shard[o], row[o], seg[o]

    def where(i: int) -> str:
        return f"{pf.where[int(shard[i])]} row {int(row[i])} segment {int(seg[i]) + 1}"

    want = np.arange(len(ex))
    bad_ex = ex != want
    if bad_ex.any():
        i = _first_col(bad_ex)
        probs.add(
            f"{where(i)}: example_index {ex[i]}, expected {want[i]} (the file's examples, in "
            "example order, must be 0..n-1: one is missing or repeated)"
        )
        return int(off[-1] + rl[-1])
    prev_end = np.concatenate([[0], off[:-1] + rl[:-1]])
    for i in np.flatnonzero(off != prev_end)[: probs.left]:
        what = (
            "the file's first chunk starts at 0"
            if i == 0
            else f"example {i - 1} ends there: raw_length {rl[i - 1]} after token_offset {off[i - 1]}"
        )
        probs.add(f"{where(int(i))}: token_offset {off[i]}, expected {prev_end[i]} ({what})")
    return int(off[-1] + rl[-1])


# --------------------------------------------------------------------------- --source


class _RowCursor:
    """A file's rows across its shards, handed out ``k`` at a time."""

    def __init__(
        self, out: Path, shards: list[dict[str, Any]], fmt: str, ok_rows: dict[str, np.ndarray]
    ) -> None:
        self.names = [str(s["path"]) for s in shards]
        self._ok = ok_rows
        self._it = self._gen(out, fmt)
        self._buf: list[tuple[int, int, dict[str, np.ndarray]]] = []

    def _gen(self, out: Path, fmt: str) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        for si, rel in enumerate(self.names):
            p = out / rel
            if not p.is_file():
                continue
            start = 0
            try:
                _, batches = open_shard(p, fmt)
                for rb in batches:
                    yield si, start, batch_arrays(rb)
                    start += rb.num_rows
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError):
                continue  # reported by the row pass

    def take(
        self, k: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray] | None:
        """Up to ``k`` next rows: (columns, shard index of each row, row within its shard, whether
        the row passed the row checks)."""
        parts: list[tuple[int, int, dict[str, np.ndarray]]] = []
        got = 0
        while got < k:
            if not self._buf:
                nxt = next(self._it, None)
                if nxt is None:
                    break
                self._buf.append(nxt)
            si, start, a = self._buf[0]
            n = len(next(iter(a.values())))
            need = k - got
            if n <= need:
                parts.append(self._buf.pop(0))
                got += n
            else:
                parts.append((si, start, {c: v[:need] for c, v in a.items()}))
                self._buf[0] = (si, start + need, {c: v[need:] for c, v in a.items()})
                got += need
        if not parts:
            return None
        cols = {c: np.concatenate([p[2][c] for p in parts]) for c in parts[0][2]}
        sizes = [len(next(iter(p[2].values()))) for p in parts]
        shard = np.repeat(np.array([p[0] for p in parts]), sizes)
        row = np.concatenate([p[1] + np.arange(n) for p, n in zip(parts, sizes, strict=True)])
        passed = np.concatenate(
            [
                self._ok[self.names[p[0]]][p[1] : p[1] + n]
                if self.names[p[0]] in self._ok
                else np.zeros(n, dtype=bool)
                for p, n in zip(parts, sizes, strict=True)
            ]
        )
        if len(passed) != got:  # the row pass stopped early in that shard
            passed = np.zeros(got, dtype=bool)
        return cols, shard, row, passed


def _config_from_manifest(m: dict[str, Any]) -> Any:
    from .config import Denoiser, Lengths, Mixture, plan

    mx = m["config"]["mixture"]
    dens = tuple(
        Denoiser(
            d["kind"],
            rate=float(d["rate"]),
            mean_span=float(d.get("mean_span", 0.0)),
            weight=float(d["weight"]),
            mode_token=d.get("mode_token"),
        )
        for d in mx["denoisers"]
    )
    mix = Mixture(
        str(mx["name"]), dens, mode_tokens=bool(mx["mode_tokens"]), source=str(mx.get("source", ""))
    )
    pk = m.get("packing")
    lengths: Lengths = lengths_from(pk["example_lengths"] if pk else m["lengths"])
    return mix, lengths, plan(mix, lengths)


def _check_sources(
    out: Path,
    m: dict[str, Any],
    spec: OutputSpec,
    sources: Sequence[str],
    probs: Problems,
    rep: VerifyReport,
    ok_rows: dict[str, np.ndarray],
) -> None:
    from .corrupt import SpecialIds
    from .errors import DenoiseError
    from .pack import Packer, file_key, join_documents
    from .read import FileStats, find_inputs, iter_batches
    from .tokenize import Encoder

    try:
        inputs = find_inputs(list(sources))
    except DenoiseError as e:
        probs.add(f"--source: {e}")
        return
    mix, lengths, plans = _config_from_manifest(m)
    pk = m.get("packing")
    if pk:
        from .packing import ALGORITHM

        used = pk.get("algorithm", "first-fit-v1")
        if used != ALGORITHM:
            probs.add(
                f"{MANIFEST}: rows were packed by {used!r}, this version packs with "
                f"{ALGORITHM!r} (cannot regenerate rows; verify with the denoise that wrote them)"
            )
            return
    if [p.to_dict() for p in plans] != m["components"]:
        probs.add(
            f"{MANIFEST}: components differ from what this version derives from the config "
            "(cannot regenerate rows)"
        )
        return
    cfg = m["config"]
    tokm = m["tokenizer"]
    special = SpecialIds(
        eos=spec.eos,
        pad=spec.pad,
        sentinels=spec.sentinels.astype(np.int32),
        mode={str(k): int(v) for k, v in tokm["mode_tokens"].items()},
    )
    unk = tokm["unk"]["id"] if tokm.get("unk") else None
    reserved = np.array(
        sorted(
            {spec.eos, spec.pad, *spec.sentinels.tolist(), *special.mode.values()}
            | set(tokenizer_specials(out, m))
        ),
        dtype=np.int32,
    )
    # always HF tokenizers (no fast spec): an independent engine for outputs encoded by tiktoken
    encoder = Encoder((out / "tokenizer.json").read_text(encoding="utf-8"), reserved, unk)
    sep = spec.eos if cfg["doc_separator"] == "eos" else None
    by_name = {x.name: x for x in inputs}
    by_base: dict[tuple[str, int], list[Any]] = {}
    for x in inputs:
        by_base.setdefault((Path(x.path).name, x.size), []).append(x)
    regen = _Regen(spec, m, plans, special, lengths, probs)
    for mf in m["files"]:
        fidx, name = int(mf["index"]), str(mf["name"])
        where = f"file {fidx} ({name})"
        f: Any = by_name.get(name)
        if f is None:
            cand = by_base.get((Path(name).name, int(mf["size"])), [])
            f = cand[0] if len(cand) == 1 else None
        if f is None:
            probs.add(f"{where}: not among the --source inputs")
            continue
        if f.size != int(mf["size"]):
            probs.add(f"{where}: {f.path} has {f.size:,} bytes, the manifest says {mf['size']:,}")
            continue
        rep.source_files += 1
        shards = [s for s in m["shards"] if s["source_files"] == [fidx]]
        cursor = _RowCursor(out, shards, m["format"], ok_rows)
        stats = FileStats()
        packer = Packer(
            plans,
            mix.probabilities,
            int(m["group_size"]),
            int(m["seed"]),
            file_key(name),
            int(m.get("epoch", 0)),
        )
        tokens_read = reserved_replaced = 0
        state = _FileChain(where=name)
        try:
            for batch in iter_batches(
                f,
                text_key=cfg["text_key"],
                on_error="skip",
                stats=stats,
                max_doc_chars=int(cfg.get("max_doc_chars", 0)),
            ):
                values, offsets, counts = encoder.encode(batch.texts)
                if counts.get("reserved_token"):
                    stats.skipped["reserved_token"] = (
                        stats.skipped.get("reserved_token", 0) + counts["reserved_token"]
                    )
                    stats.docs -= counts["reserved_token"]
                reserved_replaced += counts.get("reserved_replaced", 0)
                stream = join_documents(values, offsets, sep)
                tokens_read += len(stream)
                for grp in packer.push(stream):
                    regen.compare(grp, cursor, state)
            last, tail = packer.finish()
            if last is not None:
                regen.compare(last, cursor, state)
        except DenoiseError as e:
            probs.add(f"{where}: cannot re-read the source: {e}")
            continue
        rep.source_tokens += tokens_read
        extra = cursor.take(1)
        if extra is not None and state.offset == 0:
            probs.add(
                f"{cursor.names[int(extra[1][0])]} row {int(extra[2][0])}: {where} gives "
                f"{state.rows:,} rows from the source, its shards hold more"
            )
        if tokens_read != int(mf["tokens"]):
            probs.add(
                f"{where}: the source tokenizes to {tokens_read:,} tokens, the manifest says {mf['tokens']:,}"
            )
        if tail != int(mf["tail_tokens"]) or tokens_read - tail != int(mf["tokens_used"]):
            probs.add(
                f"{where}: {tokens_read - tail:,} tokens used + {tail:,} tail from the source, the "
                f"manifest says {mf['tokens_used']:,} + {mf['tail_tokens']:,}"
            )
        ms = mf["stats"]
        for key in ("records", "docs"):
            if int(getattr(stats, key)) != int(ms[key]):
                probs.add(
                    f"{where}: {getattr(stats, key):,} {key} in the source, the manifest says {ms[key]:,}"
                )
        skipped = dict(sorted(stats.skipped.items()))
        if skipped != dict(sorted(ms["skipped"].items())):
            probs.add(
                f"{where}: skipped records {skipped} in the source, the manifest says {ms['skipped']}"
            )
        if reserved_replaced != int(mf.get("reserved_replaced", 0)):
            probs.add(
                f"{where}: {reserved_replaced:,} reserved ids replaced in the source, the manifest "
                f"says {mf.get('reserved_replaced', 0):,}"
            )
    rep.checks += [
        c
        for c in (
            "--source: streams re-tokenized, every token accounted for",
            "rows regenerated bit for bit",
        )
        if c not in rep.checks
    ]


class _Regen:
    """Compares the rows a source group regenerates with the shard rows, most specific first."""

    def __init__(
        self,
        spec: OutputSpec,
        m: dict[str, Any],
        plans: Any,
        special: Any,
        lengths: Any,
        probs: Problems,
    ) -> None:
        self.spec, self.plans, self.special, self.lengths, self.probs = (
            spec,
            plans,
            special,
            lengths,
            probs,
        )
        self.seed = int(m["seed"])
        self.checker = RowChecker(spec)
        self.cols = [
            "input_ids",
            "labels",
            "attention_mask",
            *(["prefix_length"] if spec.layout == "decoder-only" else []),
            "input_length",
            "target_length",
            "example_index",
        ]

    def compare(self, grp: Any, cursor: _RowCursor, st: _FileChain) -> None:
        """``st.rows``: rows compared so far; ``st.offset`` set to 1 once the shards ran short."""
        from .corrupt import corrupt_mixture

        if st.offset:
            return
        if self.spec.packed:
            self._compare_packed(grp, cursor, st)
            return
        spec, name = self.spec, st.where
        g = len(grp.starts)
        got = self._take(cursor, st, g, grp.index)
        if got is None:
            return
        a, shard_of, row_of, passed = got
        have = len(row_of)
        comps = grp.components[:have].astype(np.int64)
        starts = grp.starts[:have]
        exp_off = grp.token_offset[:have]
        first = grp.first_example
        ok = np.ones(have, dtype=bool)
        origin = f"(seed {self.seed}, file {name}, group {grp.index})"

        flag = self._flagger(cursor, shard_of, row_of, ok)
        cname = self._cname

        den = a["denoiser"].astype(np.int64)
        flag(
            den != comps,
            lambda r: (
                f"denoiser {cname(int(den[r]))}, but {origin} draws {cname(int(comps[r]))} for example {first + r}"
            ),
        )
        off = a["token_offset"]
        flag(
            off != exp_off,
            lambda r: (
                f"token_offset {off[r]}, the source stream puts example {first + r} at {exp_off[r]}"
            ),
        )
        for c in spec.comps:
            idx = np.flatnonzero(ok & passed & (comps == c.index))
            if not len(idx):
                continue
            flag(*self._chunk_mismatch(a, idx, c, grp.stream, starts[idx], exp_off, have, name))
        exp = corrupt_mixture(
            grp.stream, grp.starts, grp.components, self.plans, self.special, self.lengths, grp.rng
        )
        want = {
            "input_ids": exp.input_ids,
            "labels": exp.labels,
            "attention_mask": exp.attention_mask,
            "input_length": exp.input_length,
            "target_length": exp.target_length,
            "prefix_length": exp.prefix_length,
            "example_index": first + np.arange(g),
        }
        for col in self.cols:
            w = want[col][:have]
            v = a[col]
            d = (v != w).reshape(have, -1)

            def desc2(
                r: int, d: np.ndarray = d, col: str = col, v: np.ndarray = v, w: np.ndarray = w
            ) -> str:
                j = _first_col(d[r])
                at = "" if v.ndim == 1 else f"[{j}]"
                gv, wv = (v[r], w[r]) if v.ndim == 1 else (v[r, j], w[r, j])
                return (
                    f"not the row that {origin} gives: {col}{at} is {gv}, regenerated {wv} "
                    "(a row from another run?)"
                )

            flag(d.any(axis=1), desc2)

    def _take(self, cursor: _RowCursor, st: _FileChain, n: int, group: int) -> Any:
        """The next ``n`` shard rows for a regenerated group (fewer, or None, when the shards
        end early: reported once, and the file's comparison stops)."""
        got = cursor.take(n)
        have = 0 if got is None else len(got[1])
        if have < n:
            self.probs.add(
                f"file {st.where}: the source gives at least {st.rows + n:,} rows (group {group}), "
                f"its shards end after {st.rows + have:,}"
            )
            st.offset = 1
        st.rows += have
        return got

    def _flagger(
        self, cursor: _RowCursor, shard_of: np.ndarray, row_of: np.ndarray, ok: np.ndarray
    ) -> Callable[[np.ndarray, Callable[[int], str]], None]:
        """Report rows where ``bad`` (and still ``ok``) as ``shard row R: ...``; clear ``ok``."""
        probs = self.probs

        def flag(bad: np.ndarray, describe: Callable[[int], str]) -> None:
            bad = bad & ok
            for r in np.flatnonzero(bad)[: probs.left]:
                probs.add(
                    f"{cursor.names[int(shard_of[r])]} row {int(row_of[r])}: {describe(int(r))}"
                )
            ok[bad] = False

        return flag

    def _cname(self, c: int) -> str:
        comps = self.spec.comps
        return comps[c].name if 0 <= c < len(comps) else str(c)

    def _chunk_mismatch(
        self,
        arrays: dict[str, np.ndarray],
        idx: np.ndarray,
        c: Any,
        stream: np.ndarray,
        chunk_starts: np.ndarray,
        exp_off: np.ndarray,
        n: int,
        name: str,
    ) -> tuple[np.ndarray, Callable[[int], str]]:
        """Examples ``idx`` (of ``n``, all of component ``c``) whose rebuilt raw chunk differs
        from the source stream at ``chunk_starts``, and a describer for the first difference."""
        chunks, _ = self.checker.rebuild(arrays, idx, c)
        src = stream[chunk_starts[:, None] + np.arange(c.raw)[None, :]]
        diff = chunks != src
        bad = np.zeros(n, dtype=bool)
        bad[idx] = diff.any(axis=1)
        pos = np.full(n, -1)
        pos[idx] = np.arange(len(idx))
        tok = self.spec.tok

        def desc(r: int) -> str:
            j = int(pos[r])
            col = _first_col(diff[j])
            return (
                f"rebuilt tokens differ from the source at stream offset {int(exp_off[r]) + col:,} "
                f"(position {col} of the chunk): the row gives {tok(int(chunks[j, col]))}, "
                f"{name} gives {tok(int(src[j, col]))}"
            )

        return bad, desc

    def _compare_packed(self, grp: Any, cursor: _RowCursor, st: _FileChain) -> None:
        """Packed output: regenerate the group's examples, pack them again with
        ``packing.pack_rows`` (a pure function of the group) and compare the packed rows bit for
        bit; the drawn components, offsets and rebuilt chunks are compared first, per example,
        for precise messages."""
        from .corrupt import corrupt_mixture
        from .packing import pack_rows

        spec, probs, name = self.spec, self.probs, st.where
        g = len(grp.starts)
        first = grp.first_example
        exp = corrupt_mixture(
            grp.stream, grp.starts, grp.components, self.plans, self.special, self.lengths, grp.rng
        )
        packed = pack_rows(
            exp,
            spec.row_lengths,
            pad_id=spec.pad,
            max_segs=spec.max_segments,
            denoiser=grp.components,
            example_index=first + np.arange(g),
            token_offset=grp.token_offset,
        )
        got = self._take(cursor, st, packed.num_rows, grp.index)
        if got is None:
            return
        a, shard_of, row_of, passed = got
        have = len(row_of)
        origin = f"(seed {self.seed}, file {name}, group {grp.index})"
        ok = np.ones(have, dtype=bool)

        flag = self._flagger(cursor, shard_of, row_of, ok)
        cname = self._cname

        # per example of the rows that passed the row checks: component, offset, rebuilt chunk
        rowid = np.flatnonzero(passed)
        v = unpacked_view({k: x[rowid] for k, x in a.items()}, spec)
        prow = rowid[v["packed_row"]]
        seg = v["segment"]
        e = v["example_index"].astype(np.int64) - first
        inside = (e >= 0) & (e < g)
        ec = np.where(inside, e, 0)
        comps = grp.components.astype(np.int64)[ec]
        den = v["denoiser"].astype(np.int64)
        off = v["token_offset"]
        exp_off = grp.token_offset[ec]
        bad = np.zeros(len(e), dtype=bool)

        def flag_ex(bad_e: np.ndarray, describe: Callable[[int], str]) -> None:
            bad_e = bad_e & ~bad & ok[prow]
            for i in np.flatnonzero(bad_e)[: probs.left]:
                r = int(prow[i])
                probs.add(
                    f"{cursor.names[int(shard_of[r])]} row {int(row_of[r])} segment "
                    f"{int(seg[i]) + 1}: {describe(int(i))}"
                )
            bad[bad_e] = True

        flag_ex(
            ~inside,
            lambda i: f"example_index {first + e[i]} is not in {origin} ({first}..{first + g - 1})",
        )
        flag_ex(
            den != comps,
            lambda i: (
                f"denoiser {cname(int(den[i]))}, but {origin} draws {cname(int(comps[i]))} for "
                f"example {first + e[i]}"
            ),
        )
        flag_ex(
            off != exp_off,
            lambda i: (
                f"token_offset {off[i]}, the source stream puts example {first + e[i]} at "
                f"{exp_off[i]}"
            ),
        )
        for c in spec.comps:
            idx = np.flatnonzero(~bad & (den == c.index))
            if not len(idx):
                continue
            flag_ex(
                *self._chunk_mismatch(
                    v, idx, c, grp.stream, grp.starts[ec[idx]], exp_off, len(e), name
                )
            )
        ok[prow[bad]] = False
        # the whole packed rows, bit for bit
        for col, w in packed.columns.items():
            w = w[:have]
            x = a[col]
            d = (x != w).reshape(have, -1)

            def desc2(
                r: int, d: np.ndarray = d, col: str = col, x: np.ndarray = x, w: np.ndarray = w
            ) -> str:
                j = _first_col(d[r])
                at = "" if x.ndim == 1 else f"[{j}]"
                gv, wv = (x[r], w[r]) if x.ndim == 1 else (x[r, j], w[r, j])
                return (
                    f"not the row that {origin} gives: {col}{at} is {gv}, regenerated and "
                    f"packed {wv} (a row from another run?)"
                )

            flag(d.any(axis=1), desc2)

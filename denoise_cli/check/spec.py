"""What a manifest says about its rows, in the form the row checks, ``stats`` and ``inspect``
use: :class:`OutputSpec` (widths, special ids, a lookup table from token id to its class, per
component what its rows must look like) and :func:`unpacked_view` (the examples of packed rows
as the columns of an unpacked output). See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Lengths
from ..rows.base import IGNORE_INDEX, row_widths
from ..rows.denoisers import DenoiserKind, kind_of
from ..rows.denoisers.base import RowsView
from ..rows.packing import unpack_rows

IGNORE = IGNORE_INDEX

# classes of token ids (values of the lookup table)
NORMAL, EOS, PAD, MODE = 0, 1, 2, 3
OTHER = 4  # any other special id of the tokenizer (never in text: prepare reserves them)
SENT0 = 16  # sentinel k -> SENT0 + k


@dataclass(frozen=True)
class Component:
    """What a manifest component dictates about its rows."""

    index: int
    name: str
    kind: DenoiserKind  # what its rows look like: the row checks, stats and inspect ask it
    mode: int  # 1 if a mode token is prepended
    mode_id: int  # -1 without a mode token
    mode_token: str | None
    raw: int
    noise: int
    spans: int
    prefix_min: int
    prefix_max: int

    @property
    def span(self) -> bool:
        """Whether its rows hold sentinels (R/X span corruption)."""
        return self.kind.uses_sentinels


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

    def classes(self, ids: np.ndarray) -> np.ndarray:
        """The class of every id (``lut``; ids outside the vocabulary clip to its ends)."""
        return np.take(self.lut, ids, mode="clip")

    def view(
        self,
        a: dict[str, np.ndarray],
        code: np.ndarray | None = None,
        lcode: np.ndarray | None = None,
    ) -> RowsView:
        """A record batch (its columns) as the denoiser kinds read it."""
        pl = a.get("prefix_length")
        return RowsView(
            self.enc_dec,
            a["input_ids"],
            a["labels"],
            a["input_length"].astype(np.int64),
            pl.astype(np.int64) if pl is not None else None,
            self.classes,
            SENT0,
            self.tok,
            self.sentinels,
            code,
            lcode,
        )

    def table(self, attr: str) -> np.ndarray:
        """A per-component attribute as an int64 array indexed by denoiser."""
        return np.array([int(getattr(c, attr)) for c in self.comps], dtype=np.int64)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], others: dict[int, str] | None = None) -> OutputSpec:
        """``others``: the tokenizer's other special ids (class OTHER), see
        ``verify.tokenizer_specials``."""
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
                    kind=kind_of(str(c["denoiser"])),
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
        ex = Lengths.from_dict(pk["example_lengths"])
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
            Lengths.from_dict(m["lengths"]),
            int(pk["max_segments"]),
        )


def unpacked_view(a: dict[str, np.ndarray], spec: OutputSpec) -> dict[str, np.ndarray]:
    """The examples of a batch of packed rows as the columns of an unpacked output at the
    example budget (``packing.unpack_rows`` plus ``denoiser`` / ``example_index`` /
    ``token_offset`` / ``source_file`` from the ``segment_*`` columns), in (row, segment) order,
    with ``packed_row`` (index in the batch) and ``segment`` (0-based) of every example. The rows
    must be well formed (``packedcheck.packed_checks``)."""
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

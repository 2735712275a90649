"""``denoise stats OUT...``: what an output holds, from its columns and manifest only.

Per record batch it reads ``input_ids``, ``input_length``, ``target_length``, ``denoiser`` (and
``prefix_length`` for decoder-only), never decodes text: one lookup-table ``np.take`` counts the
sentinels per row, the rest is arithmetic on the length columns (each component's kind turns
them into raw, noise and span counts: ``DenoiserKind.row_counts``), and per component
``np.bincount`` gives exact length histograms. :class:`Stats` is mergeable (``a + b``), so
``stats out1 out2`` sums outputs and epochs. Packed outputs are counted per example
(``spec.unpacked_view``) plus the packed rows' own efficiency. A shuffled output is read through
``output.shuffled.logical_shards``: its stats are its source's. Rendering is
:mod:`.stats_render`; the algorithm in full: docs/architecture.md ("stats"); figures:
benchmarks/README_verify.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..output.layout import output_path
from ..output.manifest import datasets, read_manifest
from ..output.remote import is_output_url, localize
from ..output.shards import batch_arrays, open_shard
from ..output.shuffled import logical_shards
from .spec import NORMAL, SENT0, OutputSpec, unpacked_view


def _add_hist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    out: np.ndarray = a.copy()
    out[: len(b)] += b
    return out


def hist_quantiles(h: np.ndarray) -> dict[str, float]:
    """min / median / p99 / max (nearest rank, i.e. numpy's ``inverted_cdf``) and mean of a
    histogram of integer values (``h[v]`` = count of value ``v``)."""
    n = int(h.sum())
    if n == 0:
        return {"min": 0, "median": 0, "p99": 0, "max": 0, "mean": 0.0}
    cum = np.cumsum(h)
    nz = np.flatnonzero(h)

    def rank(q: float) -> int:
        k = max(1, int(np.ceil(q * n - 1e-9)))
        return int(np.searchsorted(cum, k))

    mean = float((np.arange(len(h)) * h).sum() / n)
    return {
        "min": int(nz[0]),
        "median": rank(0.5),
        "p99": rank(0.99),
        "max": int(nz[-1]),
        "mean": mean,
    }


@dataclass
class ComponentStats:
    """Realised counts of one mixture component (keyed by its name when merging)."""

    name: str
    kind: str
    rate: float  # configured
    mean_span: float  # configured (0 for S)
    expected_rows: float = 0.0  # configured probability x rows of its output
    rows: int = 0
    raw_tokens: int = 0
    noise_tokens: int = 0  # span: masked tokens; S: suffix (target) tokens
    spans: int = 0
    input_tokens: int = 0
    target_tokens: int = 0
    input_hist: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    target_hist: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))

    def __add__(self, o: ComponentStats) -> ComponentStats:
        return ComponentStats(
            self.name,
            self.kind,
            self.rate,
            self.mean_span,
            self.expected_rows + o.expected_rows,
            self.rows + o.rows,
            self.raw_tokens + o.raw_tokens,
            self.noise_tokens + o.noise_tokens,
            self.spans + o.spans,
            self.input_tokens + o.input_tokens,
            self.target_tokens + o.target_tokens,
            _add_hist(self.input_hist, o.input_hist),
            _add_hist(self.target_hist, o.target_hist),
        )

    def to_dict(self, total_rows: int, total_expected: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows,
            "share": self.rows / total_rows if total_rows else 0.0,
            "configured_share": self.expected_rows / total_expected if total_expected else 0.0,
            "corruption_rate": self.noise_tokens / self.raw_tokens if self.raw_tokens else 0.0,
            "configured_rate": self.rate,
            "mean_span": self.noise_tokens / self.spans if self.spans else None,
            "configured_mean_span": self.mean_span if self.kind != "S" else None,
            "raw_tokens": self.raw_tokens,
            "noise_tokens": self.noise_tokens,
            "spans": self.spans,
            "input_tokens": self.input_tokens,
            "target_tokens": self.target_tokens,
            "input_length": hist_quantiles(self.input_hist),
            "target_length": hist_quantiles(self.target_hist),
        }


@dataclass
class ShardStats:
    output: str
    path: str
    rows: int = 0
    bytes: int = 0
    raw_tokens: int = 0
    input_tokens: int = 0
    target_tokens: int = 0
    examples: int = 0  # packed output: examples in its rows (unpacked: = rows)


_ACCOUNTING = (
    "files",
    "records",
    "docs",
    "tokens",
    "tokens_used",
    "tail_tokens",
    "reserved_replaced",
    "files_with_errors",
)


@dataclass
class Stats:
    """Everything ``denoise stats`` reports; ``a + b`` merges two (see the module docstring)."""

    outputs: list[str] = field(default_factory=list)
    layouts: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    rows: int = 0
    raw_tokens: int = 0
    input_real: int = 0  # real tokens in input_ids
    input_slots: int = 0
    target_real: int = 0  # tokens with a label
    target_slots: int = 0
    real: int = 0  # real token slots (enc-dec: inputs + targets; dec-only: the sequence)
    slots: int = 0
    expected_real: float = 0.0  # configured efficiency x slots (merge-safe)
    max_sentinel: int = -1  # largest sentinel index seen in the rows
    sentinels_needed: int = 0
    vocab_size: int = 0
    added_tokens: list[str] = field(default_factory=list)
    accounting: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_ACCOUNTING, 0))
    skipped: dict[str, int] = field(default_factory=dict)
    components: dict[str, ComponentStats] = field(default_factory=dict)
    shards: list[ShardStats] = field(default_factory=list)
    epochs: int = 0  # datasets summed (one per output, or one per epoch of ``--epochs K``)
    seconds: float = 0.0
    # packed outputs (``prepare --pack``): ``rows`` and the figures above count *examples* (the
    # slots are those of the example budget); these count the packed rows and their slots
    packed_rows: int = 0
    packed_input_real: int = 0
    packed_input_slots: int = 0
    packed_target_real: int = 0
    packed_target_slots: int = 0
    packed_real: int = 0
    packed_slots: int = 0
    packed_examples: int = 0
    expected_packed_real: float = 0.0  # the manifest's ratio bound x slots (merge-safe)
    # component mixing of the packed rows: distinct components per row, summed, and what rows of
    # independent examples drawn from the configured mixture would have (same k per row)
    packed_distinct: int = 0
    expected_packed_distinct: float = 0.0
    # unknown tokens: unk ids among the text tokens of input_ids (:func:`text_and_unknown`;
    # enc-dec: the unmasked part; dec-only: the whole raw chunk); 0/0 when the tokenizer has no unk
    unk_tokens: int = 0
    unk_base: int = 0
    # the epochs of ``--epochs K`` outputs, each on its own: (output, epoch, its stats); empty
    # for single-epoch outputs (the plot's per-epoch view)
    by_epoch: list[tuple[str, int, Stats]] = field(default_factory=list)

    @property
    def unk_rate(self) -> float | None:
        return self.unk_tokens / self.unk_base if self.unk_base else None

    def __add__(self, o: Stats) -> Stats:
        comps = dict(self.components)
        for k, c in o.components.items():
            comps[k] = comps[k] + c if k in comps else c
        skipped = dict(self.skipped)
        for k, v in o.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
        return Stats(
            outputs=self.outputs + o.outputs,
            layouts=self.layouts + o.layouts,
            formats=self.formats + o.formats,
            rows=self.rows + o.rows,
            raw_tokens=self.raw_tokens + o.raw_tokens,
            input_real=self.input_real + o.input_real,
            input_slots=self.input_slots + o.input_slots,
            target_real=self.target_real + o.target_real,
            target_slots=self.target_slots + o.target_slots,
            real=self.real + o.real,
            slots=self.slots + o.slots,
            expected_real=self.expected_real + o.expected_real,
            max_sentinel=max(self.max_sentinel, o.max_sentinel),
            sentinels_needed=max(self.sentinels_needed, o.sentinels_needed),
            vocab_size=max(self.vocab_size, o.vocab_size),
            added_tokens=self.added_tokens
            + [t for t in o.added_tokens if t not in self.added_tokens],
            accounting={k: self.accounting.get(k, 0) + o.accounting.get(k, 0) for k in _ACCOUNTING},
            skipped=skipped,
            components=comps,
            shards=self.shards + o.shards,
            epochs=self.epochs + o.epochs,
            seconds=self.seconds + o.seconds,
            packed_rows=self.packed_rows + o.packed_rows,
            packed_input_real=self.packed_input_real + o.packed_input_real,
            packed_input_slots=self.packed_input_slots + o.packed_input_slots,
            packed_target_real=self.packed_target_real + o.packed_target_real,
            packed_target_slots=self.packed_target_slots + o.packed_target_slots,
            packed_real=self.packed_real + o.packed_real,
            packed_slots=self.packed_slots + o.packed_slots,
            packed_examples=self.packed_examples + o.packed_examples,
            expected_packed_real=self.expected_packed_real + o.expected_packed_real,
            packed_distinct=self.packed_distinct + o.packed_distinct,
            expected_packed_distinct=self.expected_packed_distinct + o.expected_packed_distinct,
            unk_tokens=self.unk_tokens + o.unk_tokens,
            unk_base=self.unk_base + o.unk_base,
            by_epoch=self.by_epoch + o.by_epoch,
        )

    @property
    def packed_efficiency(self) -> dict[str, float] | None:
        """Token efficiency of the packed rows (real tokens / slots), examples per row and the
        manifest's ratio bound; None when no output is packed."""
        if not self.packed_rows:
            return None

        def r(a: float, b: float) -> float:
            return a / b if b else 0.0

        return {
            "rows": self.packed_rows,
            "examples": self.packed_examples,
            "examples_per_row": r(self.packed_examples, self.packed_rows),
            "inputs": r(self.packed_input_real, self.packed_input_slots),
            "targets": r(self.packed_target_real, self.packed_target_slots),
            "overall": r(self.packed_real, self.packed_slots),
            "bound_overall": r(self.expected_packed_real, self.packed_slots),
            "components_per_row": r(self.packed_distinct, self.packed_rows),
            "independent_components_per_row": r(self.expected_packed_distinct, self.packed_rows),
        }

    @property
    def efficiency(self) -> dict[str, float]:
        def r(a: float, b: float) -> float:
            return a / b if b else 0.0

        return {
            "inputs": r(self.input_real, self.input_slots),
            "targets": r(self.target_real, self.target_slots),
            "overall": r(self.real, self.slots),
            "expected_overall": r(self.expected_real, self.slots),
        }

    def to_dict(self) -> dict[str, Any]:
        exp_total = sum(c.expected_rows for c in self.components.values())
        return {
            "outputs": self.outputs,
            "epochs": self.epochs,
            "layouts": self.layouts,
            "formats": self.formats,
            "rows": self.rows,
            "raw_tokens": self.raw_tokens,
            "input_tokens": self.input_real,
            "target_tokens": self.target_real,
            "padding_efficiency": self.efficiency,
            "packed": self.packed_efficiency,
            "max_sentinel_index": self.max_sentinel,
            "sentinels_used": self.max_sentinel + 1,
            "sentinels_needed": self.sentinels_needed,
            "vocab_size": self.vocab_size,
            "tokens_added": len(self.added_tokens),
            "unknown_tokens": self.unk_tokens,
            "unknown_token_rate": self.unk_rate,
            "added_tokens": self.added_tokens,
            "input": {**self.accounting, "skipped": dict(sorted(self.skipped.items()))},
            "components": [c.to_dict(self.rows, exp_total) for c in self.components.values()],
            "shards": [dict(s.__dict__) for s in self.shards],
        }


#: ``stats`` warns when more than this share of the text tokens are the unknown token.
UNK_WARN = 0.01

_COLUMNS = ("input_ids", "input_length", "target_length", "denoiser")


def compute(out: str | Path) -> Stats:
    """Stats of one output directory, one record batch at a time. An output of
    ``prepare --epochs K`` (or ``--split``) is the sum of its epochs (splits), with the input
    counted once."""
    outp = localize(str(out)) if is_output_url(out) else Path(out)
    eps = datasets(outp)
    if len(eps) == 1:
        return _compute_one(outp, eps[0][2], str(out), "")
    parts = [_compute_one(path, m, str(out), prefix) for prefix, path, m in eps]
    st = parts[0]
    for p in parts[1:]:
        st = st + p
    st.by_epoch = [
        (str(out), int(m.get("epoch", k)), p)
        for k, ((_, _, m), p) in enumerate(zip(eps, parts, strict=True))
    ]
    top = read_manifest(outp)["totals"]
    st.outputs, st.layouts, st.formats = st.outputs[:1], st.layouts[:1], st.formats[:1]
    for k in ("files", "records", "docs", "tokens", "reserved_replaced", "files_with_errors"):
        st.accounting[k] = int(top.get(k, 0))
    st.skipped = {str(k): int(v) for k, v in top.get("skipped", {}).items()}
    return st


def _row_counts(
    spec: OutputSpec, den: np.ndarray, il: np.ndarray, tl: np.ndarray, sentinels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw tokens, noise tokens, spans) of every row, each component's rows counted by its
    kind from the length columns and the sentinels in ``input_ids``."""
    raw, noise, spans = (np.zeros(len(den), dtype=np.int64) for _ in range(3))
    for c in spec.comps:
        i = np.flatnonzero(den == c.index)
        if len(i):
            raw[i], noise[i], spans[i] = c.kind.row_counts(
                c, il[i], tl[i], sentinels[i], spec.enc_dec
            )
    return raw, noise, spans


def _compute_one(outp: Path, m: dict[str, Any], out: str, prefix: str) -> Stats:
    t0 = time.perf_counter()
    try:
        spec = OutputSpec.from_manifest(m)
        denoisers = m["config"]["mixture"]["denoisers"]
        probs = np.array([float(d["probability"]) for d in denoisers])
        fmt, layout = str(m["format"]), str(m["layout"])
        tot = m["totals"]
    except (KeyError, TypeError, ValueError) as e:
        raise OutputError(f"{outp}/denoise.json is malformed ({type(e).__name__}: {e})") from None
    C = len(spec.comps)
    enc = spec.enc_dec
    wi, wt = spec.wi, spec.wt
    cols = list(_COLUMNS) + ([] if enc else ["prefix_length"])
    sums = np.zeros((7, C), dtype=np.int64)  # rows, raw, noise, spans, input, target, -
    ih = np.zeros(C * (wi + 1), dtype=np.int64)
    th = np.zeros(C * (wt + 1), dtype=np.int64)
    st = Stats(outputs=[out], layouts=[layout], formats=[fmt], epochs=1)
    unk_tok = (m["tokenizer"].get("unk") or {}).get("id")
    max_code = 0
    # a shuffled output is counted shard by shard of its source (output.shuffled): the same
    # figures, and for each rebuilt shard the bytes its source entry records
    for ls in logical_shards(outp, m):
        sh = ls.entry
        p = ls.path if ls.path is not None else outp / ls.rel
        if not ls.exists():
            what = (
                f"{ls.path}: shard listed in the manifest"
                if ls.path
                else f"{outp}: a shard of this shuffled output"
            )
            raise OutputError(f"{what} is missing (run `denoise verify {out}`)")
        size = p.stat().st_size if ls.path is not None else int(sh["bytes"])
        ss = ShardStats(out, prefix + str(sh["path"]), bytes=size)
        _, batches = ls.open(None if spec.packed else cols)
        for rb in batches:
            a = batch_arrays(rb)
            if not rb.num_rows:
                continue
            if spec.packed:
                a = _packed(a, spec, st, ss, p, out, probs)
            den = np.clip(a["denoiser"].astype(np.int64), 0, C - 1)
            il = a["input_length"].astype(np.int64)
            tl = a["target_length"].astype(np.int64)
            code = np.take(spec.lut, a["input_ids"], mode="clip")
            max_code = max(max_code, int(code.max()))
            cnt = np.count_nonzero(code >= SENT0, axis=1)
            raw, noise, spans = _row_counts(spec, den, il, tl, cnt)
            sums[0] += np.bincount(den, minlength=C)
            for k, v in ((1, raw), (2, noise), (3, spans), (4, il), (5, tl)):
                sums[k] += np.bincount(den, weights=v, minlength=C).round().astype(np.int64)
            ih += np.bincount(den * (wi + 1) + np.clip(il, 0, wi), minlength=C * (wi + 1))
            th += np.bincount(den * (wt + 1) + np.clip(tl, 0, wt), minlength=C * (wt + 1))
            if unk_tok is not None:
                n_unk, n_text = text_and_unknown(a["input_ids"], code, int(unk_tok))
                st.unk_tokens += n_unk
                st.unk_base += n_text
            ss.rows += rb.num_rows
            ss.raw_tokens += int(raw.sum())
            ss.input_tokens += int(il.sum())
            ss.target_tokens += int(tl.sum())
        st.shards.append(ss)
    st.rows = int(sums[0].sum())
    st.raw_tokens = int(sums[1].sum())
    st.input_real, st.target_real = int(sums[4].sum()), int(sums[5].sum())
    st.input_slots, st.target_slots = st.rows * wi, st.rows * wt
    if enc:
        st.real, st.slots = st.input_real + st.target_real, st.rows * (wi + wt)
    else:
        st.real, st.slots = st.input_real, st.rows * wi
    st.expected_real = float(m.get("expected_efficiency", {}).get("overall", 0.0)) * st.slots
    if spec.packed:
        bound = float(m.get("expected_efficiency", {}).get("packed_bound_overall", 0.0))
        st.expected_packed_real = bound * st.packed_slots
    st.max_sentinel = max_code - SENT0 if max_code >= SENT0 else -1
    st.sentinels_needed = int(m.get("sentinels_needed", len(spec.sentinels)))
    tok = m["tokenizer"]
    st.vocab_size = int(tok["vocab_size"])
    st.added_tokens = list(tok.get("added_tokens", []))
    st.accounting = {k: int(tot.get(k, 0)) for k in _ACCOUNTING}
    st.skipped = {str(k): int(v) for k, v in tot.get("skipped", {}).items()}
    ih2, th2 = ih.reshape(C, wi + 1), th.reshape(C, wt + 1)
    for c, d in enumerate(denoisers):
        comp = ComponentStats(
            spec.comps[c].name,
            str(d["kind"]),
            float(d["rate"]),
            float(d.get("mean_span", 0.0)),
            float(probs[c]) * st.rows,
            int(sums[0, c]),
            int(sums[1, c]),
            int(sums[2, c]),
            int(sums[3, c]),
            int(sums[4, c]),
            int(sums[5, c]),
            ih2[c].copy(),
            th2[c].copy(),
        )
        st.components[comp.name] = (
            st.components[comp.name] + comp if comp.name in st.components else comp
        )
    st.seconds = time.perf_counter() - t0
    return st


def _packed(
    a: dict[str, np.ndarray],
    spec: OutputSpec,
    st: Stats,
    ss: ShardStats,
    p: Path,
    out: str,
    probs: np.ndarray,
) -> dict[str, np.ndarray]:
    """Count a batch of packed rows (rows, real tokens and slots of the packed rows) and return
    its examples (``spec.unpacked_view``), which the caller counts as an unpacked output."""
    R = len(a["num_segments"])
    W, V = spec.packed_widths
    il = int(a["input_length"].astype(np.int64).sum())
    tl = int(a["target_length"].astype(np.int64).sum())
    ne = int(a["num_segments"].astype(np.int64).sum())
    st.packed_rows += R
    st.packed_examples += ne
    st.packed_input_real += il
    st.packed_input_slots += R * W
    st.packed_target_real += tl
    st.packed_target_slots += R * V
    if spec.enc_dec:
        st.packed_real += il + tl
        st.packed_slots += R * (W + V)
    else:
        st.packed_real += il
        st.packed_slots += R * W
    ss.examples += ne
    seg = a["segment_denoiser"].astype(np.int64)
    C = len(probs)
    present = np.zeros((R, C + 1), dtype=bool)  # column C: no segment (-1) or out of range
    present[np.arange(R)[:, None], np.where((seg >= 0) & (seg < C), seg, C)] = True
    st.packed_distinct += int(present[:, :C].sum())
    k = a["num_segments"].astype(np.int64)
    st.expected_packed_distinct += float((1.0 - (1.0 - probs[None, :]) ** k[:, None]).sum())
    try:
        return unpacked_view(a, spec)
    except (ValueError, IndexError) as e:
        raise OutputError(
            f"{p}: malformed packed rows ({type(e).__name__}: {e}); run `denoise verify {out}`"
        ) from None


def text_and_unknown(ids: np.ndarray, code: np.ndarray, unk: int) -> tuple[int, int]:
    """(unknown tokens, text tokens) of ``input_ids`` rows, ``code`` their lookup-table classes.
    Text tokens are the ordinary ids and the unknown ones: not the mode token, sentinels, padding
    or EOS, which also leaves out the EOS that separates documents inside a chunk (the only
    difference from the raw tokens a row keeps). The one definition ``stats`` and the ``prepare``
    summary share."""
    is_unk = ids == unk
    return int(np.count_nonzero(is_unk)), int(np.count_nonzero((code == NORMAL) | is_unk))


def unknown_token_sample(out: str, max_rows: int = 50_000) -> tuple[int, int, int] | None:
    """(unknown tokens, text tokens, rows read) in ``input_ids`` of an output's first
    ``max_rows`` rows: the estimate the ``prepare`` summary prints (``stats`` counts every row).
    None when the tokenizer has no unknown token, or the output is behind a URL (not fetched
    for an estimate; ``stats`` counts it)."""
    if is_output_url(out):
        return None
    _, path, m = datasets(Path(out))[0]
    unk = (m["tokenizer"].get("unk") or {}).get("id")
    if unk is None:
        return None
    spec = OutputSpec.from_manifest(m)
    n_unk = n_text = rows = 0
    for sh in m["shards"]:
        p = output_path(path, sh["path"], "denoise.json: shard path")
        _, batches = open_shard(p, str(m["format"]), ["input_ids"])
        for rb in batches:
            ids = batch_arrays(rb)["input_ids"]
            u, t = text_and_unknown(ids, np.take(spec.lut, ids, mode="clip"), int(unk))
            n_unk, n_text = n_unk + u, n_text + t
            rows += rb.num_rows
            if rows >= max_rows:
                return n_unk, n_text, rows
    return n_unk, n_text, rows


def collect(outs: list[str]) -> Stats:
    """Stats of several output directories, summed."""
    if not outs:
        raise ConfigError("no output directory given")
    total = compute(outs[0])
    for o in outs[1:]:
        total = total + compute(o)
    return total

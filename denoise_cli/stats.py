"""``denoise stats OUT...``: what an output holds, from its columns and manifest only.

Algorithm: for every record batch, read ``input_ids``, ``input_length``, ``target_length``,
``denoiser`` (and ``prefix_length`` for decoder-only); text is never decoded. One ``np.take`` of
a small lookup table over ``input_ids`` classifies ids, so the sentinels per row (``s``) and the
largest sentinel index used come from a sum and a max. The rest is arithmetic on the length
columns: span rows mask ``n = target_length - 1 - s`` tokens and their raw chunk is
``input_length - mode - 1 - s + n`` (encoder-decoder) or ``input_length - mode - 1 - 2s``
(decoder-only); S rows split ``raw = prefix + suffix``. Per component, ``np.bincount`` gives
the sums and exact length histograms (``bincount(denoiser * (W + 1) + length)``), so min / median
/ p99 / max are exact (nearest rank) and stay exact after merging. No per-row Python loop.

:class:`Stats` is mergeable: ``a + b`` adds counters and histograms (padded to the longer
width), keys components by name and sums the *configured* row share as expected rows
(probability x rows), so ``stats out1 out2`` reports a correct combined configured share even for
different mixtures. Configured padding efficiency is merged the same way (weighted by slots).

Packed outputs (``prepare --pack``): each batch is turned into its examples
(``verify.unpacked_view``) and counted as above at the example budget (``rows`` are then
examples, efficiency per example against the example slots); the packed rows add their own
token efficiency (``input_length`` / ``target_length`` per row over the packed slots), examples
per row and the manifest's ratio bound (``Stats.packed_efficiency``).

Trade-off: counting sentinels touches the largest column (``input_ids``); the length columns
alone cannot separate noise tokens from spans without trusting the configured raw length. Arrow
shards are memory-mapped, so the cost is one pass over ``input_ids`` at memory speed; Parquet
reads only the five columns (zstd decode dominates).

Measured on this machine (2 cores shared with other jobs, load average ~6; ``ul2`` enc-dec
512/512, GPT-2; page cache warm, best of 3): the 21,261-row, 94 MiB Arrow output of
``shared/corpus/en-prose/*.jsonl.zst`` in 0.24 s (~89,000 rows/s, ~410 MB/s of shards); the
5,370-row output of ``00.jsonl.zst`` in 0.06 s, its Parquet twin (6.9 MiB) in 0.11 s (zstd
decoding). The whole ``denoise stats`` command takes ~1-2 s, mostly interpreter and pyarrow
start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, OutputError
from .layout import output_path
from .load import batch_arrays, read_manifest
from .report import table
from .verify import SENT0, OutputSpec, epoch_outputs, open_shard, unpacked_view


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
    # unknown tokens: unk ids among the text tokens of input_ids (enc-dec: the unmasked part;
    # dec-only: the whole raw chunk); 0/0 when the tokenizer has no unk
    unk_tokens: int = 0
    unk_base: int = 0

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
    ``prepare --epochs K`` is the sum of its epochs, with the input counted once."""
    outp = Path(out)
    eps = epoch_outputs(outp)
    if len(eps) == 1:
        return _compute_one(outp, eps[0][2], str(out), "")
    st = _compute_one(eps[0][1], eps[0][2], str(out), eps[0][0])
    for prefix, path, m in eps[1:]:
        st = st + _compute_one(path, m, str(out), prefix)
    top = read_manifest(outp)["totals"]
    st.outputs, st.layouts, st.formats = st.outputs[:1], st.layouts[:1], st.formats[:1]
    for k in ("files", "records", "docs", "tokens", "reserved_replaced", "files_with_errors"):
        st.accounting[k] = int(top.get(k, 0))
    st.skipped = {str(k): int(v) for k, v in top.get("skipped", {}).items()}
    return st


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
    m_tab = spec.table("mode")
    isspan = np.array([c.span for c in spec.comps], dtype=bool)
    wi, wt = spec.wi, spec.wt
    cols = list(_COLUMNS) + ([] if enc else ["prefix_length"])
    sums = np.zeros((7, C), dtype=np.int64)  # rows, raw, noise, spans, input, target, -
    ih = np.zeros(C * (wi + 1), dtype=np.int64)
    th = np.zeros(C * (wt + 1), dtype=np.int64)
    st = Stats(outputs=[out], layouts=[layout], formats=[fmt], epochs=1)
    unk_tok = (m["tokenizer"].get("unk") or {}).get("id")
    max_code = 0
    for sh in m["shards"]:
        p = output_path(outp, sh["path"], "denoise.json: shard path")
        if not p.is_file():
            raise OutputError(
                f"{p}: shard listed in the manifest is missing (run `denoise verify {out}`)"
            )
        ss = ShardStats(out, prefix + str(sh["path"]), bytes=p.stat().st_size)
        _, batches = open_shard(p, fmt, None if spec.packed else cols)
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
            mm = m_tab[den]
            span = isspan[den]
            s = cnt if enc else cnt // 2
            noise = np.where(span, tl - 1 - s, tl - 1)
            if enc:
                raw = np.where(span, il - mm - 1 - s + noise, il - mm - 1 + tl - 1)
            else:
                raw = il - mm - 1 - 2 * np.where(span, s, 0)
            sums[0] += np.bincount(den, minlength=C)
            for k, v in ((1, raw), (2, noise), (3, np.where(span, s, 0)), (4, il), (5, tl)):
                sums[k] += np.bincount(den, weights=v, minlength=C).round().astype(np.int64)
            ih += np.bincount(den * (wi + 1) + np.clip(il, 0, wi), minlength=C * (wi + 1))
            th += np.bincount(den * (wt + 1) + np.clip(tl, 0, wt), minlength=C * (wt + 1))
            if unk_tok is not None:
                st.unk_tokens += int(np.count_nonzero(a["input_ids"] == unk_tok))
                st.unk_base += int((raw - noise).sum() if enc else raw.sum())
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
    its examples (``verify.unpacked_view``), which the caller counts as an unpacked output."""
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


def unknown_token_sample(out: str, max_rows: int = 50_000) -> tuple[int, int, int] | None:
    """(unknown tokens, text tokens, rows read) in ``input_ids`` of an output's first
    ``max_rows`` rows: the estimate the ``prepare`` summary prints (``stats`` counts every row).
    None when the tokenizer has no unknown token."""
    _, path, m = epoch_outputs(Path(out))[0]
    unk = (m["tokenizer"].get("unk") or {}).get("id")
    if unk is None:
        return None
    spec = OutputSpec.from_manifest(m)
    n_unk = n_text = rows = 0
    for sh in m["shards"]:
        _, batches = open_shard(path / sh["path"], str(m["format"]), ["input_ids"])
        for rb in batches:
            ids = batch_arrays(rb)["input_ids"]
            is_unk = ids == int(unk)
            n_unk += int(np.count_nonzero(is_unk))
            n_text += int(np.count_nonzero((np.take(spec.lut, ids, mode="clip") == 0) | is_unk))
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


# --------------------------------------------------------------------------- rendering


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _lens(q: dict[str, float]) -> str:
    return f"{q['min']:g} / {q['median']:g} / {q['p99']:g} / {q['max']:g}"


def render(st: Stats) -> str:
    d = st.to_dict()
    lay = ", ".join(sorted(set(st.layouts)))
    enc_only = set(st.layouts) == {"encoder-decoder"}
    pk = st.packed_efficiency
    ex_col = ["examples"] if pk else []
    head = (
        f"{', '.join(st.outputs)}: {st.rows:,} rows in {len(st.shards)} shard(s) "
        if not pk
        else f"{', '.join(st.outputs)}: {st.rows:,} examples"
        + (f" ({st.packed_examples:,} packed)" if st.packed_examples != st.rows else "")
        + f" in {st.packed_rows:,} packed rows, {len(st.shards)} shard(s) "
    )
    lines = [
        head + f"({', '.join(sorted(set(st.formats)))}, {lay})",
        "",
        table(
            ["shard", "rows", *ex_col, "raw tokens", "input tokens", "target tokens", "MiB"],
            [
                [
                    f"{s.output}/{s.path}" if len(st.outputs) > 1 else s.path,
                    s.rows,
                    *([s.examples or s.rows] if pk else []),
                    s.raw_tokens,
                    s.input_tokens,
                    s.target_tokens,
                    s.bytes / 2**20,
                ]
                for s in st.shards
            ]
            + [
                [
                    "total",
                    sum(s.rows for s in st.shards),
                    *([st.rows] if pk else []),
                    st.raw_tokens,
                    st.input_real,
                    st.target_real,
                    sum(s.bytes for s in st.shards) / 2**20,
                ]
            ],
        ),
        "",
    ]
    rows = []
    for c in d["components"]:
        span = c["configured_mean_span"] is not None
        rows.append(
            [
                c["name"],
                _pct(c["configured_share"]),
                _pct(c["share"]),
                c["rows"],
                f"{c['configured_rate']:.3f}",
                f"{c['corruption_rate']:.3f}",
                f"{c['configured_mean_span']:g}" if span else "-",
                f"{c['mean_span']:.2f}" if span and c["mean_span"] is not None else "-",
                _lens(c["input_length"]),
                _lens(c["target_length"]),
            ]
        )
    lines += [
        table(
            [
                "component",
                "share cfg",
                "share",
                "rows",
                "rate cfg",
                "rate",
                "span cfg",
                "span",
                "input len min/med/p99/max",
                "target len min/med/p99/max",
            ],
            rows,
            "lrrrrrrrrr",
        ),
        "",
    ]
    lines += [f"note: {n}" for n in explain_components(d["components"])]
    eff = st.efficiency
    per = "unpacked, i.e. one example per row at the example budget: " if pk else ""
    if pk:
        lines.append(
            f"packed rows: {pk['rows']:,} rows, {pk['examples_per_row']:.2f} examples per row; "
            "token efficiency of the packed rows (real tokens / slots): "
            + (f"inputs {_pct(pk['inputs'])}, targets {_pct(pk['targets'])}, " if enc_only else "")
            + f"overall {_pct(pk['overall'])}"
            + (f" (ratio bound {_pct(pk['bound_overall'])})" if pk["bound_overall"] else "")
        )
        lines.append(
            f"packed rows mix {pk['components_per_row']:.2f} distinct components per row "
            f"(rows of independent examples from the configured mixture: "
            f"{pk['independent_components_per_row']:.2f})"
        )
    expect = (
        f" (configured mixture expects {_pct(eff['expected_overall'])})"
        if eff["expected_overall"] or not pk
        else ""
    )
    if enc_only:
        lines.append(
            f"padding efficiency ({per}real tokens / token slots): inputs {_pct(eff['inputs'])}, "
            f"targets {_pct(eff['targets'])}, overall {_pct(eff['overall'])}{expect}"
        )
    else:
        lines.append(
            f"padding efficiency ({per}real tokens / token slots): sequence "
            f"{_pct(eff['overall'])}{expect}; loss tokens {_pct(eff['targets'])} "
            f"of the slots"
            + (
                "; inputs (enc-dec outputs) " + _pct(eff["inputs"])
                if not set(st.layouts) <= {"decoder-only"}
                else ""
            )
        )
    used = (
        f"sentinels 0..{st.max_sentinel} used (<= {st.sentinels_needed} needed by the mixture)"
        if st.max_sentinel >= 0
        else "no sentinels used"
    )
    lines.append(
        f"{used}; {len(st.added_tokens)} token(s) added to the vocabulary (now {st.vocab_size:,})"
    )
    if st.unk_rate is not None:
        lines.append(
            f"unknown tokens: {st.unk_tokens:,} of {st.unk_base:,} text tokens in the inputs "
            f"({_pct(st.unk_rate)})"
            + (
                f"; warning: above {_pct(UNK_WARN)}, the tokenizer does not cover this text "
                "(a larger vocabulary or byte fallback avoids it)"
                if st.unk_rate > UNK_WARN
                else ""
            )
        )
    acc = st.accounting
    skipped = ", ".join(f"{k} {v:,}" for k, v in sorted(st.skipped.items())) or "none"
    lines.append(
        f"input: {acc['files']} file(s), {acc['records']:,} records read, {acc['docs']:,} documents; "
        f"skipped: {skipped}"
    )
    tail_pct = f" ({_pct(acc['tail_tokens'] / acc['tokens'])})" if acc["tokens"] else ""
    lines.append(
        f"tokens: {acc['tokens']:,} read, {acc['tokens_used']:,} used, {acc['tail_tokens']:,} "
        f"in file tails not used{tail_pct}"
        + (
            f" (used and tails summed over {st.epochs} datasets/epochs)"
            if st.epochs > len(st.outputs)
            else ""
        )
        + (
            f"; {acc['files_with_errors']} file(s) with read errors"
            if acc["files_with_errors"]
            else ""
        )
        + (
            f"; {acc['reserved_replaced']:,} special ids in text replaced by unk"
            if acc["reserved_replaced"]
            else ""
        )
    )
    return "\n".join(lines)


def explain_components(comps: list[dict[str, Any]]) -> list[str]:
    """Notes on figures that look wrong but are by design: a realised mean span above the
    configured one (T5's rule makes ``max(round(n / mu), 1)`` spans, so a chunk whose noise is
    below 1.5 mu gets one span of all of it), and a realised rate off the configured one (the
    noise per row is rounded to whole tokens)."""
    notes = []
    for c in comps:
        mu, span = c["configured_mean_span"], c["mean_span"]
        if mu is not None and span is not None and c["rows"] and span > 1.2 * mu:
            per_row = c["spans"] / c["rows"]
            noise = c["noise_tokens"] / c["rows"]
            notes.append(
                f"{c['name']}: span {span:.2f} > configured {mu:g} by design: {per_row:.2f} "
                f"span(s) per row hold its {noise:.1f} noise tokens (spans = max(round(noise / "
                f"{mu:g}), 1), as in T5)"
            )
        rate, cfg = c["corruption_rate"], c["configured_rate"]
        if c["rows"] and c["spans"] and abs(rate - cfg) > max(0.02, 0.2 * cfg):
            notes.append(
                f"{c['name']}: rate {rate:.3f} vs configured {cfg:.3f}: the noise per row is "
                f"rounded to whole tokens on {c['raw_tokens'] / c['rows']:.1f}-token chunks "
                "(longer -I/-T bring it closer)"
            )
    return notes


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, an optional extra: pip install 'denoise-cli[plot]'"
        ) from None
    return plt


def _edges(hs: list[np.ndarray]) -> np.ndarray:
    """Shared bins for a panel's histograms: their joint range, at most 60 bins, whole tokens
    when the range is short (a constant length is then one narrow bar, not a wide block)."""
    nzs = [np.flatnonzero(h) for h in hs if h.any()]
    if not nzs:
        return np.arange(0, 2)
    lo, hi = min(int(n[0]) for n in nzs), max(int(n[-1]) for n in nzs) + 1
    span = max(hi - lo, 1)
    pad = max(span // 20, 2)
    lo, hi = max(lo - pad, 0), hi + pad
    return np.linspace(lo, hi, min(60, hi - lo) + 1)


def _hist_line(ax: Any, h: np.ndarray, edges: np.ndarray, label: str, color: str) -> None:
    """A length histogram as filled steps over ``edges``."""
    x = np.arange(len(h))
    counts, _ = np.histogram(x, bins=edges, weights=h)
    ax.stairs(counts, edges, label=label, color=color, fill=True, alpha=0.6)


def plot(st: Stats, path: str) -> None:
    """A PNG (needs matplotlib): one small panel per component with its input and target length
    histograms on its own axis (so a spread like S's shows), then the mixture shares (configured,
    rows, tokens), the real share of the slots per component (padding), and the realised rate
    and mean span against the configured ones. Packed outputs count examples."""
    plt = _pyplot()
    comps = list(st.components.values())
    unit = "examples" if st.packed_rows else "rows"
    ncol = 4
    nsmall = (len(comps) + ncol - 1) // ncol
    fig = plt.figure(figsize=(16, 2.6 * nsmall + 4.2))
    grid = fig.add_gridspec(nsmall + 1, ncol, height_ratios=[1] * nsmall + [1.5])
    blue, orange = "#1f77b4", "#ff7f0e"
    for k, c in enumerate(comps):
        ax = fig.add_subplot(grid[k // ncol, k % ncol])
        edges = _edges([c.input_hist, c.target_hist])
        _hist_line(ax, c.input_hist, edges, "input length", blue)
        _hist_line(ax, c.target_hist, edges, "target length", orange)
        ax.set_title(f"{c.name}: {c.rows:,} {unit}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("tokens", fontsize=7)
    handles = [
        plt.Line2D([], [], color=blue, label="input length"),
        plt.Line2D([], [], color=orange, label="target length"),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=2, frameon=False)
    x = np.arange(len(comps))
    names = [c.name for c in comps]
    exp_total = sum(c.expected_rows for c in comps) or 1.0
    tok_total = sum(c.input_tokens + c.target_tokens for c in comps) or 1
    ax = fig.add_subplot(grid[nsmall, 0:2])
    w = 0.27
    ax.bar(x - w, [c.expected_rows / exp_total for c in comps], w, label="configured")
    ax.bar(x, [c.rows / max(st.rows, 1) for c in comps], w, label=f"{unit}")
    ax.bar(
        x + w, [(c.input_tokens + c.target_tokens) / tok_total for c in comps], w, label="tokens"
    )
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set_title("mixture: share of rows and of tokens", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    wi = st.input_slots / st.rows if st.rows else 0
    wt = st.target_slots / st.rows if st.rows else 0
    ax = fig.add_subplot(grid[nsmall, 2])
    enc = wt > 0 and set(st.layouts) == {"encoder-decoder"}
    real_in = [c.input_tokens / (c.rows * wi) if c.rows and wi else 0 for c in comps]
    ax.bar(x - (0.2 if enc else 0), real_in, 0.4, label="inputs" if enc else "sequence")
    if enc:
        real_t = [c.target_tokens / (c.rows * wt) if c.rows else 0 for c in comps]
        ax.bar(x + 0.2, real_t, 0.4, label="targets")
    ax.set_ylim(0, 1.15)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_title("real tokens / slots (1 - padding)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    ax = fig.add_subplot(grid[nsmall, 3])
    rate = [c.noise_tokens / c.raw_tokens / c.rate if c.raw_tokens and c.rate else 0 for c in comps]
    span = [c.noise_tokens / c.spans / c.mean_span if c.spans and c.mean_span else 0 for c in comps]
    ax.bar(x - 0.2, rate, 0.4, label="rate")
    ax.bar(x + 0.2, span, 0.4, label="mean span")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_title("realised / configured", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    ax.set_ylim(0, max([1.6, *rate, *span]) * 1.1)
    eff = st.packed_efficiency if st.packed_rows else None
    head = (
        f"{st.packed_rows:,} packed rows, {st.rows:,} examples, token efficiency "
        f"{_pct(eff['overall'])}"
        if eff
        else f"{st.rows:,} rows, padding efficiency {_pct(st.efficiency['overall'])}"
    )
    fig.suptitle(f"{', '.join(st.outputs)}: {head}", fontsize=11, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    finally:
        plt.close(fig)


#: What must agree for ``denoise stats A B`` to sum A and B: the figures are per token of one
#: tokenizer, per slot of one shape, per component of one mixture.
COMPATIBLE_KEYS = ("tokenizer", "layout and lengths", "mixture", "--pack")


def _compat_key(m: dict[str, Any], what: str) -> Any:
    if what == "tokenizer":
        return m["tokenizer"]["sha256"]
    if what == "layout and lengths":
        return m["config"]["lengths"]
    if what == "mixture":
        return m["config"]["mixture"]
    return m["config"].get("pack_factor", 0)


def incompatibilities(outs: list[str]) -> list[str]:
    """Why the outputs cannot be summed into one figure (empty when they can): they differ in
    tokenizer, lengths, mixture or packing. Inputs, seeds, formats and epochs may differ."""
    ms = [read_manifest(o) for o in outs]
    out = []
    for what in COMPATIBLE_KEYS:
        try:
            first = _compat_key(ms[0], what)
            bad = [
                o for o, m in zip(outs[1:], ms[1:], strict=True) if _compat_key(m, what) != first
            ]
        except (KeyError, TypeError) as e:
            raise OutputError(f"a denoise.json is malformed ({type(e).__name__}: {e})") from None
        if bad:
            out.append(f"{what} ({outs[0]} vs {', '.join(bad)})")
    return out


def stats_report(
    outs: list[str],
    *,
    as_json: bool = False,
    plot_path: str | None = None,
    sum_mixed: bool = False,
) -> str:
    """``denoise stats``: collect, optionally plot, and render as text or JSON. Outputs made with
    another tokenizer, lengths, mixture or packing are refused unless ``sum_mixed``."""
    if plot_path:
        _pyplot()  # fail before reading anything when matplotlib is missing
    if len(outs) > 1 and not sum_mixed:
        diff = incompatibilities(outs)
        if diff:
            raise ConfigError(
                "these outputs differ in "
                + "; ".join(diff)
                + ": their figures would not add up. Run `denoise stats` on each, or pass "
                "--sum-mixed to add them anyway"
            )
    st = collect(outs)
    if plot_path:
        plot(st, plot_path)
    if as_json:
        import json

        return json.dumps(st.to_dict(), indent=2)
    text = render(st)
    if plot_path:
        text += f"\nplot written to {plot_path}"
    return text

"""``denoise stats``: the text and the plot of :class:`~denoise_cli.check.stats.Stats` (what
:func:`~denoise_cli.check.stats.collect` counted over one or more outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from ..output.manifest import read_manifest, split_path, splits
from ..output.remote import is_output_url, localize
from .report import table
from .stats import UNK_WARN, Stats, collect

# number formats, the same everywhere in the text: counts with thousands separators, shares
# and rates as percentages with one decimal, means with two decimals, sizes in MiB with two


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def _len(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _lens(q: dict[str, float]) -> str:
    return " / ".join(_len(q[k]) for k in ("min", "median", "p99", "max"))


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
                    _mib(s.bytes),
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
                    _mib(sum(s.bytes for s in st.shards)),
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
                _pct(c["configured_rate"]),
                _pct(c["corruption_rate"]),
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
                "examples" if pk else "rows",
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
        f"input: {acc['files']:,} file(s), {acc['records']:,} records read, {acc['docs']:,} documents; "
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
            f"; {acc['files_with_errors']:,} file(s) with read errors"
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
                f"{c['name']}: rate {_pct(rate)} vs configured {_pct(cfg)}: the noise per row is "
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
    and mean span against the configured ones; for ``--epochs K`` outputs a last row with each
    component's share and the efficiency per epoch. Packed outputs count examples."""
    plt = _pyplot()
    from matplotlib.ticker import PercentFormatter

    comps = list(st.components.values())
    unit = "examples" if st.packed_rows else "rows"
    ncol = 4
    nsmall = (len(comps) + ncol - 1) // ncol
    per_epoch = len(st.by_epoch) > 1
    ratios = [1.0] * nsmall + [1.5] + ([1.3] if per_epoch else [])
    fig = plt.figure(figsize=(16, 2.6 * nsmall + 4.2 + (3.4 if per_epoch else 0)))
    grid = fig.add_gridspec(len(ratios), ncol, height_ratios=ratios)
    blue, orange = "#1f77b4", "#ff7f0e"
    for k, c in enumerate(comps):
        ax = fig.add_subplot(grid[k // ncol, k % ncol])
        edges = _edges([c.input_hist, c.target_hist])
        _hist_line(ax, c.input_hist, edges, "input length", blue)
        _hist_line(ax, c.target_hist, edges, "target length", orange)
        ax.set_title(f"{c.name}: {c.rows:,} {unit}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel(f"tokens per {'example' if st.packed_rows else 'row'}", fontsize=7)
    handles = [
        plt.Line2D([], [], color=blue, label="input length"),
        plt.Line2D([], [], color=orange, label="target length"),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=2, frameon=False)
    pct = PercentFormatter(1.0)
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
    ax.yaxis.set_major_formatter(pct)
    ax.set_title(f"mixture: share of {unit} and of tokens", fontsize=10)
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
    ax.set_ylim(0, 1.18)
    ax.yaxis.set_major_formatter(pct)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_title(
        "real tokens / example slots (unpacked)"
        if st.packed_rows
        else "real tokens / slots (1 - padding)",
        fontsize=10,
    )
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
    if per_epoch:
        _plot_epochs(fig, grid, nsmall + 1, st, unit, pct)
    eff = st.packed_efficiency if st.packed_rows else None
    head = (
        f"{st.packed_rows:,} packed rows, {st.rows:,} examples, token efficiency of the packed "
        f"rows {_pct(eff['overall'])}"
        if eff
        else f"{st.rows:,} rows, padding efficiency {_pct(st.efficiency['overall'])}"
    )
    if per_epoch:
        head += f", {len(st.by_epoch)} epochs"
    fig.suptitle(f"{', '.join(st.outputs)}: {head}", fontsize=11, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    finally:
        plt.close(fig)


def _plot_epochs(fig: Any, grid: Any, r: int, st: Stats, unit: str, pct: Any) -> None:
    """The per-epoch row: each component's share of the epoch's examples (line per component,
    its configured share dashed) and the epoch's token efficiency."""
    from matplotlib.ticker import PercentFormatter

    eps = st.by_epoch
    several = len({o for o, _, _ in eps}) > 1
    labels = [f"{o}:{e}" if several else str(e) for o, e, _ in eps]
    x = np.arange(len(eps))
    ax = fig.add_subplot(grid[r, 0:3])
    exp_total = sum(c.expected_rows for c in st.components.values()) or 1.0
    for k, (name, c) in enumerate(st.components.items()):
        color = f"C{k % 10}"
        share = [
            e.components[name].rows / e.rows if name in e.components and e.rows else 0.0
            for _, _, e in eps
        ]
        ax.plot(x, share, marker="o", markersize=3, color=color, label=name)
        ax.axhline(c.expected_rows / exp_total, color=color, linewidth=0.8, linestyle="--")
    ax.set_xticks(x, labels, fontsize=7, rotation=30 if several else 0)
    ax.set_xlabel("epoch", fontsize=8)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_title(f"share of {unit} per epoch (dashed: configured)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax = fig.add_subplot(grid[r, 3])
    packed = bool(st.packed_rows)
    series: dict[str, list[float]] = {}
    for _, _, e in eps:
        eff = e.packed_efficiency if packed else e.efficiency
        keys = ("inputs", "targets", "overall") if set(e.layouts) == {"encoder-decoder"} else ()
        for key in keys or ("overall",):
            series.setdefault(key, []).append(float(eff[key]) if eff else 0.0)
    for key, v in series.items():
        ax.plot(x, v, marker="o", markersize=3, label=key)
    ax.set_ylim(0, 1.18)
    ax.yaxis.set_major_formatter(pct)
    ax.set_xticks(x, labels, fontsize=7, rotation=30 if several else 0)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_title(
        "real tokens / slots of the packed rows" if packed else "real tokens / slots",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="upper center", ncol=3, frameon=False)


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
    ms = [read_manifest(localize(o) if is_output_url(o) else Path(o)) for o in outs]
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
    split: str | None = None,
) -> str:
    """``denoise stats``: collect, optionally plot, and render as text or JSON. Outputs made with
    another tokenizer, lengths, mixture or packing are refused unless ``sum_mixed``. ``split``:
    that split of each (``prepare --split``) output; without it, an output's splits are summed
    and named."""

    def local(o: str) -> Path:  # an output behind a URL: its local copy (remote.localize)
        return localize(o) if is_output_url(o) else Path(o)

    if split is not None:
        outs = [str(split_path(local(o), split)) for o in outs]
    named = [(o, splits(read_manifest(local(o)))) for o in outs] if split is None else []
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

        d = st.to_dict()
        if any(names for _, names in named):
            d["splits"] = {o: names for o, names in named if names}
        return json.dumps(d, indent=2)
    text = render(st)
    for o, names in named:
        if names:
            text += (
                f"\n{o} holds the splits {', '.join(names)} (summed above); --split NAME for one"
            )
    if plot_path:
        text += f"\nplot written to {plot_path}"
    return text

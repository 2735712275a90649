"""``denoise stats``: the text and the plot of :class:`~denoise_cli.check.stats.Stats` (what
:func:`~denoise_cli.check.stats.collect` counted over one or more outputs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, OutputError
from .report import table
from .stats import Stats, collect


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


def plot(st: Stats, path: str) -> None:
    """Length histograms per component and the mixture shares, as a PNG (needs matplotlib)."""
    plt = _pyplot()
    comps = list(st.components.values())
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, attr, title in (
        (axes[0], "input_hist", "input length"),
        (axes[1], "target_hist", "target length"),
    ):
        hs = [getattr(c, attr) for c in comps]
        top = max((int(np.flatnonzero(h)[-1]) for h in hs if h.any()), default=1) + 1
        edges = np.linspace(0, top, min(top, 64) + 1)
        ax.hist(
            [np.arange(len(h)) for h in hs],
            bins=edges,
            weights=hs,
            stacked=True,
            label=[c.name for c in comps],
        )
        ax.set_title(f"{title} per component (stacked)")
        ax.set_xlabel("tokens")
        ax.set_ylabel("rows")
    axes[0].legend(fontsize=8)
    exp_total = sum(c.expected_rows for c in comps) or 1.0
    x = np.arange(len(comps))
    axes[2].bar(x - 0.2, [c.expected_rows / exp_total for c in comps], 0.4, label="configured")
    axes[2].bar(x + 0.2, [c.rows / max(st.rows, 1) for c in comps], 0.4, label="realised")
    axes[2].set_xticks(x, [c.name for c in comps], rotation=30, ha="right", fontsize=8)
    axes[2].set_title("mixture: share of rows")
    axes[2].legend(fontsize=8)
    fig.suptitle(
        f"{', '.join(st.outputs)}: {st.rows:,} rows, padding efficiency {_pct(st.efficiency['overall'])}"
    )
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from None
    finally:
        plt.close(fig)


def stats_report(outs: list[str], *, as_json: bool = False, plot_path: str | None = None) -> str:
    """``denoise stats``: collect, optionally plot, and render as text or JSON."""
    if plot_path:
        _pyplot()  # fail before reading anything when matplotlib is missing
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

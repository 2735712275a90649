"""Plain-text rendering of plans and run summaries (no I/O besides returning strings and
:func:`run_figures` sizing the output)."""

from __future__ import annotations

from typing import Any


def table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A simple fixed-width table; ``align`` is a string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    lines = []
    for j, r in enumerate(cells):
        parts = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(r, widths, align, strict=False)
        ]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def plan_text(t: dict[str, Any]) -> str:
    lengths = t["lengths"]
    lines = [f"mixture {t['mixture']['name']}: {t['mixture']['source']}", ""]
    enc = lengths["layout"] == "encoder-decoder"
    shape = (
        f"encoder-decoder, inputs {lengths['inputs_length']}, targets {lengths['targets_length']}"
        if enc
        else f"decoder-only, sequence {lengths['seq_length']}"
    )
    lines.append(f"layout: {shape}")
    rows = []
    for c in t["components"]:
        rows.append(
            [
                c["index"],
                c["denoiser"],
                f"{c['probability']:.3f}",
                c["mode_token"] or "",
                c["raw_length"],
                c["noise_tokens"] or "",
                c["spans"] or "",
                f"{c['prefix_min']}-{c['prefix_max']}" if c["prefix_max"] else "",
                c["input_length"],
                c["target_length"],
                f"{c['mean_input_tokens']:.1f}",
                f"{c['mean_target_tokens']:.1f}",
            ]
        )
    hdr = [
        "#",
        "denoiser",
        "p",
        "mode",
        "raw",
        "noise",
        "spans",
        "prefix",
        "max in" if enc else "max seq",
        "max tgt",
        "mean in" if enc else "mean seq",
        "mean tgt",
    ]
    lines += ["", table(hdr, rows, "llrlrrrrrrrr"), ""]
    eff = t["expected_efficiency"]
    pk = t.get("packing")
    if pk:
        ex = pk["example_lengths"]
        budget = (
            f"inputs {ex['inputs_length']}, targets {ex['targets_length']}"
            if enc
            else f"sequence {ex['seq_length']}"
        )
        lines.insert(
            lines.index(f"layout: {shape}") + 1,
            f"packed (--pack {pk['factor']}): examples planned for {budget} (the table below), "
            f"up to {pk['max_segments']} per row",
        )
    lines.append(
        ("packed rows can be at most (ratio bound): " if pk else "expected real tokens / slots: ")
        + ", ".join(
            f"{k.removeprefix('packed_bound_')} {v:.1%}"
            for k, v in eff.items()
            if k != "packed_bound_ratio"
        )
    )
    if pk and "targets_per_input" in pk:
        w = pk["targets_length_98"]
        lines.append(
            f"targets per input token over the mixture: {pk['targets_per_input']:.3f}; "
            + (
                f"the ratio bound allows >= 98% on both sides for targets length T in "
                f"[{w[0]}, {w[1]}] at inputs {lengths['inputs_length']} (whole examples of few "
                "sizes reach less: docs/packing.md has the LP bound and measured figures)"
                if w
                else f"no 98% window computed: the example targets budget "
                f"({pk['example_lengths']['targets_length']}) is above it, so the plans change "
                f"with T; rerun with -T near {pk['targets_per_input'] * lengths['inputs_length']:.0f}"
            )
        )
    tok = t["tokenizer"]
    lines.append(
        f"sentinels needed: {t['sentinels_needed']} "
        f"(ids {tok['sentinel_ids'][:3]}{'...' if len(tok['sentinel_ids']) > 3 else ''})"
    )
    lines.append(
        f"tokenizer: {tok['source']}; vocabulary {tok['vocab_size']:,} "
        f"(eos {tok['eos']['token']}={tok['eos']['id']}, pad {tok['pad']['token']}={tok['pad']['id']})"
    )
    if tok["added_tokens"]:
        a = tok["added_tokens"]
        lines.append(
            f"added to the vocabulary: {len(a)} token(s): {', '.join(a[:6])}{' ...' if len(a) > 6 else ''}"
        )
    dk = t.get("disk")
    if dk:
        b = dk["bytes_per_raw_token"]
        k = dk["epochs"]
        mine = b["compact" if dk["compact"] else "default"]
        lines.append(
            f"disk (arrow shards, estimate): {mine:.2f} bytes per input token per epoch"
            + (f", x{k} epochs = {mine * k:.2f} (each epoch stores its own rows)" if k > 1 else "")
            + (
                f"; --compact: {b['compact']:.2f}"
                if not dk["compact"]
                else f" (--compact; default {b['default']:.2f})"
            )
        )
    notes = [*t.get("warnings", []), *tokenizer_notes(tok)]
    if notes:
        lines += ["", *(f"note: {n}" for n in tokenizer_notes(tok))]
        lines += [f"warning: {w}" for w in t.get("warnings", [])]
    return "\n".join(lines)


def output_bytes(out: str) -> int:
    """Bytes on disk of an output's files (data, manifests, tokenizer; not ``.denoise/``)."""
    import os

    total = 0
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if d != ".denoise"]
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def shard_bytes(m: dict[str, Any]) -> int:
    """The bytes of the shards a manifest lists (none for the top level of several epochs)."""
    return sum(int(sh["bytes"]) for sh in m.get("shards", []))


def run_figures(m: dict[str, Any], out: str, seconds: float) -> dict[str, Any]:
    """What ``prepare`` reports about the run itself: elapsed time, output size, throughput, where
    the output is (``prepare --json`` prints these under ``run``)."""
    import os

    from ..output.remote import is_output_url

    t = m["totals"]
    rows = t.get("rows", sum(t.get("rows_per_epoch", [])))
    s = max(seconds, 1e-9)
    url = is_output_url(out)
    return {
        "output": out if url else os.path.abspath(out),
        "elapsed_s": round(seconds, 3),
        # an output in a store: its shards' bytes as the manifests list them
        "output_bytes": shard_bytes(m) if url else output_bytes(out),
        "tokens_per_s": round(t["tokens"] / s, 1),
        "docs_per_s": round(t["docs"] / s, 1),
        "rows_per_s": round(rows / s, 1),
    }


def prepare_summary(m: dict[str, Any], out: str, run: dict[str, Any] | None = None) -> str:
    t = m["totals"]
    if "epoch_dirs" in m:
        rows = " / ".join(f"{r:,}" for r in t["rows_per_epoch"])
        lines = [
            f"wrote {len(m['epoch_dirs'])} epochs ({', '.join(m['epoch_dirs'])}) to {out}: {rows} "
            f"rows ({m['format']}, {m['layout']})",
            f"read {t['files']} file(s): {t['records']:,} records, {t['docs']:,} documents, "
            f"{t['tokens']:,} tokens (tokenized once)",
        ]
    else:
        lines = [
            f"wrote {t['rows']:,} rows in {len(m['shards'])} shard(s) to {out} ({m['format']}, {m['layout']})",
            f"read {t['files']} file(s): {t['records']:,} records, {t['docs']:,} documents, "
            f"{t['tokens']:,} tokens ({t['tokens_used']:,} used, {t['tail_tokens']:,} in file tails)",
        ]
    if run is not None and "epoch_dirs" in m:
        k = len(m["epoch_dirs"])
        lines.append(
            f"disk: {run['output_bytes'] / 2**20:,.1f} MiB for {k} epochs, "
            f"{run['output_bytes'] / 2**20 / k:,.1f} MiB per epoch (each epoch stores its own rows; "
            f"{run['output_bytes'] / max(t['tokens'], 1):.2f} bytes per input token)"
        )
    if "part" in m:
        lines.append(
            f"this is part {m['part']['index']} of {m['part']['count']}: join the parts "
            "with `denoise merge PART... OUT`"
        )
    if t["skipped"]:
        lines.append(
            "skipped records: " + ", ".join(f"{k} {v:,}" for k, v in sorted(t["skipped"].items()))
        )
    else:
        lines.append("skipped records: none")
    for reason, ig in m.get("inputs_ignored", {}).items():
        lines.append(
            f"not read ({reason}): {ig['count']:,} entr{'y' if ig['count'] == 1 else 'ies'} "
            f"with an input extension, e.g. {', '.join(ig['names'])}"
        )
    errs = [f for f in m["files"] if f["stats"].get("error")]
    for f in errs:
        lines.append(f"  file error: {f['stats']['error']}")
    if t.get("reserved_replaced"):
        lines.append(
            f"special-token ids found in text and replaced by unk: {t['reserved_replaced']:,}"
        )
    tok = m["tokenizer"]
    lines.append(
        f"vocabulary: {tok['vocab_size']:,} ({len(tok['added_tokens'])} added); "
        "sentinels used up to "
        + str(tok.get("sentinel_template", "<extra_id_{}>")).replace(
            "{}", str(max(m["sentinels_needed"] - 1, 0))
        )
    )
    be = m.get("tokenizer_backend")
    if be:
        eng = be.get("engine", "HF tokenizers") if be["used"] == "fast" else "HF tokenizers"
        if be["used"] == "fast" and be.get("kind"):  # e.g. sentencepiece-bpe (fastsp)
            eng = f"{be['kind']} on {eng}"
        lines.append(f"tokenizer backend: {be['used']} ({eng}; {be['reason']})")
    lines += [f"note: {n}" for n in tokenizer_notes(tok)]
    if run is not None:
        from ..engines.progress import duration, human

        lines.append(
            f"done in {duration(run['elapsed_s'])}: {human(run['tokens_per_s'])} tokens/s, "
            f"{run['rows_per_s']:,.0f} rows/s; {run['output_bytes'] / 2**20:,.1f} MiB in "
            f"{run['output']}"
        )
        if "unknown_token_rate" in run:
            from .stats import UNK_WARN

            r, n = run["unknown_token_rate"], int(run["unknown_token_rows_sampled"])
            t = m["totals"]
            rows0 = int(t["rows_per_epoch"][0]) if "rows_per_epoch" in t else int(t["rows"])
            where = " of epoch 0" if "rows_per_epoch" in t else ""
            scope = (
                f"all {n:,} rows{where}"
                if n >= rows0
                else f"first {n:,} rows{where}; `denoise stats` counts all"
            )
            lines.append(
                f"unknown tokens: {r:.1%} of the text tokens in the inputs ({scope})"
                + (
                    f"; warning: above {UNK_WARN:.1%}, the tokenizer does not cover this text"
                    if r > UNK_WARN
                    else ""
                )
            )
    lines += ["", "load it:", load_snippet(out, m["format"])]
    return "\n".join(lines)


def load_snippet(out: str, fmt: str) -> str:
    if fmt == "parquet":
        return (
            "    import datasets   # Hugging Face (load_from_disk is for --format arrow)\n"
            f"    data = datasets.load_dataset('parquet', data_dir={out!r} + '/data', "
            "split='train')\n"
            "    # or: pyarrow.dataset.dataset(" + repr(out) + " + '/data', format='parquet')"
        )
    return (
        "    import denoise_cli\n"
        f"    data = denoise_cli.open_dataset({out!r})   # zero-copy, memory-mapped\n"
        "    batch = data[0:64]                              # dict of numpy arrays\n"
        "    # or: datasets.load_from_disk(" + repr(out) + ")"
    )


# --------------------------------------------------------------------------- warnings


#: A span component is degenerate when its realised rate is off by more than this (absolute, or
#: half the configured rate) or its realised mean span is below half the configured one.
RATE_TOLERANCE = 0.05
#: Inputs (encoder-decoder) that are more than this share padding on average are worth a warning.
PADDING_WARN = 0.5


def _health(c: Any) -> tuple[float, float]:
    """(realised rate, realised mean span) of a span component's plan."""
    return c.noise_tokens / c.raw_length, c.noise_tokens / max(c.spans, 1)


def _degenerate(c: Any) -> bool:
    d = c.denoiser
    if not d.is_span:
        return False
    rate, span = _health(c)
    off = abs(rate - d.rate) > max(RATE_TOLERANCE, d.rate / 2)
    return bool(off or span < d.mean_span / 2)


def _smallest(ok: Any, lo: int, cap: int = 2**20) -> int | None:
    """Smallest v in (lo, cap] with ok(v), assuming ok is monotone from some point on."""
    hi = lo
    while not ok(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(hi * 2, cap)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def plan_warnings(cfg: Any) -> list[str]:
    """What makes a run wasteful, found from the plan alone (``plan`` and the start of
    ``prepare`` print these): span components whose realised rate or mean span is far from the
    configured one at these lengths (too short chunks), and encoder-decoder components whose
    inputs are mostly padding (``-T`` too small for ``-I``; S inputs are a prefix, partly empty
    by design, and not counted). Each names the figure and a length
    that fixes it."""
    from dataclasses import replace

    from ..config import FLAGS
    from ..rows.plan import plan

    lengths = cfg.example_lengths
    enc = lengths.layout == "encoder-decoder"
    key = "inputs_length" if enc else "seq_length"
    flag = FLAGS[key].split("/")[0]
    at = (
        f"-I {cfg.lengths.inputs_length} -T {cfg.lengths.targets_length}"
        if enc
        else f"-S {cfg.lengths.seq_length}"
    )
    if cfg.pack_factor:
        at += f" --pack {cfg.pack_factor}"
    plans = plan(cfg.mixture, lengths)

    def component_at(i: int, **kw: int) -> Any:
        try:
            return plan(cfg.mixture, replace(lengths, **kw))[i]
        except Exception:
            return None

    out: list[str] = []
    for c in plans:
        d = c.denoiser
        if _degenerate(c):
            rate, span = _health(c)

            def healthy(v: int, i: int = c.index) -> bool:
                p = component_at(i, **{key: v})
                return p is not None and not _degenerate(p)

            fix = None if cfg.pack_factor else _smallest(healthy, getattr(lengths, key))
            what = (
                f"masks {c.noise_tokens} of {c.raw_length} raw tokens ({rate:.0%}, configured "
                f"{d.rate:.0%})"
                if abs(rate - d.rate) > max(RATE_TOLERANCE, d.rate / 2)
                else f"makes {c.spans} span(s) of {span:.1f} tokens (configured mean span "
                f"{d.mean_span:g})"
            )
            hint = f"use {flag} {fix} or more" if fix else f"raise {flag}"
            if cfg.pack_factor:
                hint += " or lower --pack"
            out.append(f"{d.name} {what} at {at}: its chunks are too short; {hint}")
        if enc and not cfg.pack_factor and d.is_span:
            pad = 1 - c.mean_input_tokens / lengths.inputs_length
            if pad > PADDING_WARN:

                def filled(v: int, i: int = c.index) -> bool:
                    p = component_at(i, targets_length=v)
                    return p is not None and p.mean_input_tokens >= 0.9 * lengths.inputs_length

                t = _smallest(filled, lengths.targets_length)
                hint = f"-T {t} fills them to 90% (or lower -I)" if t else "lower -I or raise -T"
                out.append(
                    f"{d.name}: inputs are {pad:.0%} padding at {at} (the targets, "
                    f"{c.target_length} tokens, limit the chunk to {c.raw_length}); {hint}"
                )
    return out


def tokenizer_notes(tok: dict[str, Any]) -> list[str]:
    """What the tokenizer changes mean for training: an EOS that was added (the tokenizer had
    none), and added tokens that need ``model.resize_token_embeddings``."""
    notes = []
    added = tok.get("added_tokens") or []
    if tok["eos"]["token"] in added:
        notes.append(
            f"the tokenizer has no EOS token: added {tok['eos']['token']} (id {tok['eos']['id']}) "
            "and used it after every document and example (choose one with --eos-token)"
        )
    if added:
        n = tok["vocab_size"]
        notes.append(
            f"{len(added)} token(s) were added: the vocabulary is now {n:,} "
            f"(was {n - len(added):,}); resize the model's embeddings: "
            f"model.resize_token_embeddings({n})  # = len(tokenizer) of the saved tokenizer.json"
        )
    return notes

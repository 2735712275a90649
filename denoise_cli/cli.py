"""The ``denoise`` command line: builds a config, calls one library function per command, and is
the only place where exceptions become exit codes and messages."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

import typer

from . import __version__
from .config import Lengths, PrepareConfig, TokenConfig, load_mixture, parse_size
from .errors import ConfigError, DenoiseError, Interrupted
from .source.read import ACCEPTED_SUFFIXES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn raw text corpora into UL2-style pre-corrupted training data.",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: The input file kinds ``prepare`` reads: the reader's own list (help text, README and tests).
INPUT_EXTENSIONS = ACCEPTED_SUFFIXES


class Layout(str, Enum):
    encoder_decoder = "encoder-decoder"
    decoder_only = "decoder-only"


class Format(str, Enum):
    arrow = "arrow"
    parquet = "parquet"


class OnError(str, Enum):
    skip = "skip"
    fail = "fail"


class DocSeparator(str, Enum):
    eos = "eos"
    none = "none"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class TokenizerBackend(str, Enum):
    auto = "auto"
    hf = "hf"
    fast = "fast"


def no_color() -> bool:
    """https://no-color.org: a non-empty NO_COLOR turns colour off everywhere."""
    return bool(os.environ.get("NO_COLOR"))


def _fail(e: DenoiseError) -> None:
    kind = "" if isinstance(e, Interrupted) else "error: "
    msg = f"denoise: {kind}{e}"
    if no_color():
        typer.echo(msg, err=True)
    else:
        typer.secho(msg, fg=typer.colors.RED, err=True)
    raise typer.Exit(e.exit_code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"denoise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Turn raw text corpora into UL2-style pre-corrupted training data."""


MixtureOpt = Annotated[
    str,
    typer.Option(
        "--mixture",
        "-m",
        help="Preset (t5, ul2, ul2r, text-denoising), a .toml/.json mixture file, or a spec like 'R(3,0.15)@1;S(0.25)@1'.",
    ),
]
TokenizerOpt = Annotated[
    str | None,
    typer.Option(
        help="tokenizer.json, a directory holding one, or a hub name. Default: the embedded GPT-2 BPE."
    ),
]
LayoutOpt = Annotated[
    Layout,
    typer.Option(
        help="encoder-decoder (input_ids[I] + labels[T]) or decoder-only (one sequence of --seq-length)."
    ),
]
ModeTokensOpt = Annotated[
    bool | None,
    typer.Option(
        "--mode-tokens/--no-mode-tokens",
        help="Prepend [NLU]/[NLG]/[S2S] (default: as the mixture says).",
    ),
]
InputsLengthOpt = Annotated[
    int,
    typer.Option(
        "--inputs-length", "-I", help="Encoder length in tokens (encoder-decoder).", min=4
    ),
]
TargetsLengthOpt = Annotated[
    int,
    typer.Option(
        "--targets-length", "-T", help="Decoder length in tokens (encoder-decoder).", min=4
    ),
]
SeqLengthOpt = Annotated[
    int,
    typer.Option("--seq-length", "-S", help="Sequence length in tokens (decoder-only).", min=4),
]
AddTokensOpt = Annotated[
    bool,
    typer.Option(
        "--add-tokens/--no-add-tokens",
        help="Add missing sentinels, mode and pad tokens to the vocabulary (else: error).",
    ),
]
SentinelOpt = Annotated[
    str,
    typer.Option(help="Sentinel token names; {} is the index (T5: <extra_id_{}>)."),
]


@dataclass(frozen=True)
class ConfigOptions:
    """The options ``prepare`` and ``plan`` share, as given on the command line; one object,
    filled by name, turned into the validated :class:`PrepareConfig`."""

    mixture: str = "ul2"
    mode_tokens: bool | None = None
    layout: Layout | str = "encoder-decoder"
    inputs_length: int = 512
    targets_length: int = 512
    seq_length: int = 1024
    seed: int = 0
    text_key: str = "text"
    doc_separator: str = "eos"
    fmt: str = "arrow"
    shard_size: str = "256MiB"
    on_error: str = "skip"
    max_doc_chars: int = 0
    add_tokens: bool = True
    eos_token: str | None = None
    pad_token: str | None = None
    sentinel_template: str = "<extra_id_{}>"
    epochs: int = 1
    pack: int = 0
    group_size: int = 1024

    def config(self) -> PrepareConfig:
        layout = Layout(self.layout).value
        rows, nbytes = parse_size(self.shard_size)
        return PrepareConfig(
            mixture=load_mixture(self.mixture, mode_tokens=self.mode_tokens),
            lengths=Lengths(
                layout,  # type: ignore[arg-type]
                self.inputs_length,
                self.targets_length,
                self.seq_length,
            ),
            tokens=TokenConfig(
                self.sentinel_template, self.eos_token, self.pad_token, self.add_tokens
            ),
            seed=self.seed,
            text_key=self.text_key,
            doc_separator=self.doc_separator,  # type: ignore[arg-type]
            format=self.fmt,  # type: ignore[arg-type]
            shard_rows=rows,
            shard_bytes=nbytes,
            on_error=self.on_error,  # type: ignore[arg-type]
            max_doc_chars=self.max_doc_chars,
            epochs=self.epochs,
            pack_factor=self.pack,
            group_size=self.group_size,
        )


@app.command()
def prepare(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Input files, directories (recursive) or globs: "
            + ", ".join(INPUT_EXTENSIONS)
            + "; local or fsspec URLs (s3://, gs://, hf://, https://, file://).",
            show_default=False,
            metavar="INPUT",
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Argument(
            help="Output directory or fsspec URL (s3://bucket/out/, file://...; required).",
            show_default=False,
            metavar="OUT",
        ),
    ] = None,
    mixture: MixtureOpt = "ul2",
    mode_tokens: ModeTokensOpt = None,
    tokenizer: TokenizerOpt = None,
    tokenizer_backend: Annotated[
        TokenizerBackend,
        typer.Option(
            help="auto (tiktoken when it provably gives HF's ids, self-checked; else HF "
            "tokenizers), hf, or fast (error if tiktoken cannot reproduce the tokenizer)."
        ),
    ] = TokenizerBackend.auto,
    layout: LayoutOpt = Layout.encoder_decoder,
    inputs_length: InputsLengthOpt = 512,
    targets_length: TargetsLengthOpt = 512,
    seq_length: SeqLengthOpt = 1024,
    seed: Annotated[
        int, typer.Option(help="Random seed of the corruption (part of what the rows depend on).")
    ] = 0,
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Worker processes (0 = all cores).")
    ] = 0,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            help="arrow (uncompressed IPC, zero-copy, datasets.load_from_disk) or parquet (zstd; "
            "load_dataset('parquet', data_dir=OUT + '/data')).",
        ),
    ] = Format.arrow,
    shard_size: Annotated[
        str,
        typer.Option(
            help="Rows per shard (e.g. 50000) or bytes: 256MiB = 256*2^20, 256MB = 256*10^6; "
            "rounded down to whole --group-size groups (at least one). Never changes the examples."
        ),
    ] = "256MiB",
    group_size: Annotated[
        int,
        typer.Option(
            help="Rows per random draw group (part of what the examples depend on). A shard holds "
            "whole groups, so it is at least this many rows whatever --shard-size says."
        ),
    ] = 1024,
    text_key: Annotated[
        str, typer.Option(help="JSON key of the text (dotted path allowed).")
    ] = "text",
    doc_separator: Annotated[
        DocSeparator, typer.Option(help="eos (an EOS between documents) or none.")
    ] = DocSeparator.eos,
    on_error: Annotated[
        OnError,
        typer.Option(
            help="skip (count bad records and go on) or fail (stop at the first, naming file and position)."
        ),
    ] = OnError.skip,
    max_doc_chars: Annotated[
        int, typer.Option(help="Skip documents longer than this (0 = no limit).")
    ] = 0,
    add_tokens: AddTokensOpt = True,
    eos_token: Annotated[
        str | None, typer.Option(help="EOS token (default: detect </s>, <|endoftext|>, ...).")
    ] = None,
    pad_token: Annotated[
        str | None,
        typer.Option(help="Pad token (default: detect <pad>, [PAD], ...; else add <pad>)."),
    ] = None,
    sentinel_template: SentinelOpt = "<extra_id_{}>",
    epochs: Annotated[
        int,
        typer.Option(
            help="Write K independent corruptions (epoch-0/ ... epoch-K-1/) from one tokenization."
        ),
    ] = 1,
    pack: Annotated[
        int,
        typer.Option(
            help="Pack several examples per row (segment ids + positions; see docs/packing.md): "
            "examples are planned for 1/PACK of a row, e.g. 4. 0 = one example per row."
        ),
    ] = 0,
    engine: Annotated[
        Engine,
        typer.Option(
            help="local (process pool) or ray (Ray tasks; pip install 'denoise-cli[ray]')."
        ),
    ] = Engine.local,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Ray cluster address (default: RAY_ADDRESS or a local cluster)."),
    ] = None,
    num_shards: Annotated[
        int | None,
        typer.Option(
            help="Split the input files over N machines (default: SLURM_ARRAY_TASK_COUNT or 1)."
        ),
    ] = None,
    shard_index: Annotated[
        int | None,
        typer.Option(
            help="Which of the N parts this run makes (default: SLURM_ARRAY_TASK_ID or 0); join parts with `denoise merge`."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace an existing denoise output made with another config (only its own files; a directory that is not a denoise output is always refused)."
        ),
    ] = False,
    storage_options: Annotated[
        str | None,
        typer.Option(
            help="fsspec options for URL inputs and a URL OUT, a JSON object such as "
            '{"anon": true} or {"endpoint_url": "http://127.0.0.1:9000"}.'
        ),
    ] = None,
    staging_dir: Annotated[
        str | None,
        typer.Option(
            help="With a URL OUT: where each worker stages its parts before uploading them "
            "(default: the system temp directory).",
            show_default=False,
        ),
    ] = None,
    max_skip_fraction: Annotated[
        float,
        typer.Option(
            help="Exit 3 (after writing the output) when more than this fraction of the records "
            "is skipped; a run that writes no row always exits 3."
        ),
    ] = 0.5,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan (derived lengths, sentinels, padding) and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    progress_interval: Annotated[
        float | None,
        typer.Option(
            help="Print a plain progress line every this many seconds instead of a bar "
            "(default: a bar on a terminal, else a line every 30 s).",
            min=0.1,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the manifest's totals and the run (elapsed, output size, throughput, "
            "location) as JSON.",
        ),
    ] = False,
) -> None:
    """Read JSON lines or Parquet inputs, tokenize, apply the mixture of denoisers, write shards."""
    from .check import report
    from .prepare.job import resolve
    from .prepare.run import prepare as run_prepare

    try:
        if not inputs and out is None:
            raise ConfigError("missing INPUT and OUT: denoise prepare INPUT... OUT")
        if not inputs:  # one argument: click hands it to OUT
            if not dry_run:
                raise ConfigError(
                    f"missing OUT: {out!r} is taken as the input; give the output directory "
                    "after the inputs (denoise prepare INPUT... OUT)"
                )
            inputs, out = [str(out)], None
        cfg = ConfigOptions(
            mixture=mixture,
            mode_tokens=mode_tokens,
            layout=layout,
            inputs_length=inputs_length,
            targets_length=targets_length,
            seq_length=seq_length,
            seed=seed,
            text_key=text_key,
            doc_separator=doc_separator.value,
            fmt=fmt.value,
            shard_size=shard_size,
            on_error=on_error.value,
            max_doc_chars=max_doc_chars,
            add_tokens=add_tokens,
            eos_token=eos_token,
            pad_token=pad_token,
            sentinel_template=sentinel_template,
            epochs=epochs,
            pack=pack,
            group_size=group_size,
        ).config()
        n_shards, s_index = _array_task(num_shards, shard_index)
        from .source.fs import parse_storage_options

        opts = parse_storage_options(storage_options)
        if dry_run:
            prep = resolve(cfg, inputs, tokenizer, opts)
            _emit_plan(_plan_table(prep, report), as_json, report)
            return
        assert out is not None
        if engine is Engine.ray:
            check_ray()
        check_sentinels(cfg, tokenizer)
        if not quiet:
            for w in report.plan_warnings(cfg):
                _warn(w)
        import time

        t0 = time.monotonic()
        manifest = run_prepare(
            inputs,
            out,
            cfg,
            tokenizer=tokenizer,
            workers=workers,
            overwrite=overwrite,
            progress=not quiet,
            engine=engine.value,
            ray_address=ray_address,
            num_shards=n_shards,
            shard_index=s_index,
            storage_options=opts,
            max_skip_fraction=max_skip_fraction,
            notify=lambda line: typer.echo(f"denoise: {line}", err=True),
            tokenizer_backend=tokenizer_backend.value,
            progress_interval=progress_interval,
            staging_dir=staging_dir,
        )
        run = report.run_figures(manifest, out, time.monotonic() - t0)
        from .check.stats import unknown_token_sample

        unk = unknown_token_sample(out)
        if unk is not None and unk[1]:
            run["unknown_token_rate"] = round(unk[0] / unk[1], 6)
            run["unknown_token_rows_sampled"] = unk[2]
    except DenoiseError as e:
        _fail(e)
        return
    if as_json:
        typer.echo(json.dumps({**manifest["totals"], "run": run}, indent=2))
    elif not quiet:
        typer.echo(report.prepare_summary(manifest, out, run))


def check_sentinels(cfg: PrepareConfig, tokenizer: str | None) -> None:
    """Under ``--no-add-tokens``: a tokenizer with fewer sentinels than the plan needs fails here,
    suggesting the largest ``-I`` (``-S``) whose plan fits the sentinels it has."""
    if cfg.tokens.add_missing:
        return
    from .config import FLAGS
    from .rows.plan import largest_length_for_sentinels, plans_for, sentinels_needed
    from .source.tokenize import load_tokenizer_json

    need = sentinels_needed(plans_for(cfg))
    text, source = load_tokenizer_json(tokenizer)
    import tokenizers

    tok = tokenizers.Tokenizer.from_str(text)
    have = 0
    while have < need and tok.token_to_id(cfg.tokens.sentinel_template.format(have)) is not None:
        have += 1
    if have >= need:
        return
    lengths = cfg.example_lengths
    key = "inputs_length" if lengths.layout == "encoder-decoder" else "seq_length"
    best = largest_length_for_sentinels(cfg.mixture, lengths, have)
    flag = FLAGS[key]
    if cfg.pack_factor:
        hint = f"lower {flag} or --pack"
    elif best:
        hint = f"the largest {flag} that fits them is {best}"
    else:
        hint = f"no {flag} fits them"
    raise ConfigError(
        f"tokenizer {source} has {have} sentinel(s) ({cfg.tokens.sentinel_template.format(0)} "
        f"...) but this plan needs {need} at {flag} {getattr(lengths, key)}: {hint}; or drop "
        "--no-add-tokens to add the missing ones"
    )


def check_ray() -> None:
    """``--engine ray`` without Ray fails here, before any bar or output directory."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "--engine ray needs Ray, which is not installed: pip install 'denoise-cli[ray]' "
            "(or use --engine local)"
        )


def _array_task(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """--num-shards/--shard-index, else Slurm's array variables, else (1, 0)."""
    import os

    from .errors import ConfigError

    def env(name: str) -> int | None:
        v = os.environ.get(name)
        if v is None:
            return None
        try:
            return int(v)
        except ValueError:
            raise ConfigError(f"{name}={v!r} is not an integer") from None

    n = num_shards if num_shards is not None else env("SLURM_ARRAY_TASK_COUNT") or 1
    i = shard_index if shard_index is not None else env("SLURM_ARRAY_TASK_ID") or 0
    if num_shards is None and shard_index is None and "SLURM_ARRAY_TASK_ID" in os.environ:
        i -= env("SLURM_ARRAY_TASK_MIN") or 0  # arrays may start at 1
    return n, i


@app.command()
def merge(
    parts: Annotated[
        list[str],
        typer.Argument(
            help="Part outputs of `prepare --num-shards N --shard-index I`.",
            show_default=False,
            metavar="PART",
        ),
    ],
    out: Annotated[str, typer.Argument(help="New output directory.", show_default=False)],
    copy: Annotated[bool, typer.Option(help="Copy shards instead of hard-linking them.")] = False,
    allow_partial: Annotated[
        bool, typer.Option(help="Merge even if some parts are missing.")
    ] = False,
) -> None:
    """Join part outputs into one dataset (byte-identical to a single-machine run)."""
    from .prepare.merge import merge as do_merge

    try:
        m = do_merge(parts, out, copy=copy, allow_partial=allow_partial)
    except DenoiseError as e:
        _fail(e)
        return
    rows = m["totals"].get("rows", m["totals"].get("rows_per_epoch"))
    typer.echo(
        f"merged {len(parts)} part(s) into {out}: {m['totals']['files']} file(s), rows {rows}"
    )


def _warn(msg: str) -> None:
    typer.echo(f"denoise: warning: {msg}", err=True)


def _plan_table(prep: Any, report: Any) -> dict[str, Any]:
    from .prepare.job import plan_table

    table: dict[str, Any] = plan_table(prep)
    table["warnings"] = report.plan_warnings(prep.cfg)
    return table


def _emit_plan(table: dict[str, Any], as_json: bool, report: Any) -> None:
    if as_json:
        typer.echo(json.dumps(table, indent=2, default=str))
    else:
        typer.echo(report.plan_text(table))


@app.command()
def plan(
    mixture: MixtureOpt = "ul2",
    mode_tokens: ModeTokensOpt = None,
    tokenizer: TokenizerOpt = None,
    layout: LayoutOpt = Layout.encoder_decoder,
    inputs_length: InputsLengthOpt = 512,
    targets_length: TargetsLengthOpt = 512,
    seq_length: SeqLengthOpt = 1024,
    add_tokens: AddTokensOpt = True,
    sentinel_template: SentinelOpt = "<extra_id_{}>",
    pack: Annotated[
        int,
        typer.Option(
            help="Plan a packed run (prepare --pack): the example plans, examples per row and "
            "the efficiency bound; encoder-decoder also the targets lengths where both sides "
            "can be 98% full."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Print the mixture table with derived raw/input/target lengths, sentinels and padding."""
    from .check import report
    from .prepare.job import resolve

    try:
        cfg = ConfigOptions(
            mixture=mixture,
            mode_tokens=mode_tokens,
            layout=layout,
            inputs_length=inputs_length,
            targets_length=targets_length,
            seq_length=seq_length,
            add_tokens=add_tokens,
            sentinel_template=sentinel_template,
            pack=pack,
        ).config()
        check_sentinels(cfg, tokenizer)
        prep = resolve(cfg, None, tokenizer)
        _emit_plan(_plan_table(prep, report), as_json, report)
    except DenoiseError as e:
        _fail(e)


# --------------------------------------------------------------------------- stats / inspect / verify


@app.command()
def stats(
    outs: Annotated[
        list[str],
        typer.Argument(
            help="Output directories (several are summed when compatible).",
            show_default=False,
            metavar="OUT",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            help="Also draw length histograms and mixture shares to this PNG (needs matplotlib: pip install 'denoise-cli[plot]').",
        ),
    ] = None,
    sum_mixed: Annotated[
        bool,
        typer.Option(
            "--sum-mixed",
            help="Sum outputs made with different tokenizers, lengths, mixtures or packing "
            "(refused by default: the figures would not add up).",
        ),
    ] = False,
) -> None:
    """Rows, tokens, mixture shares, corruption rates, lengths, padding and input accounting
    (reads columns and the manifest; never decodes text)."""
    from .check import stats_render as stats_mod

    try:
        typer.echo(
            stats_mod.stats_report(outs, as_json=as_json, plot_path=plot, sum_mixed=sum_mixed)
        )
    except DenoiseError as e:
        _fail(e)


@app.command()
def inspect(
    out: Annotated[str, typer.Argument(help="Output directory.", show_default=False)],
    n: Annotated[
        int | None,
        typer.Option(
            "-n", help="Show the first N rows (default: one row per denoiser; 3 with --denoiser)."
        ),
    ] = None,
    row: Annotated[
        int | None,
        typer.Option("--row", help="Show this row (global index; negative counts from the end)."),
    ] = None,
    denoiser: Annotated[
        str | None,
        typer.Option(
            "--denoiser",
            "-d",
            help="Only rows of this denoiser: a name like 'X(8,0.5)', its index, or a family R/X/S.",
        ),
    ] = None,
    color: Annotated[
        bool | None,
        typer.Option(
            "--color/--no-color",
            help="Highlight sentinels, mode tokens and masked spans (default: only on a terminal).",
        ),
    ] = None,
    width: Annotated[
        int | None, typer.Option("--width", help="Line width (default: the terminal's).")
    ] = None,
    epoch: Annotated[
        int, typer.Option("--epoch", help="Which epoch of a `prepare --epochs K` output.")
    ] = 0,
) -> None:
    """Decode rows: inputs and targets side by side, and the original text rebuilt from them."""
    from .check import inspect as inspect_mod

    use_color = (sys.stdout.isatty() and not no_color()) if color is None else color
    try:
        text = inspect_mod.inspect_rows(
            out, n=n, row=row, denoiser=denoiser, color=use_color, width=width, epoch=epoch
        )
    except DenoiseError as e:
        _fail(e)
        return
    typer.echo(text, color=use_color)


@app.command()
def verify(
    out: Annotated[str, typer.Argument(help="Output directory.", show_default=False)],
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="The prepare inputs (repeat or pass a directory): re-tokenize them and regenerate every row bit for bit.",
        ),
    ] = None,
    max_problems: Annotated[
        int, typer.Option("--max-problems", help="Stop after this many problems.")
    ] = 20,
    checksums: Annotated[
        bool, typer.Option("--checksums/--no-checksums", help="Hash every shard (sha256).")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON when the output is good.")
    ] = False,
) -> None:
    """Check checksums, schema, every row's structure and the token accounting; exit non-zero
    naming the shard, row and problem."""
    from .check import verify as verify_mod

    try:
        rep = verify_mod.verify(out, sources=source, max_problems=max_problems, checksums=checksums)
    except DenoiseError as e:
        _fail(e)
        return
    typer.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.text())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("denoise: interrupted (rerun the same command to resume)", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main"]


def reference(width: int = 96) -> str:
    """The README's CLI reference, generated from the commands' parameters (a test keeps the
    README equal to this): one synopsis per command, options with their choices or defaults."""
    import typer.core
    import typer.main

    group: Any = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():
        words = [f"denoise {name}"]
        for p in cmd.params:
            if isinstance(p, typer.core.TyperArgument):
                words.append(f"{p.metavar or str(p.name).upper()}{'...' if p.nargs == -1 else ''}")
                continue
            if "--help" in p.opts:
                continue
            flag = "/".join(sorted(p.opts, key=len))
            d = p.default
            if p.secondary_opts:
                words.append(f"[{p.opts[0]}/{p.secondary_opts[0]}]")
            elif p.is_flag:
                words.append(f"[{flag}]")
            elif isinstance(d, Enum):
                words.append(f"[{flag} {'|'.join(str(m.value) for m in type(d))}]")
            else:
                shown = "" if d is None or isinstance(d, list) else str(d)
                words.append(f"[{flag} {shown or str(p.name).upper()}]")
        lines, cur = [], ""
        for w in words:
            if cur and len(cur) + 1 + len(w) > width:
                lines.append(cur)
                cur = "        " + w
            else:
                cur = f"{cur} {w}" if cur else w
        out.append("\n".join([*lines, cur]))
    return "\n".join(out)

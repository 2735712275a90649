"""The ``denoise`` command line: builds a config, calls one library function per command, and is
the only place where exceptions become exit codes and messages."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from .config import LAYOUTS, Lengths, PrepareConfig, TokenConfig, load_mixture, parse_size
from .errors import DenoiseError, Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn raw text corpora into UL2-style pre-corrupted training data.",
    pretty_exceptions_enable=False,
)


def _fail(e: DenoiseError) -> None:
    kind = "" if isinstance(e, Interrupted) else "error: "
    typer.secho(f"denoise: {kind}{e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(e.exit_code)


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
    str,
    typer.Option(
        help="encoder-decoder (input_ids[I] + labels[T]) or decoder-only (one sequence of --seq-length)."
    ),
]


@dataclass(frozen=True)
class ConfigOptions:
    """The options ``prepare`` and ``plan`` share, as given on the command line; one object,
    filled by name, turned into the validated :class:`PrepareConfig`."""

    mixture: str = "ul2"
    mode_tokens: bool | None = None
    layout: str = "encoder-decoder"
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
        if self.layout not in LAYOUTS:
            from .errors import ConfigError

            raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}")
        rows, nbytes = parse_size(self.shard_size)
        return PrepareConfig(
            mixture=load_mixture(self.mixture, mode_tokens=self.mode_tokens),
            lengths=Lengths(
                self.layout,
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
        list[str],
        typer.Argument(
            help="Input files, directories (recursive) or globs: .jsonl[.zst|.gz], .json.zst, "
            ".parquet; local or fsspec URLs (s3://, gs://, hf://, https://, file://).",
            show_default=False,
        ),
    ],
    out: Annotated[str, typer.Argument(help="Output directory.", show_default=False)],
    mixture: MixtureOpt = "ul2",
    mode_tokens: Annotated[
        bool | None,
        typer.Option(
            "--mode-tokens/--no-mode-tokens",
            help="Prepend [NLU]/[NLG]/[S2S] (default: as the mixture says).",
        ),
    ] = None,
    tokenizer: TokenizerOpt = None,
    tokenizer_backend: Annotated[
        str,
        typer.Option(
            help="auto (tiktoken when it provably gives HF's ids, self-checked; else HF "
            "tokenizers), hf, or fast (error if tiktoken cannot reproduce the tokenizer)."
        ),
    ] = "auto",
    layout: LayoutOpt = "encoder-decoder",
    inputs_length: Annotated[
        int, typer.Option("--inputs-length", "-I", help="Encoder length (encoder-decoder).")
    ] = 512,
    targets_length: Annotated[
        int, typer.Option("--targets-length", "-T", help="Decoder length (encoder-decoder).")
    ] = 512,
    seq_length: Annotated[
        int, typer.Option("--seq-length", "-S", help="Sequence length (decoder-only).")
    ] = 1024,
    seed: int = 0,
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Worker processes (0 = all cores).")
    ] = 0,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="arrow (uncompressed IPC, zero-copy, datasets.load_from_disk) or parquet (zstd).",
        ),
    ] = "arrow",
    shard_size: Annotated[
        str,
        typer.Option(
            help="Rows per shard (e.g. 50000) or bytes (e.g. 256MB), rounded down to whole "
            "--group-size groups (at least one). Never changes the examples."
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
        str, typer.Option(help="eos (an EOS between documents) or none.")
    ] = "eos",
    on_error: Annotated[
        str,
        typer.Option(
            help="skip (count bad records and go on) or fail (stop at the first, naming file and position)."
        ),
    ] = "skip",
    max_doc_chars: Annotated[
        int, typer.Option(help="Skip documents longer than this (0 = no limit).")
    ] = 0,
    add_tokens: Annotated[
        bool,
        typer.Option(
            "--add-tokens/--no-add-tokens",
            help="Add missing sentinels, mode and pad tokens to the vocabulary (else: error).",
        ),
    ] = True,
    eos_token: Annotated[
        str | None, typer.Option(help="EOS token (default: detect </s>, <|endoftext|>, ...).")
    ] = None,
    pad_token: Annotated[
        str | None,
        typer.Option(help="Pad token (default: detect <pad>, [PAD], ...; else add <pad>)."),
    ] = None,
    sentinel_template: Annotated[str, typer.Option(help="Sentinel token names.")] = "<extra_id_{}>",
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
        str,
        typer.Option(
            help="local (process pool) or ray (Ray tasks; pip install 'denoise-cli[ray]')."
        ),
    ] = "local",
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
            help='fsspec options for URL inputs, a JSON object such as {"anon": true} or '
            '{"endpoint_url": "http://127.0.0.1:9000"}.'
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the manifest's totals as JSON.")
    ] = False,
) -> None:
    """Read json(.zst) shards, tokenize, apply the mixture of denoisers, write shards."""
    from .check import report
    from .prepare.job import plan_table, resolve
    from .prepare.run import prepare as run_prepare

    try:
        cfg = ConfigOptions(
            mixture=mixture,
            mode_tokens=mode_tokens,
            layout=layout,
            inputs_length=inputs_length,
            targets_length=targets_length,
            seq_length=seq_length,
            seed=seed,
            text_key=text_key,
            doc_separator=doc_separator,
            fmt=fmt,
            shard_size=shard_size,
            on_error=on_error,
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
            _emit_plan(plan_table(prep), as_json, report)
            return
        manifest = run_prepare(
            inputs,
            out,
            cfg,
            tokenizer=tokenizer,
            workers=workers,
            overwrite=overwrite,
            progress=not quiet,
            engine=engine,
            ray_address=ray_address,
            num_shards=n_shards,
            shard_index=s_index,
            storage_options=opts,
            max_skip_fraction=max_skip_fraction,
            notify=lambda line: typer.echo(f"denoise: {line}", err=True),
            tokenizer_backend=tokenizer_backend,
        )
    except DenoiseError as e:
        _fail(e)
        return
    if as_json:
        typer.echo(json.dumps(manifest["totals"], indent=2))
    elif not quiet:
        typer.echo(report.prepare_summary(manifest, out))


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
            help="Part outputs of `prepare --num-shards N --shard-index I`.", show_default=False
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


def _emit_plan(table: dict[str, Any], as_json: bool, report: Any) -> None:
    if as_json:
        typer.echo(json.dumps(table, indent=2, default=str))
    else:
        typer.echo(report.plan_text(table))


@app.command()
def plan(
    mixture: MixtureOpt = "ul2",
    mode_tokens: Annotated[bool | None, typer.Option("--mode-tokens/--no-mode-tokens")] = None,
    tokenizer: TokenizerOpt = None,
    layout: LayoutOpt = "encoder-decoder",
    inputs_length: Annotated[int, typer.Option("--inputs-length", "-I")] = 512,
    targets_length: Annotated[int, typer.Option("--targets-length", "-T")] = 512,
    seq_length: Annotated[int, typer.Option("--seq-length", "-S")] = 1024,
    add_tokens: Annotated[bool, typer.Option("--add-tokens/--no-add-tokens")] = True,
    sentinel_template: str = "<extra_id_{}>",
    pack: Annotated[
        int,
        typer.Option(
            help="Plan a packed run (prepare --pack): the example plans, examples per row and "
            "the efficiency bound; encoder-decoder also the targets lengths where both sides "
            "can be 98% full."
        ),
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the mixture table with derived raw/input/target lengths, sentinels and padding."""
    from .check import report
    from .prepare.job import plan_table, resolve

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
        _emit_plan(plan_table(resolve(cfg, None, tokenizer)), as_json, report)
    except DenoiseError as e:
        _fail(e)


# --------------------------------------------------------------------------- stats / inspect / verify


@app.command()
def stats(
    outs: Annotated[
        list[str],
        typer.Argument(help="Output directories (several are summed).", show_default=False),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            help="Also draw length histograms and mixture shares to this PNG (needs matplotlib: pip install 'denoise-cli[plot]').",
        ),
    ] = None,
) -> None:
    """Rows, tokens, mixture shares, corruption rates, lengths, padding and input accounting
    (reads columns and the manifest; never decodes text)."""
    from .check import stats_render as stats_mod

    try:
        typer.echo(stats_mod.stats_report(outs, as_json=as_json, plot_path=plot))
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

    use_color = sys.stdout.isatty() if color is None else color
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

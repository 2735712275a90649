"""The ``denoise`` command line: builds a config, calls one library function per command, and is
the only place where exceptions become exit codes and messages."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer

from . import __version__
from .cli_options import (
    FORMAT_DEFAULT,
    FORMAT_HELP,
    INPUT_EXTENSIONS,
    AddTokensOpt,
    CompactOpt,
    ConfigOptions,
    DocSeparator,
    Engine,
    EpochsOpt,
    Format,
    GroupSizeOpt,
    HoldoutOpt,
    InputsLengthOpt,
    Layout,
    LayoutOpt,
    LimitDocsOpt,
    LimitTokensOpt,
    MixtureOpt,
    ModeTokensOpt,
    OnError,
    PackOpt,
    SentinelOpt,
    SeqLengthOpt,
    ShardSizeOpt,
    SplitOpt,
    TargetsLengthOpt,
    TokenizerBackend,
    TokenizerOpt,
    UnitSizeOpt,
    command_reference,
)
from .errors import ConfigError, DenoiseError, Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn raw text corpora into UL2-style pre-corrupted training data.",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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
            help=FORMAT_HELP,
        ),
    ] = FORMAT_DEFAULT,
    shard_size: ShardSizeOpt = "256MiB",
    group_size: GroupSizeOpt = 1024,
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
    epochs: EpochsOpt = 1,
    pack: PackOpt = 0,
    compact: CompactOpt = False,
    unit_size: UnitSizeOpt = "256MiB",
    limit_docs: LimitDocsOpt = 0,
    limit_tokens: LimitTokensOpt = 0,
    split: SplitOpt = None,
    holdout: HoldoutOpt = None,
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
    from .engines import check_ray
    from .prepare.job import check_sentinels, resolve
    from .prepare.run import array_task
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
            compact=compact,
            unit_size=unit_size,
            limit_docs=limit_docs,
            limit_tokens=limit_tokens,
            split=split,
            holdout=holdout,
        ).config()
        n_shards, s_index = array_task(num_shards, shard_index)
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


@app.command()
def shuffle(
    src: Annotated[
        str, typer.Argument(help="A `denoise prepare` output.", show_default=False, metavar="IN")
    ],
    out: Annotated[str, typer.Argument(help="New output directory.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed of the row order.")] = 0,
    shard_rows: Annotated[
        int | None,
        typer.Option(help="Rows per output shard (one record batch each). [default: 65536]"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per shard.")] = False,
) -> None:
    """Write IN's rows in one seeded global order, so that a shuffled training batch is a
    contiguous, zero-copy slice (load with `iter_batches(..., shuffle="blocks")`)."""
    from .prepare.shuffle import shuffle as do_shuffle

    try:
        note = None if quiet else (lambda line: typer.echo(f"shuffle: {line}", err=True))
        m = do_shuffle(src, out, seed=seed, shard_rows=shard_rows, notify=note)
    except DenoiseError as e:
        _fail(e)
        return
    rows = m["totals"].get("rows", m["totals"].get("rows_per_epoch"))
    typer.echo(f"shuffled {src} into {out}: rows {rows}, seed {seed}")


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
    from .prepare.job import check_sentinels, resolve

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
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Stats of this split of a `prepare --split` output (default: all splits summed, "
            "each named).",
        ),
    ] = None,
) -> None:
    """Rows, tokens, mixture shares, corruption rates, lengths, padding and input accounting
    (reads columns and the manifest; never decodes text)."""
    from .check import stats_render as stats_mod

    try:
        typer.echo(
            stats_mod.stats_report(
                outs, as_json=as_json, plot_path=plot, sum_mixed=sum_mixed, split=split
            )
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
    split: Annotated[
        str | None, typer.Option("--split", help="Which split of a `prepare --split` output.")
    ] = None,
) -> None:
    """Decode rows: inputs and targets side by side, and the original text rebuilt from them."""
    from .check import inspect as inspect_mod

    use_color = (sys.stdout.isatty() and not no_color()) if color is None else color
    try:
        text = inspect_mod.inspect_rows(
            out,
            n=n,
            row=row,
            denoiser=denoiser,
            color=use_color,
            width=width,
            epoch=epoch,
            split=split,
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
    split: Annotated[
        str | None,
        typer.Option("--split", help="Check only this split of a `prepare --split` output."),
    ] = None,
) -> None:
    """Check checksums, schema, every row's structure and the token accounting; exit non-zero
    naming the shard, row and problem."""
    from .check import verify as verify_mod

    try:
        rep = verify_mod.verify(
            out, sources=source, max_problems=max_problems, checksums=checksums, split=split
        )
    except DenoiseError as e:
        _fail(e)
        return
    typer.echo(json.dumps(rep.to_dict(), indent=2) if as_json else rep.text())


def main() -> None:
    """The ``denoise`` command: run the app, then end the process with :func:`exit_now`."""
    from .source.tokenize import keep_builds_until_exit

    keep_builds_until_exit()  # exit_now does not free them
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("denoise: interrupted (rerun the same command to resume)", err=True)
        exit_now(130)
    except SystemExit as e:
        exit_now(e.code)
    exit_now(0)


def exit_now(code: int | str | None) -> NoReturn:
    """End the command's process with ``code`` (``SystemExit``'s meaning), without tearing
    the interpreter down object by object: a 262k-vocabulary tokenizer alone takes ~0.4 CPU-s
    to free, while the kernel takes the pages back at once (benchmarks/README_prepare.md). The
    ``atexit`` handlers still run (Ray's shutdown, temporary directories, multiprocessing's
    finalizers) and the standard streams are flushed. The ordinary exit where it matters: with
    another thread still running (it waits for it) or under a profiler or tracer (``python -m
    cProfile``, coverage: they write their results as the interpreter ends). Only the
    ``denoise`` entry point calls this: in-process callers of ``app`` keep their interpreter."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    status = 0 if code is None else int(code)
    if threading.active_count() > 1 or sys.getprofile() or sys.gettrace():
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a closed pipe (``| head``), a full disk: lost output, as CPython says
            status = status or 120
        except ValueError:  # a stream closed already
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["INPUT_EXTENSIONS", "ConfigOptions", "app", "exit_now", "main", "reference"]


def reference(width: int = 96) -> str:
    """The README's CLI reference (:func:`denoise_cli.cli_options.command_reference`)."""
    return command_reference(app, width)

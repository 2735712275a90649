"""The ``denoise`` command line: builds a config, calls one library function per command, and is
the only place where exceptions become exit codes and messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .config import LAYOUTS, Lengths, PrepareConfig, TokenConfig, load_mixture, parse_size
from .errors import DenoiseError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn raw text corpora into UL2-style pre-corrupted training data.",
    pretty_exceptions_enable=False,
)


def _fail(e: DenoiseError) -> None:
    typer.secho(f"denoise: error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(e.exit_code)


MixtureOpt = Annotated[str, typer.Option("--mixture", "-m", help="Preset (t5, ul2, ul2r, text-denoising), a .toml/.json mixture file, or a spec like 'R(3,0.15)@1;S(0.25)@1'.")]
TokenizerOpt = Annotated[Optional[str], typer.Option(help="tokenizer.json, a directory holding one, or a hub name. Default: the embedded GPT-2 BPE.")]
LayoutOpt = Annotated[str, typer.Option(help="encoder-decoder (input_ids[I] + labels[T]) or decoder-only (one sequence of --seq-length).")]


def _config(
    mixture: str, mode_tokens: Optional[bool], layout: str, inputs_length: int, targets_length: int,
    seq_length: int, seed: int, text_key: str, doc_separator: str, fmt: str, shard_size: str,
    on_error: str, max_doc_chars: int, add_tokens: bool, eos_token: Optional[str],
    pad_token: Optional[str], sentinel_template: str,
) -> PrepareConfig:
    if layout not in LAYOUTS:
        from .errors import ConfigError

        raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}")
    rows, nbytes = parse_size(shard_size)
    return PrepareConfig(
        mixture=load_mixture(mixture, mode_tokens=mode_tokens),
        lengths=Lengths(layout, inputs_length, targets_length, seq_length),  # type: ignore[arg-type]
        tokens=TokenConfig(sentinel_template, eos_token, pad_token, add_tokens),
        seed=seed,
        text_key=text_key,
        doc_separator=doc_separator,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        shard_rows=rows,
        shard_bytes=nbytes,
        on_error=on_error,  # type: ignore[arg-type]
        max_doc_chars=max_doc_chars,
    )


@app.command()
def prepare(
    inputs: Annotated[list[str], typer.Argument(help="Input files, directories (recursive) or globs: .jsonl[.zst|.gz], .json.zst.", show_default=False)],
    out: Annotated[str, typer.Argument(help="Output directory.", show_default=False)],
    mixture: MixtureOpt = "ul2",
    mode_tokens: Annotated[Optional[bool], typer.Option("--mode-tokens/--no-mode-tokens", help="Prepend [NLU]/[NLG]/[S2S] (default: as the mixture says).")] = None,
    tokenizer: TokenizerOpt = None,
    layout: LayoutOpt = "encoder-decoder",
    inputs_length: Annotated[int, typer.Option("--inputs-length", "-I", help="Encoder length (encoder-decoder).")] = 512,
    targets_length: Annotated[int, typer.Option("--targets-length", "-T", help="Decoder length (encoder-decoder).")] = 512,
    seq_length: Annotated[int, typer.Option("--seq-length", "-S", help="Sequence length (decoder-only).")] = 1024,
    seed: int = 0,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes (0 = all cores).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="arrow (uncompressed IPC, zero-copy, datasets.load_from_disk) or parquet (zstd).")] = "arrow",
    shard_size: Annotated[str, typer.Option(help="Rows per shard (e.g. 50000) or bytes (e.g. 256MB).")] = "256MiB",
    text_key: Annotated[str, typer.Option(help="JSON key of the text (dotted path allowed).")] = "text",
    doc_separator: Annotated[str, typer.Option(help="eos (an EOS between documents) or none.")] = "eos",
    on_error: Annotated[str, typer.Option(help="skip (count bad records and go on) or fail (stop at the first, naming file and position).")] = "skip",
    max_doc_chars: Annotated[int, typer.Option(help="Skip documents longer than this (0 = no limit).")] = 0,
    add_tokens: Annotated[bool, typer.Option("--add-tokens/--no-add-tokens", help="Add missing sentinels, mode and pad tokens to the vocabulary (else: error).")] = True,
    eos_token: Annotated[Optional[str], typer.Option(help="EOS token (default: detect </s>, <|endoftext|>, ...).")] = None,
    pad_token: Annotated[Optional[str], typer.Option(help="Pad token (default: detect <pad>, [PAD], ...; else add <pad>).")] = None,
    sentinel_template: Annotated[str, typer.Option(help="Sentinel token names.")] = "<extra_id_{}>",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output made with another config.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (derived lengths, sentinels, padding) and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest's totals as JSON.")] = False,
) -> None:
    """Read json(.zst) shards, tokenize, apply the mixture of denoisers, write shards."""
    from . import pipeline, report

    try:
        cfg = _config(mixture, mode_tokens, layout, inputs_length, targets_length, seq_length, seed,
                      text_key, doc_separator, fmt, shard_size, on_error, max_doc_chars, add_tokens,
                      eos_token, pad_token, sentinel_template)
        if dry_run:
            prep = pipeline.resolve(cfg, inputs, tokenizer)
            _emit_plan(pipeline.plan_table(prep), as_json, report)
            return
        manifest = pipeline.prepare(inputs, out, cfg, tokenizer=tokenizer, workers=workers,
                                    overwrite=overwrite, progress=not quiet)
    except DenoiseError as e:
        _fail(e)
        return
    if as_json:
        typer.echo(json.dumps(manifest["totals"], indent=2))
    elif not quiet:
        typer.echo(report.prepare_summary(manifest, out))


def _emit_plan(table: dict[str, Any], as_json: bool, report: Any) -> None:
    if as_json:
        typer.echo(json.dumps(table, indent=2, default=str))
    else:
        typer.echo(report.plan_text(table))


@app.command()
def plan(
    mixture: MixtureOpt = "ul2",
    mode_tokens: Annotated[Optional[bool], typer.Option("--mode-tokens/--no-mode-tokens")] = None,
    tokenizer: TokenizerOpt = None,
    layout: LayoutOpt = "encoder-decoder",
    inputs_length: Annotated[int, typer.Option("--inputs-length", "-I")] = 512,
    targets_length: Annotated[int, typer.Option("--targets-length", "-T")] = 512,
    seq_length: Annotated[int, typer.Option("--seq-length", "-S")] = 1024,
    add_tokens: Annotated[bool, typer.Option("--add-tokens/--no-add-tokens")] = True,
    sentinel_template: str = "<extra_id_{}>",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the mixture table with derived raw/input/target lengths, sentinels and padding."""
    from . import pipeline, report

    try:
        cfg = _config(mixture, mode_tokens, layout, inputs_length, targets_length, seq_length, 0,
                      "text", "eos", "arrow", "256MiB", "skip", 0, add_tokens, None, None,
                      sentinel_template)
        _emit_plan(pipeline.plan_table(pipeline.resolve(cfg, None, tokenizer)), as_json, report)
    except DenoiseError as e:
        _fail(e)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.secho("denoise: interrupted (rerun the same command to resume)", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["app", "main", "Path"]

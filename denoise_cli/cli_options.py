"""The ``denoise`` command line's vocabulary: the choice enums, the option types ``prepare`` and
``plan`` share, :class:`ConfigOptions` (those options by name -> a validated
:class:`~denoise_cli.config.PrepareConfig`), and :func:`command_reference`, the README's
generated CLI reference. The commands themselves are in :mod:`denoise_cli.cli`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

import typer

from .config import (
    Lengths,
    PrepareConfig,
    TokenConfig,
    check_splits,
    load_mixture,
    parse_size,
    parse_unit_size,
)
from .errors import ConfigError
from .output.shards import FORMATS
from .source.discover import ACCEPTED_SUFFIXES

#: The input file kinds ``prepare`` reads: the reader's own list (help text, README and tests).
INPUT_EXTENSIONS = ACCEPTED_SUFFIXES


class Layout(str, Enum):
    encoder_decoder = "encoder-decoder"
    decoder_only = "decoder-only"


#: ``--format``'s choices: the names in the shard format registry
Format = Enum("Format", {name: name for name in FORMATS}, type=str)  # type: ignore[misc]
#: ``--format``'s default: the config's
FORMAT_DEFAULT = Format(PrepareConfig.format)
#: ``--format``'s help: each format's own line
FORMAT_HELP = " or ".join(f"{f.name} ({f.help})" for f in FORMATS.values()) + "."


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
LimitDocsOpt = Annotated[
    int,
    typer.Option(
        help="A trial run on the first N documents of the inputs (sorted files, documents in "
        "file order); the same N gives the same output. 0 = all.",
        min=0,
    ),
]
LimitTokensOpt = Annotated[
    int,
    typer.Option(
        help="A trial run on the shortest prefix of whole documents (in the order of "
        "--limit-docs) whose token stream holds at least N tokens. 0 = all.",
        min=0,
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        help="Held-out splits, e.g. train=0.99,validation=0.01: each document goes to one "
        "split by a hash of (seed, file, document index); each split is a dataset OUT/NAME.",
    ),
]
HoldoutOpt = Annotated[
    float | None, typer.Option(help="Shorthand for --split train=1-F,validation=F.")
]
SentinelOpt = Annotated[
    str,
    typer.Option(help="Sentinel token names; {} is the index (T5: <extra_id_{}>)."),
]

ShardSizeOpt = Annotated[
    str,
    typer.Option(
        help="Rows per shard (e.g. 50000) or bytes: 256MiB = 256*2^20, 256MB = 256*10^6; "
        "rounded down to whole --group-size groups (at least one). Never changes the examples."
    ),
]
GroupSizeOpt = Annotated[
    int,
    typer.Option(
        help="Rows per random draw group (part of what the examples depend on). A shard holds "
        "whole groups, so it is at least this many rows whatever --shard-size says."
    ),
]
EpochsOpt = Annotated[
    int,
    typer.Option(
        help="Write K independent corruptions (epoch-0/ ... epoch-K-1/) from one tokenization."
    ),
]
PackOpt = Annotated[
    int,
    typer.Option(
        help="Pack several examples per row (segment ids + positions; see docs/packing.md): "
        "examples are planned for 1/PACK of a row, e.g. 4. 0 = one example per row."
    ),
]
CompactOpt = Annotated[
    bool,
    typer.Option(
        help="Compact shards: ids in the narrowest type, no padding, no attention_mask or "
        "derivable labels (open_dataset/torch_data rebuild the same batches)."
    ),
]
UnitSizeOpt = Annotated[
    str,
    typer.Option(
        help="A Parquet file larger than this (bytes: 256MiB, 1GB) is split into units of whole "
        "row groups that run on different workers (part of what the examples depend on); "
        "0 = one unit per file."
    ),
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
    compact: bool = False
    unit_size: str = "256MiB"
    limit_docs: int = 0
    limit_tokens: int = 0
    split: str | None = None
    holdout: float | None = None

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
            format=self.fmt,
            shard_rows=rows,
            shard_bytes=nbytes,
            on_error=self.on_error,  # type: ignore[arg-type]
            max_doc_chars=self.max_doc_chars,
            epochs=self.epochs,
            pack_factor=self.pack,
            group_size=self.group_size,
            compact=self.compact,
            unit_bytes=parse_unit_size(self.unit_size),
            limit_docs=self.limit_docs,
            limit_tokens=self.limit_tokens,
            splits=parse_splits(self.split, self.holdout),
        )


def parse_splits(split: str | None, holdout: float | None) -> tuple[tuple[str, float], ...]:
    """``--split train=0.99,validation=0.01`` or ``--holdout F`` (= ``train=1-F,validation=F``)."""
    if split and holdout is not None:
        raise ConfigError("give --split or --holdout, not both")
    if holdout is not None:
        if not 0.0 < holdout < 1.0:
            raise ConfigError(f"--holdout must be in (0, 1), got {holdout}")
        return (("train", 1.0 - holdout), ("validation", float(holdout)))
    if not split:
        return ()
    out = []
    for part in split.split(","):
        name, eq, frac = part.strip().partition("=")
        try:
            value = float(frac)
        except ValueError:
            value = -1.0
        if not eq or value <= 0:
            raise ConfigError(
                f"cannot parse --split {split!r}: use e.g. train=0.99,validation=0.01"
            )
        out.append((name.strip(), value))
    res = tuple(out)
    check_splits(res)
    return res


def command_reference(app: typer.Typer, width: int = 96) -> str:
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

"""What a run is before any work starts: the resolved inputs, tokenizer and plans
(:class:`Prepared`, also what ``denoise plan`` shows) and the :class:`Job` every worker gets
(pickled once per worker). See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FLAGS, PrepareConfig
from ..errors import ConfigError, DenoiseError
from ..output.layout import epoch_dir, shard_name, split_root
from ..output.schema import id_type
from ..output.shards import dtype_of, format_of
from ..rows.base import SpecialIds, row_widths
from ..rows.plan import (
    ComponentPlan,
    disk_estimate,
    efficiency_bound,
    expected_efficiency,
    largest_length_for_sentinels,
    max_segments,
    mixture_ratio,
    plans_for,
    sentinels_needed,
    targets_length_window,
)
from ..source.backend import BackendChoice, choose_backend
from ..source.discover import InputFile, find_inputs
from ..source.read import FileStats, iter_batches
from ..source.stream import SplitFilter, prefix_stops
from ..source.tokenize import (
    Encoder,
    TokenizerInfo,
    build_tokenizer,
    load_tokenizer_json,
    share_with_workers,
)
from ..source.units import split_inputs


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; pickled once per worker."""

    cfg: PrepareConfig
    plans: tuple[ComponentPlan, ...]
    special: SpecialIds
    encoder: Encoder
    out: str
    files: tuple[InputFile, ...]
    rows_per_part: int
    group_size: int
    max_segments: int = 0  # packed output: examples per row at most (0: unpacked)
    vocab_size: int = 0  # ids are below it (compact outputs store the narrowest type)
    stops: tuple[int | None, ...] = ()  # per file: the record it stops before (--limit-*)
    split: str = ""  # with --split: the split this job writes (one engine run per split)

    def stop_record(self, file_idx: int) -> int | None:
        return self.stops[file_idx] if self.stops else None

    @property
    def split_names(self) -> tuple[str, ...]:
        """The held-out splits (``--split``); () for one dataset."""
        return tuple(n for n, _ in self.cfg.splits)

    def root(self) -> Path:
        """Where this job's output lives: the output, or with ``split`` that split's directory."""
        return split_root(Path(self.out), self.split) if self.split else Path(self.out)

    def split_filter(self, key: int) -> SplitFilter | None:
        """The documents of ``split`` in the file of ``key`` (None: every document)."""
        if not self.split:
            return None
        fr = tuple(f for _, f in self.cfg.splits)
        return SplitFilter(self.cfg.seed, key, fr, self.split_names.index(self.split))

    @property
    def groups_per_part(self) -> int:
        return max(1, self.rows_per_part // self.group_size)

    def epoch_dir(self, epoch: int) -> str:
        """Where an epoch's dataset lives, relative to the output: "" for a single epoch."""
        return epoch_dir(self.cfg.epochs, epoch)

    def shard_name(self, epoch: int, file_idx: int, part: int) -> str:
        return shard_name(self.cfg.epochs, epoch, file_idx, part, self.cfg.format)

    def worker_preload(self) -> contextlib.AbstractContextManager[None]:
        """Around a process pool's start: its forkserver builds the encoder's tokenizer (HF, or
        tiktoken for the fast backend) once for all workers (``tokenize.share_with_workers``)."""
        return share_with_workers(self.encoder.tokenizer_json, self.encoder.fast)


def rows_per_part(cfg: PrepareConfig) -> int:
    if cfg.shard_rows:
        return cfg.shard_rows
    wi, wt = row_widths(cfg.lengths)
    row_bytes = 4 * wi + 4 * wt + wi + 32
    return max(1, cfg.shard_bytes // row_bytes)


@dataclass
class Prepared:
    """What the main process resolved before any work: plans, tokenizer, inputs."""

    cfg: PrepareConfig
    plans: tuple[ComponentPlan, ...]
    tokenizer: TokenizerInfo
    files: list[InputFile]  # the units of work: input files, or units of a split Parquet file
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason -> paths not read
    backend: BackendChoice | None = None  # set by prepare (--tokenizer-backend)
    stops: list[int | None] = field(default_factory=list)  # set by apply_limit


def resolve(
    cfg: PrepareConfig,
    inputs: Sequence[str] | None,
    tokenizer: str | None,
    storage_options: dict[str, Any] | None = None,
) -> Prepared:
    """Validate everything up front: lengths, sentinels, tokenizer, inputs. Raises ConfigError.
    ``storage_options`` are the fsspec options for URL inputs."""
    format_of(cfg.format)
    plans = plans_for(cfg)
    tok = build_tokenizer(tokenizer, cfg.tokens, cfg.mixture, sentinels_needed(plans))
    ignored: dict[str, list[str]] = {}
    files = find_inputs(inputs, storage_options, ignored) if inputs else []
    # a large Parquet file becomes several units of work (one per block of row groups)
    files = split_inputs(files, cfg.unit_bytes)
    return Prepared(cfg, plans, tok, files, ignored)


def make_job(prep: Prepared, out: Path) -> Job:
    cfg, tok = prep.cfg, prep.tokenizer
    return Job(
        cfg=cfg,
        plans=prep.plans,
        special=tok.special_ids(),
        encoder=tok.encoder(
            prep.backend.spec if prep.backend else None,
            prep.backend.engine if prep.backend else None,
        ),
        out=str(out),
        files=tuple(prep.files),
        rows_per_part=rows_per_part(cfg),
        group_size=cfg.group_size,
        max_segments=max_segments_of(prep),
        vocab_size=tok.vocab_size,
        stops=tuple(prep.stops),
    )


def apply_limit(prep: Prepared) -> bool:
    """``--limit-docs`` / ``--limit-tokens``: resolve the prefix of the inputs (in their sorted
    order) into the record each file stops before (``source.stream.prefix_stops``) and drop the
    files past the limit, so that the files kept have the indexes of a full run. Tokens are
    counted with the run's encoder backend (same ids for any backend). Returns whether a limit
    applies."""
    cfg = prep.cfg
    if not (cfg.limit_docs or cfg.limit_tokens):
        return False
    stops = prefix_stops(
        prep.files,
        docs=cfg.limit_docs,
        tokens=cfg.limit_tokens,
        encoder=prep.tokenizer.encoder(
            prep.backend.spec if prep.backend else None,
            prep.backend.engine if prep.backend else None,
        )
        if cfg.limit_tokens
        else None,
        text_key=cfg.text_key,
        max_doc_chars=cfg.max_doc_chars,
        separator=prep.tokenizer.special_ids().eos if cfg.doc_separator == "eos" else None,
    )
    keep = [i for i, s in enumerate(stops) if s != 0]
    prep.files = [prep.files[i] for i in keep]
    prep.stops = [stops[i] for i in keep]
    return True


def choose_encoder_backend(prep: Prepared, requested: str, mine: Sequence[int]) -> BackendChoice:
    """The document encoder, self-checked on the torture texts and the run's first documents
    (those in the first ~256k characters of its first input file); warns on a fallback."""

    def sample() -> list[str]:
        if not mine:
            return []
        with contextlib.suppress(DenoiseError):
            for batch in iter_batches(
                prep.files[mine[0]],
                text_key=prep.cfg.text_key,
                stats=FileStats(),
                start_record=0,
                batch_chars=1 << 18,
            ):
                # bounded: a huge first document is checked on its head only (both engines
                # encode the same text, so the comparison stays exact)
                return [text[: 1 << 16] for text in batch.texts[:256]]
        return []

    tok = prep.tokenizer
    choice = choose_backend(tok.json, requested, sample, tok.model_head, tok.built)
    if choice.warning:
        print(f"denoise: warning: {choice.warning}", file=sys.stderr)
    return choice


def expected_efficiency_of(prep: Prepared) -> dict[str, float]:
    """Unpacked: the plan's mean real tokens / slots. Packed: the ratio bound (an upper bound;
    the measured figure is in ``denoise stats``)."""
    if not prep.cfg.pack_factor:
        return expected_efficiency(prep.plans, prep.cfg.lengths)
    return {
        f"packed_bound_{k}": v for k, v in efficiency_bound(prep.plans, prep.cfg.lengths).items()
    }


def max_segments_of(prep: Prepared) -> int:
    if not prep.cfg.pack_factor:
        return 0
    return max_segments(prep.plans, prep.cfg.lengths)


def plan_table(prep: Prepared) -> dict[str, Any]:
    """What ``denoise plan`` shows (and ``prepare`` records in the manifest)."""
    cfg = prep.cfg
    return {
        "mixture": cfg.mixture.to_dict(),
        "lengths": cfg.lengths.to_dict(),
        "components": [c.to_dict() for c in prep.plans],
        "sentinels_needed": sentinels_needed(prep.plans),
        "expected_efficiency": expected_efficiency_of(prep),
        "packing": packing_plan(prep),
        "tokenizer": prep.tokenizer.to_dict(),
        "disk": disk_plan(prep),
    }


def disk_plan(prep: Prepared) -> dict[str, Any] | None:
    """Expected shard bytes per raw input token, one epoch and all ``--epochs`` (unpacked Arrow
    outputs; None otherwise), default and ``--compact``."""
    cfg = prep.cfg
    if cfg.pack_factor or cfg.format != "arrow":
        return None
    idb = np.dtype(dtype_of(id_type(prep.tokenizer.vocab_size))).itemsize
    est = {
        name: disk_estimate(prep.plans, cfg.lengths, compact=c, id_bytes=idb)
        for name, c in (("default", False), ("compact", True))
    }
    return {
        "epochs": cfg.epochs,
        "compact": cfg.compact,
        "bytes_per_raw_token": {k: v["bytes_per_raw_token"] for k, v in est.items()},
    }


def packing_plan(prep: Prepared) -> dict[str, Any] | None:
    """What ``denoise plan --pack K`` adds: the example budget, the most examples per row, and
    for encoder-decoder the mixture's target/input ratio and the targets lengths at this ``I``
    for which the ratio bound allows 98% on both sides (``plan.targets_length_window``; None
    when the example targets budget is above that window, so that the plans would change
    with T)."""
    cfg = prep.cfg
    if not cfg.pack_factor:
        return None
    ex = cfg.example_lengths
    out: dict[str, Any] = {
        "factor": cfg.pack_factor,
        "example_lengths": ex.to_dict(),
        "max_segments": max_segments(prep.plans, cfg.lengths),
        "algorithm": cfg.fingerprint_dict()["pack_algorithm"],
    }
    if cfg.lengths.layout == "encoder-decoder":
        lo, hi = targets_length_window(prep.plans, cfg.lengths.inputs_length)
        out["targets_per_input"] = mixture_ratio(prep.plans)
        # the window is only valid while the example plans do not depend on T (budget <= T)
        out["targets_length_98"] = [lo, hi] if ex.targets_length <= lo else None
    return out


def check_sentinels(cfg: PrepareConfig, tokenizer: str | None) -> None:
    """Under ``--no-add-tokens``: a tokenizer with fewer sentinels than the plan needs fails (a
    :class:`ConfigError`),
    suggesting the largest ``-I`` (``-S``) whose plan fits the sentinels it has."""
    if cfg.tokens.add_missing:
        return
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

"""Configuration: what a user chooses - denoisers, mixtures and presets, the model's lengths,
the special-token names and the prepare config (what determines an output's bytes).

Everything here is a frozen dataclass validated on construction, so a bad configuration raises
:class:`~denoise_cli.errors.ConfigError` before any work starts; ``to_dict`` / ``from_dict``
round-trip through the manifest. What *follows* from a config (raw chunk lengths, span counts,
sentinels needed) is derived in :mod:`denoise_cli.rows.plan`, never configured. This module imports
nothing of the package but ``errors``. See docs/architecture.md.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ConfigError

Kind = Literal["R", "X", "S"]
Layout = Literal["encoder-decoder", "decoder-only"]
LAYOUTS: tuple[Layout, ...] = ("encoder-decoder", "decoder-only")
DEFAULT_MODE_TOKENS: dict[str, str] = {"R": "[NLU]", "X": "[NLG]", "S": "[S2S]"}
#: Names the row assignment (which examples share a row). Recorded in the manifest and in the
#: config fingerprint: a resume or ``verify --source`` with a different algorithm would not
#: regenerate the same rows, so it is refused. Change it whenever ``rows.packing.assign_rows`` changes.
#: Outputs without it were packed by "first-fit-v1" (first fit only, denoise <= 0.x).
PACK_ALGORITHM = "first-fit+eject+mix-v2"


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Denoiser:
    """One mixture component.

    ``kind`` is ``R``/``X`` (span corruption with ``mean_span`` and ``rate``) or ``S``
    (prefix-LM with ``rate <= 0.5``; ``rate=0.5`` is T5's ``prefix_lm``). ``mode_token`` is the
    paradigm token prepended to the inputs when the mixture uses mode tokens; ``None`` means the
    family default (``[NLU]`` R, ``[NLG]`` X, ``[S2S]`` S).
    """

    kind: Kind
    rate: float
    mean_span: float = 0.0
    weight: float = 1.0
    mode_token: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("R", "X", "S"):
            raise ConfigError(f"denoiser kind must be R, X or S, got {self.kind!r}")
        if not isinstance(self.rate, (int, float)) or not np.isfinite(self.rate):
            raise ConfigError(f"{self.name}: rate must be a finite number")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise ConfigError(f"{self.name}: weight must be >= 0, got {self.weight}")
        if self.kind == "S":
            if not 0.0 < self.rate <= 0.5:
                raise ConfigError(
                    f"{self.name}: S (prefix-LM) rate must be in (0, 0.5], got {self.rate}"
                )
        else:
            if not 0.0 < self.rate < 1.0:
                raise ConfigError(
                    f"{self.name}: corruption rate must be in (0, 1), got {self.rate}"
                )
            if not np.isfinite(self.mean_span) or self.mean_span < 1.0:
                raise ConfigError(
                    f"{self.name}: mean span length must be >= 1 token, got {self.mean_span}"
                )

    @property
    def name(self) -> str:
        if self.kind == "S":
            return f"S({_fmt(self.rate)})"
        return f"{self.kind}({_fmt(self.mean_span)},{_fmt(self.rate)})"

    @property
    def is_span(self) -> bool:
        return self.kind != "S"

    def resolved_mode_token(self) -> str:
        return self.mode_token if self.mode_token is not None else DEFAULT_MODE_TOKENS[self.kind]


@dataclass(frozen=True)
class Mixture:
    """A mixture of denoisers: each example draws exactly one component, with probability
    proportional to its weight (weights are normalised; negative or all-zero is an error)."""

    name: str
    denoisers: tuple[Denoiser, ...]
    mode_tokens: bool = True
    source: str = ""

    def __post_init__(self) -> None:
        if not self.denoisers:
            raise ConfigError(f"mixture {self.name!r} has no denoisers")
        w = np.array([d.weight for d in self.denoisers], dtype=np.float64)
        if not np.isfinite(w).all() or (w < 0).any():
            raise ConfigError(f"mixture {self.name!r}: weights must be finite and >= 0")
        if w.sum() <= 0:
            raise ConfigError(f"mixture {self.name!r}: weights are all zero")
        if len(self.denoisers) > 127:
            raise ConfigError("a mixture can have at most 127 components")

    @property
    def probabilities(self) -> np.ndarray:
        w = np.array([d.weight for d in self.denoisers], dtype=np.float64)
        p: np.ndarray = w / w.sum()
        return p

    def mode_token_strings(self) -> list[str]:
        """Distinct mode tokens this mixture needs, in first-use order."""
        if not self.mode_tokens:
            return []
        out: list[str] = []
        for d in self.denoisers:
            t = d.resolved_mode_token()
            if t not in out:
                out.append(t)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Mixture:
        """The inverse of :meth:`to_dict` (derived keys such as probabilities are ignored)."""
        dens = tuple(
            Denoiser(
                x["kind"],
                rate=float(x["rate"]),
                mean_span=float(x.get("mean_span", 0.0)),
                weight=float(x["weight"]),
                mode_token=x.get("mode_token"),
            )
            for x in d["denoisers"]
        )
        return cls(
            str(d["name"]),
            dens,
            mode_tokens=bool(d["mode_tokens"]),
            source=str(d.get("source", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "mode_tokens": self.mode_tokens,
            "denoisers": [
                {**asdict(d), "name": d.name, "probability": float(p)}
                for d, p in zip(self.denoisers, self.probabilities, strict=False)
            ],
        }


def R(mu: float, r: float, w: float = 1.0) -> Denoiser:
    return Denoiser("R", rate=r, mean_span=mu, weight=w)


def X(mu: float, r: float, w: float = 1.0) -> Denoiser:
    return Denoiser("X", rate=r, mean_span=mu, weight=w)


def S(r: float, w: float = 1.0) -> Denoiser:
    return Denoiser("S", rate=r, weight=w)


PRESETS: dict[str, Mixture] = {
    "t5": Mixture(
        "t5",
        (R(3, 0.15),),
        mode_tokens=False,
        source="T5 span corruption (Raffel et al. 2020, sec. 3.3): mean span 3, 15% noise.",
    ),
    "ul2": Mixture(
        "ul2",
        (R(3, 0.15), R(8, 0.15), S(0.25), X(3, 0.5), X(8, 0.5), X(64, 0.15), X(64, 0.5)),
        mode_tokens=True,
        source=(
            "UL2 (Tay et al. 2022, arXiv:2205.05131) sec. 3.1.4: the seven denoisers of the final "
            "objective; appendix 9.2 `ul2_objective` samples tasks uniformly when `rates` is None, "
            "so each denoiser has weight 1/7 (R 2/7, X 4/7, S 1/7). Mode tokens [NLU] R, [NLG] X, "
            "[S2S] S as in the released UL2 checkpoints."
        ),
    ),
    "ul2r": Mixture(
        "ul2r",
        (S(0.25, 0.50), R(3, 0.15, 0.25), X(32, 0.15, 0.125), X(3, 0.5, 0.125)),
        mode_tokens=True,
        source=(
            "U-PaLM / UL2R (Tay et al. 2022, arXiv:2210.11399) sec. 3: 50% S (prefix-LM), "
            "25% R(3,.15), 25% extreme span corruption 'mean span 32 or rate up to 50%'; "
            "we split the X share evenly between long spans X(32,.15) and high rate X(3,.5)."
        ),
    ),
    "text-denoising": Mixture(
        "text-denoising",
        (R(3, 0.15, 0.25), S(0.25, 0.50), X(32, 0.5, 0.125), X(64, 0.2, 0.125)),
        mode_tokens=True,
        source=(
            "Defaults of the `text-denoising` PyPI package's DataCollatorForUL2 (R(3,.15) 25%, "
            "S 50%, X from (32,.5) and (64,.2) 25%) as a correct mixture: each example draws ONE "
            "component (the package ORs the X masks together)."
        ),
    ),
}

_SPEC_RE = re.compile(
    r"^\s*(?P<kind>[RXS])\s*\(\s*(?P<a>[0-9.eE+-]+)\s*(?:,\s*(?P<b>[0-9.eE+-]+)\s*)?\)"
    r"\s*(?:[@*]\s*(?P<w>[0-9.eE+-]+))?\s*$"
)


def _denoiser_from_mapping(d: Mapping[str, Any], where: str) -> Denoiser:
    allowed = {"kind", "rate", "mean_span", "weight", "mode_token"}
    unknown = set(d) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    try:
        kind = str(d["kind"]).upper()
        rate = float(d["rate"])
    except KeyError as e:
        raise ConfigError(f"{where}: missing key {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    if kind in ("R", "X") and "mean_span" not in d:
        raise ConfigError(f"{where}: {kind} denoiser needs mean_span")
    try:
        return Denoiser(
            kind,  # type: ignore[arg-type]
            rate=rate,
            mean_span=float(d.get("mean_span", 0.0)),
            weight=float(d.get("weight", 1.0)),
            mode_token=None if d.get("mode_token") is None else str(d["mode_token"]),
        )
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_spec(spec: str) -> Mixture:
    """Parse a compact mixture like ``"R(3,0.15)@1; X(32,0.5)@1; S(0.25)@2"``."""
    parts = [p for p in spec.split(";") if p.strip()]
    out: list[Denoiser] = []
    for p in parts:
        m = _SPEC_RE.match(p)
        if not m:
            raise ConfigError(
                f"cannot parse mixture component {p.strip()!r}; expected e.g. 'R(3,0.15)@1' or "
                "'S(0.25)@2' separated by ';'"
            )
        try:
            kind, a, w = m["kind"], float(m["a"]), float(m["w"] or 1.0)
            b = None if m["b"] is None else float(m["b"])
        except ValueError:
            raise ConfigError(f"bad number in mixture component {p.strip()!r}") from None
        if kind == "S":
            if b is not None:
                raise ConfigError(f"{p.strip()!r}: S takes one argument (rate)")
            out.append(S(a, w))
        else:
            if b is None:
                raise ConfigError(f"{p.strip()!r}: {kind} takes (mean_span, rate)")
            out.append(Denoiser(kind, rate=b, mean_span=a, weight=w))  # type: ignore[arg-type]
    return Mixture(spec.strip(), tuple(out), mode_tokens=True, source="command-line spec")


def load_mixture(spec: str, *, mode_tokens: bool | None = None) -> Mixture:
    """A preset name, a ``.toml``/``.json`` mixture file, or a compact spec string."""
    if spec in PRESETS:
        mix = PRESETS[spec]
    elif spec.endswith((".toml", ".json")):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"mixture file {spec} does not exist")
        raw = path.read_bytes()
        try:
            if spec.endswith(".json"):
                data = json.loads(raw)
            else:
                data = _toml_loads(raw.decode("utf-8"))
        except Exception as e:
            raise ConfigError(f"mixture file {spec}: cannot parse: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"mixture file {spec}: expected a table/object at top level")
        items = data.get("denoisers", data.get("denoiser"))
        if not isinstance(items, list) or not items:
            raise ConfigError(f"mixture file {spec}: needs a non-empty 'denoisers' list")
        dens = tuple(
            _denoiser_from_mapping(d, f"{spec}: denoiser {i}")
            if isinstance(d, dict)
            else _raise(f"{spec}: denoiser {i} must be a table/object")
            for i, d in enumerate(items)
        )
        mix = Mixture(
            str(data.get("name", path.stem)),
            dens,
            mode_tokens=bool(data.get("mode_tokens", True)),
            source=str(data.get("source", f"file {path.name}")),
        )
    elif "(" in spec:
        mix = parse_spec(spec)
    else:
        raise ConfigError(
            f"unknown mixture {spec!r}: use a preset ({', '.join(PRESETS)}), a .toml/.json file, "
            "or a spec like 'R(3,0.15)@1;S(0.25)@1'"
        )
    if mode_tokens is not None:
        mix = replace(mix, mode_tokens=mode_tokens)
    return mix


def _toml_loads(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    import tomli  # Python 3.10: a declared dependency

    return tomli.loads(text)


def _raise(msg: str) -> Denoiser:
    raise ConfigError(msg)


# --------------------------------------------------------------------------- lengths


#: The command-line flags of the length fields, for messages (users see the flags they typed).
FLAGS = {
    "inputs_length": "-I/--inputs-length",
    "targets_length": "-T/--targets-length",
    "seq_length": "-S/--seq-length",
}


@dataclass(frozen=True)
class Lengths:
    """The model's fixed shapes. encoder-decoder: ``inputs_length`` (I) and ``targets_length``
    (T); decoder-only: ``seq_length`` (S)."""

    layout: Layout = "encoder-decoder"
    inputs_length: int = 512
    targets_length: int = 512
    seq_length: int = 1024

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"--layout must be one of {LAYOUTS}, got {self.layout!r}")
        for k in ("inputs_length", "targets_length", "seq_length"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 4:
                raise ConfigError(f"{FLAGS[k]} must be an integer >= 4, got {v!r}")
            if v > 2**20:
                raise ConfigError(f"{FLAGS[k]} {v} is larger than 2**20")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Lengths:
        """The inverse of :meth:`to_dict`."""
        return cls(
            d["layout"],
            int(d.get("inputs_length", 512)),
            int(d.get("targets_length", 512)),
            int(d.get("seq_length", 1024)),
        )

    def to_dict(self) -> dict[str, Any]:
        if self.layout == "encoder-decoder":
            return {
                "layout": self.layout,
                "inputs_length": self.inputs_length,
                "targets_length": self.targets_length,
            }
        return {"layout": self.layout, "seq_length": self.seq_length}


def example_lengths(
    lengths: Lengths,
    factor: int = 4,
    *,
    inputs_budget: int | None = None,
    targets_budget: int | None = None,
    seq_budget: int | None = None,
) -> Lengths:
    """The lengths to plan (and corrupt) examples with, so that about ``factor`` of them share
    one row of ``lengths``.

    encoder-decoder: inputs budget ``I // factor``; targets budget ``min(T, I // factor)``, so
    each component keeps the shape it has in an unpacked ``I = T`` row, scaled down (a ``T``
    smaller than ``I`` only caps it). decoder-only: ``S // factor``. Explicit budgets override.
    Raises ``ValueError`` for a budget larger than the row or smaller than 4 tokens.
    """
    if factor < 1:
        raise ValueError(f"pack factor must be >= 1, got {factor}")
    if lengths.layout == "encoder-decoder":
        bi = inputs_budget if inputs_budget is not None else lengths.inputs_length // factor
        bt = targets_budget if targets_budget is not None else min(lengths.targets_length, bi)
        if not 4 <= bi <= lengths.inputs_length or not 4 <= bt <= lengths.targets_length:
            raise ValueError(
                f"example budget inputs={bi}, targets={bt} must be in [4, row] for rows of "
                f"inputs={lengths.inputs_length}, targets={lengths.targets_length}"
            )
        return Lengths("encoder-decoder", inputs_length=bi, targets_length=bt)
    bs = seq_budget if seq_budget is not None else lengths.seq_length // factor
    if not 4 <= bs <= lengths.seq_length:
        raise ValueError(f"example budget seq={bs} must be in [4, {lengths.seq_length}]")
    return Lengths("decoder-only", seq_length=bs)


# --------------------------------------------------------------------------- tokens / job


@dataclass(frozen=True)
class TokenConfig:
    """Names of the special tokens. Sentinels are ``sentinel_template.format(k)``, looked up by
    name in the tokenizer. ``eos``/``pad`` of ``None`` mean: detect from common names."""

    sentinel_template: str = "<extra_id_{}>"
    eos: str | None = None
    pad: str | None = None
    add_missing: bool = True

    def __post_init__(self) -> None:
        try:
            a, b = self.sentinel_template.format(0), self.sentinel_template.format(1)
        except (IndexError, KeyError, ValueError) as e:
            raise ConfigError(f"bad sentinel template {self.sentinel_template!r}: {e}") from None
        if a == b:
            raise ConfigError(
                f"sentinel template {self.sentinel_template!r} must contain '{{}}' for the index"
            )


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that determines the *content* of an output (its fingerprint) plus run options
    that do not (workers, quiet, progress)."""

    mixture: Mixture
    lengths: Lengths = field(default_factory=Lengths)
    tokens: TokenConfig = field(default_factory=TokenConfig)
    seed: int = 0
    text_key: str = "text"
    doc_separator: Literal["eos", "none"] = "eos"
    format: str = "arrow"  # a name in output.shards.FORMATS, checked by prepare.job.resolve
    shard_rows: int = 0  # 0: derived from shard_bytes
    shard_bytes: int = 256 * 2**20
    group_size: int = 1024  # chunks per random draw group
    on_error: Literal["skip", "fail"] = "skip"
    max_doc_chars: int = 0  # 0: unlimited
    epochs: int = 1  # independent corruptions of the same token stream
    pack_factor: int = 0  # 0: one example per row; k: examples planned for 1/k row, packed
    # a Parquet file above this many bytes is split into units of whole row groups of about this
    # size, run by different workers (source.units); 0: never split
    unit_bytes: int = 256 * 2**20
    compact: bool = False  # narrow dtypes, no padding or derivable columns (same loaded batches)
    limit_docs: int = 0  # 0: all; N: the first N documents of the inputs (a trial run)
    limit_tokens: int = 0  # 0: all; N: the shortest prefix of documents with >= N stream tokens
    # held-out splits: (name, fraction) pairs, documents assigned by hash (empty: one dataset)
    splits: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("limit_docs", "limit_tokens"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be an integer >= 0, got {v!r}")
        if self.limit_docs and self.limit_tokens:
            raise ConfigError("--limit-docs and --limit-tokens cannot be combined; choose one")
        check_splits(self.splits)
        if self.splits and self.epochs > 1:
            raise ConfigError(
                "--split/--holdout cannot be combined with --epochs (not supported yet): hold out "
                "without --epochs, or use --epochs without --split"
            )
        if not isinstance(self.pack_factor, int) or not 0 <= self.pack_factor <= 64:
            raise ConfigError(f"--pack must be an integer in [0, 64], got {self.pack_factor!r}")
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= 1000:
            raise ConfigError(f"--epochs must be an integer in [1, 1000], got {self.epochs!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"--seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.doc_separator not in ("eos", "none"):
            raise ConfigError("--doc-separator must be 'eos' or 'none'")
        if self.on_error not in ("skip", "fail"):
            raise ConfigError("--on-error must be 'skip' or 'fail'")
        if self.shard_rows < 0 or self.shard_bytes < 1:
            raise ConfigError("--shard-size must be positive")
        if not 1 <= self.group_size <= 1 << 20:
            raise ConfigError(f"--group-size must be in [1, 2**20], got {self.group_size}")
        if not self.text_key or any(not p for p in self.text_key.split(".")):
            raise ConfigError(f"bad --text-key {self.text_key!r}")
        if self.max_doc_chars < 0:
            raise ConfigError("--max-doc-chars must be >= 0")
        if not isinstance(self.unit_bytes, int) or self.unit_bytes < 0:
            raise ConfigError(f"unit_bytes must be an integer >= 0, got {self.unit_bytes!r}")

    @property
    def example_lengths(self) -> Lengths:
        """The lengths examples are planned and corrupted with: the row lengths, or with
        ``pack_factor`` k a 1/k budget (several examples then share a row)."""
        if not self.pack_factor:
            return self.lengths
        try:
            return example_lengths(self.lengths, self.pack_factor)
        except ValueError as e:
            raise ConfigError(f"--pack {self.pack_factor}: {e}") from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrepareConfig:
        """The inverse of :meth:`fingerprint_dict` (run options take their defaults; keys that
        older versions did not write take the values those versions used)."""
        default = cls(Mixture.from_dict(d["mixture"]))
        return cls(
            mixture=default.mixture,
            lengths=Lengths.from_dict(d["lengths"]),
            tokens=TokenConfig(**d.get("tokens", {})),
            seed=int(d.get("seed", 0)),
            text_key=str(d.get("text_key", default.text_key)),
            doc_separator=d.get("doc_separator", default.doc_separator),
            format=d.get("format", default.format),
            shard_rows=int(d.get("shard_rows", 0)),
            shard_bytes=int(d.get("shard_bytes", default.shard_bytes)),
            group_size=int(d.get("group_size", default.group_size)),
            max_doc_chars=int(d.get("max_doc_chars", 0)),
            epochs=int(d.get("epochs", 1)),
            pack_factor=int(d.get("pack_factor", 0)),
            unit_bytes=int(d.get("unit_bytes", 0)),
            compact=bool(d.get("compact", False)),
            limit_docs=int(d.get("limit_docs", 0)),
            limit_tokens=int(d.get("limit_tokens", 0)),
            splits=tuple((str(k), float(v)) for k, v in d.get("splits", ())),
        )

    def fingerprint_dict(self) -> dict[str, Any]:
        """The parts of the config that determine output bytes (resume refuses a mismatch)."""
        return {
            "mixture": self.mixture.to_dict(),
            "lengths": self.lengths.to_dict(),
            "tokens": asdict(self.tokens),
            "seed": self.seed,
            "text_key": self.text_key,
            "doc_separator": self.doc_separator,
            "format": self.format,
            "shard_rows": self.shard_rows,
            "shard_bytes": self.shard_bytes,
            "group_size": self.group_size,
            "max_doc_chars": self.max_doc_chars,
            "epochs": self.epochs,
            "pack_factor": self.pack_factor,
            "unit_bytes": self.unit_bytes,
            **({"pack_algorithm": PACK_ALGORITHM} if self.pack_factor else {}),
            **({"compact": True} if self.compact else {}),
            # written only when set: outputs without a limit keep their fingerprint
            **({"limit_docs": self.limit_docs} if self.limit_docs else {}),
            **({"limit_tokens": self.limit_tokens} if self.limit_tokens else {}),
            **({"splits": [list(x) for x in self.splits]} if self.splits else {}),
        }


SPLIT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_splits(splits: Sequence[tuple[str, float]]) -> None:
    """Held-out splits: at least two, distinct lowercase names usable as directory names (not
    ``data`` or ``epoch-K``), fractions in (0, 1) summing to 1."""
    if not splits:
        return
    names = [n for n, _ in splits]
    if len(splits) < 2:
        raise ConfigError(f"--split needs at least two splits, got {names}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--split names must be distinct, got {names}")
    for n, f in splits:
        if (
            not isinstance(n, str)
            or not SPLIT_NAME.fullmatch(n)
            or n == "data"
            or n.startswith("epoch-")
        ):
            raise ConfigError(
                f"bad split name {n!r}: lowercase letters, digits, '_' or '-', starting with a "
                "letter (not 'data' or 'epoch-K')"
            )
        if not isinstance(f, float) or not 0.0 < f < 1.0:
            raise ConfigError(f"split {n}: fraction must be in (0, 1), got {f!r}")
    total = sum(f for _, f in splits)
    if abs(total - 1.0) > 1e-9:
        raise ConfigError(f"--split fractions must sum to 1, got {total:g}")


def parse_size(text: str) -> tuple[int, int]:
    """``--shard-size``: ``"50000"`` rows or ``"256MB"``/``"1GiB"`` bytes -> (rows, bytes)."""
    t = text.strip().upper().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(B|KB|MB|GB|KIB|MIB|GIB|K|M|G)?", t)
    if not m:
        raise ConfigError(
            f"cannot parse size {text!r}: use rows (e.g. 50000) or bytes (e.g. 256MB)"
        )
    num, unit = float(m[1]), m[2]
    if unit is None:
        if num < 1 or num != int(num):
            raise ConfigError(f"shard size in rows must be a positive integer, got {text!r}")
        return int(num), 256 * 2**20
    mult = {
        "B": 1,
        "K": 1000,
        "KB": 1000,
        "M": 10**6,
        "MB": 10**6,
        "G": 10**9,
        "GB": 10**9,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
    }[unit]
    b = int(num * mult)
    if b < 4096:
        raise ConfigError(f"shard size {text!r} is below 4 KiB")
    return 0, b


def parse_unit_size(text: str) -> int:
    """``--unit-size``: bytes (``"256MiB"``, ``"1GB"``) above which a Parquet file is split into
    units of whole row groups; ``"0"`` never splits."""
    if text.strip() == "0":
        return 0
    rows, b = parse_size(text)
    if rows:
        raise ConfigError(f"--unit-size takes bytes (e.g. 256MiB) or 0, got {text!r}")
    return b

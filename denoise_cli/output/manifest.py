"""The manifest ``denoise.json``: the one owner of its keys. Built here from the per-file
records of a run (:func:`build_manifest`, :func:`top_manifest` for ``--epochs K``, merged parts
add up through :func:`totals_from_files`), read here (:func:`read_manifest`,
:func:`datasets`), and turned back into the config that made it (:func:`prepare_config`) so
that ``verify --source`` and the tests rebuild rows the way
``prepare`` did. See docs/architecture.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ..config import PrepareConfig
from ..errors import OutputError
from ..rows.base import row_widths
from ..rows.plan import ComponentPlan, sentinels_needed
from .layout import MANIFEST, STATE_DIR, epoch_dir, epoch_dirs, output_path, split_dirs
from .layout import datasets as dataset_dirs

FORMAT_VERSION = 1


def dumps(obj: Any) -> bytes:
    """The JSON bytes of a manifest or run record (indented, sorted keys, numpy scalars)."""
    return orjson.dumps(
        obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """The differences between two JSON values, one line per leaf: ``path: b -> a``."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: {b!r} (existing) -> {a!r} (now)"]


def read_manifest(out: str | Path) -> dict[str, Any]:
    p = Path(out) / MANIFEST
    if not p.is_file():
        raise OutputError(
            f"{out} has no {MANIFEST}: not a denoise output, or `denoise prepare` has not finished "
            "(rerun it to complete the output)"
        )
    try:
        m: dict[str, Any] = orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError as e:
        raise OutputError(f"{p} is not valid JSON: {e}") from None
    return m


def splits(m: dict[str, Any]) -> list[str]:
    """The held-out splits of an output's top-level manifest ([] without ``--split``)."""
    return list(m.get("split_dirs") or {})


def split_path(out: Path, split: str | None) -> Path:
    """The directory of ``split`` in an output (``out`` itself for None). Raises
    :class:`OutputError` for a split the output does not have, or for None on an output made
    with ``--split`` (naming its splits)."""
    m = read_manifest(out)
    names = splits(m)
    if split is None:
        if names:
            raise OutputError(
                f"{out} holds the splits {', '.join(names)}: choose one (--split NAME / split=)"
            )
        return Path(out)
    if split not in names:
        has = f"its splits are {', '.join(names)}" if names else "it was made without --split"
        raise OutputError(f"{out} has no split {split!r}: {has}")
    return split_dirs(Path(out), m["split_dirs"])[split]


def datasets(out: Path, split: str | None = None) -> list[tuple[str, Path, dict[str, Any]]]:
    """The datasets of an output: ``[("", out, manifest)]``, or for ``prepare --epochs K`` one
    ``("epoch-k/", out/epoch-k, its manifest)`` per epoch (each a complete dataset), or for
    ``prepare --split`` one ``("name/", out/name, its manifest)`` per split (only ``split``'s
    when given)."""
    m = read_manifest(out)
    if split is not None or m.get("split_dirs"):
        named = split_dirs(Path(out), m.get("split_dirs") or {})
        if split is not None:
            named = {split: split_path(Path(out), split)}
        return [(f"{k}/", p, read_manifest(p)) for k, p in named.items()]
    dirs = m.get("epoch_dirs")
    if not dirs:
        return [("", out, m)]
    return [(prefix, path, read_manifest(path)) for prefix, path in dataset_dirs(out, dirs)]


def build_manifest(
    cfg: PrepareConfig,
    plans: Sequence[ComponentPlan],
    tokenizer: dict[str, Any],
    records: Sequence[dict[str, Any]],
    *,
    out: Path,
    epoch: int,
    version: str,
    group_size: int,
    max_segments: int,
    rows_per_shard: int,
    expected_efficiency: dict[str, float],
    ignored: dict[str, list[str]] | None = None,
    tokenizer_backend: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one epoch's dataset from the per-file records of a run (read back from
    ``out``: their shard paths are checked); shard paths are relative to the epoch's
    directory."""
    prefix = epoch_dir(cfg.epochs, epoch)
    shards = []
    for r in records:
        for p in r["epochs"][epoch]["parts"]:
            shards.append(
                {
                    "path": _shard_rel(out, r["index"], p["shard"], prefix),
                    "rows": p["rows"],
                    "bytes": p["bytes"],
                    "sha256": p["sha256"],
                    "tokens": p["tokens"],
                    "source_files": [r["index"]],
                }
            )
    files = [
        {
            "index": r["index"],
            "name": r["name"],
            "size": r["size"],
            "stats": r["stats"],
            "tokens": r["tokens"],
            "reserved_replaced": r["reserved_replaced"],
            "tokens_used": r["epochs"][epoch]["tokens_used"],
            "tail_tokens": r["epochs"][epoch]["tail_tokens"],
            "rows": r["epochs"][epoch]["rows"],
            # a unit of a large Parquet file split across workers: which row groups
            **({"unit": r["unit"]} if "unit" in r else {}),
            **({"stop_record": r["stop_record"]} if r.get("stop_record") is not None else {}),
        }
        for r in records
    ]
    fp = cfg.fingerprint_dict()
    return {
        "format_version": FORMAT_VERSION,
        "denoise_version": version,
        "format": cfg.format,
        "layout": cfg.lengths.layout,
        "lengths": cfg.lengths.to_dict(),
        "row_widths": list(row_widths(cfg.lengths)),
        "seed": cfg.seed,
        "epoch": epoch,
        "epochs": cfg.epochs,
        "group_size": group_size,
        "packing": None
        if not cfg.pack_factor
        else {
            "factor": cfg.pack_factor,
            "example_lengths": cfg.example_lengths.to_dict(),
            "max_segments": max_segments,
            "algorithm": fp["pack_algorithm"],
        },
        **({"compact": True} if cfg.compact else {}),
        "rows_per_shard": rows_per_shard,
        "config": fp,
        "mixture": cfg.mixture.to_dict(),
        "components": [c.to_dict() for c in plans],
        "sentinels_needed": sentinels_needed(plans),
        "expected_efficiency": expected_efficiency,
        "tokenizer": tokenizer,
        "tokenizer_backend": tokenizer_backend,
        "files": files,
        "shards": shards,
        "totals": totals_from_files(files),
        **({"inputs_ignored": ignored_summary(ignored)} if ignored else {}),
    }


def ignored_summary(ignored: dict[str, list[str]]) -> dict[str, Any]:
    """Entries with an input extension that were not read, per reason: count and a few names."""
    return {
        reason: {"count": len(paths), "names": sorted(os.path.basename(p) for p in paths)[:5]}
        for reason, paths in sorted(ignored.items())
    }


def _shard_rel(out: Path, file_idx: int, shard: object, prefix: str) -> str:
    """A shard path of a file's records, relative to its epoch's directory (checked: the
    records are read back from the output)."""
    what = f"{STATE_DIR}/files/{file_idx:05d}.json: shard"
    output_path(out, shard, what)
    assert isinstance(shard, str)
    if not shard.startswith(prefix):
        raise OutputError(f"{out}: {what} {shard!r} is not in {prefix or 'the output'}")
    return shard[len(prefix) :]


def top_manifest(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One epoch: its manifest. Several: the shared part plus ``epoch_dirs`` and rows per epoch."""
    if len(manifests) == 1:
        return dict(manifests[0])
    first = manifests[0]
    top = {k: v for k, v in first.items() if k not in ("shards", "epoch", "totals", "files")}
    top["epoch_dirs"] = epoch_dirs(len(manifests))
    totals = {
        k: v for k, v in first["totals"].items() if k not in ("rows", "tokens_used", "tail_tokens")
    }
    totals["rows_per_epoch"] = [m["totals"]["rows"] for m in manifests]
    top["totals"] = totals
    top["files"] = [
        {k: v for k, v in f.items() if k not in ("rows", "tokens_used", "tail_tokens")}
        for f in first["files"]
    ]
    return top


def split_top_manifest(manifests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``--split``: the shared part of the splits' manifests plus ``split_dirs`` (split name ->
    its directory), and totals over all splits: the records read (the same in every split), the
    documents of all splits, skips other than ``other_split``, rows and tokens per split. Its
    ``files`` add up the splits' document counts the same way."""
    first = manifests[0]
    names = [str(m["split"]) for m in manifests]
    drop = ("shards", "totals", "files", "split", "tokenizer_backend")
    top = {k: v for k, v in first.items() if k not in drop}
    top["split_dirs"] = {n: n for n in names}
    files = []
    for k, f in enumerate(first["files"]):
        per = [m["files"][k] for m in manifests]
        st = dict(f["stats"])
        st["docs"] = sum(int(p["stats"]["docs"]) for p in per)
        st["skipped"] = {r: v for r, v in f["stats"]["skipped"].items() if r != "other_split"}
        st["skipped"]["reserved_token"] = sum(
            int(p["stats"]["skipped"].get("reserved_token", 0)) for p in per
        )
        if not st["skipped"]["reserved_token"]:
            del st["skipped"]["reserved_token"]
        entry = {k2: v for k2, v in f.items() if k2 not in ("rows", "tokens_used", "tail_tokens")}
        entry["stats"] = st
        entry["tokens"] = sum(int(p["tokens"]) for p in per)
        entry["reserved_replaced"] = sum(int(p["reserved_replaced"]) for p in per)
        entry["rows"] = sum(int(p["rows"]) for p in per)
        entry["tokens_used"] = sum(int(p["tokens_used"]) for p in per)
        entry["tail_tokens"] = sum(int(p["tail_tokens"]) for p in per)
        files.append(entry)
    top["files"] = files
    totals = totals_from_files(files)
    totals["rows_per_split"] = {
        n: m["totals"]["rows"] for n, m in zip(names, manifests, strict=True)
    }
    totals["docs_per_split"] = {
        n: m["totals"]["docs"] for n, m in zip(names, manifests, strict=True)
    }
    top["totals"] = totals
    return top


def totals_from_files(files: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Dataset totals, computed only from the per-file entries (so merged parts add up to
    exactly what one machine would have written)."""
    skipped: dict[str, int] = {}
    for f in files:
        for k, v in f["stats"]["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    return {
        "files": len(files),
        "rows": sum(f["rows"] for f in files),
        "records": sum(f["stats"]["records"] for f in files),
        "docs": sum(f["stats"]["docs"] for f in files),
        "skipped": dict(sorted(skipped.items())),
        "files_with_errors": sum(1 for f in files if f["stats"].get("error")),
        "tokens": sum(f["tokens"] for f in files),
        "tokens_used": sum(f["tokens_used"] for f in files),
        "tail_tokens": sum(f["tail_tokens"] for f in files),
        "reserved_replaced": sum(f["reserved_replaced"] for f in files),
    }


# --------------------------------------------------------------------------- manifest -> run


def prepare_config(m: dict[str, Any]) -> PrepareConfig:
    """The config a manifest was written with (its ``config`` fingerprint)."""
    return PrepareConfig.from_dict(m["config"])

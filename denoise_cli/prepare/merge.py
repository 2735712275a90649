"""``denoise merge PART... OUT``: join the parts of a ``--num-shards N --shard-index I`` run.

Each part holds the shards of a disjoint, size-balanced subset of the input files, named by
the file's global index, so joining is a matter of linking (or copying) the shard files into
one directory and rebuilding the manifest from the per-file entries. The result is
byte-identical to a single-machine run (shards and ``denoise.json``); tests check this.

Parts made with a different config, tokenizer, input list or package version are refused with
the differences listed; a missing or duplicated part index is refused unless
``allow_partial`` (then the manifest says which parts are in).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError
from ..output.layout import TOKENIZER, epoch_dir, run_record, tmp_path
from ..output.manifest import diff, read_manifest, totals_from_files
from .finalize import write_epoch_files, write_top
from .outdir import read_identity


def _identity(part: Path) -> dict[str, Any]:
    ident = read_identity(part)
    if ident is None:
        raise ConfigError(f"{part} is not the output of `denoise prepare` (no {run_record(part)})")
    return ident


def _place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(dst)
    tmp.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def merge(
    parts: Sequence[str], out: str, *, copy: bool = False, allow_partial: bool = False
) -> dict[str, Any]:
    """Merge part outputs into ``out`` (hard links by default; ``copy=True`` copies)."""
    if not parts:
        raise ConfigError("no parts to merge")
    dirs = [Path(p) for p in parts]
    tops = [read_manifest(d) for d in dirs]
    idents = [_identity(d) for d in dirs]
    base = {k: v for k, v in idents[0].items() if k != "part"}
    for d, ident in zip(dirs[1:], idents[1:], strict=False):
        diffs = diff({k: v for k, v in ident.items() if k != "part"}, base)
        if diffs:
            raise ConfigError(
                f"{d} was made with a different configuration than {dirs[0]}:\n  "
                + "\n  ".join(diffs[:12])
            )
    infos = [ident.get("part") or {"index": 0, "count": 1} for ident in idents]
    count = infos[0]["count"]
    seen = sorted(i["index"] for i in infos)
    if any(i["count"] != count for i in infos) or len(set(seen)) != len(seen):
        raise ConfigError(f"parts overlap or come from different splits: {infos}")
    if seen != list(range(count)) and not allow_partial:
        missing = sorted(set(range(count)) - set(seen))
        raise ConfigError(
            f"parts {missing} of {count} are missing (use --allow-partial to merge anyway)"
        )
    dst = Path(out)
    if dst.exists() and any(dst.iterdir()):
        raise OutputError(f"{dst} is not empty; merge into a new directory")
    epochs = int(tops[0].get("epochs", 1))
    manifests = []
    for e in range(epochs):
        sub = epoch_dir(epochs, e)
        ms = [read_manifest(d / sub) if sub else t for d, t in zip(dirs, tops, strict=False)]
        files = sorted((f for m in ms for f in m["files"]), key=lambda f: f["index"])
        shards: list[tuple[Path, dict[str, Any]]] = []
        for d, m in zip(dirs, ms, strict=False):
            shards += [(d / sub / s["path"], s) for s in m["shards"]]
        shards.sort(key=lambda x: (x[1]["source_files"][0], x[1]["path"]))
        for src, s in shards:
            if not src.is_file() or src.stat().st_size != s["bytes"]:
                raise OutputError(f"shard {src} is missing or has the wrong size")
            _place(src, dst / sub / s["path"], copy)
        m = {k: v for k, v in ms[0].items() if k != "part"}
        m["files"] = files
        m["shards"] = [s for _, s in shards]
        m["totals"] = totals_from_files(files)
        if seen != list(range(count)):
            m["part"] = {"merged": seen, "count": count}
        tok = (dirs[0] / sub / TOKENIZER).read_text(encoding="utf-8")
        write_epoch_files(dst / sub, m, tok, epochs > 1)
        manifests.append(m)
    return write_top(dst, manifests)

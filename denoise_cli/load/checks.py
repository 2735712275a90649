"""What ``open_dataset`` checks before it serves an output (``verify="fast"``, the default: shard
sizes, row counts, no unlisted shard, each shard's rows its file's next examples; ``"sha256"``
also hashes every shard; ``"none"`` only that the shards exist). ``denoise verify`` is the full
check. See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import OutputError
from ..output.layout import DATA_DIR, MANIFEST, output_path
from ..output.shards import FORMATS, batch_arrays, sha256_file
from ..output.shuffled import KEY_COLUMNS, SHUFFLE, key_digest

#: ``open_dataset(verify=...)``: what is checked at open (see :func:`check_shard_files`).
VERIFY_MODES = ("fast", "sha256", "none")
#: file suffixes of shards, one per registered format (``output.shards.FORMATS``)
SHARD_SUFFIXES = tuple(f".{name}" for name in FORMATS)
CHAIN_COLUMNS = KEY_COLUMNS


def _bad(p: Path, what: str) -> OutputError:
    return OutputError(
        f"shard {p}: {what}; the output is damaged or was edited (`denoise verify` lists every "
        "problem; rerun `denoise prepare` to rebuild it)"
    )


def check_shard_files(out: Path, manifest: dict[str, Any], mode: str) -> None:
    """Before reading: every listed shard exists with its recorded size (``mode`` "fast") and
    sha256 ("sha256"), the row counts add up (shards = files = totals), and no unlisted shard
    file lies in a shard directory. Raises :class:`OutputError`."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    shards = manifest["shards"]
    listed: set[str] = set()
    for s in shards:
        p = output_path(out, s["path"], f"{MANIFEST}: shard path")
        listed.add(str(s["path"]))
        if not p.is_file():
            raise OutputError(f"shard {p} listed in the manifest is missing")
        if mode == "none":
            continue
        size = p.stat().st_size
        if size != int(s["bytes"]):
            raise _bad(p, f"{size:,} bytes, the manifest says {int(s['bytes']):,}")
        if mode == "sha256":
            got = sha256_file(p)
            if got != s["sha256"]:
                raise _bad(
                    p, f"sha256 {got[:12]}... differs from the manifest's {s['sha256'][:12]}..."
                )
    if mode == "none":
        return
    rows = sum(int(s["rows"]) for s in shards)
    per_file: dict[int, int] = {}
    # a shuffled output's shards mix every file: the source's shard entries count per file
    for s in manifest.get(SHUFFLE, {}).get("source_shards", shards):
        for f in s["source_files"][:1]:
            per_file[int(f)] = per_file.get(int(f), 0) + int(s["rows"])
    files = {int(f["index"]): int(f["rows"]) for f in manifest.get("files", [])}
    total = manifest.get("totals", {}).get("rows", rows)
    if rows != int(total) or any(per_file.get(i, 0) != n for i, n in files.items()):
        raise OutputError(
            f"{out / MANIFEST}: row counts disagree (shards {rows:,}, totals {int(total):,}, or "
            "per file); the manifest was edited"
        )
    for d in sorted({(out / s).parent for s in listed} | {out / DATA_DIR}):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            rel = p.relative_to(out).as_posix()
            if p.suffix in SHARD_SUFFIXES and not p.name.startswith(".") and rel not in listed:
                raise OutputError(
                    f"shard {p} is not listed in the manifest (left over from another run, or "
                    "the manifest lost it); `denoise verify` lists every problem"
                )


def check_shard_rows(
    p: Path, entry: dict[str, Any], batches: Sequence[pa.RecordBatch], chain: dict[int, int]
) -> None:
    """After mapping a shard (a few metadata reads): its row count is the manifest's, every row
    belongs to the shard's source file, and its examples continue that file's chain
    (``chain[file]``: the next ``example_index`` for unpacked rows, the last first example + 1 for
    packed rows, updated in place). Raises :class:`OutputError`."""
    rows = sum(b.num_rows for b in batches)
    if rows != int(entry["rows"]):
        raise _bad(p, f"{rows:,} rows, the manifest says {int(entry['rows']):,}")
    if "keys_sha256" in entry:  # a shard of `denoise shuffle`: its rows' (file, example) keys
        if key_digest(batches) != entry["keys_sha256"]:
            raise _bad(
                p,
                "its rows are not the ones the shuffle wrote there (source file and example "
                "columns differ): shards swapped or edited",
            )
        return
    src = entry.get("source_files") or []
    if len(src) != 1:
        return
    fidx = int(src[0])
    nxt = chain.get(fidx, 0)
    for b in batches:
        if not b.num_rows:
            continue
        names = b.schema.names
        cols = batch_arrays(b.select([n for n in names if n in CHAIN_COLUMNS]))
        if "source_file" in cols:
            sf = cols["source_file"]
            if (sf != fidx).any():
                raise _bad(
                    p, f"holds rows of file {int(sf[sf != fidx][0])}, the manifest says file {fidx}"
                )
        if "example_index" in cols:
            ei = cols["example_index"]
            if ei[0] != nxt or not np.array_equal(ei, np.arange(nxt, nxt + b.num_rows)):
                raise _bad(
                    p,
                    f"examples {int(ei[0])}..{int(ei[-1])} of file {fidx} out of order (expected "
                    f"{nxt} next): shards swapped or edited",
                )
            nxt += b.num_rows
        elif "segment_example_index" in cols:
            first = cols["segment_example_index"][:, 0]
            if first[0] < nxt or (np.diff(first) <= 0).any():
                raise _bad(
                    p, f"packed rows of file {fidx} out of example order: shards swapped or edited"
                )
            nxt = int(first[-1]) + 1
    chain[fidx] = nxt

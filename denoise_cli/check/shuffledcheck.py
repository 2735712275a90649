"""The checks of ``denoise verify`` that only a shuffled output (``denoise shuffle``,
:mod:`denoise_cli.output.shuffled`) needs: its manifest against the source's it records, and its
shards as files (schema, rows). Its rows are checked by the ordinary row checks, read through the
logical shards in their source's order: every chain (source_file, example_index, token_offset)
then proves that the shuffled rows are the source's rows in the seed's order, so a swap of rows or
of shards, or an edited seed, breaks them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import OutputError
from ..output.layout import MANIFEST
from ..output.manifest import dumps
from ..output.shards import open_shard
from ..output.shuffled import KEY_COLUMNS, SHUFFLE, key_digest, source_manifest
from .problems import Problems

__all__ = ["check_shuffle_manifest", "check_shuffled_shards"]


def check_shuffle_manifest(m: dict[str, Any], probs: Problems) -> None:
    """A shuffled dataset's manifest: its source's manifest (rebuilt from it) hashes to the
    recorded sha256, the shuffled shards hold the source's rows, ``shard_rows`` each (the last
    one the rest), and list no source file."""
    sh = m[SHUFFLE]
    want = str(sh["source_manifest_sha256"])
    got = hashlib.sha256(dumps(source_manifest(m))).hexdigest()
    if got != want:
        probs.add(
            f"{MANIFEST}: the source's manifest rebuilt from this one (shuffle.source_shards and "
            f"the keys beside them) has sha256 {got[:12]}..., shuffle.source_manifest_sha256 "
            f"says {want[:12]}... (edited)"
        )
    per = int(sh["shard_rows"])
    src = sum(int(s["rows"]) for s in sh["source_shards"])
    phys = sum(int(s["rows"]) for s in m["shards"])
    if phys != src:
        probs.add(
            f"{MANIFEST}: the shuffled shards hold {phys:,} rows, the source's shards {src:,}"
        )
    if per < 1 or len(m["shards"]) != -(-src // per):
        probs.add(
            f"{MANIFEST}: {len(m['shards'])} shuffled shard(s), {src:,} rows in shards of "
            f"shuffle.shard_rows {per:,} make {-(-src // max(per, 1))}"
        )
    seen: set[str] = set()
    for k, s in enumerate(m["shards"]):
        rel = s["path"]
        want_rows = max(min(per, src - k * per), 0)
        if int(s["rows"]) != want_rows:
            probs.add(
                f"{rel}: {int(s['rows']):,} rows in the manifest, shards of {per:,} of "
                f"{src:,} shuffled rows put {want_rows:,} here"
            )
        if s["source_files"] != []:
            probs.add(f"{rel}: source_files {s['source_files']}, a shuffled shard lists none")
        if rel in seen:
            probs.add(f"{rel}: listed twice in the manifest")
        seen.add(rel)


def check_shuffled_shards(
    out: Path, m: dict[str, Any], want_schema: pa.Schema, probs: Problems
) -> None:
    """The shards of a shuffled output as files: schema, row count and the digest of the key
    columns each (``output.shuffled.key_digest``, the manifest's ``keys_sha256``); their rows
    are checked through the logical shards they rebuild."""
    for s in m["shards"]:
        rel = s["path"]
        p = out / rel
        if not p.is_file():
            continue
        try:
            schema, _ = open_shard(p, m["format"], [])
            if not schema.equals(want_schema):
                probs.add(f"{rel}: schema differs from the one this manifest implies")
                continue
            keys = [c for c in KEY_COLUMNS if c in schema.names]
            batches = list(open_shard(p, m["format"], keys)[1])
            n = sum(rb.num_rows for rb in batches)
            got = key_digest(batches)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError, OutputError) as e:
            probs.add(f"{rel}: unreadable ({type(e).__name__}: {e})")
            continue
        if n != int(s["rows"]):
            probs.add(f"{rel}: holds {n:,} rows, the manifest says {s['rows']:,}")
        want = s.get("keys_sha256")  # absent in shuffled outputs written before it was recorded
        if want is not None and got != want:
            probs.add(
                f"{rel}: its rows' {'/'.join(keys)} hash to {got[:12]}..., the manifest's "
                f"keys_sha256 says {str(want)[:12]}... (rows swapped, reordered or replaced)"
            )

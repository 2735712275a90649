"""The end of a run: each epoch's dataset files (tokenizer, Hugging Face state, its manifest)
and the top-level manifest, written last: its presence means the output is complete. ``merge``
finishes merged parts through the same functions. See docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..output.layout import HF_INFO, HF_STATE, MANIFEST, TOKENIZER
from ..output.manifest import build_manifest, dumps, top_manifest
from ..output.shards import atomic_write_bytes, fsync_dir, hf_dataset_files
from .job import Job, Prepared, expected_efficiency_of


def finalize(
    out: Path,
    prep: Prepared,
    job: Job,
    records: list[dict[str, Any]],
    part: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write each epoch's dataset files (manifest, tokenizer, HF state) and, for several
    epochs, the top-level manifest. The manifest is written last: its presence means done."""
    cfg = prep.cfg
    manifests = []
    for e in range(cfg.epochs):
        m = build_manifest(
            cfg,
            prep.plans,
            prep.tokenizer.to_dict(),
            records,
            out=out,
            epoch=e,
            version=__version__,
            group_size=job.group_size,
            max_segments=job.max_segments,
            rows_per_shard=job.rows_per_part,
            expected_efficiency=expected_efficiency_of(prep),
        )
        if part is not None:
            m["part"] = part
        write_epoch_files(out / job.epoch_dir(e), m, prep.tokenizer.json, cfg.epochs > 1)
        manifests.append(m)
    return write_top(out, manifests)


def write_top(out: Path, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the top-level manifest (last) and return it."""
    top = top_manifest(manifests)
    atomic_write_bytes(out / MANIFEST, dumps(top))
    fsync_dir(out)
    return top


def write_epoch_files(d: Path, m: dict[str, Any], tokenizer_json: str, with_manifest: bool) -> None:
    """An epoch's directory is a complete dataset: tokenizer, HF files, (its own manifest)."""
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / TOKENIZER, tokenizer_json.encode())
    if m["format"] == "arrow":
        state, info = hf_dataset_files([s["path"] for s in m["shards"]], m["tokenizer"]["sha256"])
        atomic_write_bytes(d / HF_STATE, state)
        atomic_write_bytes(d / HF_INFO, info)
    if with_manifest:
        atomic_write_bytes(d / MANIFEST, dumps(m))

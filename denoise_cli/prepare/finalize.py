"""The end of a run: each epoch's dataset files (tokenizer, Hugging Face state, its manifest)
and the top-level manifest, written last: its presence means the output is complete (``merge``
finishes merged parts through the same functions); then the verdict on the run
(:func:`check_run`: no row written, or too many records skipped, is an ``InputError``). See
docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..output.layout import HF_INFO, HF_STATE, MANIFEST, TOKENIZER
from ..output.manifest import build_manifest, dumps, split_top_manifest, top_manifest
from ..output.shards import atomic_write_bytes, fsync_dir, hf_dataset_files, shard_format
from ..source.read import KEYS_SEEN_RECORDS
from .job import Job, Prepared, expected_efficiency_of

DEFAULT_MAX_SKIP_FRACTION = 0.5  # a run that skips more of its records fails (exit 3)


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
            ignored=prep.ignored,
            tokenizer_backend=prep.backend.to_dict() if prep.backend else None,
        )
        if part is not None:
            m["part"] = part
        if job.split:
            m["split"] = job.split
        write_epoch_files(out / job.epoch_dir(e), m, prep.tokenizer.json, cfg.epochs > 1)
        manifests.append(m)
    return write_top(out, manifests)


def write_split_top(out: Path, manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """``--split``: after every split's dataset is complete, the top-level manifest listing
    them (``output.manifest.split_top_manifest``), written last."""
    top = split_top_manifest(manifests)
    atomic_write_bytes(out / MANIFEST, dumps(top))
    fsync_dir(out)
    return top


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
    if shard_format(m["format"]).load_from_disk:
        names = [c["denoiser"] for c in sorted(m["components"], key=lambda c: int(c["index"]))]
        state, info = hf_dataset_files(
            [s["path"] for s in m["shards"]], m["tokenizer"]["sha256"], names
        )
        atomic_write_bytes(d / HF_STATE, state)
        atomic_write_bytes(d / HF_INFO, info)
    if with_manifest:
        atomic_write_bytes(d / MANIFEST, dumps(m))


def _n(x: int) -> str:
    return f"{x:,}"


def check_run(m: dict[str, Any], text_key: str, max_skip_fraction: float, out: str) -> None:
    """Refuse (``InputError``) a run that wrote no row, or skipped more than
    ``max_skip_fraction`` of its records; the message names the worst file, its reasons and,
    for ``missing_text``, the keys its records have."""
    t = m["totals"]
    records, docs = int(t["records"]), int(t["docs"])
    rows = sum(t["rows_per_epoch"]) if "rows_per_epoch" in t else int(t["rows"])
    nskipped = records - docs
    too_many = records > 0 and nskipped > max_skip_fraction * records
    if rows > 0 and not too_many:
        return
    files = m["files"]
    if not files:  # a part of a multi-machine run that was assigned no file
        return

    def bad(f: dict[str, Any]) -> int:
        st = f["stats"]
        return int(st["records"]) - int(st["docs"]) + (1 if st.get("error") else 0)

    worst = max(files, key=bad)
    what = "no row written" if rows == 0 else f"{_n(nskipped)} of {_n(records)} records skipped"
    what += f" in all {len(files)} input file(s)" if len(files) > 1 else ""
    st = worst["stats"]
    reasons = ", ".join(
        f"{k} {_n(v)}" for k, v in sorted(st["skipped"].items(), key=lambda x: -x[1])
    )
    parts = [what]
    if st.get("error"):
        parts.append(str(st["error"]))
    if st["skipped"].get("missing_text"):
        shown = min(int(st["records"]), KEYS_SEEN_RECORDS)
        keys = ", ".join(st.get("keys_seen", [])) or "none"
        parts.append(
            f"no record in the first {_n(shown)} has key {text_key!r}"
            if int(st["skipped"]["missing_text"]) == int(st["records"])
            else f"{_n(st['skipped']['missing_text'])} records lack key {text_key!r}"
        )
        parts[-1] += f"; keys seen: {keys}"
    if rows == 0 and records > 0 and nskipped < records:
        parts.append(
            f"{_n(int(t['tokens']))} tokens read, fewer than one row needs (all in file tails)"
        )
    if rows == 0 and records == 0 and not any(f["stats"].get("error") for f in files):
        parts.append("the inputs hold no records")
    parts.append(
        f"the output in {out} is complete but "
        + ("empty" if rows == 0 else f"holds only {_n(docs)} documents")
    )
    if rows > 0:
        parts.append(
            f"pass --max-skip-fraction {min(1.0, round(nskipped / records + 0.005, 2))} to accept"
        )
    raise InputError(
        worst["name"],
        f"{_n(int(st['records']) - int(st['docs']))} of {_n(int(st['records']))} records skipped"
        + (f" ({reasons})" if reasons else ""),
        "nothing_written" if rows == 0 else "too_many_skipped",
        "; ".join(parts),
    )

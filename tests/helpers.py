"""What the tests share: paths of the data in the repository, a config helper, the factory
of prepared outputs behind the session fixture ``outputs`` (conftest.py), and the shard
rewriting that fault-injection tests use."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from denoise_cli.config import PrepareConfig, load_mixture
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"  # three small jsonl.zst files
ONE = SAMPLE / "en-prose-00.jsonl.zst"  # one of them: half the work for most outputs
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")


def write_arrow_shard(p: Path, a: dict[str, np.ndarray]) -> pa.RecordBatch:
    """Overwrite the Arrow shard ``p`` with columns ``a`` in its own schema (one record batch,
    returned); the manifest is left alone (:func:`refresh_shard_entry`)."""
    schema = pa.ipc.open_stream(pa.memory_map(str(p))).schema
    cols = []
    for f in schema:
        v = a[f.name]
        if pa.types.is_fixed_size_list(f.type):
            cols.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
        else:
            cols.append(pa.array(v))
    rb = pa.RecordBatch.from_arrays(cols, schema=schema)
    with pa.OSFile(str(p), "wb") as fh, pa.ipc.new_stream(fh, schema) as w:
        w.write_batch(rb)
    return rb


def refresh_shard_entry(m: dict[str, Any], rel: str, p: Path) -> dict[str, Any] | None:
    """Set the size and sha256 of shard ``rel`` in manifest ``m`` to those of file ``p``, so
    that only checks past the checksums can notice an edit; returns the entry."""
    for s in m["shards"]:
        if s["path"] == rel:
            s["bytes"] = p.stat().st_size
            s["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
            return s  # type: ignore[no-any-return]
    return None


def read_output_table(out: Path) -> pa.Table:
    """All rows of an output read with pyarrow alone (no denoise code: a reference), shard by
    shard in manifest order."""
    import orjson
    import pyarrow.parquet as pq

    m = orjson.loads((out / "denoise.json").read_bytes())
    parts = []
    for s in m["shards"]:
        p = out / s["path"]
        if m["format"] == "parquet":
            parts.append(pq.read_table(p))
        else:
            with pa.OSFile(str(p)) as f:
                parts.append(pa.ipc.open_stream(f).read_all())
    return pa.concat_tables(parts)


def make_cfg(mixture: str = "ul2", **kw: Any) -> PrepareConfig:
    """A prepare config of a preset (or mixture spec) with the other fields given by name."""
    return PrepareConfig(mixture=load_mixture(mixture), **kw)


class Outputs:
    """Prepared outputs, made once per session for each distinct (inputs, config, tokenizer):
    ``outputs(cfg, inputs, tokenizer=...)`` returns the directory. They are shared: a test
    that changes an output works on ``outputs.copy(..., dest)``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: dict[str, Path] = {}

    def __call__(
        self,
        cfg: PrepareConfig,
        inputs: Sequence[Path | str] = (SAMPLE,),
        *,
        tokenizer: str | None = None,
    ) -> Path:
        key = json.dumps(
            [sorted(map(str, inputs)), cfg.fingerprint_dict(), tokenizer], sort_keys=True
        )
        if key not in self.made:
            out = self.base / f"out{len(self.made)}"
            prepare(
                [str(p) for p in inputs],
                str(out),
                cfg,
                tokenizer=tokenizer,
                workers=1,
                progress=False,
            )
            self.made[key] = out
        return self.made[key]

    def copy(
        self,
        cfg: PrepareConfig,
        dest: Path,
        inputs: Sequence[Path | str] = (SAMPLE,),
        *,
        tokenizer: str | None = None,
    ) -> Path:
        """A private copy of the output at ``dest`` (for tests that change it)."""
        shutil.copytree(self(cfg, inputs, tokenizer=tokenizer), dest, symlinks=True)
        return dest

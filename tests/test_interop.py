"""Interop: the denoiser names travel with the shards (Arrow / Parquet schema metadata, the HF
``dataset_info.json`` description), and the documented HF paths load both formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from helpers import ONE, T5_TINY, Outputs, make_cfg

from denoise_cli import open_dataset
from denoise_cli.config import Lengths
from denoise_cli.load import read_manifest
from denoise_cli.output.schema import META_COMPONENTS, denoiser_names

LENGTHS = Lengths("encoder-decoder", 256, 128)


def _mixture_names(mixture: str) -> list[str]:
    """The names the user's mixture gives its components, in order (from the config, not from
    the output)."""
    return [d.name for d in make_cfg(mixture).mixture.denoisers]


def _schemas(out: Path, fmt: str) -> list:
    files = sorted((out / "data").glob(f"*.{fmt}"))
    assert files
    if fmt == "arrow":
        return [ipc.open_stream(str(f)).schema for f in files]
    return [pq.read_schema(f) for f in files]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
@pytest.mark.parametrize("pack", [0, 2])
def test_denoiser_names_in_schema_metadata(outputs: Outputs, fmt: str, pack: int) -> None:
    cfg = make_cfg("ul2", lengths=LENGTHS, format=fmt, pack_factor=pack)
    out = outputs(cfg, [ONE], tokenizer=T5_TINY)
    m = read_manifest(out)
    names = _mixture_names("ul2")
    assert len(set(names)) == len(names) == 7
    for sch in _schemas(out, fmt):
        assert denoiser_names(sch) == names
        assert json.loads(sch.metadata[META_COMPONENTS]) == m["components"]
    col = "segment_denoiser" if pack else "denoiser"
    d = np.asarray(open_dataset(out)[:][col])
    # every value the column holds names a component
    assert d.min() >= (-1 if pack else 0) and d.max() < len(names)


def test_hf_load_from_disk_names_the_denoisers(outputs: Outputs) -> None:
    datasets = pytest.importorskip("datasets")
    out = outputs(make_cfg("ul2", lengths=LENGTHS), [ONE], tokenizer=T5_TINY)
    before = sorted(p.name for p in (out / "data").iterdir())
    ds = datasets.load_from_disk(str(out))
    names = _mixture_names("ul2")
    want = ", ".join(f"{i} = {n}" for i, n in enumerate(names))
    assert want in ds.info.description
    assert ds.features["denoiser"].dtype == "int8"  # the column's bytes are unchanged
    np.testing.assert_array_equal(
        np.asarray(ds["denoiser"]), np.asarray(open_dataset(out)[:]["denoiser"])
    )
    assert sorted(p.name for p in (out / "data").iterdir()) == before  # no cache file in OUT


def test_hf_load_dataset_parquet(outputs: Outputs, tmp_path: Path) -> None:
    """The README's path for ``--format parquet``: ``load_dataset("parquet", data_dir=OUT/data)``."""
    datasets = pytest.importorskip("datasets")
    out = outputs(make_cfg("ul2", lengths=LENGTHS, format="parquet"), [ONE], tokenizer=T5_TINY)
    ds = datasets.load_dataset(
        "parquet", data_dir=str(out / "data"), split="train", cache_dir=str(tmp_path / "hf")
    )
    ref = open_dataset(out)[:]
    assert len(ds) == read_manifest(out)["totals"]["rows"] == len(ref["input_ids"])
    for col in ("input_ids", "labels", "denoiser", "example_index"):
        np.testing.assert_array_equal(np.asarray(ds[col]), np.asarray(ref[col]))
    # the shards keep the names even though HF rewrites the schema metadata of its cache
    assert all(denoiser_names(s) == _mixture_names("ul2") for s in _schemas(out, "parquet"))

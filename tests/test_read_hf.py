"""``hf://`` inputs without a network: a local stand-in filesystem registered under fsspec's
"hf" protocol in place of huggingface_hub's ``HfFileSystem`` (listing, naming, reading and
splitting a Parquet file go through the same code as for the Hub), and the one-line messages
when the filesystem package is missing or the Hub cannot be reached."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from test_read_parquet import T5_TINY, fineweb_rows, write_parquet

from denoise_cli.check.verify import verify
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.prepare.run import prepare
from denoise_cli.source.discover import find_inputs

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
HUB_DIR = "datasets/org/fineweb-mini/sample/10BT"


class HubStandIn(DirFileSystem):
    """The Hub as a local directory: ``hf://datasets/ORG/NAME/...`` -> ``root/datasets/...``."""

    protocol = "hf"
    cachable = False
    root = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(path=self.root, fs=LocalFileSystem())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in Hub holding one dataset directory (two FineWeb-style Parquet files, one
    jsonl.zst file); yields that directory. The real "hf" implementation is put back after."""
    root = tmp_path / "hub"
    d = root / HUB_DIR
    d.mkdir(parents=True)
    write_parquet(d / "000_00000.parquet", fineweb_rows(600), rg=60)
    write_parquet(d / "000_00001.parquet", fineweb_rows(90, seed=4), rg=30)
    shutil.copy(next(SAMPLE.glob("*.jsonl.zst")), d / "extra.jsonl.zst")
    monkeypatch.setattr(HubStandIn, "root", str(root))
    # fsspec's table of imported implementations: monkeypatch puts the real one back after
    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, "hf", HubStandIn)
    assert fsspec.get_filesystem_class("hf") is HubStandIn
    return d


def shard_bytes(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").iterdir())
    }


def cfg_of(unit_bytes: int) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=32,
        group_size=32,
        unit_bytes=unit_bytes,
    )


def test_hf_directory_lists_like_a_local_copy(hub: Path) -> None:
    url = f"hf://{HUB_DIR}/"
    remote = find_inputs([url])
    local = find_inputs([str(hub)])
    assert [f.name for f in remote] == [f.name for f in local]
    assert [f.size for f in remote] == [f.size for f in local]
    assert all(f.path.startswith(f"hf://{HUB_DIR}/") for f in remote)
    glob = find_inputs([f"hf://{HUB_DIR}/*.parquet"])
    assert [f.name for f in glob] == ["000_00000.parquet", "000_00001.parquet"]


@pytest.mark.parametrize("split", [False, True])
def test_hf_prepare_equals_the_local_run(hub: Path, tmp_path: Path, split: bool) -> None:
    """Same examples from hf:// as from a local copy, with the large Parquet file read whole or
    split into units of row groups (its footer read through the stand-in)."""
    unit = (hub / "000_00000.parquet").stat().st_size // 3 if split else 0
    cfg = cfg_of(unit)
    url = f"hf://{HUB_DIR}/"
    mr = prepare([url], str(tmp_path / "r"), cfg, tokenizer=T5_TINY, workers=1, progress=False)
    ml = prepare([str(hub)], str(tmp_path / "l"), cfg, tokenizer=T5_TINY, progress=False)
    assert shard_bytes(tmp_path / "r") == shard_bytes(tmp_path / "l")
    assert mr["files"] == ml["files"]
    assert sum("unit" in f for f in mr["files"]) == (3 if split else 0)
    rep = verify(tmp_path / "r", sources=[url])
    assert rep.source_files == len(mr["files"])


def _run_cli(
    args: list[str], env: dict[str, str], poison: str = ""
) -> subprocess.CompletedProcess[str]:
    """``denoise ARGS`` in a fresh process (``poison``: a module made unimportable there)."""
    code = (
        "import sys\n"
        + (f"sys.modules[{poison!r}] = None\n" if poison else "")
        + "from denoise_cli.cli import main\n"
        + f"sys.argv = ['denoise', *{args!r}]\n"
        + "main()\n"
    )
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120
    )


@pytest.mark.parametrize(
    "url,module,extra",
    [
        (f"hf://{HUB_DIR}/", "huggingface_hub", "hf"),
        ("s3://bucket/raw/", "s3fs", "s3"),
        ("gs://bucket/raw/", "gcsfs", "gcs"),
    ],
)
def test_missing_filesystem_is_one_line_naming_the_extra(
    tmp_path: Path, url: str, module: str, extra: str
) -> None:
    r = _run_cli(["prepare", url, str(tmp_path / "o")], {}, poison=module)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"pip install 'denoise-cli[{extra}]'" in lines[0]
    assert not (tmp_path / "o").exists()
    # the extra exists in pyproject.toml
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert f"\n{extra} = [" in text


def test_hub_offline_message_names_the_extra_and_what_to_check(tmp_path: Path) -> None:
    """The real HfFileSystem against an endpoint where nothing listens (no network used)."""
    pytest.importorskip("huggingface_hub")
    with socket.socket() as s:  # a free local port, closed again: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = _run_cli(["prepare", "hf://datasets/org/name/sample/", str(tmp_path / "o")], env)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "cannot list input hf://datasets/org/name/sample/" in lines[0]
    assert "'denoise-cli[hf]'" in lines[0] and "HF_ENDPOINT" in lines[0]
    r = _run_cli(
        ["prepare", "hf://datasets/org/name/sample/", str(tmp_path / "o")], {"HF_HUB_OFFLINE": "1"}
    )
    assert r.returncode != 0 and "HF_HUB_OFFLINE" in r.stderr and "denoise-cli[hf]" in r.stderr

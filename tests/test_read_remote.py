"""Inputs behind fsspec URLs (denoise_cli.fs through read.find_inputs / iter_batches): a real
S3 protocol server (moto's threaded server on 127.0.0.1) read through s3fs, and file:// URLs."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.prepare.run import prepare
from denoise_cli.source.discover import find_inputs
from denoise_cli.source.fs import is_url, parse_storage_options
from denoise_cli.source.read import FileStats, iter_batches

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")


def shard_bytes(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").iterdir())
    }


@pytest.fixture(scope="module")
def local_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input tree: the sample's two jsonl.zst files and a FineWeb-style Parquet file in a
    subdirectory, plus files that are not inputs (hidden, other extension)."""
    raw = tmp_path_factory.mktemp("raw")
    for p in SAMPLE.glob("*.jsonl.zst"):
        shutil.copy(p, raw / p.name)
    (raw / "fw").mkdir()
    rows = [
        {"text": f"parquet document {i} " * (1 + i % 7), "id": str(i), "url": "u", "score": 0.1}
        for i in range(120)
    ]
    pq.write_table(pa.Table.from_pylist(rows), raw / "fw" / "000.parquet", row_group_size=25)
    (raw / ".hidden.jsonl").write_bytes(b'{"text": "not an input"}\n')
    (raw / "README.md").write_bytes(b"not an input\n")
    return raw


@pytest.fixture(scope="module")
def s3(local_raw: Path) -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 holding ``local_raw`` under s3://bucket/raw/; yields the
    storage options that reach it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        opts = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
        fs.mkdir("bucket")
        for p in sorted(local_raw.rglob("*")):
            if p.is_file():
                fs.pipe(f"bucket/raw/{p.relative_to(local_raw).as_posix()}", p.read_bytes())
        yield opts
    finally:
        server.stop()


def cfg() -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=64,
        group_size=64,
    )


def test_s3_inputs_are_found_like_local_ones(s3: dict[str, Any], local_raw: Path) -> None:
    local = find_inputs([str(local_raw)])
    remote = find_inputs(["s3://bucket/raw/"], s3)
    assert [f.name for f in remote] == [f.name for f in local]
    assert [f.name for f in remote] == [
        "en-prose-00.jsonl.zst",
        "en-prose-01.jsonl.zst",
        "fw/000.parquet",
    ]
    assert [f.size for f in remote] == [f.size for f in local]
    assert remote[0].path == "s3://bucket/raw/en-prose-00.jsonl.zst"
    assert [f.name for f in find_inputs(["s3://bucket/raw/**/*.parquet"], s3)] == ["fw/000.parquet"]
    assert [f.name for f in find_inputs(["s3://bucket/raw/*.zst"], s3)] == [
        "en-prose-00.jsonl.zst",
        "en-prose-01.jsonl.zst",
    ]
    (one,) = find_inputs(["s3://bucket/raw/fw/000.parquet"], s3)
    assert one.name == "000.parquet" and one.compression == "parquet"
    for bad, msg in [
        ("s3://bucket/raw/nope.jsonl", "does not exist"),
        ("s3://bucket/raw/README.md", "unsupported extension"),
        ("s3://bucket/raw/*.txt", "matches nothing"),
        ("s3://nobucket/x/", "does not exist|cannot list"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            find_inputs([bad], s3)


def test_s3_records_equal_local_records(s3: dict[str, Any], local_raw: Path) -> None:
    for lf, rf in zip(
        find_inputs([str(local_raw)]), find_inputs(["s3://bucket/raw/"], s3), strict=True
    ):
        ls, rs = FileStats(), FileStats()
        lt = [t for b in iter_batches(lf, stats=ls, batch_chars=50_000) for t in b.texts]
        rt = [t for b in iter_batches(rf, stats=rs, batch_chars=50_000) for t in b.texts]
        assert lt == rt and len(lt) > 10
        assert ls.to_dict() == rs.to_dict()
        # resume inside the remote file
        mid = rs.records // 2
        st = FileStats()
        tail = [t for b in iter_batches(rf, stats=st, start_record=mid) for t in b.texts]
        assert tail == lt[mid:]


@pytest.mark.slow
def test_prepare_from_s3_equals_a_local_run(
    s3: dict[str, Any], local_raw: Path, tmp_path: Path
) -> None:
    """prepare s3://bucket/raw/ -> a local directory, through the CLI with --storage-options and
    two worker processes (the options travel with the inputs): the same shards and manifest
    totals as a run on the local copy."""
    ref = tmp_path / "local"
    m = prepare([str(local_raw)], str(ref), cfg(), tokenizer=T5_TINY, workers=1, progress=False)
    out = tmp_path / "from-s3"
    res = CliRunner().invoke(
        app,
        [
            "prepare",
            "s3://bucket/raw/",
            str(out),
            "-I",
            "64",
            "-T",
            "64",
            "--shard-size",
            "64",
            "--group-size",
            "64",
            "--tokenizer",
            T5_TINY,
            "--workers",
            "2",
            "--storage-options",
            json.dumps(s3),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert shard_bytes(out) == shard_bytes(ref) and len(shard_bytes(ref)) >= 3
    mr = json.loads((out / "denoise.json").read_text())
    assert mr["totals"] == m["totals"]
    assert [f["name"] for f in mr["files"]] == [f["name"] for f in m["files"]]
    assert "testing" not in (out / "denoise.json").read_text()  # no credentials in the output


def test_file_urls_name_files_like_paths(local_raw: Path, tmp_path: Path) -> None:
    url = local_raw.as_uri()
    assert is_url(url) and not is_url(str(local_raw))
    local = find_inputs([str(local_raw)])
    remote = find_inputs([url + "/"])
    assert [f.name for f in remote] == [f.name for f in local]
    assert [f.path for f in remote] == [Path(f.path).as_uri() for f in local]
    for lf, rf in zip(local, remote, strict=True):
        ls, rs = FileStats(), FileStats()
        assert [b.texts for b in iter_batches(lf, stats=ls)] == [
            b.texts for b in iter_batches(rf, stats=rs)
        ]
        assert ls.to_dict() == rs.to_dict()
    out = tmp_path / "o"
    m1 = prepare([url], str(out), cfg(), tokenizer=T5_TINY, workers=1, progress=False)
    m2 = prepare(
        [str(local_raw)], str(tmp_path / "p"), cfg(), tokenizer=T5_TINY, workers=1, progress=False
    )
    assert shard_bytes(out) == shard_bytes(tmp_path / "p") and m1["totals"] == m2["totals"]


def test_missing_filesystem_names_the_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed: the missing-extra message cannot show")
    with pytest.raises(ConfigError, match=r"pip install 'denoise-cli\[gcs\]'"):
        find_inputs(["gs://bucket/data/*.parquet"])
    with pytest.raises(ConfigError, match="unsupported URL scheme nosuch://"):
        find_inputs(["nosuch://bucket/x.jsonl"])
    res = CliRunner().invoke(app, ["prepare", "gs://bucket/x.parquet", "out", "--quiet"])
    assert res.exit_code == 2
    assert "denoise-cli[gcs]" in res.output and "Traceback" not in res.output


def test_storage_options_must_be_a_json_object() -> None:
    assert parse_storage_options(None) == {}
    assert parse_storage_options('{"anon": true}') == {"anon": True}
    for bad in ("[1]", "{anon: true}"):
        with pytest.raises(ConfigError, match="--storage-options"):
            parse_storage_options(bad)
    res = CliRunner().invoke(app, ["prepare", "x.jsonl", "out", "--storage-options", "nope"])
    assert res.exit_code == 2 and "--storage-options" in res.output

"""OUT behind an fsspec URL (prepare.publish, output.remote): a real S3 protocol server (moto's
threaded server on 127.0.0.1) written and read through s3fs, and file:// URLs. The reference is
always a run into a local directory on the same inputs: the examples must be the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from denoise_cli.check.inspect import inspect_rows
from denoise_cli.check.stats import compute
from denoise_cli.check.verify import verify
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, OutputError
from denoise_cli.load.dataset import open_dataset
from denoise_cli.output.layout import rel_problem
from denoise_cli.output.remote import RemoteOutput, localize
from denoise_cli.prepare.merge import merge
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")
CLI_ARGS = ["-I", "64", "-T", "64", "--shard-size", "64", "--group-size", "64"]


def cfg(seed: int = 0, epochs: int = 1) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("ul2"),
        lengths=Lengths("encoder-decoder", 64, 64),
        shard_rows=64,
        group_size=64,
        seed=seed,
        epochs=epochs,
    )


def tree(out: Path) -> dict[str, str]:
    """Every file of an output but its resume state, by relative path."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.parts
    }


def local_shards(out: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "data").iterdir())
    }


def bucket_shards(fs: Any, prefix: str) -> dict[str, str]:
    fs.invalidate_cache()
    return {
        k.rsplit("/", 1)[1]: hashlib.sha256(fs.cat_file(k)).hexdigest()
        for k in sorted(fs.find(f"{prefix}/data"))
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    for p in SAMPLE.glob("*.jsonl.zst"):
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(scope="module")
def reference(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same inputs prepared into a local directory."""
    out = tmp_path_factory.mktemp("ref") / "out"
    prepare([str(raw)], str(out), cfg(), tokenizer=T5_TINY, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def s3(raw: Path) -> Iterator[dict[str, Any]]:
    """A moto S3 server on 127.0.0.1 holding ``raw`` under s3://objout/raw/; yields the storage
    options that reach it, and sets the standard AWS variables so that the commands without
    --storage-options (verify, stats, inspect) reach it too. (moto keeps its buckets in memory
    shared by every server of this process: a bucket of our own, removed at the end.)"""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    try:
        host, port = server.get_host_and_port()
        opts = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
        os.environ.update(env_for(opts))
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
        fs.mkdir("objout")
        for p in sorted(raw.iterdir()):
            fs.pipe(f"objout/raw/{p.name}", p.read_bytes())
        yield opts
        fs.invalidate_cache()
        fs.rm("objout", recursive=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def env_for(opts: dict[str, Any]) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": opts["key"],
        "AWS_SECRET_ACCESS_KEY": opts["secret"],
        "AWS_ENDPOINT_URL": opts["endpoint_url"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def s3fs_of(opts: dict[str, Any]) -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **opts)


def assert_same_examples(url: str, opts: dict[str, Any] | None, ref: Path, cache: Path) -> None:
    a = open_dataset(url, storage_options=opts, cache_dir=cache)
    b = open_dataset(ref)
    assert len(a) == len(b) > 100
    ra, rb = a[: len(a)], b[: len(b)]
    for col in ("input_ids", "labels"):
        assert ra[col].tobytes() == rb[col].tobytes()


def test_prepare_s3_to_s3_equals_a_local_run(
    s3: dict[str, Any], reference: Path, tmp_path: Path
) -> None:
    """s3://objout/raw/ -> s3://objout/out/ with two worker processes: the same shards (bytes),
    the same examples through open_dataset, and verify/stats/inspect work on the URL."""
    stage = tmp_path / "stage"
    m = prepare(
        ["s3://objout/raw/"],
        "s3://objout/out/",
        cfg(),
        tokenizer=T5_TINY,
        workers=2,
        progress=False,
        storage_options=s3,
        staging_dir=str(stage),
    )
    fs = s3fs_of(s3)
    assert bucket_shards(fs, "objout/out") == local_shards(reference)
    ref_m = json.loads((reference / "denoise.json").read_bytes())
    assert m["totals"] == ref_m["totals"]
    assert json.loads(fs.cat_file("objout/out/denoise.json")) == m
    assert fs.cat_file("objout/out/tokenizer.json") == (reference / "tokenizer.json").read_bytes()
    assert not fs.exists("objout/out/.denoise/lock")  # released
    assert list(stage.iterdir()) == []  # staging directories are removed
    assert "testing" not in fs.cat_file("objout/out/denoise.json").decode()
    assert_same_examples("s3://objout/out/", s3, reference, tmp_path / "cache")
    # the read commands, on the URL (credentials and endpoint from the AWS variables)
    os.environ["DENOISE_CACHE_DIR"] = str(tmp_path / "cache2")
    try:
        rep = verify("s3://objout/out/")
        assert rep.rows == m["totals"]["rows"]
        assert compute("s3://objout/out/").rows == compute(reference).rows
        assert "row 0" in inspect_rows("s3://objout/out/", n=1)
    finally:
        del os.environ["DENOISE_CACHE_DIR"]
    # a rerun of a complete output is a no-op resume, with the same bytes
    prepare(
        ["s3://objout/raw/"],
        "s3://objout/out/",
        cfg(),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
        storage_options=s3,
    )
    assert bucket_shards(fs, "objout/out") == local_shards(reference)


def test_localize_keeps_whole_files_and_refreshes_on_a_new_manifest(
    s3: dict[str, Any], raw: Path, tmp_path: Path
) -> None:
    """The cache copy: a second open downloads nothing; a damaged cached shard (other size) is
    fetched again; a new run at the URL gets a new copy."""
    url = "s3://objout/cache-test/"
    prepare(
        [str(raw)], url, cfg(), tokenizer=T5_TINY, workers=1, progress=False, storage_options=s3
    )
    d1 = localize(url, s3, tmp_path)
    shard = sorted((d1 / "data").iterdir())[0]
    stamp = {p: p.stat().st_mtime_ns for p in (d1 / "data").iterdir()}
    assert localize(url, s3, tmp_path) == d1
    assert {p: p.stat().st_mtime_ns for p in (d1 / "data").iterdir()} == stamp
    good = shard.read_bytes()
    shard.write_bytes(good[:100])
    localize(url, s3, tmp_path)
    assert shard.read_bytes() == good
    assert not (d1 / ".denoise" / "parts").exists()  # resume state is not copied
    prepare(
        [str(raw)],
        url,
        cfg(seed=1),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
        storage_options=s3,
        overwrite=True,
    )
    d2 = localize(url, s3, tmp_path)
    assert d2 != d1
    assert verify(d2).rows > 0


def _parts(fs: Any, prefix: str) -> int:
    fs.invalidate_cache()
    try:
        return len([k for k in fs.ls(f"{prefix}/.denoise/parts") if k.endswith(".json")])
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_kill9_then_resume_against_the_bucket(
    s3: dict[str, Any], reference: Path, tmp_path: Path
) -> None:
    """SIGKILL the CLI (and its workers) after >= 1 part was published, twice; every shard in
    the bucket is then whole (a shard of the uninterrupted run), there is no manifest yet, and
    the rerun (which takes over the dead run's lock) ends byte-identical to a local run."""
    fs = s3fs_of(s3)
    ref = local_shards(reference)
    env = {**os.environ, **env_for(s3), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "denoise_cli", "prepare", "s3://objout/raw/", "s3://objout/k/"]
    cmd += [*CLI_ARGS, "--tokenizer", T5_TINY, "--quiet", "--staging-dir", str(tmp_path)]
    kills = 0
    for target in (1, 8):
        p = subprocess.Popen(
            [*cmd, "--workers", "2"],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        while p.poll() is None and _parts(fs, "objout/k") < target:
            time.sleep(0.02)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            kills += 1
        p.communicate()
        got = bucket_shards(fs, "objout/k")
        assert got and all(ref[name] == h for name, h in got.items())
        if p.returncode != 0:
            assert not fs.exists("objout/k/denoise.json")
    assert kills >= 1
    assert fs.exists("objout/k/.denoise/lock")  # the dead run's
    assert list(tmp_path.glob("denoise-stage-*"))  # what the killed processes left
    res = subprocess.run([*cmd, "--workers", "1"], env=env, capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode()
    assert "resuming: " in res.stderr.decode()  # work from the bucket was reused
    assert not list(tmp_path.glob("denoise-stage-*"))  # removed by the rerun, its own too
    assert bucket_shards(fs, "objout/k") == ref
    m = json.loads(fs.cat_file("objout/k/denoise.json"))
    assert m["totals"] == json.loads((reference / "denoise.json").read_bytes())["totals"]
    res = subprocess.run(
        [sys.executable, "-m", "denoise_cli", "verify", "s3://objout/k/"],
        env={**env, "DENOISE_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr.decode()


def test_foreign_prefix_is_refused_and_overwrite_keeps_foreign_keys(
    s3: dict[str, Any], raw: Path
) -> None:
    fs = s3fs_of(s3)
    fs.pipe("objout/foreign/notes.txt", b"mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a denoise output"):
            prepare(
                [str(raw)],
                "s3://objout/foreign/",
                cfg(),
                tokenizer=T5_TINY,
                workers=1,
                progress=False,
                storage_options=s3,
                overwrite=overwrite,
            )
    fs.invalidate_cache()
    assert fs.find("objout/foreign") == ["objout/foreign/notes.txt"]
    # our own output with a foreign key next to it: another config needs --overwrite, which
    # removes only our entries
    url = "s3://objout/ours/"
    prepare(
        [str(raw)], url, cfg(), tokenizer=T5_TINY, workers=1, progress=False, storage_options=s3
    )
    fs.pipe("objout/ours/notes.txt", b"mine")
    fs.pipe("objout/ours/data/00099-00000.arrow", b"stray shard")
    with pytest.raises(OutputError, match="different configuration"):
        prepare(
            [str(raw)],
            url,
            cfg(seed=5),
            tokenizer=T5_TINY,
            workers=1,
            progress=False,
            storage_options=s3,
        )
    prepare(
        [str(raw)],
        url,
        cfg(seed=5),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
        storage_options=s3,
        overwrite=True,
    )
    fs.invalidate_cache()
    assert fs.cat_file("objout/ours/notes.txt") == b"mine"
    assert not fs.exists("objout/ours/data/00099-00000.arrow")
    assert json.loads(fs.cat_file("objout/ours/denoise.json"))["seed"] == 5


def test_a_live_lock_is_respected(s3: dict[str, Any], raw: Path) -> None:
    """A lock object held by a live process on this host (this test's) refuses a run; one of a
    dead process is taken over."""
    fs = s3fs_of(s3)
    held = {"host": socket.gethostname(), "pid": os.getpid(), "token": "x", "time": time.time()}
    fs.pipe("objout/locked/.denoise/lock", orjson.dumps(held))
    with pytest.raises(OutputError, match="locked by a running"):
        prepare(
            [str(raw)],
            "s3://objout/locked/",
            cfg(),
            tokenizer=T5_TINY,
            workers=1,
            progress=False,
            storage_options=s3,
        )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    held["pid"] = int(dead.stdout)
    fs.pipe("objout/locked/.denoise/lock", orjson.dumps(held))
    m = prepare(
        [str(raw)],
        "s3://objout/locked/",
        cfg(),
        tokenizer=T5_TINY,
        workers=1,
        progress=False,
        storage_options=s3,
    )
    assert m["totals"]["rows"] > 0


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(done.stdout)


def _race(out: RemoteOutput, monkeypatch: pytest.MonkeyPatch, seen: Any) -> None:
    """Make ``out`` see the lock as ``seen`` (a ``_read_lock`` result): what a run reads just
    before another run writes its own lock."""
    monkeypatch.setattr(out, "_read_lock", lambda: seen)


@pytest.mark.parametrize("store", ["s3", "file"])
def test_two_runs_that_both_saw_no_lock_cannot_both_take_it(
    s3: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """Run A holds the lock; run B read the prefix before A wrote it (no lock seen). B's
    create-if-absent fails, so B is refused and A's lock stays A's (a plain write would have
    replaced it, and B's read-back would have found its own token)."""
    if store == "s3":
        url, opts = "s3://objout/race/", s3
    else:
        url, opts = (tmp_path / "race").as_uri(), {}
    a, b = RemoteOutput(url, opts), RemoteOutput(url, opts)
    with a.lock():
        mine = a.read_json(".denoise/lock")
        assert mine is not None
        _race(b, monkeypatch, (None, None))
        with pytest.raises(OutputError, match="took the lock at the same time"):
            with b.lock():
                pass
        a.refresh()
        assert a.read_json(".denoise/lock") == mine
        # no temporary left behind by either (file:// writes a temporary, then links it)
        assert [n for n in a.listdir(".denoise") if n.startswith(".tmp")] == []
    a.refresh()
    assert a.read_json(".denoise/lock") is None  # released by its holder


def test_a_lock_temporary_removed_by_the_holder_refuses_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file://: the run holding the lock clears temporaries (``remove_temporaries``) while
    another run is between writing its temporary lock and linking it: that run is refused with
    the lock message, not a crash, and the holder's lock is untouched."""
    url = (tmp_path / "gone").as_uri()
    a, b = RemoteOutput(url), RemoteOutput(url)
    with a.lock():
        mine = a.read_json(".denoise/lock")
        _race(b, monkeypatch, (None, None))
        plain = b.fs.pipe_file

        def then_cleared(path: str, data: bytes, **kw: Any) -> None:
            plain(path, data, **kw)
            a.remove_temporaries()

        monkeypatch.setattr(b.fs, "pipe_file", then_cleared)
        with pytest.raises(OutputError, match="took the lock at the same time"):
            with b.lock():
                pass
        a.refresh()
        assert a.read_json(".denoise/lock") == mine


def test_two_runs_taking_over_one_stale_lock_cannot_both_take_it(
    s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead run's lock is taken over by A; run B had read the same dead lock (and its ETag)
    before A replaced it. On S3 the takeover is conditional on that version: B is refused."""
    fs = s3fs_of(s3)
    url = "s3://objout/stale/"
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "d", "time": time.time()}
    fs.pipe("objout/stale/.denoise/lock", orjson.dumps(dead))
    a, b = RemoteOutput(url, s3), RemoteOutput(url, s3)
    assert b.conditional_writes
    b.refresh()
    seen_by_b = b._read_lock()
    assert seen_by_b[0] == dead and seen_by_b[1]
    with a.lock():
        mine = a.read_json(".denoise/lock")
        assert mine is not None and mine["token"] != "d"
        _race(b, monkeypatch, seen_by_b)
        with pytest.raises(OutputError, match="took the lock at the same time"):
            with b.lock():
                pass
        a.refresh()
        assert a.read_json(".denoise/lock") == mine


def test_resume_reads_only_keys_that_pass_the_path_rules(
    s3: dict[str, Any], raw: Path, reference: Path
) -> None:
    """A commit record in the bucket whose carry path leaves the output is refused, not used."""
    fs = s3fs_of(s3)
    url = "s3://objout/crafted/"
    prepare(
        [str(raw)], url, cfg(), tokenizer=T5_TINY, workers=1, progress=False, storage_options=s3
    )
    fs.invalidate_cache()
    fs.rm("objout/crafted/.denoise/files", recursive=True)  # file 0 unfinished again
    rec_key = "objout/crafted/.denoise/parts/E000-00000-00002.json"
    rec = json.loads(fs.cat_file(rec_key))
    rec["carry"] = "../../elsewhere.npy"
    fs.pipe(rec_key, orjson.dumps(rec))
    with pytest.raises(OutputError, match=r"contains '\.\.'"):
        prepare(
            [str(raw)], url, cfg(), tokenizer=T5_TINY, workers=1, progress=False, storage_options=s3
        )
    assert rel_problem("../x") and rel_problem("/x") and not rel_problem("data/x.arrow")


def test_file_url_output(raw: Path, reference: Path, tmp_path: Path) -> None:
    """A file:// OUT goes through the same staging and publishing (uploads renamed into place)
    and gives the local run's bytes; merge reads a URL part."""
    out = tmp_path / "o"
    m = prepare(
        [str(raw)],
        out.as_uri() + "/",
        cfg(),
        tokenizer=T5_TINY,
        workers=2,
        progress=False,
        staging_dir=str(tmp_path / "st"),
    )
    assert local_shards(out) == local_shards(reference)
    assert not list(out.rglob(".tmp-*"))
    assert m["totals"] == json.loads((reference / "denoise.json").read_bytes())["totals"]
    assert_same_examples(out.as_uri(), None, reference, tmp_path / "cache")
    assert verify(out).rows == m["totals"]["rows"]
    os.environ["DENOISE_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        # the CLI's stats over a URL and a local output (compatibility read from both)
        res = CliRunner().invoke(app, ["stats", out.as_uri(), str(reference)])
        assert res.exit_code == 0, res.output
        merged = merge([out.as_uri()], str(tmp_path / "merged"))
    finally:
        del os.environ["DENOISE_CACHE_DIR"]
    assert merged["totals"]["rows"] == m["totals"]["rows"]
    with pytest.raises(ConfigError, match="merge writes a local directory"):
        merge([str(out)], (tmp_path / "m2").as_uri())


def test_file_url_output_with_epochs(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--epochs 2 into a URL: every epoch directory and manifest as in a local run."""
    monkeypatch.setenv("DENOISE_CACHE_DIR", str(tmp_path / "cache"))
    local, url_out = tmp_path / "local", tmp_path / "url"
    prepare([str(raw)], str(local), cfg(epochs=2), tokenizer=T5_TINY, workers=1, progress=False)
    prepare(
        [str(raw)], url_out.as_uri(), cfg(epochs=2), tokenizer=T5_TINY, workers=2, progress=False
    )
    assert tree(url_out) == tree(local) and "epoch-1/denoise.json" in tree(local)
    assert verify(url_out.as_uri()).rows > 0


def test_remote_output_refuses_a_bucket_root_and_bad_listings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not the filesystem's root"):
        RemoteOutput("file:///")
    r = RemoteOutput((tmp_path / "x").as_uri())
    assert r.listdir() == {} and r.read("denoise.json") is None
    with pytest.raises(OutputError, match=r"contains '\.\.'"):
        r.key("../y")


@pytest.mark.slow
def test_ray_engine_needs_no_shared_filesystem(
    s3: dict[str, Any], reference: Path, tmp_path: Path
) -> None:
    """--engine ray from s3:// to s3://: each task stages in its own directory and uploads;
    nothing is left in the staging directory and the bytes equal a local run's."""
    pytest.importorskip("ray")
    stage = tmp_path / "stage"
    m = prepare(
        ["s3://objout/raw/"],
        "s3://objout/ray/",
        cfg(),
        tokenizer=T5_TINY,
        workers=2,
        progress=False,
        storage_options=s3,
        engine="ray",
        staging_dir=str(stage),
    )
    assert bucket_shards(s3fs_of(s3), "objout/ray") == local_shards(reference)
    assert m["totals"] == json.loads((reference / "denoise.json").read_bytes())["totals"]
    assert list(stage.iterdir()) == []


def test_split_into_a_url_output_is_refused_before_writing(tmp_path: Path) -> None:
    """Held-out splits are written as local split directories only (not yet published to an
    object store): a URL OUT with --split is refused before anything is written there."""
    from dataclasses import replace

    out = tmp_path / "o"
    with pytest.raises(ConfigError, match="--split/--holdout into an object-store OUT"):
        prepare(
            [str(SAMPLE)],
            out.as_uri(),
            replace(cfg(), splits=(("train", 0.9), ("validation", 0.1))),
            tokenizer=T5_TINY,
            workers=1,
            progress=False,
        )
    assert not out.exists()

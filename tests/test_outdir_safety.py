"""Issue 13, items 1-3: the output directory is the only place written, paths read back from an
output never lead outside it, and a kill at startup, during an epoch run or during a merge is
recovered by rerunning the same command."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from denoise_cli import open_dataset
from denoise_cli.check.inspect import inspect_rows
from denoise_cli.check.stats import compute
from denoise_cli.check.verify import verify
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError, OutputError, VerifyError
from denoise_cli.output.layout import clear_output, output_path, remove_temporaries
from denoise_cli.prepare.merge import merge
from denoise_cli.prepare.run import prepare
from denoise_cli.source.discover import find_inputs

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"


def cfg(**kw: Any) -> PrepareConfig:
    return PrepareConfig(
        mixture=load_mixture("t5"), lengths=Lengths("encoder-decoder", 128, 64), shard_rows=40, **kw
    )


def run(inputs: list[Path], out: Path, **kw: Any) -> dict[str, Any]:
    c = kw.pop("c", None) or cfg()
    return prepare([str(p) for p in inputs], str(out), c, workers=1, progress=False, **kw)


def digest(out: Path) -> dict[str, str]:
    """sha256 of every dataset file (not ``.denoise``)."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".denoise" not in p.relative_to(out).parts
    }


def tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "o"
    run([SAMPLE], out)
    return out


def _inputs_dir(tmp_path: Path) -> Path:
    s = tmp_path / "S"
    shutil.copytree(SAMPLE, s)
    return s


# --------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_equal_to_input_directory_is_refused(tmp_path: Path, overwrite: bool) -> None:
    s = _inputs_dir(tmp_path)
    before = tree(s)
    with pytest.raises(OutputError, match="input directory") as e:
        run([s], s, overwrite=overwrite)
    assert str(s) in str(e.value)
    assert tree(s) == before  # inputs intact, no .denoise/lock left


def test_out_inside_input_and_input_inside_out_are_refused(tmp_path: Path) -> None:
    s = _inputs_dir(tmp_path)
    with pytest.raises(OutputError, match="inside the input directory"):
        run([s], s / "out", overwrite=True)
    assert not (s / "out").exists()  # refused before creating anything
    o = tmp_path / "o"
    (o / "in").mkdir(parents=True)
    shutil.copy(SAMPLE / "en-prose-00.jsonl.zst", o / "in")
    with pytest.raises(OutputError, match="inside the output"):
        run([o / "in" / "en-prose-00.jsonl.zst"], o)
    with pytest.raises(OutputError, match="inside the output"):
        run([o / "in"], o)
    assert not (o / ".denoise").exists()


def test_foreign_directory_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    (home / ".bashrc").write_text("alias ll='ls -l'")
    (home / "docs").mkdir()
    (home / "docs" / "thesis.tex").write_text("\\begin{document}")
    before = tree(home)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a denoise output") as e:
            run([SAMPLE], home, overwrite=overwrite)
        msg = str(e.value)
        assert ".bashrc" in msg and "docs" in msg  # names what is there
        assert "--overwrite" not in msg  # never suggested for a foreign directory
    assert tree(home) == before
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", ".ssh", "docs"]


def test_a_lock_left_in_a_foreign_directory_does_not_make_it_ours(tmp_path: Path) -> None:
    # earlier versions left .denoise/lock behind when they refused a directory
    d = tmp_path / "project"
    (d / ".denoise").mkdir(parents=True)
    (d / ".denoise" / "lock").write_text("123\n")
    (d / "data").mkdir()
    (d / "data" / "survey.csv").write_text("a,b")
    (d / "tokenizer.json").write_text("{}")
    before = tree(d)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a denoise output"):
            run([SAMPLE], d, overwrite=overwrite)
    assert tree(d) == before


def test_overwrite_removes_only_what_an_output_consists_of(tmp_path: Path, ref: Path) -> None:
    out = tmp_path / "o"
    run([SAMPLE], out, c=cfg(seed=7))
    (out / "NOTES.md").write_text("my notes")
    (out / "extra").mkdir()
    (out / "extra" / "keep.txt").write_text("keep")
    run([SAMPLE], out, overwrite=True)  # other seed: starts over
    assert (out / "NOTES.md").read_text() == "my notes"
    assert (out / "extra" / "keep.txt").read_text() == "keep"
    assert {k: v for k, v in digest(out).items() if not k.startswith(("NOTES", "extra"))} == (
        digest(ref)
    )


def test_clear_output_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f.txt").write_text("x")
    out = tmp_path / "o"
    (out / ".denoise").mkdir(parents=True)
    (out / "data").symlink_to(victim)
    clear_output(out)
    assert (victim / "f.txt").read_text() == "x" and not (out / "data").exists()


def test_input_discovery_skips_denoise_outputs(tmp_path: Path) -> None:
    s = _inputs_dir(tmp_path)
    run([SAMPLE], s / "prepared")  # an output inside a corpus directory
    (s / "prepared" / "more.jsonl").write_text('{"text": "x"}\n')
    names = [f.name for f in find_inputs([str(s)])]
    assert names == ["en-prose-00.jsonl.zst", "en-prose-01.jsonl.zst"]
    with pytest.raises(ConfigError, match="is a denoise output"):
        find_inputs([str(s / "prepared")])
    with pytest.raises(ConfigError, match="matches no input files"):  # only output JSON there
        find_inputs([str(s / "*" / "*.json")])


# --------------------------------------------------------------------------- item 2


def _tamper(out: Path, rel: str, fix_state: bool = True) -> None:
    m = orjson.loads((out / "denoise.json").read_bytes())
    m["shards"][0]["path"] = rel
    (out / "denoise.json").write_bytes(orjson.dumps(m))
    if fix_state:
        st = orjson.loads((out / "state.json").read_bytes())
        st["_data_files"][0]["filename"] = rel
        (out / "state.json").write_bytes(orjson.dumps(st))


@pytest.fixture
def outside(tmp_path: Path, ref: Path) -> tuple[Path, str]:
    """A copy of the reference output whose first shard is moved outside it (a valid Arrow file,
    same size and sha256) and listed as ``../stolen/<name>`` in the manifest and state.json."""
    out = tmp_path / "o"
    shutil.copytree(ref, out)
    m = orjson.loads((out / "denoise.json").read_bytes())
    first = out / m["shards"][0]["path"]
    (tmp_path / "stolen").mkdir()
    shutil.move(first, tmp_path / "stolen" / first.name)
    rel = f"../stolen/{first.name}"
    _tamper(out, rel)
    return out, rel


def test_output_path_accepts_only_paths_inside(tmp_path: Path) -> None:
    (tmp_path / "o" / "data").mkdir(parents=True)
    (tmp_path / "o" / "link").symlink_to(tmp_path)
    assert output_path(tmp_path / "o", "data/x.arrow", "t") == tmp_path / "o" / "data" / "x.arrow"
    for bad in ("../x", "/etc/passwd", "data/../../x", "./data/x", "data//x", "", ".", "link/x"):
        with pytest.raises(OutputError, match="must stay inside"):
            output_path(tmp_path / "o", bad, "t")
    with pytest.raises(OutputError):
        output_path(tmp_path / "o", 3, "t")


def test_readers_refuse_paths_outside_the_output(outside: tuple[Path, str]) -> None:
    out = outside[0]
    for f in (
        lambda: open_dataset(out),
        lambda: compute(out),
        lambda: inspect_rows(out, n=3),
    ):
        with pytest.raises(OutputError, match="must stay inside"):
            f()
    with pytest.raises(VerifyError, match=r"\.\./stolen"):
        verify(out)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../../../../../../etc/passwd"])
def test_cli_gives_a_clear_error_not_a_traceback(ref: Path, tmp_path: Path, rel: str) -> None:
    out = tmp_path / "o"
    shutil.copytree(ref, out)
    _tamper(out, rel)
    r = CliRunner()
    for cmd, code in (("stats", 4), ("inspect", 4), ("verify", 5)):
        res = r.invoke(app, [cmd, str(out)])
        assert res.exit_code == code, (cmd, res.output)
        assert "Traceback" not in res.output and "must stay inside" in res.output


def test_torch_loader_refuses_paths_outside(outside: tuple[Path, str]) -> None:
    pytest.importorskip("torch")
    from denoise_cli.torch_data import DenoiseBatches

    with pytest.raises(OutputError, match="must stay inside"):
        DenoiseBatches(str(outside[0]), batch_size=4)


def test_epoch_dirs_outside_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run([SAMPLE], out, c=cfg(epochs=2))
    m = orjson.loads((out / "denoise.json").read_bytes())
    shutil.copytree(out / "epoch-1", tmp_path / "elsewhere")
    m["epoch_dirs"][1] = "../elsewhere"
    (out / "denoise.json").write_bytes(orjson.dumps(m))
    with pytest.raises(OutputError, match="epoch_dirs"):
        open_dataset(out, epoch=1)
    with pytest.raises(VerifyError, match="epoch_dirs"):
        verify(out)


def test_resume_refuses_a_commit_record_pointing_outside(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run([SAMPLE], out)
    (out / "denoise.json").unlink()
    rec_p = sorted((out / ".denoise" / "files").glob("*.json"))[0]
    rec = orjson.loads(rec_p.read_bytes())
    rec["epochs"][0]["parts"][0]["shard"] = "../../x.arrow"
    rec_p.write_bytes(orjson.dumps(rec))
    with pytest.raises(OutputError, match="must stay inside"):
        run([SAMPLE], out)
    assert not (out / "denoise.json").exists()
    parts = sorted((out / ".denoise" / "parts").glob("*.json"))
    (out / ".denoise" / "files" / rec_p.name).unlink()
    p = orjson.loads(parts[0].read_bytes())
    p["carry"] = "/etc/passwd"
    parts[0].write_bytes(orjson.dumps(p))
    with pytest.raises(OutputError, match="carry"):
        run([SAMPLE], out)


def _parts(tmp_path: Path, **kw: Any) -> list[Path]:
    parts = []
    for i in range(2):
        p = tmp_path / "parts" / f"p{i}"
        prepare(
            [str(SAMPLE)], str(p), cfg(**kw), workers=1, progress=False, num_shards=2, shard_index=i
        )
        parts.append(p)
    return parts


def test_merge_never_writes_outside_its_output(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    m = orjson.loads((parts[1] / "denoise.json").read_bytes())
    # the attacker's file sits at part/../x/victim.txt; the victim at OUT/../x/victim.txt
    (tmp_path / "parts" / "x").mkdir()
    evil = tmp_path / "parts" / "x" / "victim.txt"
    evil.write_bytes(b"E" * 100)
    (tmp_path / "outs" / "x").mkdir(parents=True)
    victim = tmp_path / "outs" / "x" / "victim.txt"
    victim.write_bytes(b"precious")
    m["shards"][0]["path"] = "../x/victim.txt"
    m["shards"][0]["bytes"] = 100
    (parts[1] / "denoise.json").write_bytes(orjson.dumps(m))
    with pytest.raises(OutputError, match="must stay inside"):
        merge([str(p) for p in parts], str(tmp_path / "outs" / "m"))
    assert victim.read_bytes() == b"precious" and os.stat(victim).st_nlink == 1


def test_merge_never_follows_a_symlink_out_of_a_part(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(parts[1] / "data", elsewhere)
    (parts[1] / "data").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="symlink"):
        merge([str(p) for p in parts], str(tmp_path / "m"))


# --------------------------------------------------------------------------- item 3


def test_kill_at_startup_then_rerun_completes_identically(
    tmp_path: Path, ref: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.outdir as pl

    out = tmp_path / "o"
    real = pl.atomic_write_bytes

    def killed(path: Path, data: bytes) -> None:
        if path.name == "run.json":
            raise KeyboardInterrupt("simulated kill before run.json is in place")
        real(path, data)

    monkeypatch.setattr(pl, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        run([SAMPLE], out)
    assert (out / ".denoise").is_dir() and not (out / ".denoise" / "run.json").exists()
    assert [p.name for p in out.iterdir()] == [".denoise"]
    (out / ".denoise" / ".tmp-run.json.999").write_bytes(b"{")
    monkeypatch.setattr(pl, "atomic_write_bytes", real)
    run([SAMPLE], out)
    assert digest(out) == digest(ref)


def test_stale_temporaries_are_removed_in_every_epoch_directory(tmp_path: Path) -> None:
    out = tmp_path / "o"
    run([SAMPLE], out, c=cfg(epochs=2))
    want = digest(out)
    (out / "denoise.json").unlink()  # as if killed before the end
    stale = [
        out / "epoch-0" / "data" / ".tmp-00000-00001.arrow.4242",
        out / "epoch-1" / "data" / ".tmp-00001-00000.arrow.4242",
        out / "epoch-1" / ".tmp-denoise.json.4242",
        out / ".denoise" / "files" / ".tmp-00000.json.4242",
        out / ".tmp-denoise.json.4242",
    ]
    for p in stale:
        p.write_bytes(b"partial")
    run([SAMPLE], out, c=cfg(epochs=2))
    assert not [p for p in stale if p.exists()]
    assert digest(out) == want
    verify(out)


def test_remove_temporaries_only_touches_tmp_files(tmp_path: Path) -> None:
    (tmp_path / "epoch-3" / "data").mkdir(parents=True)
    keep = tmp_path / "epoch-3" / "data" / "00000-00000.arrow"
    keep.write_bytes(b"x")
    gone = tmp_path / "epoch-3" / "data" / ".tmp-00000-00001.arrow.1"
    gone.write_bytes(b"x")
    assert remove_temporaries(tmp_path) == [gone]
    assert keep.exists()


def test_killed_merge_reruns_to_the_same_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import denoise_cli.prepare.merge as mg

    parts = [str(p) for p in _parts(tmp_path, epochs=2)]
    whole = tmp_path / "whole"
    merge(parts, str(whole))
    # kill points: writing the marker (1st atomic write), after epoch 0's shards, after epoch 1's
    # shards (1st/2nd epoch files), writing the manifest (write_top)
    for seam, nth in (
        ("atomic_write_bytes", 1),
        ("write_epoch_files", 1),
        ("write_epoch_files", 2),
        ("write_top", 1),
    ):
        out = tmp_path / f"m-{seam}-{nth}"
        real = getattr(mg, seam)
        calls = {"n": 0}

        def killed(
            *a: Any, real: Any = real, nth: int = nth, calls: dict[str, int] = calls
        ) -> None:
            calls["n"] += 1
            if calls["n"] == nth:
                raise KeyboardInterrupt("simulated kill during merge")
            real(*a)

        monkeypatch.setattr(mg, seam, killed)
        with pytest.raises(KeyboardInterrupt):
            merge(parts, str(out))
        monkeypatch.setattr(mg, seam, real)
        assert not (out / "denoise.json").exists()
        # what a kill in the middle of a write leaves
        tmp_dir = out / ".denoise" if nth == 1 and seam == "atomic_write_bytes" else out
        (tmp_dir / ".tmp-x.json.77").write_bytes(b"x")
        merge(parts, str(out))
        assert digest(out) == digest(whole)
        verify(out)
    with pytest.raises(OutputError, match="already holds a denoise output"):
        merge(parts, str(whole))


def test_merge_refuses_a_foreign_directory(tmp_path: Path) -> None:
    parts = [str(p) for p in _parts(tmp_path)]
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.tex").write_text("x")
    with pytest.raises(OutputError, match=r"thesis\.tex"):
        merge(parts, str(d))
    assert sorted(p.name for p in d.iterdir()) == ["thesis.tex"]
    with pytest.raises(OutputError, match="input directory"):
        merge(parts, parts[0] + "/m")


def _cli(*args: str, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "denoise_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@pytest.mark.slow
def test_kill9_of_an_epochs_run_at_any_moment_then_rerun(tmp_path: Path) -> None:
    """Real ``kill -9`` of ``prepare --epochs 2`` (main process and workers) from start-up on;
    the rerun completes, identical, and ``verify`` passes (no stale ``.tmp-*`` anywhere)."""
    args = ["prepare", str(SAMPLE), "--mixture", "t5", "-I", "128", "-T", "64", "--epochs", "2"]
    args += ["--shard-size", "40", "--quiet", "--workers", "2"]
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    p = _cli(*args[:2], str(ref), *args[2:])
    assert p.wait(timeout=600) == 0
    dur = time.perf_counter() - t0
    out = tmp_path / "o"
    for frac in (0.02, 0.1, 0.3, 0.6, 0.9):
        p = _cli(*args[:2], str(out), *args[2:], start_new_session=True)
        time.sleep(frac * dur)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
    p = _cli(*args[:2], str(out), *args[2:])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()
    assert digest(out) == digest(ref)
    p = _cli("verify", str(out))
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()
    assert not list(out.rglob(".tmp-*"))


def test_clear_output_removes_manifests_before_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader opening OUT while ``--overwrite`` clears it must never find a manifest whose
    shards are gone: the top manifest, and each epoch's own, are removed before any data."""
    import shutil as _shutil

    out = tmp_path / "o"
    (out / ".denoise").mkdir(parents=True)
    (out / ".denoise" / "run.json").write_text("{}")
    for d in (out, out / "epoch-1"):
        (d / "data").mkdir(parents=True)
        (d / "data" / "00000-00000.arrow").write_bytes(b"x")
        (d / "denoise.json").write_text("{}")
    gone: list[str] = []
    real_unlink, real_rmtree = Path.unlink, _shutil.rmtree

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.exists():
            gone.append(str(self.relative_to(out)))
        real_unlink(self, missing_ok=missing_ok)

    def rmtree(path: Any, *a: Any, **k: Any) -> None:
        p = Path(path)
        gone.extend(str(q.relative_to(out)) for q in sorted(p.rglob("*")) if q.is_file())
        real_rmtree(path, *a, **k)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(_shutil, "rmtree", rmtree)
    clear_output(out)
    assert gone.index("denoise.json") < gone.index("data/00000-00000.arrow")
    assert gone.index("epoch-1/denoise.json") < gone.index("epoch-1/data/00000-00000.arrow")
    assert gone.index("denoise.json") < gone.index("epoch-1/denoise.json")
    assert not (out / "data").exists() and not (out / "epoch-1").exists()

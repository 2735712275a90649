"""``denoise verify``: good outputs pass; hand-made corruptions are caught with a precise message
(shard, row, what). Outputs are prepared once per module from examples/sample/."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pytest
from helpers import ONE, SAMPLE, T5_TINY, Outputs, refresh_shard_entry, write_arrow_shard
from typer.testing import CliRunner

from denoise_cli.check.spec import SENT0, OutputSpec
from denoise_cli.check.verify import verify
from denoise_cli.cli import app
from denoise_cli.config import Lengths, PrepareConfig, load_mixture
from denoise_cli.errors import VerifyError
from denoise_cli.output.shards import batch_arrays, open_shard

T5TOK = T5_TINY
SHARD0 = "data/00000-00000.arrow"


def _prepare(
    outputs: Outputs,
    mixture: str = "ul2",
    tokenizer: str | None = None,
    inputs: Path = ONE,
    **kw: object,
) -> Path:
    cfg = PrepareConfig(mixture=load_mixture(mixture), **kw)  # type: ignore[arg-type]
    return outputs(cfg, [inputs], tokenizer=tokenizer)


@pytest.fixture(scope="module")
def outs(outputs: Outputs) -> dict[str, Path]:
    small = Lengths("encoder-decoder", 128, 48)
    return {
        # the default: ul2, encoder-decoder 512/512, embedded GPT-2
        "ed": _prepare(outputs, inputs=SAMPLE),
        "ed5": _prepare(
            outputs, tokenizer=str(T5TOK), lengths=Lengths("encoder-decoder", 192, 192)
        ),
        "do": _prepare(
            outputs, tokenizer=str(T5TOK), lengths=Lengths("decoder-only", seq_length=256)
        ),
        "pq": _prepare(outputs, tokenizer=str(T5TOK), lengths=small, format="parquet"),
        # one component: every row of seed 0 and seed 1 has the same offsets, only the masks differ
        "t5a": _prepare(outputs, "t5", str(T5TOK), lengths=small, seed=0),
        "t5b": _prepare(outputs, "t5", str(T5TOK), lengths=small, seed=1),
        "ep": _prepare(outputs, "ul2", str(T5TOK), lengths=small, epochs=2),
    }


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _read(out: Path, rel: str) -> dict[str, np.ndarray]:
    m = orjson.loads((out / "denoise.json").read_bytes())
    _, batches = open_shard(out / rel, m["format"])
    parts = [batch_arrays(rb) for rb in batches]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _rewrite(
    out: Path, rel: str, edit: Callable[[dict[str, np.ndarray]], None], update_checksum: bool = True
) -> None:
    """Rewrite an Arrow shard with edited columns (same schema); by default update the manifest's
    bytes and sha256 so that only the semantic checks can notice."""
    p = out / rel
    a = {k: np.array(v) for k, v in _read(out, rel).items()}
    edit(a)
    write_arrow_shard(p, a)
    if update_checksum:
        _edit_manifest(out, lambda m: refresh_shard_entry(m, rel, p))


def _edit_manifest(out: Path, edit: Callable[[dict], None]) -> None:
    mp = out / "denoise.json"
    m = orjson.loads(mp.read_bytes())
    edit(m)
    mp.write_bytes(orjson.dumps(m))


def _problems(out: Path, **kw: object) -> str:
    with pytest.raises(VerifyError) as ei:
        verify(out, **kw)  # type: ignore[arg-type]
    return str(ei.value)


def _first_row(out: Path, rel: str, name: str) -> int:
    m = orjson.loads((out / "denoise.json").read_bytes())
    c = next(c["index"] for c in m["components"] if c["denoiser"] == name)
    return int(np.flatnonzero(_read(out, rel)["denoiser"] == c)[0])


# --------------------------------------------------------------------------- good outputs


@pytest.mark.parametrize("name", ["ed", "do", "pq", "t5a", "ep"])
def test_good_outputs_pass(outs: dict[str, Path], name: str) -> None:
    rep = verify(outs[name])
    m = orjson.loads((outs[name] / "denoise.json").read_bytes())
    if "epoch_dirs" in m:  # prepare --epochs K: one dataset per epoch
        assert rep.rows == sum(m["totals"]["rows_per_epoch"]) > 0
        return
    assert rep.rows == m["totals"]["rows"] > 0
    assert rep.tokens == m["totals"]["tokens_used"]
    assert "sentinel order and spans" in rep.checks


@pytest.mark.parametrize("name", ["ed", "do", "pq"])
def test_good_outputs_pass_with_source(outs: dict[str, Path], name: str) -> None:
    rep = verify(outs[name], sources=[str(SAMPLE)])
    m = orjson.loads((outs[name] / "denoise.json").read_bytes())
    assert rep.source_files == len(m["files"])
    assert rep.source_tokens == m["totals"]["tokens"]
    assert "rows regenerated bit for bit" in rep.checks


def test_rebuild_is_the_source_stream(outs: dict[str, Path]) -> None:
    """The scatter rebuild, checked independently: concatenating every row's rebuilt chunk in
    order gives the file's token stream (compared with the source in test_..._with_source); here:
    chunk lengths are raw_length and the noise mask has exactly noise_tokens in spans runs."""
    from denoise_cli.check.rowcheck import RowChecker

    out = outs["ed"]
    m = orjson.loads((out / "denoise.json").read_bytes())
    spec = OutputSpec.from_manifest(m)
    ck = RowChecker(spec)
    a = _read(out, SHARD0)
    _, ok = ck.check(a, 10)
    assert ok.all()
    for c in spec.comps:
        idx = np.flatnonzero(a["denoiser"] == c.index)
        if not len(idx):
            continue
        chunk, noise = ck.rebuild(a, idx, c)
        assert chunk.shape == (len(idx), c.raw)
        if c.span:
            assert (noise.sum(axis=1) == c.noise).all()
            starts = noise & ~np.concatenate([np.zeros((len(idx), 1), bool), noise[:, :-1]], axis=1)
            assert (starts.sum(axis=1) == c.spans).all()
            assert not noise[:, 0].any()
        # no sentinel, pad or mode token in the rebuilt text
        assert (np.take(spec.lut, chunk) < 2).all()


# --------------------------------------------------------------------------- corruptions


def test_flipped_token_with_recomputed_checksum(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed5"], tmp_path)
    r = _first_row(out, SHARD0, "R(3,0.15)")
    a = _read(out, SHARD0)
    spec = OutputSpec.from_manifest(orjson.loads((out / "denoise.json").read_bytes()))
    col = int(np.flatnonzero(np.take(spec.lut, a["input_ids"][r]) == 0)[5])  # an ordinary token
    old = int(a["input_ids"][r, col])
    new = 11 if old != 11 else 12

    def flip(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][r, col] = new

    _rewrite(out, SHARD0, flip)
    # every count is still right: only the source can tell
    verify(out)
    msg = _problems(out, sources=[str(ONE)])
    assert f"{SHARD0} row {r}: rebuilt tokens differ from the source at stream offset" in msg
    assert f"the row gives id {new}, en-prose-00.jsonl.zst gives id {old}" in msg


def test_flipped_token_checksum(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)

    def flip(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][0, 3] += 1

    _rewrite(out, SHARD0, flip, update_checksum=False)
    msg = _problems(out)
    assert f"{SHARD0}: " in msg and (
        "does not match the manifest" in msg or "bytes, the manifest says" in msg
    )


def test_flipped_target_token_decoder_only(outs: dict[str, Path], tmp_path: Path) -> None:
    """In a decoder-only row the labels repeat the target ids: caught without the source."""
    out = _copy(outs["do"], tmp_path)
    a = _read(out, SHARD0)
    pl, il = int(a["prefix_length"][2]), int(a["input_length"][2])
    j = (pl + il) // 2

    def flip(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][2, j] = 3 if a["input_ids"][2, j] != 3 else 4

    _rewrite(out, SHARD0, flip)
    assert f"{SHARD0} row 2: labels[{j}] is" in _problems(out)


def test_truncated_shard(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    p = out / SHARD0
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(size // 2)
    msg = _problems(out)
    assert (
        f"{SHARD0}: {size // 2:,} bytes, the manifest says {size:,} (truncated or rewritten)" in msg
    )
    assert f"{SHARD0}: unreadable after row" in msg or f"{SHARD0}: holds" in msg


def test_swapped_sentinel(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    r = _first_row(out, SHARD0, "R(8,0.15)")
    m = orjson.loads((out / "denoise.json").read_bytes())
    s3, s4 = m["tokenizer"]["sentinel_ids"][3:5]
    a = _read(out, SHARD0)
    c3 = int(np.flatnonzero(a["input_ids"][r] == s3)[0])
    c4 = int(np.flatnonzero(a["input_ids"][r] == s4)[0])

    def swap(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][r, c3], a["input_ids"][r, c4] = s4, s3

    _rewrite(out, SHARD0, swap)
    msg = _problems(out)
    assert (
        f"{SHARD0} row {r}: sentinels out of order in input_ids: column {c3} holds "
        f"<extra_id_4> ({s4}) where <extra_id_3> ({s3}) belongs"
    ) in msg


def test_row_from_another_run(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["t5a"], tmp_path)
    other = _read(outs["t5b"], SHARD0)
    mine = _read(out, SHARD0)
    r = 3
    assert other["token_offset"][r] == mine["token_offset"][r]  # same chunk, other masks
    assert (other["input_ids"][r] != mine["input_ids"][r]).any()

    def replace(a: dict[str, np.ndarray]) -> None:
        for k in a:
            a[k][r] = other[k][r]

    _rewrite(out, SHARD0, replace)
    verify(out)  # a valid row, in the right place, of the right chunk: structure cannot tell
    msg = _problems(out, sources=[str(ONE)])
    assert (
        f"{SHARD0} row {r}: not the row that (seed 0, file en-prose-00.jsonl.zst, group 0) gives: "
        "input_ids["
    ) in msg
    assert "a row from another run?" in msg
    assert "1 problem(s) found" in msg


def test_missing_shard(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    rows = orjson.loads((out / "denoise.json").read_bytes())["shards"][1]["rows"]
    (out / "data/00001-00000.arrow").unlink()
    msg = _problems(out)
    assert f"data/00001-00000.arrow: missing (listed in the manifest with {rows:,} rows)" in msg


def test_manifest_row_count_mismatch(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    rows = orjson.loads((out / "denoise.json").read_bytes())["shards"][0]["rows"]

    def bump(m: dict) -> None:
        m["shards"][0]["rows"] += 1

    _edit_manifest(out, bump)
    msg = _problems(out)
    assert f"{SHARD0}: holds {rows:,} rows, the manifest says {rows + 1:,}" in msg
    assert "denoise.json: row counts disagree" in msg


def test_id_outside_vocabulary(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["pq"], tmp_path)
    vocab = orjson.loads((out / "denoise.json").read_bytes())["tokenizer"]["vocab_size"]
    # Parquet shard: rewrite it as Parquet
    import pyarrow.parquet as pq

    rel = "data/00000-00000.parquet"
    t = pq.read_table(out / rel)
    ids = np.array(t.column("input_ids").combine_chunks().flatten()).reshape(t.num_rows, -1)
    ids[4, 7] = vocab
    col = pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), ids.shape[1])
    t = t.set_column(0, t.schema.field("input_ids"), col)
    pq.write_table(t, out / rel)
    _edit_manifest(out, lambda m: refresh_shard_entry(m, rel, out / rel))
    msg = _problems(out)
    assert (
        f"{rel} row 4: input_ids column 7 holds {vocab}, outside the vocabulary of {vocab:,}" in msg
    )


def test_padding_and_labels(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["ed"], tmp_path)
    r_r = _first_row(out, SHARD0, "R(3,0.15)")
    a = _read(out, SHARD0)
    r_s = int(np.flatnonzero((a["denoiser"] == 2) & (a["input_length"] < 500))[0])  # S(0.25)
    il, tl = int(a["input_length"][r_s]), int(a["target_length"][r_r])

    def edit(a: dict[str, np.ndarray]) -> None:
        a["input_ids"][r_s, il + 2] = 11
        a["labels"][r_r, tl + 1] = 11

    _rewrite(out, SHARD0, edit)
    msg = _problems(out)
    assert (
        f"{SHARD0} row {r_s}: padding only at the end: input_ids[{il + 2}] is id 11 after input_length {il}"
        in msg
    )
    assert (
        f"{SHARD0} row {r_r}: labels[{tl + 1}] is 11: -100 must be exactly from target_length {tl} on"
        in msg
    )


def test_broken_chain_and_lengths(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["t5a"], tmp_path)
    a = _read(out, SHARD0)

    def edit(a: dict[str, np.ndarray]) -> None:
        a["token_offset"][5] += 1
        a["example_index"][9] = 100
        a["target_length"][12] -= 1  # and the labels accordingly: still padded correctly
        a["labels"][12, a["target_length"][12]] = -100

    _rewrite(out, SHARD0, edit)
    msg = _problems(out)
    expect = int(a["token_offset"][5])
    assert f"{SHARD0} row 5: token_offset {expect + 1}, expected {expect}" in msg
    assert f"{SHARD0} row 9: example_index 100, expected 9" in msg
    assert (
        f"{SHARD0} row 12: R(3,0.15): target_length {int(a['target_length'][12]) - 1}, its parameters give"
        in msg
    )


def test_span_structure_messages(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["t5a"], tmp_path)
    m = orjson.loads((out / "denoise.json").read_bytes())
    spec = OutputSpec.from_manifest(m)
    a = _read(out, SHARD0)
    code = np.take(spec.lut, a["labels"][1].clip(0))
    j = int(np.flatnonzero(code >= SENT0)[1])  # sentinel 1 in the targets

    def edit(a: dict[str, np.ndarray]) -> None:
        # the token before sentinel 1 (the last of span 0) becomes sentinel 1: span count breaks
        a["labels"][1, j - 1] = a["labels"][1, j]
        a["input_ids"][2, 0] = spec.pad  # pad inside the text

    _rewrite(out, SHARD0, edit)
    msg = _problems(out)
    assert f"{SHARD0} row 1: R(3,0.15): " in msg and "sentinels in the inputs and" in msg
    assert f"{SHARD0} row 2: input_ids[0] is <pad> (0) inside the row's tokens" in msg


def test_unlisted_file_and_tokenizer(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["t5a"], tmp_path)
    shutil.copy(out / SHARD0, out / "data/00009-00000.arrow")
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text() + " ")
    msg = _problems(out)
    assert "data/00009-00000.arrow: not listed in the manifest" in msg
    assert "tokenizer.json: sha256" in msg


def test_source_mismatch(outs: dict[str, Path], tmp_path: Path) -> None:
    """An input that is not the one the output was made from."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE / "en-prose-01.jsonl.zst", src / "en-prose-00.jsonl.zst")
    msg = _problems(outs["t5a"], sources=[str(src)])
    assert (
        "file 0 (en-prose-00.jsonl.zst): " + f"{src / 'en-prose-00.jsonl.zst'} has 72,906 bytes, "
        "the manifest says 76,225"
    ) in msg
    msg = _problems(outs["t5a"], sources=[str(SAMPLE / "en-prose-01.jsonl.zst")])
    assert "file 0 (en-prose-00.jsonl.zst): not among the --source inputs" in msg


def test_max_problems(outs: dict[str, Path], tmp_path: Path) -> None:
    out = _copy(outs["t5a"], tmp_path)

    def edit(a: dict[str, np.ndarray]) -> None:
        a["attention_mask"][:, 0] = 0

    _rewrite(out, SHARD0, edit)
    msg = _problems(out, max_problems=5)
    assert "5 problem(s) found (stopped there" in msg
    assert f"{SHARD0} row 0: attention_mask[0] is 0, expected 1 (input_length" in msg


def test_cli(outs: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["verify", str(outs["t5a"])])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("OK: ")
    out = _copy(outs["t5a"], tmp_path)
    (out / SHARD0).unlink()
    res = runner.invoke(app, ["verify", str(out)])
    assert res.exit_code == VerifyError.exit_code
    assert f"{SHARD0}: missing" in res.output
    res = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert res.exit_code == VerifyError.exit_code and "has no denoise.json" in res.output


def test_epochs(outs: dict[str, Path], tmp_path: Path) -> None:
    """Each epoch is regenerated with its own epoch number; problems name the epoch directory."""
    out = _copy(outs["ep"], tmp_path)
    a0 = _read(out / "epoch-0", SHARD0)

    def swap_in_epoch0_row(a: dict[str, np.ndarray]) -> None:
        for k in a:
            a[k][4] = a0[k][4]

    # row 4 of epoch 0 put into epoch 1 (same chunk only if the same component was drawn)
    _rewrite(out / "epoch-1", SHARD0, swap_in_epoch0_row)
    msg = _problems(out, sources=[str(ONE)])
    assert f"epoch-1/{SHARD0} row 4: " in msg
    assert f"epoch-0/{SHARD0}" not in msg


def test_source_on_epochs_reads_each_file_once(
    outs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verify --source`` on a ``--epochs K`` output tokenizes each source file once for all K
    epochs (as ``prepare`` does), and still regenerates every epoch's rows."""
    import denoise_cli.check.sources as sources_mod

    real = sources_mod.token_stream
    opened: list[str] = []

    def spy(f: Any, *a: Any, **kw: Any) -> Any:
        opened.append(f.name)
        return real(f, *a, **kw)

    monkeypatch.setattr(sources_mod, "token_stream", spy)
    m = orjson.loads((outs["ep"] / "denoise.json").read_bytes())
    assert m["epochs"] == 2
    rep = verify(outs["ep"], sources=[str(ONE)])
    assert opened == [ONE.name]  # once, not once per epoch
    assert rep.source_files == 1 and rep.rows == sum(m["totals"]["rows_per_epoch"])
    assert "rows regenerated bit for bit" in rep.checks

"""The shard format registry is the one list of output formats: ``--format``'s choices, the
config check, the shard names and the HF files all come from ``output.shards.FORMATS``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from denoise_cli.cli import app
from denoise_cli.cli_options import Format
from denoise_cli.config import PrepareConfig, load_mixture
from denoise_cli.errors import ConfigError
from denoise_cli.output.layout import shard_name
from denoise_cli.output.shards import FORMATS, ShardWriter, format_of, read_shard
from denoise_cli.prepare.job import resolve


def test_cli_choices_are_the_registry() -> None:
    assert [f.value for f in Format] == list(FORMATS) == ["arrow", "parquet"]


def test_unknown_format_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"--format must be arrow or parquet, got 'feather'"):
        format_of("feather")
    cfg = PrepareConfig(load_mixture("t5"), format="feather")  # the config itself does not know
    with pytest.raises(ConfigError, match="--format must be"):
        resolve(cfg, None, None)  # before the tokenizer or any input is looked at


def test_cli_rejects_an_unknown_format(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["prepare", str(tmp_path), str(tmp_path / "o"), "--format", "x"])
    assert res.exit_code == 2  # a usage error: not one of the choices
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_writes_what_it_reads(name: str, tmp_path: Path) -> None:
    rel = shard_name(1, 0, 3, 7, name)
    assert rel == f"data/00003-00007.{name}"
    path = tmp_path / rel
    path.parent.mkdir()
    batch = pa.record_batch({"x": pa.array([1, 2, 3], pa.int32())})
    w = ShardWriter(path, name, batch.schema)
    w.write(batch)
    w.commit()
    got = pa.Table.from_batches(read_shard(path, name))
    assert got.equals(pa.Table.from_batches([batch]))

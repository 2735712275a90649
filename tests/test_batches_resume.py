"""``DenoiseBatches.state_dict()/load_state_dict()``: a run restarted at step N continues with
exactly the batches it would have seen, for any rank and worker count."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from denoise_cli.config import Lengths, PrepareConfig, load_mixture  # noqa: E402
from denoise_cli.prepare.run import prepare  # noqa: E402
from denoise_cli.torch_data import DenoiseBatches  # noqa: E402

SAMPLE = Path(__file__).parent.parent / "examples" / "sample" / "en-prose-00.jsonl.zst"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> str:
    o = tmp_path_factory.mktemp("resume") / "o"
    cfg = PrepareConfig(load_mixture("t5"), lengths=Lengths("encoder-decoder", 64, 16))
    prepare([str(SAMPLE)], str(o), cfg, workers=1, progress=False)
    return str(o)


def ids(batches: list[dict[str, object]]) -> list[list[list[int]]]:
    return [b["input_ids"].tolist() for b in batches]  # type: ignore[attr-defined]


def loader(ds: DenoiseBatches, workers: int) -> list[dict[str, object]]:
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return list(dl)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
def test_restart_at_step_n_continues_with_the_same_batches(
    out: str, workers: int, rank: int, world: int
) -> None:
    def make() -> DenoiseBatches:
        return DenoiseBatches(out, 8, seed=5, epoch=2, rank=rank, world_size=world)

    full = ids(loader(make(), workers))
    assert len(full) > 6
    n = 5
    first = make()
    if workers == 0:
        it = iter(first)
        seen = [next(it) for _ in range(n)]
        assert ids(seen) == full[:n]
        state = first.state_dict()
    else:
        state = first.state_dict(consumed=n)
    assert state["batches"] == n and state["epoch"] == 2
    again = make()
    again.set_epoch(0)  # a fresh run starts at another epoch; the state sets it
    again.load_state_dict(state)
    assert ids(loader(again, workers)) == full[n:]
    again.set_epoch(2)  # the next epoch (here: the same one again) starts from its beginning
    assert ids(loader(again, workers)) == full


def test_state_from_another_plan_is_refused(out: str) -> None:
    a = DenoiseBatches(out, 8, seed=5, rank=0, world_size=1)
    b = DenoiseBatches(out, 8, seed=6, rank=0, world_size=1)
    with pytest.raises(ValueError, match="seed=5"):
        b.load_state_dict(a.state_dict())


@pytest.mark.slow
def test_parquet_output_loads_with_load_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented path for --format parquet (the summary prints it)."""
    datasets = pytest.importorskip("datasets")
    from denoise_cli.check.report import load_snippet

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    o = tmp_path / "pq"
    cfg = PrepareConfig(
        load_mixture("t5"), lengths=Lengths("encoder-decoder", 64, 16), format="parquet"
    )
    m = prepare([str(SAMPLE)], str(o), cfg, workers=1, progress=False)
    snippet = load_snippet(str(o), "parquet")
    assert "load_dataset('parquet', data_dir=" in snippet
    ds = datasets.load_dataset("parquet", data_dir=str(o / "data"), split="train")
    assert len(ds) == m["totals"]["rows"]
    from denoise_cli import open_dataset

    assert ds[0]["input_ids"] == open_dataset(o)[0]["input_ids"].tolist()

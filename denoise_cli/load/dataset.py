"""Loading an output directory: a map-style dataset over memory-mapped shards.

``open_dataset(out)`` memory-maps every Arrow IPC shard (Parquet outputs are read into memory)
and serves rows as numpy arrays without decoding anything: ``ds[i]``, ``ds[a:b]`` and
``ds[index_array]`` return ``dict[str, np.ndarray]`` with fixed-shape ``[n, W]`` columns (a
slice inside one record batch is a zero-copy view, anything else one fancy index per column
over the mapped shards, :class:`~denoise_cli.output.columns.MappedRows`; compact outputs are
rebuilt into the default columns); ``ds.manifest`` is ``denoise.json``.
``ds.iter_batches(...)`` yields fixed-shape batches per epoch, rank and seed, dropping, shrinking or padding the last one (:data:`PAD_FILL`);
:func:`epoch_batches` is the plan behind it, shared with ``load.torch_data``. Opening checks the
shards against the manifest (``verify=``, :mod:`.checks`); a dataset pickles as its path.
Usage: README "Loading".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..output.columns import MappedRows
from ..output.layout import MANIFEST, datasets, output_path
from ..output.manifest import read_manifest, split_path
from ..output.remote import is_output_url, localize
from ..output.shards import batch_arrays, read_shard_mapped
from .checks import check_shard_files, check_shard_rows

#: ``shuffle=`` value of the loaders for outputs of ``denoise shuffle`` (see :func:`epoch_batches`)
BLOCKS = "blocks"

#: Values of the padding rows added by ``pad_last`` (``input_ids`` get the manifest's pad id).
#: A padding row has ``labels`` all -100 (no loss), ``attention_mask`` all 0 and
#: ``input_length == 0``; its ``source_file``/``example_index``/... are -1.
PAD_FILL: dict[str, int] = {
    "labels": -100,
    "attention_mask": 0,
    "prefix_length": 0,
    "input_length": 0,
    "target_length": 0,
    "denoiser": -1,
    "source_file": -1,
    "example_index": -1,
    "token_offset": -1,
    # packed outputs (--pack): per-segment metadata; segment ids, positions, lengths are 0
    "segment_denoiser": -1,
    "segment_example_index": -1,
    "segment_token_offset": -1,
}


class DenoiseDataset:
    """Map-style dataset over a denoise output directory (see module docstring)."""

    def __init__(
        self,
        out: str | Path,
        epoch: int | None = None,
        verify: str = "fast",
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        split: str | None = None,
    ) -> None:
        # an output behind a URL is served from its local copy (``output.remote.localize``)
        root = localize(str(out), storage_options, cache_dir) if is_output_url(out) else Path(out)
        self.path = split_path(root, split)  # `prepare --split`: that split's dataset
        self.split = split
        self.verify = verify
        self.manifest = read_manifest(self.path)
        dirs = self.manifest.get("epoch_dirs")
        if dirs:  # `prepare --epochs K`: serve variant epoch % K
            self.epoch = 0 if epoch is None else int(epoch)
            self.path = datasets(self.path, dirs)[self.epoch % len(dirs)][1]
            self.manifest = read_manifest(self.path)
        else:
            self.epoch = 0 if epoch is None else int(epoch)
        fmt = self.manifest["format"]
        self._batches: list[pa.RecordBatch] = []
        mapped: list[tuple[list[pa.RecordBatch], pa.Buffer | None]] = []
        check_shard_files(self.path, self.manifest, verify)
        chain: dict[int, int] = {}
        for s in self.manifest["shards"]:
            p = output_path(self.path, s["path"], f"{MANIFEST}: shard path")
            batches, buf = read_shard_mapped(p, fmt)
            if verify != "none":
                check_shard_rows(p, s, batches, chain)
            self._batches.extend(b for b in batches if b.num_rows)
            mapped.append((batches, buf))
        self._rows = MappedRows(mapped)
        sizes = np.array([b.num_rows for b in self._batches], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._start_list: list[int] = self._starts.tolist()
        self._views: dict[int, dict[str, np.ndarray]] = {}
        #: compact shards (prepare --compact): rows are rebuilt, never views of the mapped file
        self.compact = bool(self.manifest.get("compact"))
        self._info = self._rows.columns
        self.columns: list[str] = list(self._info)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __reduce__(self) -> tuple[Any, tuple[str, None, str]]:
        # Pickle as the path: a worker process re-maps the shards (zero-copy) rather than
        # receiving a serialized copy of every record batch; it repeats only the fast check.
        return (open_dataset, (str(self.path), None, "none" if self.verify == "none" else "fast"))

    @property
    def num_batches(self) -> int:
        return len(self._batches)

    def locate(self, start: int, stop: int) -> tuple[int, int, int] | None:
        """``(record batch, lo, hi)`` when rows ``start:stop`` are rows ``lo:hi`` of one record
        batch of a default-format output (what :meth:`view` serves), else None."""
        st = self._start_list
        if self.compact or not 0 <= start < stop <= st[-1]:
            return None
        bi = bisect.bisect_right(st, start) - 1
        if stop > st[bi + 1]:
            return None
        return bi, start - st[bi], stop - st[bi]

    def locate_many(
        self, starts: np.ndarray, stops: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`locate` of many row ranges at once: arrays ``(record batch, lo, hi)``, with
        record batch ``-1`` where that range is not one slice of one record batch (every range
        must be non-empty and within the rows)."""
        starts = np.asarray(starts, dtype=np.int64)
        stops = np.asarray(stops, dtype=np.int64)
        bi = np.searchsorted(self._starts, starts, side="right") - 1
        first = self._starts[bi]
        inside = stops <= self._starts[np.minimum(bi + 1, len(self._starts) - 1)]
        bi = np.where(inside, bi, -1) if not self.compact else np.full_like(bi, -1)
        return bi, starts - first, stops - first

    def batch_view(self, bi: int) -> dict[str, np.ndarray]:
        """Every column of record batch ``bi`` as read-only views of the mapped shard (cached)."""
        return self._view(bi)

    def _view(self, bi: int) -> dict[str, np.ndarray]:
        v = self._views.get(bi)
        if v is None:
            v = batch_arrays(self._batches[bi])
            self._views[bi] = v
        return v

    def __getitem__(self, key: int | slice | np.ndarray | list[int]) -> dict[str, np.ndarray]:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            if self.compact:
                return {k: v[0] for k, v in self.take(np.array([i])).items()}
            bi = int(np.searchsorted(self._starts, i, side="right") - 1)
            r = i - int(self._starts[bi])
            return {k: v[r] for k, v in self._view(bi).items()}
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                if stop <= start:
                    return self.take(np.zeros(0, dtype=np.int64))
                v = self.view(start, stop)
                if v is not None:
                    return v
            return self.take(np.arange(start, stop, step))
        arr = np.asarray(key)
        if arr.dtype == np.bool_:
            if arr.shape != (n,):
                raise IndexError(f"boolean index of shape {arr.shape} for {n} rows")
            return self.take(np.flatnonzero(arr))
        return self.take(arr.astype(np.int64, copy=False))

    def view(
        self, start: int, stop: int, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray] | None:
        """Rows ``start:stop`` (``0 <= start < stop <= len``) as read-only zero-copy views of the
        mapped shard when they lie in one record batch of a default-format output; None
        otherwise (compact rows are rebuilt, never views: use :meth:`take`)."""
        loc = self.locate(start, stop)
        if loc is None:
            return None
        bi, lo, hi = loc
        v = self.batch_view(bi)
        if columns is None:
            return {k: a[lo:hi] for k, a in v.items()}
        for k in columns:
            if k not in v:
                raise KeyError(f"no column {k!r} (columns: {', '.join(self.columns)})")
        return {k: v[k][lo:hi] for k in columns}

    @property
    def column_info(self) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
        """``{column: (shape of one row, dtype)}``, e.g. ``input_ids: ((512,), int32)``."""
        return dict(self._info)

    @property
    def pad_values(self) -> dict[str, int]:
        """The value of every column in a padding row (:data:`PAD_FILL`; ``input_ids``: the
        manifest's pad id)."""
        return {**PAD_FILL, "input_ids": int(self.manifest["tokenizer"]["pad"]["id"])}

    def take(
        self,
        idx: np.ndarray | Sequence[int],
        columns: Sequence[str] | None = None,
        *,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows ``idx`` (any order) as new arrays; ``columns`` limits the gather to those columns.

        ``out``: arrays of ``len(idx)`` rows to fill instead (its keys are the columns; any dtype
        the values cast to, e.g. int64 tensors' ``.numpy()`` views: the widening happens in the
        same pass). One fancy index per column over the mapped shards
        (:class:`~denoise_cli.output.columns.MappedRows`) writes the rows in place, in any order;
        no pyarrow call, no per-shard or per-record-batch work."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for {n} rows")
        if idx.size and idx.min() < 0:
            idx = np.where(idx < 0, idx + n, idx)
        if not self._rows.num_rows:
            raise IndexError("empty dataset")
        info = self._info
        cols = list(out) if out is not None else list(info) if columns is None else list(columns)
        for k in cols:
            if k not in info:
                raise KeyError(f"no column {k!r} (columns: {', '.join(info)})")
        if out is None:
            if not len(idx):
                return {k: np.empty((0, *info[k][0]), dtype=info[k][1]) for k in cols}
            return self._rows.take(idx, dict.fromkeys(cols))
        for k, o in out.items():
            if o.shape != (len(idx), *info[k][0]):
                raise ValueError(f"out[{k!r}] has shape {o.shape}, need {(len(idx), *info[k][0])}")
        if len(idx):
            self._rows.take(idx, out)
        return out

    def pad_batch(self, batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """``batch`` with padding rows appended up to ``size`` rows (values: :attr:`pad_values`).
        Returns ``batch`` itself when it is full."""
        have = len(next(iter(batch.values())))
        if have >= size:
            return batch
        fill = self.pad_values
        res: dict[str, np.ndarray] = {}
        for k, v in batch.items():
            a = np.empty((size, *v.shape[1:]), dtype=v.dtype)
            a[:have] = v
            a[have:] = fill.get(k, 0)
            res[k] = a
        return res

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool | str = False,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        pad_last: bool = False,
        columns: Sequence[str] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Fixed-shape numpy batches (JAX/numpy). Shuffling is a permutation seeded by
        ``(seed, epoch)``; rows are split across ``world_size`` ranks so that each row goes to
        at most one rank per epoch (exactly one unless ``drop_last``). The tail:

        - ``drop_last=True`` (default): rows that do not fill a batch on *every* rank are
          dropped, so all ranks yield the same number of full batches;
        - ``drop_last=False``: the last batch of a rank is smaller (ranks may differ by one
          batch when the rows do not split evenly);
        - ``pad_last=True`` (``drop_last`` is then ignored): every rank yields the same number of
          batches, all of ``batch_size`` rows; the missing rows are padding rows
          (:meth:`pad_batch`: ``labels`` -100, ``attention_mask`` 0, ``input_length`` 0), so a
          jitted step sees one shape and padding adds nothing to the loss.

        ``shuffle="blocks"``: batches of consecutive rows in a per-epoch order of the blocks,
        for outputs of ``denoise shuffle`` (see :func:`epoch_batches`); a batch of consecutive
        rows inside one record batch is a read-only zero-copy view of the mapped shard.
        ``columns``: only these columns (default: all).

        See :func:`epoch_batches` for the exact plan."""
        if shuffle == BLOCKS and not pad_last:
            yield from self._iter_blocks(
                batch_size, seed, epoch, rank, world_size, drop_last, columns
            )
            return
        plan = epoch_batches(
            len(self),
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            pad_last=pad_last,
        )
        for chunk in plan:
            # sorted, distinct indices: consecutive rows iff the span is the length
            b = None
            if len(chunk) and chunk[-1] - chunk[0] == len(chunk) - 1:
                b = self.view(int(chunk[0]), int(chunk[-1]) + 1, columns)
            if b is None:
                b = self.take(chunk, columns)
            yield self.pad_batch(b, batch_size) if pad_last else b

    def _iter_blocks(
        self,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        columns: Sequence[str] | None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """:meth:`iter_batches` for ``shuffle="blocks"`` (no padding): each batch a slice per
        column of its record batch (~1 us), a block across two record batches (or a compact
        output's) gathered."""
        cols = list(self.columns) if columns is None else list(columns)
        for k in cols:
            if k not in self._info:
                raise KeyError(f"no column {k!r} (columns: {', '.join(self.columns)})")
        _check_plan(batch_size, rank, world_size)
        blocks = epoch_blocks(len(self), batch_size, seed, epoch, rank, world_size, drop_last)
        for bi, lo, hi, a, b in self.locate_blocks(blocks, batch_size):
            if bi >= 0:
                v = self._view(bi)
                yield {k: v[k][lo:hi] for k in cols}
            else:
                yield self.take(np.arange(a, b), columns)

    def locate_blocks(
        self, blocks: np.ndarray, batch_size: int
    ) -> Iterator[tuple[int, int, int, int, int]]:
        """For each block (rows ``b * batch_size`` up to ``(b + 1) * batch_size``, the last one
        short), located all at once (:meth:`locate_many`): ``(record batch, lo, hi, first row,
        stop row)``, record batch ``-1`` where the block is not one slice of one record batch.
        The plan a zero-copy block reader follows, with no row indices made."""
        first = np.asarray(blocks, dtype=np.int64) * batch_size
        stop = np.minimum(first + batch_size, len(self))
        where, los, his = self.locate_many(first, stop)
        return zip(
            where.tolist(), los.tolist(), his.tolist(), first.tolist(), stop.tolist(), strict=True
        )


def _check_plan(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")


def epoch_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool | str = False,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = True,
    pad_last: bool = False,
) -> list[np.ndarray]:
    """The row indices of each batch that rank ``rank`` of ``world_size`` reads in an epoch.

    The epoch's order (:func:`epoch_order`) is dealt round-robin to the ranks
    (``order[rank::world_size]``), then cut into batches of ``batch_size``; the indices inside a
    batch are sorted (the shuffle decides which rows form a batch and the order of the batches;
    sorted rows are gathered in one pass, with no reordering copy). With ``drop_last``
    each rank keeps ``(n // world_size) // batch_size`` full batches; otherwise it keeps all its
    rows and the last batch may be short; with ``pad_last`` (which overrides ``drop_last``)
    nothing is dropped and every rank gets
    ``ceil(ceil(n / world_size) / batch_size)`` batches (the short or empty ones are to be
    padded by the caller, see :meth:`DenoiseDataset.pad_batch`).

    ``shuffle="blocks"`` (for an output of ``denoise shuffle``, whose rows are already in a
    seeded global order): every batch is ``batch_size`` consecutive rows, and only the order of
    these blocks changes per epoch (:func:`_block_batches`), so each batch is a contiguous slice
    (a zero-copy view where it lies in one record batch). The rows that make up a batch are then
    the same every epoch."""
    _check_plan(batch_size, rank, world_size)
    drop_last = drop_last and not pad_last
    if shuffle == BLOCKS:
        return _block_batches(n, batch_size, seed, epoch, rank, world_size, drop_last, pad_last)
    if not isinstance(shuffle, bool):
        raise ValueError(f"shuffle must be True, False or {BLOCKS!r}, got {shuffle!r}")
    order = epoch_order(n, shuffle=shuffle, seed=seed, epoch=epoch)
    mine = order[rank::world_size]
    if drop_last:
        mine = mine[: (n // world_size) // batch_size * batch_size]
    rows = -(-n // world_size) if pad_last else len(mine)  # ceil(n / world_size) when padding
    nb = -(-rows // batch_size)
    # Sorted within a batch: which rows form a batch is what the shuffle decides (their order
    # inside it means nothing to a loss over the batch), and sorted rows gather in one pass.
    return [np.sort(mine[i * batch_size : (i + 1) * batch_size]) for i in range(nb)]


def _block_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
    pad_last: bool,
) -> list[np.ndarray]:
    """``shuffle="blocks"``: the rows cut into consecutive blocks of ``batch_size`` (the last one
    short), the blocks in an order seeded by ``(seed, epoch)`` and dealt round-robin to the ranks.
    ``drop_last``: the short block is dropped and every rank keeps ``(n // batch_size) //
    world_size`` blocks; ``pad_last``: every rank gets ``ceil(blocks / world_size)`` batches (the
    short or missing ones to be padded)."""
    nblocks = -(-n // batch_size)
    mine = epoch_blocks(n, batch_size, seed, epoch, rank, world_size, drop_last)
    res = [np.arange(b * batch_size, min((b + 1) * batch_size, n), dtype=np.int64) for b in mine]
    if pad_last:
        res += [np.zeros(0, dtype=np.int64)] * (-(-nblocks // world_size) - len(res))
    return res


def epoch_blocks(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> np.ndarray:
    """The blocks (block ``b`` = rows ``b * batch_size`` up to ``(b + 1) * batch_size``, the last
    one short) that rank ``rank`` reads in an epoch of ``shuffle="blocks"``, in order: the
    :func:`_block_batches` plan as block numbers (what a zero-copy reader needs, with no row
    indices made)."""
    nblocks = -(-n // batch_size)
    full = n // batch_size
    order = epoch_order(nblocks if not drop_last else full, shuffle=True, seed=seed, epoch=epoch)
    mine = order[rank::world_size]
    return mine[: full // world_size] if drop_last else mine


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The row order of an epoch: identity, or a permutation from SeedSequence([seed, epoch])."""
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return rng.permutation(n).astype(np.int64)


def open_dataset(
    out: str | Path,
    epoch: int | None = None,
    verify: str = "fast",
    *,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    split: str | None = None,
) -> DenoiseDataset:
    """Open a ``denoise prepare`` output directory (see :class:`DenoiseDataset`).

    ``out`` may be an fsspec URL (``s3://bucket/out/``): the output is copied once into
    ``cache_dir`` (default ``$DENOISE_CACHE_DIR`` or ``~/.cache/denoise/outputs``; only files
    not already there with their size) and served from there, memory-mapped like a local one;
    ``storage_options`` are the fsspec options (credentials, endpoint).

    For an output of ``prepare --epochs K``, ``epoch`` selects the variant ``epoch % K``
    (default 0): pass the training epoch to get fresh corruption every epoch.

    ``verify``: ``"fast"`` (default) checks shard sizes, row counts, unlisted shards and that
    each shard's rows are its file's next examples; ``"sha256"`` also hashes every shard
    against the manifest; ``"none"`` checks only that the shards exist. A mismatch raises
    :class:`OutputError` (exit code 4 in the CLI).

    For an output of ``prepare --split``, ``split`` names the split to open (required there;
    the error names the splits the output has)."""
    return DenoiseDataset(
        out, epoch, verify, storage_options=storage_options, cache_dir=cache_dir, split=split
    )

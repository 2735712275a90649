"""PyTorch access to a ``denoise prepare`` output: batches as tensors with no per-row work.

This module imports ``torch`` (``import denoise_cli`` does not). :class:`DenoiseBatches`
(recommended) is an ``IterableDataset`` of whole batches, each gathered in one pass
(:func:`gather`: one fancy index per column over the mapped shards, widened to int64 and pinned
when asked), for ``DataLoader(..., batch_size=None)``; :class:`DenoiseTorchDataset` with
:class:`DenoiseBatchSampler` and :func:`collate` is the map-style way. Shuffling is seeded by
``(seed, epoch)`` (``set_epoch``, shared with persistent workers); rows are split over
data-parallel ranks and DataLoader workers with the plan of ``load.epoch_batches`` (the numpy
loader gives the same batches); ``prepare --epochs K`` outputs serve variant ``epoch % K``.
Packed outputs: :func:`packed_attention_bias` (4-D masks) and
:func:`shift_right_within_segments` (decoder inputs). ``long=False`` keeps the stored int32/int8.
Usage: README "Loading", examples/README.md, docs/packing.md.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info
except ImportError as _e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "denoise_cli.torch_data needs PyTorch: pip install 'denoise-cli[torch]' "
        "(or any torch build for your platform). The numpy API (denoise_cli.open_dataset) "
        "works without it."
    ) from _e

from ..output.manifest import read_manifest, split_path
from .dataset import BLOCKS, DenoiseDataset, epoch_batches, epoch_blocks, open_dataset

Batch = dict[str, torch.Tensor]

#: The columns a Hugging Face model's ``forward`` takes (the others are bookkeeping).
MODEL_COLUMNS: tuple[str, ...] = ("input_ids", "attention_mask", "labels")

__all__ = [
    "MODEL_COLUMNS",
    "Batch",
    "DenoiseBatchSampler",
    "DenoiseBatches",
    "DenoiseTorchDataset",
    "collate",
    "dist_rank_world",
    "gather",
    "packed_attention_bias",
    "shift_right_within_segments",
    "to_tensors",
]


def _dataset(
    data: str | Path | DenoiseDataset, verify: str = "fast", split: str | None = None
) -> DenoiseDataset:
    if isinstance(data, DenoiseDataset):
        return data
    return open_dataset(data, verify=verify, split=split)


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments where given, else ``torch.distributed``'s when it is
    initialised, else ``(0, 1)``."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = 0, 1
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return rank, world_size


def to_tensors(
    batch: Mapping[str, np.ndarray], *, long: bool = True, pin_memory: bool = False
) -> Batch:
    """numpy batch -> tensors with ``torch.from_numpy`` (no copy), then ``long`` widens integer
    columns to int64 with torch (its allocator reuses memory; a fresh numpy int64 array per batch
    costs page faults that are several times the gather itself). Read-only views (zero-copy
    slices of the mapped shards) are copied once, since torch wants writable memory."""
    out: Batch = {}
    for k, a in batch.items():
        if not a.flags.writeable:
            a = a.astype(np.int64) if long and a.dtype.kind in "iu" else a.copy()
        t = torch.from_numpy(a)
        if long and a.dtype.kind in "iu" and t.dtype != torch.int64:
            t = t.to(torch.int64)
        out[k] = t.pin_memory() if pin_memory else t
    return out


def packed_attention_bias(
    q_segment_ids: torch.Tensor,
    kv_segment_ids: torch.Tensor | None = None,
    *,
    causal: bool = False,
    prefix_mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive attention mask ``[B, 1, Lq, Lk]`` for packed rows, in the form Hugging Face
    models take as a 4-D ``attention_mask`` (0 = may attend, ``finfo(dtype).min`` = may not).

    A real query (segment id > 0) attends to keys of its own segment only; ``causal`` adds
    ``k <= q`` (slots of the row), and ``prefix_mask`` (decoder-only prefix-LM) makes a key in its
    segment's prefix visible to the whole segment. Self-attention: ``kv_segment_ids=None``;
    encoder-decoder cross-attention: ``q`` = ``decoder_segment_ids``, ``kv`` =
    ``encoder_segment_ids``. Padding queries (id 0) may attend to every key, so no row of the
    softmax is empty (no NaN); their outputs are never read by a real query (real queries never
    see padding keys) and carry no loss. Equal to :func:`denoise_cli.load.attention.segment_mask` on the
    real queries."""
    q = q_segment_ids
    k = q if kv_segment_ids is None else kv_segment_ids
    allowed = q[:, :, None] == k[:, None, :]
    if causal:
        pos_q = torch.arange(q.shape[1], device=q.device)
        pos_k = torch.arange(k.shape[1], device=q.device)
        c = (pos_k[None, :] <= pos_q[:, None])[None]
        if prefix_mask is not None:
            c = c | (prefix_mask[:, None, :] > 0)
        allowed &= c
    allowed |= (q == 0)[:, :, None]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=q.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def shift_right_within_segments(
    labels: torch.Tensor, decoder_segment_ids: torch.Tensor, start_id: int, pad_id: int
) -> torch.Tensor:
    """Decoder inputs of packed encoder-decoder rows: ``labels`` shifted right by one within each
    segment, ``start_id`` (T5: the pad id) at every segment's first slot, ``pad_id`` on padding.
    Pass them as ``decoder_input_ids``: HF's own ``_shift_right`` of the whole row would feed
    segment ``j``'s EOS into segment ``j + 1``. Same as
    :func:`denoise_cli.load.attention.decoder_input_ids`."""
    seg = decoder_segment_ids
    out = torch.full_like(labels, pad_id)
    out[:, 1:] = labels[:, :-1]
    out = out.masked_fill(out == -100, pad_id)
    first = seg > 0
    first[:, 1:] &= seg[:, 1:] != seg[:, :-1]
    out = out.masked_fill(first, start_id)
    return out.masked_fill(seg == 0, pad_id)


_DTYPES: dict[np.dtype[Any], torch.dtype] = {}


def _torch_dtype(dt: np.dtype[Any], long: bool) -> torch.dtype:
    if long and dt.kind in "iu":
        return torch.int64
    t = _DTYPES.get(dt)
    if t is None:
        t = _DTYPES[dt] = torch.from_numpy(np.empty(0, dtype=dt)).dtype
    return t


def gather(
    ds: DenoiseDataset,
    idx: np.ndarray | Sequence[int],
    columns: Sequence[str] | None = None,
    *,
    long: bool = True,
    pin_memory: bool = False,
    size: int | None = None,
    zero_copy: bool = False,
) -> Batch:
    """Rows ``idx`` of ``ds`` as tensors, gathered in one pass straight into new arrays
    (``DenoiseDataset.take(out=...)``, or one copy per column for a slice of one record batch)
    that the tensors wrap: int64 when ``long`` (the
    widening is part of the gather), allocated in pinned memory when ``pin_memory`` (then the
    host-to-device copy can be ``non_blocking``). ``size > len(idx)`` appends padding rows
    (``ds.pad_values``: labels -100, attention_mask 0, input_length 0, ...).

    ``zero_copy`` (needs ``long=False``): when the rows are consecutive and lie in one record
    batch of a default-format output (``denoise shuffle`` + ``shuffle="blocks"``), the tensors
    share the memory-mapped shard instead of copying it. The mapping is read-only: writing into
    such a tensor in place crashes the process (SIGSEGV), so copy it first (``.to(device)`` or
    ``.clone()``) if your step modifies its inputs. Other batches are copied as usual."""
    info = ds.column_info
    cols = list(info) if columns is None else list(columns)
    n = len(idx)
    size = n if size is None else size
    if size < n:
        raise ValueError(f"size {size} < {n} rows")
    idx = np.asarray(idx, dtype=np.int64)
    # increasing over a span of n - 1: consecutive rows, perhaps one slice of one record batch
    consecutive = bool(n) and idx[-1] - idx[0] == n - 1 and bool((idx[1:] > idx[:-1]).all())
    if zero_copy:
        if long:
            raise ValueError(
                "zero_copy needs long=False (ids are stored as int32: widen on the device)"
            )
        if consecutive and size == n and not pin_memory:
            got = tensor_views(ds).get(int(idx[0]), int(idx[-1]) + 1, cols)
            if got is not None:
                return got
    arrays: dict[str, np.ndarray] = {}
    tensors: Batch = {}
    for k in cols:
        if k not in info:
            raise KeyError(f"no column {k!r} (columns: {', '.join(info)})")
        shape, dt = info[k]
        if pin_memory:
            t = torch.empty((size, *shape), dtype=_torch_dtype(dt, long), pin_memory=True)
            arrays[k] = t.numpy()
        else:  # numpy's allocations are recycled by malloc: no fresh pages per batch
            wide = np.dtype(np.int64) if long and dt.kind in "iu" else dt
            arrays[k] = np.empty((size, *shape), dtype=wide)
            t = torch.from_numpy(arrays[k])
        tensors[k] = t
    outs = arrays if size == n else {k: a[:n] for k, a in arrays.items()}
    view = ds.view(int(idx[0]), int(idx[-1]) + 1, cols) if consecutive else None
    if view is not None:  # one contiguous copy per column (widened in the same pass)
        for k, o in outs.items():
            np.copyto(o, view[k], casting="safe")
    else:
        ds.take(idx, out=outs)
    if size > n:
        fill = ds.pad_values
        for k, a in arrays.items():
            a[n:] = fill.get(k, 0)
    return tensors


class TensorViews:
    """Read-only tensors over the mapped record batches of a dataset, made once per record batch
    (``torch.from_numpy``; torch's warning about read-only arrays is silenced there), so that a
    zero-copy batch is a slice per column. Writing into them crashes the process (see
    :func:`gather`)."""

    def __init__(self, ds: DenoiseDataset) -> None:
        self.ds = ds
        self._cache: dict[int, Batch] = {}
        self._blocks: dict[tuple[int, int, int], Batch] = {}

    def get(self, start: int, stop: int, columns: Sequence[str]) -> Batch | None:
        """Rows ``start:stop`` as tensor views, or None where :meth:`DenoiseDataset.locate`
        says they are not one slice of one record batch."""
        loc = self.ds.locate(start, stop)
        if loc is None:
            return None
        bi, lo, hi = loc
        ts = self.record_batch(bi)
        for k in columns:
            if k not in ts:
                raise KeyError(f"no column {k!r} (columns: {', '.join(self.ds.columns)})")
        # a slice, not ``narrow``: ~1 us less per column (torch's operator dispatch)
        return {k: ts[k][lo:hi] for k in columns}

    def blocks(self, bi: int, phase: int, batch_size: int) -> Batch:
        """Every column of record batch ``bi`` from row ``phase`` on as ``[m, batch_size, ...]``
        views (``m`` whole blocks; made once per record batch, phase and size, then cached): a
        block starting at row ``phase + j * batch_size`` is then ``view[j]``, one ``select``
        (~0.5 us less than a slice per column here; one object per record batch, not per
        block)."""
        key = (bi, phase, batch_size)
        ts = self._blocks.get(key)
        if ts is None:
            rb = self.record_batch(bi)
            ts = {}
            for k, t in rb.items():
                m = (t.shape[0] - phase) // batch_size
                ts[k] = t[phase : phase + m * batch_size].view(m, batch_size, *t.shape[1:])
            self._blocks[key] = ts
        return ts

    def record_batch(self, bi: int) -> Batch:
        """Every column of record batch ``bi`` as a read-only tensor (made once, then cached)."""
        ts = self._cache.get(bi)
        if ts is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ts = {k: torch.from_numpy(a) for k, a in self.ds.batch_view(bi).items()}
            self._cache[bi] = ts
        return ts


_TENSOR_VIEWS: weakref.WeakKeyDictionary[DenoiseDataset, TensorViews] = weakref.WeakKeyDictionary()


def tensor_views(ds: DenoiseDataset) -> TensorViews:
    """The :class:`TensorViews` of ``ds`` (one per dataset, dropped with it)."""
    tv = _TENSOR_VIEWS.get(ds)
    if tv is None:
        tv = _TENSOR_VIEWS[ds] = TensorViews(ds)
    return tv


def _select(batch: dict[str, np.ndarray], columns: Sequence[str] | None) -> dict[str, np.ndarray]:
    return batch if columns is None else {c: batch[c] for c in columns}


def _check_columns(ds: DenoiseDataset, columns: Sequence[str] | None) -> tuple[str, ...] | None:
    if columns is None:
        return None
    missing = [c for c in columns if c not in ds.columns]
    if missing:
        raise KeyError(f"columns {missing} are not in {ds.path} (it has {ds.columns})")
    return tuple(columns)


def _can_pin() -> bool:
    return torch.cuda.is_available()


class _SharedEpoch:
    """An epoch counter in shared memory: ``set_epoch`` in the main process reaches DataLoader
    workers, persistent ones included (fork and spawn alike)."""

    def __init__(self, epoch: int) -> None:
        self._t = torch.full((1,), epoch, dtype=torch.int64)
        self._t.share_memory_()  # type: ignore[no-untyped-call]

    def get(self) -> int:
        return int(self._t[0])

    def set(self, epoch: int) -> None:
        self._t[0] = int(epoch)


class DenoiseBatches(IterableDataset[Batch]):
    """Whole fixed-shape batches as tensors; use with ``DataLoader(self, batch_size=None)``.

    ``len()`` is the number of batches this rank yields per epoch (summed over workers).
    Worker ``w`` of ``W`` yields this rank's batches ``w, w + W, ...``; the DataLoader
    interleaves workers round-robin, so the batch order is the same for any ``num_workers``.

    Given the path of an output of ``prepare --epochs K``, epoch ``e`` reads the variant
    ``e % K`` (``open_dataset(path, epoch=e)``: fresh corruption every epoch) in the order of
    epoch ``e``; given a :class:`DenoiseDataset`, that one dataset is used for every epoch.
    ``verify`` is :func:`~denoise_cli.load.open_dataset`'s check of each variant it opens
    (``"fast"``, ``"sha256"``, ``"none"``). ``split``: which split of a ``prepare --split``
    output to read.

    For an output of ``denoise shuffle`` (rows already in a seeded global order), use
    ``shuffle="blocks"``: each batch is consecutive rows, and ``zero_copy=True`` (with
    ``long=False``) serves it as tensors over the read-only mapped shard (see :func:`gather`).
    """

    def __init__(
        self,
        data: str | Path | DenoiseDataset,
        batch_size: int,
        *,
        shuffle: bool | str = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = True,
        pad_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        columns: Sequence[str] | None = None,
        long: bool = True,
        pin_memory: bool = False,
        verify: str = "fast",
        split: str | None = None,
        zero_copy: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if zero_copy and long:
            raise ValueError(
                "zero_copy needs long=False (ids are stored as int32: widen on the device)"
            )
        self.zero_copy = zero_copy
        self._verify = verify
        self._fixed: DenoiseDataset | None = None
        self._root: Path | None = None
        if isinstance(data, DenoiseDataset):
            self._fixed = data
        else:
            self._root = split_path(Path(data), split)  # prepare --split: that split
        self._variants: dict[int, DenoiseDataset] = {}
        self._num_variants = 1
        if self._root is not None:  # prepare --epochs K: K variants, epoch e reads e % K
            self._num_variants = len(read_manifest(self._root).get("epoch_dirs") or [None])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last and not pad_last
        self.pad_last = pad_last
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self._epoch = _SharedEpoch(epoch)
        self.columns = _check_columns(self.dataset, columns)
        self.long = long
        self.pin_memory = pin_memory
        self._consumed = 0  # batches yielded by this object's iterator (main process) this epoch
        self._resume: dict[str, int] | None = None

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def state_dict(self, consumed: int | None = None) -> dict[str, int]:
        """Where this rank's batch stream stands: ``{"epoch", "batches", "seed", "rank",
        "world_size"}``. ``batches`` counts the batches of the epoch already consumed: the ones
        this object yielded when iterated in the main process (``num_workers=0``); with
        DataLoader workers, pass ``consumed`` (the batches your loop took this epoch, e.g. the
        step within the epoch): the batch order does not depend on the worker count, so that
        number says it all."""
        return {
            "epoch": self.epoch,
            "batches": self._consumed if consumed is None else int(consumed),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue exactly after ``state["batches"]`` batches of epoch ``state["epoch"]``: the
        next ``iter()`` (in the main process or in the workers of a DataLoader created after
        this call) yields the batches an uninterrupted run would have yielded next; the next
        ``set_epoch`` ends the resume (iterating in the main process ends it too). Refuses a
        state from another seed, rank or world size (another batch plan)."""
        for k in ("seed", "rank", "world_size"):
            if k in state and int(state[k]) != getattr(self, k):
                raise ValueError(
                    f"state_dict is from {k}={state[k]}, this loader has {getattr(self, k)}"
                )
        self.set_epoch(int(state["epoch"]))  # before: set_epoch clears a resume
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}
        self._consumed = int(state["batches"])

    def dataset_for(self, epoch: int) -> DenoiseDataset:
        """The dataset that epoch ``epoch`` reads (see the class docstring)."""
        if self._fixed is not None:
            return self._fixed
        assert self._root is not None
        key = epoch % self._num_variants
        ds = self._variants.get(key)
        if ds is None:
            ds = self._variants[key] = open_dataset(self._root, epoch=key, verify=self._verify)
        return ds

    @property
    def dataset(self) -> DenoiseDataset:
        """The dataset of the current epoch."""
        return self.dataset_for(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` from the next ``iter()`` on (call before each epoch).
        Ends a resume (``load_state_dict``)."""
        self._epoch.set(epoch)
        self._resume = None
        self._consumed = 0

    def plan(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches (row indices) of an epoch, before the split across workers."""
        epoch = self.epoch if epoch is None else epoch
        return epoch_batches(
            len(self.dataset_for(epoch)),
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
            pad_last=self.pad_last,
        )

    def __len__(self) -> int:
        return len(self.plan())

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        pin = self.pin_memory and info is None and _can_pin()
        size = self.batch_size if self.pad_last else None
        epoch = self.epoch
        ds = self.dataset_for(epoch)
        r, start = self._resume, 0
        if r is not None and r["epoch"] == epoch:
            start = r["batches"]  # the rest of the plan, still round-robin over the workers
        self._resume = None  # this process's copy: a resume applies to one pass
        self._consumed = start
        tv = tensor_views(ds) if self.zero_copy and size is None and not pin else None
        cols = list(self.columns) if self.columns is not None else ds.columns
        if tv is not None and self.shuffle == BLOCKS:
            yield from self._zero_copy_blocks(ds, tv, cols, epoch, start, wid, nw)
            return
        for idx in self.plan(epoch)[start:][wid::nw]:
            self._consumed += 1
            n = len(idx)
            # plan batches are sorted and distinct: consecutive iff the span is n - 1
            if tv is not None and n and int(idx[-1]) - int(idx[0]) == n - 1:
                got = tv.get(int(idx[0]), int(idx[-1]) + 1, cols)
                if got is not None:
                    yield got
                    continue
            batch = gather(
                ds,
                idx,
                self.columns,
                long=self.long,
                pin_memory=pin,
                size=size,
            )
            yield batch

    def _zero_copy_blocks(
        self,
        ds: DenoiseDataset,
        tv: TensorViews,
        cols: list[str],
        epoch: int,
        start: int,
        wid: int,
        nw: int,
    ) -> Iterator[Batch]:
        """The plan of :meth:`plan` for ``shuffle="blocks"`` with ``zero_copy``, served from block
        numbers located all at once (no row indices per batch): a whole block is then one
        ``select`` per column of its record batch's block view (:meth:`TensorViews.blocks`),
        which is most of its cost; the short last block is a slice; a block across two record
        batches is copied."""
        bs = self.batch_size
        blocks = epoch_blocks(
            len(ds), bs, self.seed, epoch, self.rank, self.world_size, self.drop_last
        )
        for bi, lo, hi, first, stop in ds.locate_blocks(blocks[start:][wid::nw], bs):
            self._consumed += 1
            if bi < 0:
                yield gather(ds, np.arange(first, stop), self.columns, long=False)
            elif hi - lo == bs:  # a whole block: one select of the record batch's block view
                phase = lo % bs
                ts = tv.blocks(bi, phase, bs)
                j = lo // bs
                yield {k: ts[k][j] for k in cols}
            else:  # the short last block
                ts = tv.record_batch(bi)
                yield {k: ts[k][lo:hi] for k in cols}


class DenoiseTorchDataset(Dataset[Batch]):
    """Map-style dataset: ``ds[i]`` is one row as tensors; ``ds.__getitems__(indices)`` (what
    ``DataLoader`` calls with a batch sampler) is a whole batch gathered in one take. Use
    ``collate_fn=collate`` with it (the default collate would try to stack a dict).
    ``verify``: :func:`~denoise_cli.load.open_dataset`'s check when ``data`` is a path;
    ``split``: which split of a ``prepare --split`` output."""

    def __init__(
        self,
        data: str | Path | DenoiseDataset,
        *,
        columns: Sequence[str] | None = None,
        long: bool = True,
        verify: str = "fast",
        split: str | None = None,
    ) -> None:
        self.dataset = _dataset(data, verify, split)
        self.columns = _check_columns(self.dataset, columns)
        self.long = long

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Batch:
        row = _select(self.dataset[int(i)], self.columns)
        return to_tensors({k: np.asarray(v) for k, v in row.items()}, long=self.long)

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        return gather(
            self.dataset, np.asarray(indices, dtype=np.int64), self.columns, long=self.long
        )


def collate(data: Any) -> Any:
    """``collate_fn`` for :class:`DenoiseTorchDataset`: a batch from ``__getitems__`` passes
    through; a list of rows is stacked with torch's ``default_collate``."""
    if isinstance(data, Mapping):
        return data
    from torch.utils.data import default_collate

    return default_collate(data)


class DenoiseBatchSampler(Sampler[list[int]]):
    """Batches of row indices: deterministic shuffle by ``(seed, epoch)`` (``set_epoch``) and a
    split across data-parallel ranks, same plan as :class:`DenoiseBatches`. The sampler runs in
    the main process, so DataLoader workers need no split of their own."""

    def __init__(
        self,
        data: int | str | Path | DenoiseDataset | DenoiseTorchDataset,
        batch_size: int,
        *,
        shuffle: bool | str = True,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(data, int):
            self.num_rows = data
        elif isinstance(data, DenoiseTorchDataset):
            self.num_rows = len(data.dataset)
        else:
            self.num_rows = len(_dataset(data))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = epoch
        self.drop_last = drop_last
        self.rank, self.world_size = dist_rank_world(rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> list[np.ndarray]:
        return epoch_batches(
            self.num_rows,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            drop_last=self.drop_last,
        )

    def __len__(self) -> int:
        return len(self._plan())

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self._plan():
            yield idx.tolist()

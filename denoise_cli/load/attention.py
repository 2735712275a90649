"""Attention helpers for packed rows (numpy): the varlen form (``unpad_indices`` +
``cu_seqlens`` for flash-attention), boolean segment masks (a reference for custom kernels), and
decoder inputs shifted within segments. PyTorch versions live in ``load.torch_data``. See
docs/packing.md ("Training on packed rows").
"""

from __future__ import annotations

import numpy as np

from ..rows.base import IGNORE_INDEX


def unpad_indices(segment_ids: np.ndarray) -> np.ndarray:
    """Flat (row-major) indices of the real tokens of a ``[B, L]`` batch: gather
    ``x.reshape(B * L, ...)[idx]`` to get the unpadded tokens :func:`cu_seqlens` describes."""
    return np.flatnonzero(np.asarray(segment_ids).reshape(-1) > 0)


def cu_seqlens(segment_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """flash-attention varlen metadata of a ``[B, L]`` batch of segment ids (0 = padding):
    ``cu_seqlens`` (int32, ``[num_segments + 1]``, cumulative segment lengths in row-major order
    over the unpadded tokens of :func:`unpad_indices`) and ``max_seqlen``. Vectorized."""
    s = np.asarray(segment_ids)
    L = s.shape[1]
    flat = s.reshape(-1)
    idx = np.flatnonzero(flat > 0)
    if idx.size == 0:
        return np.zeros(1, dtype=np.int32), 0
    v = flat[idx]
    rowi = idx // L
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (v[1:] != v[:-1]) | (rowi[1:] != rowi[:-1])
    starts = np.flatnonzero(new)
    cu = np.empty(starts.size + 1, dtype=np.int32)
    cu[:-1] = starts
    cu[-1] = idx.size
    return cu, int(np.diff(cu).max())


def segment_mask(
    q_segment_ids: np.ndarray,
    kv_segment_ids: np.ndarray | None = None,
    *,
    causal: bool = False,
    prefix_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean attention mask ``[B, Lq, Lk]`` (True = may attend) for packed rows: same non-zero
    segment; ``causal`` adds ``k <= q`` (positions in the row); with ``prefix_mask``
    (decoder-only prefix-LM) a key in its segment's prefix is visible to the whole segment."""
    q = np.asarray(q_segment_ids)
    k = q if kv_segment_ids is None else np.asarray(kv_segment_ids)
    m: np.ndarray = (q[:, :, None] == k[:, None, :]) & (q[:, :, None] > 0)
    if causal:
        c = np.arange(k.shape[1])[None, :] <= np.arange(q.shape[1])[:, None]
        if prefix_mask is not None:
            c = c[None, :, :] | (np.asarray(prefix_mask)[:, None, :] > 0)
        m &= c
    return m


def decoder_input_ids(
    labels: np.ndarray, decoder_segment_ids: np.ndarray, start_id: int, pad_id: int
) -> np.ndarray:
    """Decoder inputs of packed encoder-decoder rows: labels shifted right by one **within each
    segment**, ``start_id`` (T5: the pad id) at each segment's first position, ``pad_id`` on
    padding (HF ``_shift_right`` per segment)."""
    lab = np.asarray(labels)
    seg = np.asarray(decoder_segment_ids)
    out = np.full(lab.shape, pad_id, dtype=lab.dtype)
    out[:, 1:] = lab[:, :-1]
    out[out == IGNORE_INDEX] = pad_id
    first = seg > 0
    first[:, 1:] &= seg[:, 1:] != seg[:, :-1]
    out[first] = start_id
    out[seg == 0] = pad_id
    return out

"""Feed packed rows to variable-length ("varlen") attention, and check it against the 4-D mask.

flash-attention's ``flash_attn_varlen_func`` and PyTorch's ``torch.nn.attention.varlen.varlen_attn``
take the real tokens of a batch back to back (no padding) plus ``cu_seqlens``, the cumulative
lengths of the sequences in that flat order. A packed row's segments are exactly those
sequences, so (``denoise_cli.load.attention``):

    idx = unpad_indices(segment_ids)           # flat indices of the real tokens, row-major
    cu, max_len = cu_seqlens(segment_ids)      # int32 [num_segments + 1], longest segment
    q_flat = q.reshape(B * L, H, D)[idx]       # [total_tokens, H, D]
    out = varlen_attn(q_flat, k_flat, v_flat, cu, cu, max_len, max_len)   # CUDA
    out_rows = zeros(B * L, H, D); out_rows[idx] = out                   # back to [B, L, H, D]

encoder-decoder cross-attention uses the decoder side's ``cu_seqlens`` for the queries and the
encoder side's for the keys: the ``i``-th sequence of both is the same example. Causal decoder
self-attention is ``window_size=(-1, 0)``. A decoder-only **prefix-LM** (bidirectional prefix,
causal rest) is neither full nor causal, so it cannot be expressed with ``cu_seqlens`` alone; use
a ``flex_attention`` block mask whose ``mask_mod`` compares ``segment_ids`` and reads
``prefix_mask`` (:func:`flex_prefix_lm`, which skips the blocks across segments), or the dense
4-D mask (``denoise_cli.torch_data.packed_attention_bias``) for small rows.

This script takes a batch of a packed ``prepare --pack`` output, draws random queries, keys and
values per token, and computes every attention the layout needs both ways (decoder-only also the
prefix-LM with ``flex_attention`` against the 4-D mask): with
``scaled_dot_product_attention`` and the 4-D segment masks over the padded rows, and in the varlen
form (``varlen_attn`` on CUDA; on a CPU, which has no varlen kernel, the same flat tokens and
``cu_seqlens`` turned into a block-diagonal mask over the flat token axis, which is what the
kernel computes). It prints the largest difference on the real tokens::

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-pk -I 256 -T 160 --pack 4 \\
        --tokenizer tests/data/t5-tiny-tokenizer.json
    python examples/varlen_attention.py --data /tmp/ul2-pk
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from denoise_cli import open_dataset
from denoise_cli.load.attention import cu_seqlens, unpad_indices
from denoise_cli.torch_data import packed_attention_bias


def varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: int,
    max_k: int,
    causal: bool,
) -> torch.Tensor:
    """Attention over flat ``[tokens, H, D]`` sequences described by ``cu_seqlens``: the fused
    kernel on CUDA, else the same computation with a block-diagonal mask over the flat tokens
    (a reference: fine for a check, quadratic in the batch's total tokens)."""
    if q.is_cuda:
        from torch.nn.attention.varlen import varlen_attn

        window = (-1, 0) if causal else (-1, -1)
        out: torch.Tensor = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, window_size=window)
        return out
    seq_q = torch.repeat_interleave(torch.arange(len(cu_q) - 1), torch.diff(cu_q))
    seq_k = torch.repeat_interleave(torch.arange(len(cu_k) - 1), torch.diff(cu_k))
    allowed = seq_q[:, None] == seq_k[None, :]
    if causal:  # position within the sequence (q and k sides have the same lengths here)
        pos_q = torch.arange(len(seq_q)) - cu_q[seq_q]
        pos_k = torch.arange(len(seq_k)) - cu_k[seq_k]
        allowed &= pos_k[None, :] <= pos_q[:, None]
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=allowed
    )
    return o.transpose(0, 1)


def flex_prefix_lm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    segment_ids: torch.Tensor,
    prefix_mask: torch.Tensor,
) -> torch.Tensor:
    """Packed decoder-only prefix-LM attention with ``flex_attention`` (``[B, H, L, D]``): a
    token sees the earlier tokens and the prefix of its own segment. Padding queries see
    everything (their outputs are never used), as in ``packed_attention_bias``."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b: torch.Tensor, h: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor) -> Any:
        same = segment_ids[b, qi] == segment_ids[b, ki]
        return (same & ((ki <= qi) | (prefix_mask[b, ki] > 0))) | (segment_ids[b, qi] == 0)

    B, _, L, _ = q.shape
    block = create_block_mask(mask_mod, B, None, L, L, device=str(q.device))
    with warnings.catch_warnings():
        # uncompiled flex_attention runs a reference implementation and warns about it; in
        # training wrap it once: flex = torch.compile(flex_attention)
        warnings.simplefilter("ignore", UserWarning)
        out: torch.Tensor = flex_attention(q, k, v, block_mask=block)
    return out


def compare_flex(seg: np.ndarray, prefix: np.ndarray, heads: int, dim: int, device: str) -> float:
    """Largest difference on real tokens between 4-D-mask SDPA and ``flex_prefix_lm``."""
    B, L = seg.shape
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, heads, L, dim, generator=g).to(device) for _ in range(3))
    s = torch.from_numpy(seg).to(device)
    p = torch.from_numpy(prefix).to(device)
    dense = F.scaled_dot_product_attention(
        q, k, v, attn_mask=packed_attention_bias(s, causal=True, prefix_mask=p, dtype=q.dtype)
    )
    flex = flex_prefix_lm(q, k, v, s, p)
    real = (s > 0)[:, None, :, None].expand_as(dense)
    return float((dense - flex).abs()[real].max())


def compare(
    q_seg: np.ndarray, k_seg: np.ndarray | None, causal: bool, heads: int, dim: int, device: str
) -> float:
    """Largest difference on real query tokens between 4-D-mask SDPA and the varlen form."""
    k_seg_ = q_seg if k_seg is None else k_seg
    B, Lq = q_seg.shape
    Lk = k_seg_.shape[1]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, Lq, heads, dim, generator=g).to(device)
    k = torch.randn(B, Lk, heads, dim, generator=g).to(device)
    v = torch.randn(B, Lk, heads, dim, generator=g).to(device)
    if device == "cuda":
        q, k, v = q.half(), k.half(), v.half()
    # 1) padded rows + 4-D additive mask ([B, 1, Lq, Lk]), as HF models take it
    qs = torch.from_numpy(q_seg).to(device)
    ks = torch.from_numpy(k_seg_).to(device)
    bias = packed_attention_bias(qs, None if k_seg is None else ks, causal=causal, dtype=q.dtype)
    dense = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias
    ).transpose(1, 2)
    # 2) varlen: real tokens back to back + cu_seqlens
    iq, ik = unpad_indices(q_seg), unpad_indices(k_seg_)
    cu_q, max_q = cu_seqlens(q_seg)
    cu_k, max_k = cu_seqlens(k_seg_)
    if len(cu_q) != len(cu_k):
        raise ValueError("both sides must hold the same segments")
    flat = varlen(
        q.reshape(B * Lq, heads, dim)[torch.from_numpy(iq).to(device)],
        k.reshape(B * Lk, heads, dim)[torch.from_numpy(ik).to(device)],
        v.reshape(B * Lk, heads, dim)[torch.from_numpy(ik).to(device)],
        torch.from_numpy(cu_q).to(device),
        torch.from_numpy(cu_k).to(device),
        max_q,
        max_k,
        causal,
    )
    real = dense.reshape(B * Lq, heads, dim)[torch.from_numpy(iq).to(device)]
    return float((real - flat).abs().max())


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="output of prepare --pack K")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    ds = open_dataset(args.data)
    if not ds.manifest.get("packing"):
        sys.exit(f"{args.data} is not a packed output (prepare --pack K)")
    b = ds[0 : args.rows]
    if ds.manifest["layout"] == "encoder-decoder":
        enc, dec = b["encoder_segment_ids"], b["decoder_segment_ids"]
        cases = {
            "encoder self-attention": (enc, None, False),
            "decoder causal self-attention": (dec, None, True),
            "cross-attention (q: decoder, k: encoder)": (dec, enc, False),
        }
    else:
        seg = b["segment_ids"]
        cases = {
            "causal self-attention (no prefix)": (seg, None, True),
            "bidirectional self-attention": (seg, None, False),
        }
    kernel = "varlen_attn" if args.device == "cuda" else "flat block-diagonal reference"
    print(f"{args.rows} packed rows of {args.data}; varlen form via {kernel} on {args.device}")
    out = {}
    for name, (qs, ks, causal) in cases.items():
        out[name] = compare(
            np.array(qs),  # writable copies of the memory-mapped views, for torch
            None if ks is None else np.array(ks),
            causal,
            args.heads,
            args.dim,
            args.device,
        )
        print(f"  {name:42s} max |4-D mask - varlen| on real tokens = {out[name]:.2e}")
    if ds.manifest["layout"] == "decoder-only":
        name = "prefix-LM (flex_attention block mask)"
        out[name] = compare_flex(
            np.array(b["segment_ids"]),
            np.array(b["prefix_mask"]),
            args.heads,
            args.dim,
            args.device,
        )
        print(f"  {name:42s} max |4-D mask - flex| on real tokens = {out[name]:.2e}")
    return out


if __name__ == "__main__":
    main()

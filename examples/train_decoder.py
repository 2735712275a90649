"""Train a tiny, randomly initialised GPT-2 (causal LM) on a ``denoise prepare`` output in the
decoder-only layout, as a prefix-LM.

Each row is ``[mode] inputs targets EOS pad...`` with ``labels`` = ``input_ids`` on
``targets EOS`` and -100 on the prefix and padding (GPT-2 shifts the labels itself), and
``prefix_length`` = the length of ``[mode] inputs``. By default (``--mask prefix``) the script
turns ``prefix_length`` and ``attention_mask`` into a 4D additive attention mask ``[B, 1, S, S]``:
position ``q`` sees key ``k`` if ``k <= q`` (causal) or ``k < prefix_length`` (the prefix is
bidirectional), and ``k`` is not padding. ``GPT2LMHeadModel`` in transformers 5.x passes a 4D mask
through unchanged (``masking_utils`` returns a 4D mask as-is) for both the ``eager`` and ``sdpa``
attention; this was checked (changing the last prefix token changes the logits at position 0,
changing a target token changes nothing before it). ``--mask causal`` trains a plain causal LM with
the 2D ``attention_mask`` instead (what any model without 4D-mask support would do; the loss is
still on the targets only).

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-do --layout decoder-only -S 256
    python examples/train_decoder.py --data /tmp/ul2-do --steps 300

**Packed output** (``prepare --pack K``) is detected from the manifest: each row holds several
examples, each with its own bidirectional prefix. :func:`packed_forward` passes a 4-D mask from
``segment_ids`` and ``prefix_mask`` (a token sees the tokens of its own segment that are
earlier or in that segment's prefix; :func:`denoise_cli.torch_data.packed_attention_bias`) and
``positions`` as ``position_ids`` (positions restart at 0 in every segment, as unpacked). GPT-2
shifts the labels inside the model, and every segment starts with its mode token (label -100), so
no token is trained to predict the next segment. ``tests/test_train_examples.py`` checks that a
packed batch and the same examples unpacked give the same loss and gradients;
``examples/compare_packed.py`` prints the two loss curves side by side.

For a quick CPU run use the tiny test tokenizer (``--tokenizer
tests/data/t5-tiny-tokenizer.json``, vocabulary 129 instead of 50,293; see
``examples/train_t5.py``). ``--device cuda`` works unchanged. Prints the loss every
``--log-every`` steps and the mean loss of the first and last 10 steps. Recorded runs:
``examples/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from denoise_cli import open_dataset
from denoise_cli.torch_data import DenoiseBatches, packed_attention_bias

#: the columns each kind of batch needs
UNPACKED_COLUMNS = ("input_ids", "attention_mask", "labels", "prefix_length")
PACKED_COLUMNS = ("input_ids", "labels", "segment_ids", "positions", "prefix_mask")


def prefix_lm_mask(
    prefix_length: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Additive ``[B, 1, S, S]`` mask: 0 where query ``q`` may attend key ``k``
    (``k <= q or k < prefix_length``, and ``k`` a real token), the dtype's minimum elsewhere."""
    s = attention_mask.shape[1]
    pos = torch.arange(s, device=attention_mask.device)
    allowed = (pos[None, :] <= pos[:, None])[None] | (
        pos[None, None, :] < prefix_length[:, None, None]
    )
    allowed = allowed & attention_mask[:, None, :].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def packed_forward(model: Any, batch: dict[str, torch.Tensor]) -> Any:
    """GPT-2 forward pass on packed rows: per-segment prefix-LM attention, per-segment
    positions."""
    dtype = next(model.parameters()).dtype
    mask = packed_attention_bias(
        batch["segment_ids"], causal=True, prefix_mask=batch["prefix_mask"], dtype=dtype
    )
    return model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=batch["positions"],
        labels=batch["labels"],
    )


def forward(model: Any, batch: dict[str, torch.Tensor], packed: bool, mask: str = "prefix") -> Any:
    """The model's output (``.loss``) for one batch of packed or unpacked rows (``mask``:
    ``prefix`` or ``causal``, unpacked rows only)."""
    if packed:
        return packed_forward(model, batch)
    batch = dict(batch)
    prefix_length = batch.pop("prefix_length")
    if mask == "prefix":
        dtype = next(model.parameters()).dtype
        batch["attention_mask"] = prefix_lm_mask(prefix_length, batch["attention_mask"], dtype)
    return model(**batch)


def build_model(
    manifest: dict[str, Any], d_model: int, layers: int, n_positions: int | None = None
) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = manifest["tokenizer"]
    config = GPT2Config(
        vocab_size=int(tok["vocab_size"]),  # includes the added sentinels / mode tokens / <pad>
        n_positions=n_positions or int(manifest["lengths"]["seq_length"]),
        n_embd=d_model,
        n_layer=layers,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=int(tok["eos"]["id"]),
        eos_token_id=int(tok["eos"]["id"]),
        pad_token_id=int(tok["pad"]["id"]),
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # the default; set to silence transformers' warning about it
    return model


def main(argv: list[str] | None = None) -> list[float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", required=True, help="output directory of `denoise prepare --layout decoder-only`"
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10, help="linear learning-rate warmup steps")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument(
        "--n-positions",
        type=int,
        help="position embeddings (default: the rows' seq_length; packed rows only need "
        "their examples' length, since positions restart in every segment)",
    )
    ap.add_argument(
        "--mask",
        choices=("prefix", "causal"),
        default="prefix",
        help="prefix: prefix-LM 4D mask from prefix_length; causal: plain causal LM",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (a model this small gains nothing from more, and "
        "loses a lot on a busy machine)",
    )
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--losses-json", help="also write the per-step losses to this file")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = open_dataset(args.data)
    m = ds.manifest
    if m["layout"] != "decoder-only":
        sys.exit(
            f"{args.data} has layout {m['layout']}; this example needs decoder-only "
            "(`denoise prepare --layout decoder-only`; examples/train_t5.py is the "
            "encoder-decoder one)"
        )
    model = build_model(m, args.d_model, args.layers, args.n_positions).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup))
    )
    packed = bool(m.get("packing"))
    if packed and args.mask != "prefix":
        sys.exit("packed rows are trained with per-segment prefix-LM masks only (--mask prefix)")
    cols = PACKED_COLUMNS if packed else UNPACKED_COLUMNS
    batches = DenoiseBatches(ds, args.batch_size, seed=args.seed, columns=cols)
    if len(batches) == 0:
        sys.exit(f"{args.data} has {len(ds)} rows: fewer than one batch of {args.batch_size}")
    loader = DataLoader(
        batches,
        batch_size=None,
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.num_workers > 0,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"GPT-2 {args.layers} layers, d_model {args.d_model}, vocab {model.config.vocab_size}, "
        f"{n_params / 1e6:.2f}M parameters, {args.mask} mask; {len(ds)} {'packed ' if packed else ''}rows "
        f"({len(batches)} batches of {args.batch_size} per epoch) on {device}",
        flush=True,
    )

    losses: list[float] = []
    t0 = time.perf_counter()
    epoch = 0
    while len(losses) < args.steps:
        batches.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss = forward(model, batch, packed, args.mask).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step = len(losses)
            if step % args.log_every == 0 or step == 1:
                recent = losses[-args.log_every :]
                print(
                    f"step {step:5d}  epoch {epoch}  loss {losses[-1]:.4f}  "
                    f"mean(last {len(recent)}) {sum(recent) / len(recent):.4f}  "
                    f"{time.perf_counter() - t0:.1f}s",
                    flush=True,
                )
            if step >= args.steps:
                break
        epoch += 1
    first, last = losses[:10], losses[-10:]
    print(
        f"done: {len(losses)} steps in {time.perf_counter() - t0:.1f}s; mean loss first 10 "
        f"{sum(first) / len(first):.4f} -> last 10 {sum(last) / len(last):.4f}",
        flush=True,
    )
    if args.losses_json:
        with open(args.losses_json, "w") as f:
            json.dump(losses, f)
    return losses


if __name__ == "__main__":
    main()

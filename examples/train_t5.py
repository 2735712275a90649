"""Train a tiny, randomly initialised T5 on a ``denoise prepare`` output (encoder-decoder layout).

Proof that the shards train as they are: batches come from
:class:`denoise_cli.torch_data.DenoiseBatches` through a ``DataLoader(batch_size=None)`` (no
collator, no per-row work) and go straight into ``T5ForConditionalGeneration(**batch)``:
``input_ids``, ``attention_mask``, ``labels`` (-100 = ignored; T5 builds ``decoder_input_ids``
by shifting ``labels`` right with the pad id as the start token). The model's vocabulary, pad,
EOS and decoder start ids come from the output's manifest (``denoise.json``), whose vocabulary
includes the added sentinels and mode tokens.

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-ed -I 128 -T 128
    python examples/train_t5.py --data /tmp/ul2-ed --steps 300

With the default GPT-2 BPE the vocabulary is 50,292 and the output layer dominates a CPU step
(seconds per step); for a quick CPU run prepare with the repository's tiny test tokenizer
(vocabulary 129 with the 3 added mode tokens; ~0.1 s per step), as
``tests/test_train_examples.py`` does:

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-ed-tiny -I 64 -T 64 \
        --tokenizer tests/data/t5-tiny-tokenizer.json
    python examples/train_t5.py --data /tmp/ul2-ed-tiny --steps 300

**Packed output** (``prepare --pack K``) is detected from the manifest. Each row then holds several
examples, and attention must not cross them, which the model's own 2-D ``attention_mask`` cannot
express. :func:`packed_forward` runs the encoder with a block-diagonal 4-D mask from
``encoder_segment_ids``, and the decoder with a causal block-diagonal self-attention mask
(``decoder_segment_ids``) and a cross-attention mask that lets each target segment see only its
own example's inputs. The decoder inputs are the labels shifted right *within* each segment
(:func:`denoise_cli.torch_data.shift_right_within_segments`). T5's relative position buckets
need no positions: attention never crosses a segment. The loss is the mean over all label tokens
of the batch, exactly as unpacked; ``tests/test_train_examples.py`` checks that a packed batch and
the same examples unpacked give the same loss and gradients. To compare the two loss curves::

    denoise prepare --mixture ul2 examples/sample/ /tmp/ul2-pk -I 256 -T 160 --pack 4 \
        --tokenizer tests/data/t5-tiny-tokenizer.json
    python examples/compare_packed.py --packed /tmp/ul2-pk --unpacked /tmp/ul2-ed-tiny

``--device cuda`` works unchanged (pinned memory + ``non_blocking`` copies are used there).
Prints the loss every ``--log-every`` steps and, at the end, the mean loss of the first and last 10
steps. Recorded runs: ``examples/README.md``.
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
from denoise_cli.torch_data import (
    MODEL_COLUMNS,
    DenoiseBatches,
    packed_attention_bias,
    shift_right_within_segments,
)

#: the columns a packed batch needs (the segment ids replace ``attention_mask``)
PACKED_COLUMNS = ("input_ids", "labels", "encoder_segment_ids", "decoder_segment_ids")


def packed_forward(model: Any, batch: dict[str, torch.Tensor]) -> Any:
    """T5 forward pass on packed rows: block-diagonal encoder self-attention, causal
    block-diagonal decoder self-attention, cross-attention only to the same example's inputs.

    HF T5 uses one ``attention_mask`` for the encoder's self-attention and the decoder's
    cross-attention, whose 4-D shapes differ (``[B, 1, I, I]`` vs ``[B, 1, T, I]``), so the
    encoder runs first and its output goes in as ``encoder_outputs``."""
    enc_seg, dec_seg = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
    dtype = next(model.parameters()).dtype
    cfg = model.config
    encoder_outputs = model.encoder(
        input_ids=batch["input_ids"], attention_mask=packed_attention_bias(enc_seg, dtype=dtype)
    )
    return model(
        encoder_outputs=encoder_outputs,
        attention_mask=packed_attention_bias(dec_seg, enc_seg, dtype=dtype),
        decoder_input_ids=shift_right_within_segments(
            batch["labels"], dec_seg, cfg.decoder_start_token_id, cfg.pad_token_id
        ),
        decoder_attention_mask=packed_attention_bias(dec_seg, causal=True, dtype=dtype),
        labels=batch["labels"],
    )


def forward(model: Any, batch: dict[str, torch.Tensor], packed: bool) -> Any:
    """The model's output (``.loss``) for one batch of packed or unpacked rows."""
    return packed_forward(model, batch) if packed else model(**batch)


def build_model(manifest: dict[str, Any], d_model: int, layers: int) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = manifest["tokenizer"]
    heads = 4
    config = T5Config(
        vocab_size=int(tok["vocab_size"]),  # includes the added sentinels / mode tokens / <pad>
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=4 * d_model,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        dropout_rate=0.0,
        pad_token_id=int(tok["pad"]["id"]),
        eos_token_id=int(tok["eos"]["id"]),
        decoder_start_token_id=int(tok["pad"]["id"]),
    )
    return T5ForConditionalGeneration(config)


def main(argv: list[str] | None = None) -> list[float]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", required=True, help="output directory of `denoise prepare` (encoder-decoder)"
    )
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10, help="linear learning-rate warmup steps")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (a model this small gains nothing from more, and "
        "loses a lot on a busy machine)",
    )
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--losses-json", help="also write the per-step losses to this file")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = open_dataset(args.data)
    m = ds.manifest
    if m["layout"] != "encoder-decoder":
        sys.exit(
            f"{args.data} has layout {m['layout']}; this example needs encoder-decoder "
            "(use examples/train_decoder.py for decoder-only)"
        )
    model = build_model(m, args.d_model, args.layers).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup))
    )
    packed = bool(m.get("packing"))
    cols = PACKED_COLUMNS if packed else MODEL_COLUMNS
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
        f"T5 {args.layers}+{args.layers} layers, d_model {args.d_model}, vocab "
        f"{model.config.vocab_size}, {n_params / 1e6:.2f}M parameters; {len(ds)} {'packed ' if packed else ''}rows "
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
            loss = forward(model, batch, packed).loss
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

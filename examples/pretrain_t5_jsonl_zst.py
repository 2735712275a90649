"""Pretrain an mT5-style encoder-decoder on Pile-style ``*.jsonl.zst`` shards with a UL2 mixture,
in both ways ``denoise`` supports (the ``text-denoising`` package's recipe, done right).

- ``--mode on-the-fly``: read the shards, tokenize, cut the token stream into ``--chunk-length``
  chunks and corrupt every batch in the ``DataLoader`` with
  :class:`denoise_cli.load.collator.DataCollatorForUL2` (the seed's collator, drop-in). Noise is new at
  every epoch; the CPU pays for reading, tokenizing and corrupting during training.
- ``--mode offline``: ``denoise prepare --mixture text-denoising`` once into ``--out`` (skipped
  when it already holds a finished output), then train from the fixed-shape shards with no
  collator (:class:`denoise_cli.torch_data.DenoiseBatches`).

Both use the same mixture (the seed's defaults: R(3,.15) 25%, S(.25) 50%, X(32,.5) and X(64,.2)
12.5% each; one component per example) without mode tokens. The script prints the loss every
``--log-every`` steps, then tokens/s (real input + target tokens per second of wall time,
data loading included) and the share of the time spent waiting for data.

Tiny CPU run (what ``tests/test_train_examples.py`` runs; the tiny test tokenizer)::

    python examples/pretrain_t5_jsonl_zst.py --mode on-the-fly --steps 200
    python examples/pretrain_t5_jsonl_zst.py --mode offline --out /tmp/td-ed --steps 200

The real configuration for one 24 GB GPU (``--model mt5-base``: mT5-base shapes, d_model 768,
12+12 layers, gated-GELU; 390M parameters with mT5's 250k vocabulary, the output layer tied to
the embedding as transformers 5's ``T5Config`` does (mT5 proper unties it: 580M); bf16
autocast on CUDA, AdamW, batch 16 x 512 with ``--grad-accum 4`` for 64 rows per update and
``--checkpointing``). Budget, estimated and not measured here (no GPU was available for this
example): fp32 weights + gradients + AdamW states are 16 bytes x 390M = 6.2 GB, which leaves
~17 GB for checkpointed bf16 activations of 16 x 512 rows; use ``--model mt5-small`` (172M) or
``--batch-size 8 --grad-accum 8`` if it does not fit::

    python examples/pretrain_t5_jsonl_zst.py --mode offline --model mt5-base \\
        --data /data/pile/ --tokenizer mt5/tokenizer.json --out /data/pile-ul2 \\
        --inputs-length 512 --targets-length 512 --batch-size 16 --grad-accum 4 \\
        --checkpointing --device cuda --threads 8 --steps 100000 --lr 1e-3 --warmup 1000
    # or, without the preprocessing step:
    python examples/pretrain_t5_jsonl_zst.py --mode on-the-fly --model mt5-base \\
        --data /data/pile/ --tokenizer mt5/tokenizer.json --chunk-length 512 \\
        --batch-size 16 --grad-accum 4 --checkpointing --device cuda --num-workers 4 \\
        --steps 100000 --lr 1e-3 --warmup 1000

The tokenizer must hold ``<extra_id_0>``... (mT5's does); ``--mode offline`` adds missing ones to
the output's own tokenizer.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "examples" / "sample"
DEFAULT_TOKENIZER = ROOT / "tests" / "data" / "t5-tiny-tokenizer.json"

#: model shapes: ``tiny`` runs on one CPU core in the tests; ``mt5-small`` / ``mt5-base`` are the
#: published mT5 shapes (the vocabulary comes from the tokenizer)
MODELS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 64, "d_kv": 16, "d_ff": 256, "num_layers": 2, "num_heads": 4},
    "mt5-small": {
        "d_model": 512,
        "d_kv": 64,
        "d_ff": 1024,
        "num_layers": 8,
        "num_heads": 6,
        "feed_forward_proj": "gated-gelu",
    },
    "mt5-base": {
        "d_model": 768,
        "d_kv": 64,
        "d_ff": 2048,
        "num_layers": 12,
        "num_heads": 12,
        "feed_forward_proj": "gated-gelu",
    },
}


def shard_paths(data: str) -> list[Path]:
    p = Path(data)
    paths = sorted(p.rglob("*.jsonl.zst")) if p.is_dir() else [p]
    if not paths:
        sys.exit(f"no *.jsonl.zst under {data}")
    return paths


def read_texts(paths: list[Path], text_key: str) -> Iterator[str]:
    """Documents of Pile-style shards: one JSON object per line, the text under ``text_key``."""
    import zstandard

    for path in paths:
        with open(path, "rb") as fh:
            reader = zstandard.ZstdDecompressor().stream_reader(fh)
            for line in io.TextIOWrapper(reader, encoding="utf-8", errors="replace"):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get(text_key)
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(text, str) and text:
                    yield text


def hf_tokenizer(path: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=path, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


class Chunks(IterableDataset):  # type: ignore[type-arg]
    """On-the-fly examples: documents tokenized, joined with EOS, cut into ``length``-token
    chunks, shuffled in a buffer; endless (epoch after epoch). Worker ``w`` of ``W`` reads
    every ``W``-th shard (at least one per worker)."""

    def __init__(self, paths: list[Path], tok: Any, length: int, text_key: str, seed: int) -> None:
        self.paths, self.tok, self.length, self.text_key, self.seed = (
            paths,
            tok,
            length,
            text_key,
            seed,
        )

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        paths = self.paths[wid::nw] or self.paths[wid % len(self.paths) :][:1]
        rng = np.random.default_rng([self.seed, wid])
        eos = int(self.tok.eos_token_id)
        buf: list[int] = []
        pool: list[list[int]] = []
        while True:
            texts = read_texts(paths, self.text_key)
            while batch := [t for _, t in zip(range(256), texts, strict=False)]:
                for ids in self.tok(batch, add_special_tokens=False)["input_ids"]:
                    buf.extend(ids)
                    buf.append(eos)
                n = len(buf) // self.length
                pool.extend(buf[i * self.length : (i + 1) * self.length] for i in range(n))
                del buf[: n * self.length]
                if len(pool) >= 1024:
                    for i in rng.permutation(len(pool)):
                        yield {"input_ids": pool[i]}
                    pool = []
            for i in rng.permutation(len(pool)):
                yield {"input_ids": pool[i]}
            pool = []


def build_model(name: str, vocab: int, pad: int, eos: int, checkpointing: bool) -> Any:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab,
        dropout_rate=0.0,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
        **MODELS[name],
    )
    model = T5ForConditionalGeneration(config)
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model


def offline_loader(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from denoise_cli import open_dataset
    from denoise_cli.config import Lengths, PrepareConfig, load_mixture
    from denoise_cli.pipeline import prepare
    from denoise_cli.torch_data import MODEL_COLUMNS, DenoiseBatches

    out = Path(args.out)
    if not (out / "denoise.json").is_file():
        cfg = PrepareConfig(
            mixture=load_mixture("text-denoising", mode_tokens=False),
            lengths=Lengths("encoder-decoder", args.inputs_length, args.targets_length),
            seed=args.seed,
        )
        t0 = time.perf_counter()
        prepare(
            [str(p) for p in shard_paths(args.data)],
            str(out),
            cfg,
            tokenizer=args.tokenizer,
            workers=args.prepare_workers,
            progress=False,
        )
        print(f"prepared {out} in {time.perf_counter() - t0:.1f}s (once)", flush=True)
    ds = open_dataset(out)
    tok = ds.manifest["tokenizer"]
    batches = DenoiseBatches(ds, args.batch_size, seed=args.seed, columns=MODEL_COLUMNS)
    if len(batches) == 0:
        sys.exit(f"{out} has {len(ds)} rows: fewer than one batch of {args.batch_size}")

    def endless() -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(
            batches,
            batch_size=None,
            num_workers=args.num_workers,
            pin_memory=args.device.startswith("cuda"),
            persistent_workers=args.num_workers > 0,
        )
        epoch = 0
        while True:
            batches.set_epoch(epoch)
            yield from loader
            epoch += 1

    info = {
        "vocab": int(tok["vocab_size"]),
        "pad": int(tok["pad"]["id"]),
        "eos": int(tok["eos"]["id"]),
    }
    return endless(), info


def on_the_fly_loader(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from denoise_cli import DataCollatorForUL2

    tok = hf_tokenizer(args.tokenizer)
    collator = DataCollatorForUL2(tok, seed=args.seed)  # the seed's defaults: text-denoising
    chunks = Chunks(shard_paths(args.data), tok, args.chunk_length, args.text_key, args.seed)
    loader = DataLoader(
        chunks,
        batch_size=args.batch_size,
        collate_fn=collator,
        num_workers=args.num_workers,
        pin_memory=args.device.startswith("cuda"),
    )
    info = {"vocab": len(tok), "pad": int(tok.pad_token_id), "eos": int(tok.eos_token_id)}
    return iter(loader), info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["offline", "on-the-fly"], required=True)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a *.jsonl.zst file or a directory")
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER), help="a tokenizer.json")
    ap.add_argument("--out", help="offline: the prepared output (made once)")
    ap.add_argument("--inputs-length", type=int, default=64, help="offline: I")
    ap.add_argument("--targets-length", type=int, default=64, help="offline: T")
    ap.add_argument("--prepare-workers", type=int, default=1)
    ap.add_argument("--chunk-length", type=int, default=64, help="on-the-fly: tokens per example")
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--losses-json", help="also write the per-step losses to this file")
    args = ap.parse_args(argv)
    if args.mode == "offline" and not args.out:
        ap.error("--mode offline needs --out (where the prepared shards go)")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches, info = (offline_loader if args.mode == "offline" else on_the_fly_loader)(args)
    model = build_model(args.model, info["vocab"], info["pad"], info["eos"], args.checkpointing)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup))
    )
    amp = device.type == "cuda"
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.mode}: T5 '{args.model}' {n_params / 1e6:.1f}M parameters, vocab {info['vocab']}, "
        f"batch {args.batch_size} x {args.grad_accum} on {device}",
        flush=True,
    )
    losses: list[float] = []
    tokens = 0
    wait = 0.0
    t0 = time.perf_counter()
    while len(losses) < args.steps:
        step_loss = 0.0
        for _ in range(args.grad_accum):
            tw = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - tw
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            tokens += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = model(**batch).loss / args.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(step_loss)
        step = len(losses)
        if step % args.log_every == 0 or step == 1:
            recent = losses[-args.log_every :]
            print(
                f"step {step:6d}  loss {step_loss:.4f}  mean(last {len(recent)}) "
                f"{sum(recent) / len(recent):.4f}  {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
    wall = time.perf_counter() - t0
    first, last = losses[:10], losses[-10:]
    summary = {
        "mode": args.mode,
        "steps": len(losses),
        "seconds": wall,
        "tokens_per_s": tokens / wall,
        "data_wait_share": wait / wall,
        "loss_first10": sum(first) / len(first),
        "loss_last10": sum(last) / len(last),
    }
    print(
        f"done: {len(losses)} steps in {wall:.1f}s, {tokens / wall:,.0f} tokens/s "
        f"({100 * wait / wall:.1f}% waiting for data); mean loss first 10 "
        f"{summary['loss_first10']:.4f} -> last 10 {summary['loss_last10']:.4f}",
        flush=True,
    )
    if args.losses_json:
        Path(args.losses_json).write_text(json.dumps(losses))
    return summary


if __name__ == "__main__":
    main()

"""On-the-fly UL2 collator: a drop-in for ``text-denoising``'s ``DataCollatorForUL2``.

Same constructor arguments and returned keys as the seed package (0.1.1), built on this
project's mixture semantics: each example draws ONE component of a :class:`~denoise_cli.config.Mixture`,
span counts are exactly T5's (``n = clamp(rint(L*r), 1, L-1)``, ``s = max(rint(n/mu), 1)``,
uniform compositions, non-noise first) on each row's *real* length ``L`` (padding is never
masked), sentinels are looked up by name, and all randomness comes from one seeded
``np.random.Generator``. Deviations from the seed are listed with their reasons in
``docs/migration.md``.

Vectorized over the batch with ragged rows: :mod:`denoise_cli.load.collator_corrupt`. This
module holds the collator itself: tokenizer lookups, padding the examples, the per-row
component draw and the seed's decoder inputs.
"""

from __future__ import annotations

import functools
import itertools
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import Denoiser, Mixture, S, load_mixture
from ..errors import ConfigError, InputError
from .collator_corrupt import (
    IGNORE_INDEX,
    RowPlan,
    corrupt_ragged,
    row_runs,
    shift_labels,
    source_room,
)

#: names tried, in order, when the tokenizer has no ``eos_token_id`` / ``pad_token_id``
EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")
PAD_NAMES = ("<pad>", "[PAD]", "<|padding|>", "<|pad|>")


def seed_mixture(
    r_denoising: bool = True,
    r_probability: float = 0.25,
    r_denoising_config: Sequence[Sequence[float]] = ((3, 0.15),),
    s_denoising: bool = True,
    s_probability: float = 0.5,
    x_denoising: bool = True,
    x_probability: float = 0.25,
    x_denoising_config: Sequence[Sequence[float]] = ((32, 0.5), (64, 0.2)),
    s_rate: float = 0.25,
    mode_tokens: bool = False,
) -> Mixture:
    """The seed collator's R/S/X switches as a :class:`Mixture`: each ``(mean_span, rate)`` of a
    family is one component with an equal share of the family's probability (the seed ORs the
    masks of a family's configs together instead). With the defaults this is the
    ``text-denoising`` preset (R 25%, S 50%, X(32,.5) and X(64,.2) 12.5% each)."""
    dens: list[Denoiser] = []
    for on, prob, cfgs, kind in (
        (r_denoising, r_probability, r_denoising_config, "R"),
        (s_denoising, s_probability, None, "S"),
        (x_denoising, x_probability, x_denoising_config, "X"),
    ):
        if not on or prob == 0:
            continue
        if prob < 0:
            raise ConfigError(f"{kind} probability must be >= 0, got {prob}")
        if cfgs is None:
            dens.append(S(s_rate, float(prob)))
            continue
        cfgs = tuple(cfgs)
        if not cfgs:
            raise ConfigError(f"{kind} denoising is on but its config list is empty")
        for c in cfgs:
            if len(c) != 2:
                raise ConfigError(f"{kind} config {c!r}: expected (mean_span, rate)")
            mu, r = float(c[0]), float(c[1])
            dens.append(Denoiser(kind, rate=r, mean_span=mu, weight=float(prob) / len(cfgs)))  # type: ignore[arg-type]
    if not dens:
        raise ConfigError("all of R, S and X denoising are off")
    return Mixture("text-denoising-collator", tuple(dens), mode_tokens=mode_tokens, source="")


def concat_ids(seqs: Sequence[Any], out: np.ndarray) -> None:
    """Write all rows' ids, one after the other, into the int64 array ``out``. Lists of Python
    ints are packed in C by a precompiled ``struct.Struct`` per row length (~1.8x faster than
    ``array.fromlist``, ~2x faster than ``np.fromiter`` over a chain); anything else (or a
    value ``struct`` refuses) goes through ``np.fromiter``."""
    off = 0
    mem = out.data  # writable memoryview (a C-contiguous int64 array)
    try:
        for row in seqs:
            n = len(row)
            _row_struct(n).pack_into(mem, off, *row)
            off += 8 * n
    except (struct.error, TypeError):
        out[:] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=len(out))


@functools.lru_cache(maxsize=4096)
def _row_struct(n: int) -> struct.Struct:
    """``n`` native int64 values (``@`` order: the layout numpy's ``int64`` reads)."""
    return struct.Struct(f"@{n}q")


def _vocab_of(tokenizer: Any) -> dict[str, int]:
    try:
        vocab = tokenizer.get_vocab()
    except AttributeError:
        raise ConfigError(
            "the tokenizer has no get_vocab(); pass a Hugging Face tokenizer"
        ) from None
    return {str(k): int(v) for k, v in vocab.items()}


def _special_id(tokenizer: Any, attr: str, vocab: Mapping[str, int], names: Sequence[str]) -> int:
    v = getattr(tokenizer, attr, None)
    if isinstance(v, (int, np.integer)):
        return int(v)
    for n in names:
        if n in vocab:
            return vocab[n]
    raise ConfigError(f"the tokenizer has no {attr} and none of {list(names)}; pass {attr}=")


class DataCollatorForUL2:
    """Drop-in for ``text_denoising.DataCollatorForUL2`` (same positional and keyword
    arguments); call it on a list of examples with ``input_ids`` (as the HF ``Trainer`` does).

    Returns ``input_ids``, ``labels``, ``decoder_input_ids``, ``decoder_attention_mask`` (the
    seed's keys) plus ``attention_mask`` (the seed returns none, so its encoder attends to
    padding). Extra keyword-only arguments:

    - ``seed``: int, ``np.random.SeedSequence`` or ``np.random.Generator`` (default 0; ``None``
      draws fresh entropy). Inside ``DataLoader`` workers the generator is re-derived from
      ``(seed, worker seed)``, so workers never repeat each other's noise and epochs differ.
    - ``mixture``: a :class:`Mixture` or preset name; replaces the R/S/X switches.
    - ``s_rate``: the S denoiser's rate (prefix uniform on ``[rint((1-2r)(L-1)), L-1]``).
    - ``mode_tokens``: prepend ``[NLU]``/``[NLG]``/``[S2S]`` (must exist in the tokenizer).
    - ``decoder_start_token_id``, ``pad_token_id``, ``eos_token_id``: default from the tokenizer
      (decoder start: its BOS as in the seed, else pad as in T5).
    - ``sentinel_template``: sentinel names, ``<extra_id_{}>``.
    - ``strip_eos``: drop one trailing EOS from each example before corrupting (it is appended
      again after the inputs and the targets), so EOS is never masked into a span.
    """

    def __init__(
        self,
        tokenizer: Any,
        r_denoising: bool = True,
        r_probability: float = 0.25,
        r_denoising_config: Sequence[Sequence[float]] = ((3, 0.15),),
        s_denoising: bool = True,
        s_probability: float = 0.5,
        x_denoising: bool = True,
        x_probability: float = 0.25,
        x_denoising_config: Sequence[Sequence[float]] = ((32, 0.5), (64, 0.2)),
        pad_to_multiple_of: int | None = None,
        tf_experimental_compile: bool = False,
        return_tensors: str = "pt",
        label_pad_token_id: int = -100,
        *,
        seed: int | np.random.SeedSequence | np.random.Generator | None = 0,
        mixture: Mixture | str | None = None,
        s_rate: float = 0.25,
        mode_tokens: bool | None = None,
        decoder_start_token_id: int | None = None,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        sentinel_template: str = "<extra_id_{}>",
        strip_eos: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        if mixture is None:
            mix = seed_mixture(
                r_denoising,
                r_probability,
                r_denoising_config,
                s_denoising,
                s_probability,
                x_denoising,
                x_probability,
                x_denoising_config,
                s_rate=s_rate,
                mode_tokens=bool(mode_tokens),
            )
        elif isinstance(mixture, str):
            mix = load_mixture(mixture, mode_tokens=bool(mode_tokens))
        else:
            mix = (
                mixture
                if mode_tokens is None
                else Mixture(mixture.name, mixture.denoisers, mode_tokens, mixture.source)
            )
        self.mixture = mix
        if return_tensors not in ("pt", "np"):
            raise ConfigError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        self.return_tensors = return_tensors
        self.pad_to_multiple_of = pad_to_multiple_of
        self.tf_experimental_compile = tf_experimental_compile
        self.label_pad_token_id = int(label_pad_token_id)
        self.strip_eos = strip_eos
        vocab = _vocab_of(tokenizer)
        self.pad_token_id = (
            int(pad_token_id)
            if pad_token_id is not None
            else _special_id(tokenizer, "pad_token_id", vocab, PAD_NAMES)
        )
        self.eos_token_id = (
            int(eos_token_id)
            if eos_token_id is not None
            else _special_id(tokenizer, "eos_token_id", vocab, EOS_NAMES)
        )
        bos = getattr(tokenizer, "bos_token_id", None)
        self.decoder_start_token_id = (
            int(decoder_start_token_id)
            if decoder_start_token_id is not None
            else (int(bos) if isinstance(bos, (int, np.integer)) else self.pad_token_id)
        )
        sent: list[int] = []
        while sentinel_template.format(len(sent)) in vocab:
            sent.append(vocab[sentinel_template.format(len(sent))])
        self.sentinels = np.asarray(sent, dtype=np.int64)
        if any(d.is_span for d in mix.denoisers) and not sent:
            raise ConfigError(
                f"the tokenizer has no sentinel {sentinel_template.format(0)!r}: add them "
                "(tokenizer.add_special_tokens + model.resize_token_embeddings) or pass "
                "sentinel_template="
            )
        modes: dict[str, int] = {}
        for name in mix.mode_token_strings():
            if name not in vocab:
                raise ConfigError(f"mode token {name!r} is not in the tokenizer")
            modes[name] = vocab[name]
        ds = mix.denoisers
        self._probs = mix.probabilities
        cdf = np.cumsum(self._probs)
        #: ``searchsorted(_cdf, u, "right")`` is the component of ``u`` in [0, 1); the last
        #: bound is +inf so rounding in the sum never yields an index past the end
        self._cdf = np.append(cdf[:-1] / cdf[-1], np.inf)
        self._is_span = np.array([d.is_span for d in ds], dtype=bool)
        self._rate = np.array([d.rate for d in ds], dtype=np.float64)
        self._mean = np.array([d.mean_span if d.is_span else 1.0 for d in ds], dtype=np.float64)
        self._mode = np.array(
            [modes[d.resolved_mode_token()] if mix.mode_tokens else -1 for d in ds],
            dtype=np.int64,
        )
        self._seed = seed
        if isinstance(seed, np.random.Generator):
            self.rng = seed
            self._entropy: Any = None
        else:
            ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
            self._entropy = ss.entropy
            self.rng = np.random.default_rng(ss)
        self._worker_seed: int | None = None
        #: component index of each row of the last batch (for inspection and tests)
        self.last_components = np.zeros(0, dtype=np.int8)

    # ------------------------------------------------------------------ batching

    def _maybe_reseed_for_worker(self) -> None:
        if self._entropy is None or "torch" not in sys.modules:
            return
        info = sys.modules["torch"].utils.data.get_worker_info()
        if info is None or info.seed == self._worker_seed:
            return
        self._worker_seed = int(info.seed)
        self.rng = np.random.default_rng(np.random.SeedSequence([self._entropy, int(info.seed)]))

    def pad_examples(self, examples: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens [B, W] int64 padded with pad, real lengths [B])``. A row's real length ends
        at its last non-pad token (so right-padded examples lose their padding; an
        ``attention_mask`` field is not needed), then one trailing EOS is dropped when
        ``strip_eos``."""
        tokens, lens, _ = self._pad(examples, with_room=False)
        return tokens, lens

    def _pad(
        self, examples: Sequence[Any], with_room: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`pad_examples`, plus the buffer whose head is the tokens (with
        :func:`source_room` spare slots behind them when ``with_room``)."""
        if not examples:
            raise InputError("batch", "size 0", "empty_batch")
        if isinstance(examples[0], Mapping):
            if "input_ids" not in examples[0]:
                raise InputError("batch", "example 0", "no_input_ids", "needs an 'input_ids' field")
            seqs = [e["input_ids"] for e in examples]
        else:
            seqs = list(examples)
        b = len(seqs)
        lens = np.array(list(map(len, seqs)), dtype=np.int64)
        width = max(int(lens.max()), 1)
        total = int(lens.sum())
        spare = (
            source_room(b, width, len(self.sentinels), self.pad_to_multiple_of or 1)
            if with_room
            else 0
        )
        full = total == b * width  # all rows as long: no padding to add
        buf = np.empty(b * width + spare, dtype=np.int64)
        flat = buf[:total] if full else np.empty(total, dtype=np.int64)
        if hasattr(seqs[0], "numpy"):  # torch tensors (datasets .with_format("torch"))
            seqs = [s.numpy() for s in seqs]
        if isinstance(seqs[0], np.ndarray):
            np.concatenate(seqs, out=flat, casting="unsafe")
        else:
            concat_ids(seqs, flat)
        tokens = buf[: b * width].reshape(b, width)
        if not full:
            tokens[...] = self.pad_token_id
            tokens[np.arange(width)[None, :] < lens[:, None]] = flat
        rows = np.arange(b)
        padded = tokens[rows, np.maximum(lens - 1, 0)] == self.pad_token_id
        if padded.any():  # right padding: cut after the last non-pad token
            real = tokens[padded] != self.pad_token_id
            lens[padded] = width - np.argmax(real[:, ::-1], axis=1)
            lens[padded] *= real.any(axis=1)
        if self.strip_eos:
            last = tokens[rows, np.maximum(lens - 1, 0)]
            lens -= (last == self.eos_token_id) & (lens > 0)
        return tokens, lens, buf

    def draw_components(self, count: int) -> np.ndarray:
        u = self.rng.random(count)
        c: np.ndarray = np.searchsorted(self._cdf, u, side="right")
        return c.astype(np.int8)

    def numpy_call(self, examples: Sequence[Any]) -> dict[str, np.ndarray]:
        """The batch as int64 numpy arrays."""
        self._maybe_reseed_for_worker()
        tokens, lens, room = self._pad(examples, with_room=True)
        comp = self.draw_components(len(lens))
        self.last_components = comp
        plan = RowPlan(self._is_span[comp], self._rate[comp], self._mean[comp], self._mode[comp])
        out = corrupt_ragged(
            tokens,
            lens,
            plan,
            self.sentinels,
            self.eos_token_id,
            self.pad_token_id,
            self.rng,
            self.pad_to_multiple_of or 1,
            with_mask=False,
            room=room,
        )
        labels = out.labels
        if self.label_pad_token_id != IGNORE_INDEX:
            labels = np.where(labels == IGNORE_INDEX, self.label_pad_token_id, labels)
        dec, dec_mask = shift_labels(
            labels, self.decoder_start_token_id, self.pad_token_id, self.label_pad_token_id
        )
        att = row_runs(out.input_length, out.input_ids.shape[1])
        return {
            "input_ids": out.input_ids,
            "attention_mask": att,
            "labels": labels,
            "decoder_input_ids": dec,
            "decoder_attention_mask": dec_mask,
        }

    def __call__(self, examples: Sequence[Any], return_tensors: str | None = None) -> Any:
        batch = self.numpy_call(examples)
        if (return_tensors or self.return_tensors) == "np":
            return batch
        import torch

        return {k: torch.from_numpy(v) for k, v in batch.items()}

    torch_call = __call__

"""Tokenization: resolve a tokenizer, find or add the special tokens, encode documents.

Special tokens are looked up **by name** (``<extra_id_k>``, ``[NLU]``, ``</s>``, ``<pad>``), never
computed from the vocabulary size. Missing ones are added as special tokens (new ids at the end)
unless ``add_missing=False``, which makes any missing token a :class:`ConfigError`. The extended
tokenizer is saved with the output, with its sha256, so training uses exactly the ids written.
Documents are encoded with ``encode_special_tokens=True``; every encoded batch is checked
against the reserved ids (:func:`special_token_ids`, one ``np.isin``) and a hit is replaced by
``<unk>`` and counted (or the document skipped when there is no unk), so reserved ids only
appear where the denoisers put them. Documents longer than ``piece_chars`` are encoded in
pieces at boundaries where the ids provably cannot change (:class:`.docsplit.DocSplitter`).
Design and edge cases: docs/tokenize.md; figures: benchmarks/README_prepare.md,
benchmarks/README_tokenize.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Mixture, TokenConfig
from ..errors import ConfigError
from ..rows.base import SpecialIds
from .docsplit import DocSplitter
from .fastengine import FastSpec, build_engine, encode_texts
from .special import (
    find_token,
    model_head,
    special_ids_of,
    special_token_ids,
)

DEFAULT_TOKENIZER = "gpt2"
EOS_CANDIDATES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>", "[SEP]")
PAD_CANDIDATES = ("<pad>", "[PAD]", "<|padding|>", "<|pad|>")
UNK_CANDIDATES = ("<unk>", "[UNK]", "<|unk|>")
#: Vocabulary entries that look like sentinels are reserved even when not marked special.


def _tokenizers() -> Any:
    # Each worker process is single-threaded: never let the Rust pool oversubscribe cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import tokenizers

    return tokenizers


def load_tokenizer_json(spec: str | None) -> tuple[str, str]:
    """Resolve ``--tokenizer`` to (JSON text, description of the source).

    ``None``/``"gpt2"`` -> the embedded GPT-2 BPE; a ``tokenizer.json`` path; a directory holding
    one; otherwise a Hugging Face hub name (needs network; offline fails with a clear message).
    """
    raw, source = load_tokenizer_bytes(spec)
    try:
        return raw.decode("utf-8"), source
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read tokenizer {source}: {e}") from None


def load_tokenizer_bytes(spec: str | None) -> tuple[bytes, str]:
    """:func:`load_tokenizer_json` as UTF-8 bytes, not validated (the JSON parser checks them):
    the build and the digest need no ``str``, whose decoding costs ~0.15 CPU-s for a 262k
    vocabulary. Line ends are normalized as a text-mode read would (JSON only has them between
    tokens, and the digest must not depend on them)."""
    if spec is None or spec == DEFAULT_TOKENIZER:
        import zstandard

        blob = resources.files("denoise_cli").joinpath("data/gpt2-tokenizer.json.zst").read_bytes()
        raw = zstandard.ZstdDecompressor().decompress(blob)
        return raw, "embedded:gpt2 (OpenAI GPT-2 BPE, see denoise_cli/data/PROVENANCE.md)"
    p = Path(spec)
    if p.is_dir():
        p = p / "tokenizer.json"
        if not p.is_file():
            raise ConfigError(f"tokenizer directory {spec} has no tokenizer.json")
    if p.is_file():
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read tokenizer {p}: {e}") from None
        if b"\r" in raw:  # the newline translation of read_text (a text-mode read is ~2x slower)
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return raw, f"file:{p.resolve()}"
    if p.suffix == ".json" or (os.sep in spec and not spec.count("/") == 1):
        raise ConfigError(f"tokenizer file {spec} does not exist")
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer.from_pretrained(spec)
    except Exception as e:
        raise ConfigError(
            f"cannot load tokenizer {spec!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Offline? Pass a local tokenizer.json file or a directory containing one."
        ) from None
    return str(tok.to_str()).encode("utf-8"), f"hub:{spec}"


@dataclass(frozen=True)
class TokenizerInfo:
    """Identity of the (extended) tokenizer an output was written with."""

    source: str
    source_sha256: str
    sha256: str  # of the extended tokenizer JSON saved with the output
    vocab_size: int  # including added tokens
    eos: tuple[str, int]
    pad: tuple[str, int]
    unk: tuple[str, int] | None
    sentinels: tuple[int, ...]
    mode_tokens: dict[str, int]
    added: tuple[str, ...]
    sentinel_template: str
    json: str = field(repr=False, compare=False, default="")
    #: every special id of the tokenizer (:func:`special_token_ids`), not only the ones used
    specials: tuple[int, ...] = field(repr=False, compare=False, default=())
    #: the extended ``tokenizers.Tokenizer`` that ``build_tokenizer`` made (``json`` is its
    #: ``to_str()``): handed to this process's encoder instead of a second build; not pickled
    built: Any = field(repr=False, compare=False, default=None)
    #: the model's type and the BPE options ``fastengine.analyze`` checks first (``choose_backend``
    #: decides from these without parsing ``json`` when they already rule tiktoken out)
    model_head: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["built"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def special_ids(self) -> SpecialIds:
        return SpecialIds(
            eos=self.eos[1],
            pad=self.pad[1],
            sentinels=np.asarray(self.sentinels, dtype=np.int32),
            mode=dict(self.mode_tokens),
        )

    def reserved_ids(self) -> np.ndarray:
        """Ids that must not come out of text: every special id except unk (see module doc)."""
        ids = {self.eos[1], self.pad[1], *self.sentinels, *self.mode_tokens.values()}
        ids.update(self.specials)
        if self.unk is not None:
            ids.discard(self.unk[1])
        return np.array(sorted(ids), dtype=np.int32)

    def encoder(self, fast: FastSpec | None = None, engine: Any = None) -> Encoder:
        """The encoder of documents for this tokenizer (reserved ids replaced or refused);
        ``fast``: encode with tiktoken (``choose_backend``; ``engine``: its ``Encoding`` when
        this process built it already), else HF ``tokenizers``."""
        return Encoder(
            self.json,
            self.reserved_ids(),
            self.unk[1] if self.unk else None,
            fast=fast,
            built=None if fast is not None else self.built,
            engine=engine,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any], tokenizer_json: str = "") -> TokenizerInfo:
        """The inverse of :meth:`to_dict` (a manifest's ``tokenizer``), with the tokenizer JSON
        saved next to it (its special ids are what ``prepare`` reserved)."""
        unk = d.get("unk")
        template = str(d.get("sentinel_template", "<extra_id_{}>"))
        return cls(
            source=str(d["source"]),
            source_sha256=str(d["source_sha256"]),
            sha256=str(d["sha256"]),
            vocab_size=int(d["vocab_size"]),
            eos=(str(d["eos"]["token"]), int(d["eos"]["id"])),
            pad=(str(d["pad"]["token"]), int(d["pad"]["id"])),
            unk=None if not unk else (str(unk["token"]), int(unk["id"])),
            sentinels=tuple(int(i) for i in d["sentinel_ids"]),
            mode_tokens={str(k): int(v) for k, v in d["mode_tokens"].items()},
            added=tuple(str(t) for t in d.get("added_tokens", ())),
            sentinel_template=template,
            json=tokenizer_json,
            specials=tuple(sorted(special_token_ids(tokenizer_json, template)))
            if tokenizer_json
            else (),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_sha256": self.source_sha256,
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
            "eos": {"token": self.eos[0], "id": self.eos[1]},
            "pad": {"token": self.pad[0], "id": self.pad[1]},
            "unk": None if self.unk is None else {"token": self.unk[0], "id": self.unk[1]},
            "sentinel_template": self.sentinel_template,
            "sentinel_ids": list(self.sentinels),
            "mode_tokens": self.mode_tokens,
            "added_tokens": list(self.added),
        }


#: tokenizers kept alive until the process ends, once :func:`keep_builds_until_exit` was called
_KEPT: list[Any] | None = None


def keep_builds_until_exit() -> None:
    """From now on, keep every tokenizer :func:`build_tokenizer` makes until the process ends:
    for a process that ends without freeing its objects (the ``denoise`` command,
    ``cli.exit_now``), where freeing a 262k vocabulary would cost ~0.4 CPU-s for nothing."""
    global _KEPT
    if _KEPT is None:
        _KEPT = []


def build_tokenizer(
    spec: str | None, tokens: TokenConfig, mixture: Mixture, n_sentinels: int
) -> TokenizerInfo:
    """Load the tokenizer, find/add eos, pad, ``n_sentinels`` sentinels and the mixture's mode
    tokens, and return its identity. Raises ConfigError before any work starts."""
    raw, source = load_tokenizer_bytes(spec)
    tk = _tokenizers()
    try:
        tok = tk.Tokenizer.from_buffer(raw)
    except Exception as e:
        raise ConfigError(f"tokenizer {source} is not a valid tokenizer.json: {e}") from None
    missing: list[str] = []

    eos = find_token(tok, [tokens.eos] if tokens.eos else EOS_CANDIDATES)
    if eos is None:
        missing.append(tokens.eos or "</s>")
    pad = find_token(tok, [tokens.pad] if tokens.pad else PAD_CANDIDATES)
    if pad is None:
        missing.append(tokens.pad or "<pad>")
    sentinel_names = [tokens.sentinel_template.format(k) for k in range(n_sentinels)]
    mode_names = mixture.mode_token_strings()
    for name in [*sentinel_names, *mode_names]:
        if tok.token_to_id(name) is None:
            missing.append(name)
    if missing and not tokens.add_missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        raise ConfigError(
            f"tokenizer {source} lacks {len(missing)} special token(s) this config needs: {shown}. "
            f"The mixture needs {n_sentinels} sentinels. Allow adding them (drop --no-add-tokens) "
            "or choose a config that needs fewer."
        )
    if missing:
        added_n = tok.add_special_tokens(
            [tk.AddedToken(m, special=True, normalized=False) for m in missing]
        )
        if added_n != len(missing):
            raise ConfigError(f"tokenizer {source}: could not add special tokens {missing}")
    eos = eos or (tokens.eos or "</s>", int(tok.token_to_id(tokens.eos or "</s>")))
    pad = pad or (tokens.pad or "<pad>", int(tok.token_to_id(tokens.pad or "<pad>")))
    sentinels = tuple(int(tok.token_to_id(n)) for n in sentinel_names)
    mode = {n: int(tok.token_to_id(n)) for n in mode_names}
    ids = [eos[1], pad[1], *sentinels, *mode.values()]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(
            f"tokenizer {source}: special tokens share ids {dup} (eos, pad, sentinels, mode)"
        )
    vocab = int(tok.get_vocab_size(with_added_tokens=True))
    if vocab >= 2**31 - 1:
        raise ConfigError(f"vocabulary of {vocab} does not fit int32")
    ext = str(tok.to_str())
    if _KEPT is not None:
        _KEPT.append(tok)
    return TokenizerInfo(
        source=source,
        source_sha256=hashlib.sha256(raw).hexdigest(),
        sha256=hashlib.sha256(ext.encode()).hexdigest(),
        vocab_size=vocab,
        eos=eos,
        pad=pad,
        unk=find_token(tok, UNK_CANDIDATES),
        sentinels=sentinels,
        mode_tokens=mode,
        added=tuple(missing),
        sentinel_template=tokens.sentinel_template,
        json=ext,
        specials=tuple(sorted(special_ids_of(tok, ext, tokens.sentinel_template))),
        built=tok,
        model_head=model_head(tok),
    )


#: names a readable file (a memfd of the parent, ``/proc/PID/fd/N``) holding the tokenizer JSON
#: the workers encode with; set by :func:`share_with_workers` while a process pool starts
SHARED_TOKENIZER_ENV = "DENOISE_SHARED_TOKENIZER"
#: set with it when the workers encode with tiktoken: the :class:`~.fastbpe.FastSpec` (JSON)
SHARED_FAST_ENV = "DENOISE_SHARED_FAST"
_SHARED: list[tuple[str, Any]] = []  # (tokenizer JSON, the Tokenizer built from it)
_SHARED_FAST: list[tuple[str, FastSpec, Any]] = []  # (tokenizer JSON, spec, tiktoken Encoding)


@contextlib.contextmanager
def share_with_workers(tokenizer_json: str, fast: FastSpec | None = None) -> Iterator[None]:
    """While open, a forkserver started from this process builds ``tokenizer_json`` once, when
    it imports this module, and every worker forked from it starts with the tokenizer built
    (:func:`build_shared_tokenizer`) instead of building its own: the HF ``Tokenizer``, or with
    ``fast`` the tiktoken ``Encoding``. The JSON is handed over in an anonymous memory file
    (Linux); elsewhere this does nothing."""
    if not (sys.platform.startswith("linux") and hasattr(os, "memfd_create")):
        yield
        return
    data = memoryview(tokenizer_json.encode("utf-8"))
    fd = os.memfd_create("denoise-tokenizer")
    try:
        while data:
            data = data[os.write(fd, data) :]
        os.environ[SHARED_TOKENIZER_ENV] = f"/proc/{os.getpid()}/fd/{fd}"
        if fast is not None:
            import orjson

            os.environ[SHARED_FAST_ENV] = orjson.dumps(fast.__dict__).decode()
        yield
    finally:
        os.environ.pop(SHARED_TOKENIZER_ENV, None)
        os.environ.pop(SHARED_FAST_ENV, None)
        os.close(fd)


def build_shared_tokenizer() -> None:
    """Build the tokenizer that :func:`share_with_workers` names in the environment, once per
    process (a forkserver's preload). Never raises: a worker without it builds its own."""
    path = os.environ.pop(SHARED_TOKENIZER_ENV, None)
    fast = os.environ.pop(SHARED_FAST_ENV, None)
    if not path or _SHARED or _SHARED_FAST:
        return
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        if fast is None:
            _SHARED.append((text, _tokenizers().Tokenizer.from_str(text)))
            return
        import orjson

        spec = FastSpec(**orjson.loads(fast))
        _SHARED_FAST.append((text, spec, build_engine(orjson.loads(text), spec)))
    except Exception:  # an exception here would kill the forkserver
        return


PIECE_CHARS = 1 << 20  # documents longer than this are encoded in pieces of about this size


class Encoder:
    """Per-worker encoder, built lazily from the extended tokenizer JSON (cheap to pickle).
    Documents longer than ``piece_chars`` are encoded in pieces (:class:`DocSplitter`).

    With ``fast`` (a :class:`~.fastbpe.FastSpec`, see :func:`choose_backend`) documents are
    encoded by tiktoken, built in the worker; otherwise by HF ``tokenizers``."""

    def __init__(
        self,
        tokenizer_json: str,
        reserved: np.ndarray,
        unk: int | None,
        *,
        piece_chars: int = PIECE_CHARS,
        fast: FastSpec | None = None,
        built: Any = None,
        engine: Any = None,
    ) -> None:
        self._json = tokenizer_json
        self._reserved = np.asarray(reserved, dtype=np.int32)
        self._unk = unk
        # a tokenizer already built from ``tokenizer_json`` in this process (never pickled): the
        # in-process engine then encodes without a second build of a possibly huge vocabulary
        self._built = built
        self._tok: Any = None
        self._unk_text: str | None = None  # the unk token's spelling, if text turns it into unk
        self._piece_chars = piece_chars
        self._splitter: DocSplitter | None = None
        self.fast = fast
        # the tiktoken ``Encoding`` of ``fast``, if this process already built it (never pickled)
        self._enc: Any = engine if fast is not None else None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "_json": self._json,
            "_reserved": self._reserved,
            "_unk": self._unk,
            "_tok": None,
            "_built": None,
            "_unk_text": None,
            "_piece_chars": self._piece_chars,
            "_splitter": None,
            "fast": self.fast,
            "_enc": None,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("fast", None)
        state.setdefault("_enc", None)
        state.setdefault("_built", None)
        self.__dict__.update(state)

    @property
    def backend(self) -> str:
        return "hf" if self.fast is None else "fast"

    @property
    def tokenizer_json(self) -> str:
        return self._json

    def encode_lists(self, texts: Sequence[str]) -> list[list[int]]:
        """Raw ids per document (no reserved-id handling), by this encoder's backend."""
        if self.fast is None:
            encs = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
            return [e.ids for e in encs]
        return [np.asarray(ids).tolist() for ids in self.encode_arrays(texts)]

    def encode_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The fast backend's raw ids per document, as uint32 arrays (no Python lists)."""
        assert self.fast is not None
        return encode_texts(self.engine, self.fast, texts)

    @property
    def engine(self) -> Any:
        """The fast backend's tiktoken ``Encoding``: the one handed over at construction (this
        process's self-check built it), else the one a forkserver built for its workers
        (:func:`share_with_workers`), else built here from the tokenizer JSON."""
        assert self.fast is not None
        if self._enc is None:
            shared = _SHARED_FAST[0] if _SHARED_FAST else None
            if shared is not None and shared[0] == self._json and shared[1] == self.fast:
                self._enc = _SHARED_FAST.pop()[2]
            else:
                import orjson

                self._enc = build_engine(orjson.loads(self._json), self.fast)
        return self._enc

    @property
    def splitter(self) -> DocSplitter:
        if self._splitter is None:
            self._splitter = DocSplitter(self.tokenizer)
        return self._splitter

    def encode_long(self, text: str) -> np.ndarray:
        """The ids of one document, encoded piece by piece (int32)."""
        bounds = [0, *self.splitter.cuts(text, self._piece_chars), len(text)]
        pieces = []
        for a, b in itertools.pairwise(bounds):
            pieces.append(self._encode_flat([text[a:b]])[0])
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            tok = self._built
            self._built = None
            if tok is None and _SHARED and _SHARED[0][0] == self._json:
                tok = _SHARED.pop()[1]  # built once by the forkserver this worker forked from
            if tok is None:
                tok = _tokenizers().Tokenizer.from_str(self._json)
            tok.encode_special_tokens = True
            tok.no_padding()
            tok.no_truncation()
            if self._unk is not None:  # does a spelled "<unk>" become the unk id (T5 unigram)?
                name = tok.id_to_token(self._unk)
                if name and self._unk in tok.encode(f" {name} ", add_special_tokens=False).ids:
                    self._unk_text = str(name)
            self._tok = tok
        return self._tok

    def _encode_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(all ids of ``texts`` back to back as a new int32 array, int64 ids per text)."""
        if self.fast is not None:
            arrays = self.encode_arrays(texts)
            lens = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
            flat = np.concatenate(arrays)  # a new array (the tiktoken buffers are read-only)
            del arrays
            # ids < 2**31 (build_tokenizer checks the vocabulary size): the same values
            return (flat.view(np.int32) if flat.dtype == np.uint32 else flat.astype(np.int32)), lens
        ids_lists = self.encode_lists(texts)
        lens = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
        # chain.from_iterable is ~2x faster than a generator expression here (measured)
        values = np.fromiter(
            itertools.chain.from_iterable(ids_lists), dtype=np.int32, count=int(lens.sum())
        )
        return values, lens

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Encode documents -> (flat int32 ids, int64 offsets of len(texts)+1, counters).

        Counters: ``reserved_replaced`` (ids replaced by unk, plus the spelled ``<unk>``s when
        the tokenizer turns them into the unk id), ``reserved_token`` (documents dropped because
        a reserved id appeared and there is no unk; their span becomes empty).
        """
        counts: dict[str, int] = {}
        if not texts:
            return np.zeros(0, np.int32), np.zeros(1, np.int64), counts
        P = self._piece_chars
        long = [i for i, t in enumerate(texts) if len(t) > P] if P > 0 else []
        batch = list(texts)
        for i in long:
            batch[i] = ""
        values, lens = self._encode_flat(batch)
        del batch
        if self._unk_text is not None:
            u = self._unk_text
            spelled = sum(t.count(u) for t in texts if u in t)
            if spelled:
                counts["reserved_replaced"] = spelled
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        total = int(offsets[-1])
        if long:
            big = {i: self.encode_long(texts[i]) for i in long}
            segs = [
                big[d] if d in big else values[offsets[d] : offsets[d + 1]]
                for d in range(len(texts))
            ]
            for d, ids in big.items():
                lens[d] = len(ids)
            del big
            values = segs[0] if len(segs) == 1 else np.concatenate(segs)
            del segs
            np.cumsum(lens, out=offsets[1:])
            total = int(offsets[-1])
        if total and len(self._reserved):
            hit = np.isin(values, self._reserved)
            if hit.any():
                if self._unk is not None:
                    counts["reserved_replaced"] = counts.get("reserved_replaced", 0) + int(
                        hit.sum()
                    )
                    values[hit] = self._unk
                else:
                    docs = np.unique(
                        np.searchsorted(offsets, np.flatnonzero(hit), side="right") - 1
                    )
                    keep = np.ones(total, dtype=bool)
                    for d in docs:
                        keep[offsets[d] : offsets[d + 1]] = False
                    lens[docs] = 0
                    values = values[keep]
                    np.cumsum(lens, out=offsets[1:])
                    counts["reserved_token"] = len(docs)
        return values, offsets, counts


build_shared_tokenizer()  # a no-op unless this process is a forkserver started to share one

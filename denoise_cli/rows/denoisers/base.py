"""What a denoiser kind provides: whether a raw chunk of ``L`` tokens fits the row lengths, the
lengths of its rows at that ``L`` (for the plan), its smallest example (for packing), the
corruption itself (raw chunks -> :class:`~denoise_cli.rows.base.Rows`), and what reading its
rows back needs (``check/``): the lengths its parameters dictate, its own structure checks, the
inversion of its rows (original chunk + noise mask) and the counts ``stats`` reports, all
vectorized over the rows of one component. Components come as :class:`ComponentParams`, rows as
a :class:`RowsView` (the columns plus the classes of their ids)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...config import Denoiser, Lengths
from ..base import Rows, SpecialIds


@dataclass(frozen=True)
class KindPlan:
    """A component's lengths at its raw length (see ``rows.plan.ComponentPlan``)."""

    noise_tokens: int
    spans: int
    prefix_min: int
    prefix_max: int
    input_length: int
    target_length: int
    mean_input_tokens: float
    mean_target_tokens: float


class ComponentParams(Protocol):
    """A component of an output as its manifest gives it (``check.spec.Component``)."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> int: ...  # 1 if a mode token is prepended
    @property
    def raw(self) -> int: ...
    @property
    def noise(self) -> int: ...
    @property
    def spans(self) -> int: ...
    @property
    def prefix_min(self) -> int: ...
    @property
    def prefix_max(self) -> int: ...


@dataclass(frozen=True)
class RowsView:
    """A record batch of an output as the row checks see it. ``classes`` turns ids into their
    classes (a lookup table); a class ``>= sent0`` is sentinel ``class - sent0``. ``code`` /
    ``lcode``: the classes of ``input_ids`` / ``labels`` if already computed."""

    enc_dec: bool
    input_ids: np.ndarray  # [n, wi]
    labels: np.ndarray  # [n, wt]
    input_length: np.ndarray  # [n] int64
    prefix_length: np.ndarray | None  # [n] int64, decoder-only
    classes: Callable[[np.ndarray], np.ndarray]
    sent0: int
    tok: Callable[[int], str]  # an id as messages name it
    sentinels: np.ndarray  # sentinel k -> its id
    code: np.ndarray | None = None
    lcode: np.ndarray | None = None


@dataclass(frozen=True)
class ExpectedLengths:
    """What a component's parameters dictate about the length columns of its rows (one entry
    per row). ``split``: where the row splits its chunk (messages); ``bad_split``: rows whose
    split the kind does not allow (checked before the lengths)."""

    input_length: np.ndarray
    target_length: np.ndarray
    prefix_length: np.ndarray | None  # decoder-only
    split: np.ndarray
    bad_split: np.ndarray


class DenoiserKind:
    """A kind of denoiser; one instance per kind in ``rows.denoisers.KINDS``."""

    #: whether its rows hold sentinels (span corruption) or not (prefix-LM)
    uses_sentinels: bool = False
    #: why a row of a kind without sentinels must hold none (the row check's message)
    no_sentinels_because: str = ""

    def fits(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> bool:
        """Whether rows from raw chunks of ``L`` tokens (``m`` mode tokens) fit ``lengths``."""
        raise NotImplementedError

    def plan(self, d: Denoiser, L: int, m: int, lengths: Lengths) -> KindPlan:
        """The lengths of its rows at raw length ``L`` (``ConfigError`` if they cannot exist)."""
        raise NotImplementedError

    def min_example(self, c: Any, layout: str) -> tuple[int, int]:
        """Smallest (input tokens, target tokens) an example of component plan ``c`` can have."""
        raise NotImplementedError

    def corrupt(
        self,
        tokens: np.ndarray,
        d: Denoiser,
        mode_id: int | None,
        special: SpecialIds,
        lengths: Lengths,
        rng: np.random.Generator,
    ) -> Rows:
        """Rows from raw chunks ``[B, L]``, drawing from ``rng``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reading rows back

    def expected_lengths(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        pl: np.ndarray | None,
        enc_dec: bool,
    ) -> ExpectedLengths:
        """The lengths rows of ``c`` must have, given their length columns (int64)."""
        raise NotImplementedError

    def split_problem(self, c: ComponentParams, split: int, il: int) -> str:
        """The message of a row whose ``split`` is not allowed."""
        raise NotImplementedError

    def input_length_note(self, c: ComponentParams, split: int, enc_dec: bool) -> str:
        """How the expected input length follows from the parameters (appended to a message)."""
        return ""

    def target_length_note(self, c: ComponentParams, split: int) -> str:
        """How the expected target length follows from the parameters."""
        return ""

    def structure_problems(
        self, c: ComponentParams, v: RowsView, idx: np.ndarray
    ) -> list[tuple[int, str]]:
        """(row, message) of rows ``idx`` of ``c`` (lengths already right) whose tokens are not
        laid out as the kind writes them; a row's first problem only."""
        return []

    def invert(
        self, c: ComponentParams, v: RowsView, idx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The raw chunks ``[len(idx), raw]`` of valid rows ``idx`` of ``c``, and the noise mask
        (True where the token came from the targets)."""
        raise NotImplementedError

    def row_counts(
        self,
        c: ComponentParams,
        il: np.ndarray,
        tl: np.ndarray,
        sentinels: np.ndarray,
        enc_dec: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(raw tokens, noise tokens, spans) per row from the length columns and the number of
        sentinels in ``input_ids`` (``stats``: no decoding, no structure assumed)."""
        raise NotImplementedError

"""What ``verify`` collects: problems (one line each, ``shard row R: what``, stopping at a
limit) and the report of a passing output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Enough(Exception):
    """Raised once ``max_problems`` problems have been collected (ends the scan)."""


class Problems:
    """Collects messages (each prefixed with ``prefix``: the epoch directory, if any) and stops
    the scan once ``limit`` are in."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.items: list[str] = []
        self.truncated = False
        self.prefix = ""

    @property
    def left(self) -> int:
        return self.limit - len(self.items)

    def add(self, msg: str) -> None:
        self.items.append(self.prefix + msg)
        if len(self.items) >= self.limit:
            self.truncated = True
            raise Enough


@dataclass
class VerifyReport:
    out: str
    shards: int = 0
    rows: int = 0
    bytes: int = 0
    tokens: int = 0
    files: int = 0
    source_files: int = 0
    source_tokens: int = 0
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"OK: {self.out}: {self.rows:,} rows in {self.shards} shard(s) from {self.files} file(s), "
            f"{self.tokens:,} raw tokens, {self.bytes / 2**20:,.1f} MiB "
            f"({self.seconds:.2f} s, {rate:,.0f} rows/s)",
            "checked: " + "; ".join(self.checks),
        ]
        return "\n".join(lines)


@dataclass
class FileChain:
    """Where the next row of a file must start."""

    example: int = 0
    offset: int = 0
    rows: int = 0
    where: str = ""

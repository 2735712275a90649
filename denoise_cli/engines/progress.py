"""Progress of a run as the main process sees it: documents, tokens and input bytes reported
by the workers of any engine, shown as one tqdm bar (or counted silently)."""

from __future__ import annotations

import time
from typing import Any


class Progress:
    def __init__(self, total_bytes: int, nfiles: int, enabled: bool) -> None:
        self.docs = 0
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_bytes,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"prepare {nfiles} file(s)",
                dynamic_ncols=True,
            )

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.bar is not None:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(
                f"{self.docs:,} docs {self.docs / dt:,.0f} docs/s {self.tokens / dt / 1e3:,.0f}k tok/s",
                refresh=False,
            )
            self.bar.update(nbytes)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

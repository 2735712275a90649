"""What the tests share: paths of the data in the repository, a config helper, and the factory
of prepared outputs behind the session fixture ``outputs`` (conftest.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from denoise_cli.config import PrepareConfig, load_mixture
from denoise_cli.prepare.run import prepare

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"  # three small jsonl.zst files
ONE = SAMPLE / "en-prose-00.jsonl.zst"  # one of them: half the work for most outputs
T5_TINY = str(REPO / "tests" / "data" / "t5-tiny-tokenizer.json")


def make_cfg(mixture: str = "ul2", **kw: Any) -> PrepareConfig:
    """A prepare config of a preset (or mixture spec) with the other fields given by name."""
    return PrepareConfig(mixture=load_mixture(mixture), **kw)


class Outputs:
    """Prepared outputs, made once per session for each distinct (inputs, config, tokenizer):
    ``outputs(cfg, inputs, tokenizer=...)`` returns the directory. They are shared: a test
    that changes an output works on ``outputs.copy(..., dest)``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: dict[str, Path] = {}

    def __call__(
        self,
        cfg: PrepareConfig,
        inputs: Sequence[Path | str] = (SAMPLE,),
        *,
        tokenizer: str | None = None,
    ) -> Path:
        key = json.dumps(
            [sorted(map(str, inputs)), cfg.fingerprint_dict(), tokenizer], sort_keys=True
        )
        if key not in self.made:
            out = self.base / f"out{len(self.made)}"
            prepare(
                [str(p) for p in inputs],
                str(out),
                cfg,
                tokenizer=tokenizer,
                workers=1,
                progress=False,
            )
            self.made[key] = out
        return self.made[key]

    def copy(
        self,
        cfg: PrepareConfig,
        dest: Path,
        inputs: Sequence[Path | str] = (SAMPLE,),
        *,
        tokenizer: str | None = None,
    ) -> Path:
        """A private copy of the output at ``dest`` (for tests that change it)."""
        shutil.copytree(self(cfg, inputs, tokenizer=tokenizer), dest, symlinks=True)
        return dest

"""Shared fixtures. Everything a test needs lives in the repository (tests/data, examples/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Outputs

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """The session's prepared outputs (see ``helpers.Outputs``): each distinct one is made once
    and shared by every test module that asks for it."""
    return Outputs(tmp_path_factory.mktemp("outputs"))

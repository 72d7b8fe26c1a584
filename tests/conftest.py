"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_query(tmp_path: Path) -> Callable[..., Path]:
    """Write a query file under tmp_path and return its path (for file positions and the CLI)."""

    def write(text: str, name: str = "query.lmql") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write

"""LMQL's ``lmql.algorithms``: ``map`` a query function over data."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from typing import Any


async def map(fn: Any, data: Iterable[Any], *, where: str | None = None, model: Any = None) -> list[Any]:  # noqa: A001
    """``await map(F(...), items)`` or ``await map("Summarize {text}: [S]", items, where=...)``: each
    item as the one positional input of the query; the values in the order of ``data``."""
    from . import F

    q = F(fn, where, model=model) if isinstance(fn, str) else fn

    async def one(item: Any) -> Any:
        out = q(item)
        return await out if inspect.isawaitable(out) else out

    return list(await asyncio.gather(*(one(item) for item in data)))

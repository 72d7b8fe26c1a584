"""``querylm.map`` / ``amap``: one query over many rows of inputs (a dataset, an eval, documents).

Each row is checked against the query's inputs before it runs, so a bad row fails alone, with its line
number, and the others go on. The rows run through ``runtime.run.iter_many`` (batched on local models,
bounded concurrency on hosted ones); results come back in input order.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any

from .errors import QueryInputError
from .language.check import Plan, compile_source
from .query import QueryFunction
from .runtime.dataset import Progress, Row, is_jsonl_path, read_rows
from .runtime.result import QueryResult
from .runtime.run import Job, iter_many

Outcome = QueryResult | list[QueryResult] | Exception
"""A row's result: a QueryResult (a list of them when the decoder has n > 1), or the row's exception."""


class Target:
    """A query as rows run it: its plan, the run options it brings (an ``@query`` function's model and
    decoder), and the check that turns a row into the query's inputs."""

    def __init__(self, query: str | Path | QueryFunction):
        if isinstance(query, QueryFunction):
            self.plan: Plan = query.plan()
            self.defaults = {k: v for k, v in {"model": query.model, "decoder": query.decoder}.items() if v}
            self.defaults.update(query.options)
            params = query.signature.parameters.values()
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            self.names: frozenset[str] | None = None if takes_any else frozenset(p.name for p in params)
            self._bind: Callable[[dict[str, Any]], dict[str, Any]] = lambda inputs: query.inputs(
                (), self._read(inputs)
            )
        else:
            self.plan = compile_source(query)
            self.defaults = {}
            self.names = frozenset(self.plan.compiled.inputs)
            self._bind = self._bind_names

    def _read(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return inputs if self.names is None else {k: v for k, v in inputs.items() if k in self.names}

    def _bind_names(self, inputs: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in self.plan.compiled.inputs if name not in inputs]
        if missing:
            given = ", ".join(sorted(inputs)) or "none"
            raise QueryInputError(f"missing input '{missing[0]}' (the row has: {given})")
        return self._read(inputs)

    def inputs(self, row: Row) -> dict[str, Any]:
        """The row's inputs for the query; columns the query does not read (an id, a gold label) are left
        out. A row that can't run raises a QueryInputError at its line (or naming its index)."""
        if row.error is not None:
            raise row.error
        assert row.inputs is not None
        try:
            return self._bind(row.inputs)
        except QueryInputError as err:
            raise row.fail(err.message) from None


def run_rows(
    target: Target,
    rows: Iterable[Row],
    *,
    batch_size: int = 16,
    concurrency: int = 8,
    skip: Callable[[Row], bool] | None = None,
    **run_options: Any,
) -> Iterator[tuple[Row, Outcome]]:
    """Run ``rows`` (those ``skip`` does not skip), yielding ``(row, outcome)`` as each finishes: a bad
    row as soon as a result before it is yielded, the others in the order they complete."""
    options = {**target.defaults, **run_options}
    bad: list[tuple[Row, Exception]] = []
    started: dict[int, Row] = {}  # by iter_many's index: the order jobs were handed to it
    counter = itertools.count()

    def jobs() -> Iterator[Job]:
        for row in rows:
            if skip is not None and skip(row):
                continue
            try:
                inputs = target.inputs(row)
            except QueryInputError as err:
                bad.append((row, err))
                continue
            started[next(counter)] = row
            yield Job(target.plan, inputs, options)

    for index, outcome in iter_many(jobs(), batch_size=batch_size, concurrency=concurrency):
        yield from _drain(bad)
        yield started.pop(index), outcome
    yield from _drain(bad)


def _drain(bad: list[tuple[Row, Exception]]) -> Iterator[tuple[Row, Exception]]:
    while bad:
        yield bad.pop(0)


def count_rows(rows: Any) -> int | None:
    """How many rows there are, when that is cheap to know (for the progress bar's ETA)."""
    if is_jsonl_path(rows):
        try:
            with Path(rows).open(encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except OSError:
            return None
    return len(rows) if isinstance(rows, Sized) else None


def map(
    query: str | Path | QueryFunction,
    rows: Any,
    *,
    batch_size: int = 16,
    concurrency: int = 8,
    progress: bool = True,
    **run_options: Any,
) -> list[Outcome]:
    """Run ``query`` once per row of ``rows`` and return the results in input order.

    ``query``: a query's text, a ``.lmql`` path, or an ``@query`` function (each row's keys are its
    parameters, validated by their annotations). ``rows``: dicts of inputs, any iterable of them, a pandas
    DataFrame, or a JSONL path (one JSON object a line). Columns the query does not read are ignored.
    A row that fails holds its exception and the others go on: a bad row (not JSON, not an object, a
    missing input, a wrong type) a ``QueryInputError`` that names its file line (or row index), a run
    that fails its ``QueryError``. ``run_options`` are ``run``'s (``model``, ``decoder``, ...);
    ``progress`` shows a bar with rows/s, tokens/s and the ETA when stderr is a terminal."""
    target = Target(query)
    bar = Progress(progress, count_rows(rows))
    results: dict[int, Outcome] = {}
    try:
        for row, outcome in run_rows(
            target, read_rows(rows), batch_size=batch_size, concurrency=concurrency, **run_options
        ):
            results[row.index] = outcome
            bar.update(outcome)
    finally:
        bar.close()
    return [results[i] for i in range(len(results))]


async def amap(query: str | Path | QueryFunction, rows: Any, **kwargs: Any) -> list[Outcome]:
    """``map`` for async code: the rows run in worker threads, the event loop stays free."""
    return await asyncio.to_thread(lambda: map(query, rows, **kwargs))

"""Ray Data: one query over a dataset on more than one machine (``pip install 'querylm[ray]'``).

``QueryRunner`` is a callable class for ``Dataset.map_batches``: Ray starts it once per actor, so the
model loads once per actor, and each batch of rows runs through ``querylm.map`` (batched on local
models). ``map_dataset`` wires it up, asking Ray for a GPU per actor when the cluster has GPUs::

    import ray, querylm.integrations.ray as qray
    ds = ray.data.read_json("examples/reviews.jsonl")
    labelled = qray.map_dataset(ds, "examples/sentiment.lmql", concurrency=2)
    labelled.take_all()   # each row: its columns, the query's variables, "error" (None when it ran)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..backends.base import Backend
from ..backends.models import resolve
from ..mapping import Target, map
from ..runtime.result import QueryResult, jsonable


class QueryRunner:
    """Runs ``query`` over each batch Ray hands it; the columns of a batch are the query's inputs.

    A batch comes back with its own columns, one column per variable of the query (None where a row has
    no such value) and ``error``: None, or the message of the row's error (a bad row or a failed run), so
    one bad row never fails a batch. A null in a column the query reads is a missing input. ``model`` is loaded once, when Ray starts the actor, on CUDA when
    the actor has a GPU."""

    def __init__(
        self,
        query: str | Path,
        *,
        model: str | None = None,
        batch_size: int = 16,
        concurrency: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        **run_options: Any,
    ):
        self.query = query
        model_id = model if model is not None else Target(query).plan.compiled.query.model
        self.backend: Backend = resolve(model_id, device=device, dtype=dtype)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.run_options = run_options

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        columns = {name: list(values) for name, values in batch.items()}
        n = len(next(iter(columns.values()), []))
        # Ray fills a column a row lacks with nulls: a null is a missing input, reported as such, never
        # interpolated as "None".
        rows = [
            {name: _native(values[i]) for name, values in columns.items() if values[i] is not None}
            for i in range(n)
        ]
        outcomes = map(
            self.query,
            rows,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            progress=False,
            model=self.backend,
            **self.run_options,
        )
        names: dict[str, None] = {}
        for outcome in outcomes:
            if isinstance(outcome, QueryResult):
                names.update(dict.fromkeys(outcome.variables))
        for name in names:
            columns[name] = [
                jsonable(o.variables.get(name)) if isinstance(o, QueryResult) else None for o in outcomes
            ]
        columns["error"] = [
            None if isinstance(o, QueryResult) else (getattr(o, "message", None) or str(o)) for o in outcomes
        ]
        return columns


def _native(value: Any) -> Any:
    """A numpy scalar from a Ray batch as the Python value a query expects."""
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def map_dataset(
    ds: Any, query: str | Path, *, concurrency: int = 2, batch_size: int = 16, **options: Any
) -> Any:
    """``ds.map_batches(QueryRunner, ...)`` with ``concurrency`` actors of ``batch_size`` rows, each
    with a GPU when the Ray cluster has any (``num_gpus=1``), else on CPUs."""
    import ray

    if not ray.is_initialized():
        ray.init()
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return ds.map_batches(
        QueryRunner,
        fn_constructor_args=(query,),
        fn_constructor_kwargs={"batch_size": batch_size, **options},
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=gpus,
    )

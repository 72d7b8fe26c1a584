"""The batch engine: many executions of queries on one local model, stepped together.

Every running execution (any query, inputs, constraints, argmax or sample) is a row of one ragged
batch (``backends/ragged.py``). A step is one forward pass over every row; then each row makes its
choice from its own logits under its own mask, and its moves that need no choice (forced tokens, the
end of a value, the prompt text up to its next hole), exactly as ``decode_hole`` does for one query
alone (both drive ``decoding.hole.HoleStep``), so a row's result does not depend on what runs beside it.
A row that finishes leaves and the next query joins (at most ``batch_size`` rows, and the KV bound);
one that fails yields its error and the others go on. Rows that join start from the prefix cache, and
rows that join together share one prefill pass. A hole decided by whole values (``decoding/choices.py``)
is a choice like a token's: its values are scored after the step's forward pass, from the row's logits
and KV, in one pass for every row deciding one (``Ragged.score``), never by computing the prompt again.

Masks: on the CPU the forward pass keeps both cores busy, so there is nothing to overlap and each
row's mask is computed right after the pass (measured: llguidance's thread pool did not beat filling
the masks one after another on 2 cores, DESIGN.md); on a GPU the next pass is launched first
(``Ragged.prefetch``) and the masks are computed while it runs.

``sample(n)`` is n rows, sample i with sample i's own random stream (``run.chooser_for``), so its
samples equal ``run``'s; its result (the list of samples) comes when its last row finishes, and the
first row to fail fails it (the others leave). Not batched (run one at a time through ``run_plan`` when
their turn comes): beam decoders, whose beams fork and are pruned inside their own search.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..backends.openai import OpenAIBackend
from ..backends.prefix_cache import PrefixCache
from ..backends.ragged import Ragged
from ..decoding.choices import Candidate, candidates, take_value
from ..decoding.hole import HoleStep
from ..decoding.search import search_value, searchable
from ..language.check import Plan, bind_inputs, compile_source
from ..language.ir import DecoderSpec
from .execute import Execution, PendingHole
from .result import QueryResult
from .run import Job, as_job, chooser_for, iter_threads, prepare, run_plan, sequential
from .trace import Tracer


@dataclass
class BatchJob:
    """One item of a batch run, compiled and checked; ``error`` when that already failed."""

    index: int
    plan: Plan | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    spec: DecoderSpec | None = None
    n: int = 1
    max_len: int = 2048
    backend: Backend | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None

    @property
    def batchable(self) -> bool:
        """Whether it runs as rows of the batch: argmax, or ``sample`` (one row per sample), on a backend
        with a ragged batch."""
        return (
            self.error is None
            and self.spec is not None
            and (self.spec.name == "sample" or (self.spec.name == "argmax" and self.n == 1))
            and getattr(self.backend, "ragged", None) is not None
            and not isinstance(self.backend, OpenAIBackend)
        )

    def run_alone(self) -> QueryResult | list[QueryResult]:
        """The one-at-a-time path (``run_plan``), for what the engine does not batch."""
        if self.error is not None:
            raise self.error
        assert self.plan is not None
        opts = {k: v for k, v in self.options.items() if k not in ("model", "max_len")}
        return run_plan(self.plan, self.inputs, model=self.backend, max_len=self.max_len, **opts)


def prepare_job(index: int, job: Job) -> BatchJob:
    """A ``run_many`` item as a Job (``run.as_job``), compiled, its inputs bound, its decoder and backend
    chosen. A failure is kept in ``error``: it is the item's result."""
    out = BatchJob(index, options=dict(job.options))
    try:
        out.plan = job.query if isinstance(job.query, Plan) else compile_source(job.query)
        out.inputs = job.inputs if isinstance(job.query, Plan) else bind_inputs(out.plan.compiled, job.inputs)
        o = out.options
        out.spec, out.n, out.max_len, out.backend = prepare(
            out.plan,
            out.inputs,
            model=o.get("model"),
            decoder=o.get("decoder"),
            max_len=o.get("max_len"),
            device=o.get("device"),
            dtype=o.get("dtype"),
        )
    except Exception as err:  # noqa: BLE001 - the item's result is its error
        out.error = err
    return out


class _Row:
    """One execution in the batch (sample ``sample`` of its job): its program, the hole it is in, and
    that hole's token loop."""

    def __init__(self, job: BatchJob, ragged: Ragged, sample: int = 0):
        self.job = job
        self.sample = sample
        self.pending: PendingHole | None = None
        self.step: HoleStep | None = None
        self.values: list[Candidate] | None = None  # a whole-value choice due (``advance``)
        self.seq = ragged.add()
        try:
            self._setup(job, sample)
        except Exception:  # a row that can't start (a bad input) leaves at once: its row is freed
            ragged.remove(self.seq)
            raise

    def _setup(self, job: BatchJob, sample: int) -> None:
        assert job.plan is not None and job.backend is not None and job.spec is not None
        alone = job.n == 1  # sample(n > 1) streams and traces nothing, as ``run_plan`` does
        chat, stream = job.options.get("chat"), job.options.get("stream") if alone else None
        self.ex = Execution(
            job.plan,
            job.backend,
            self.seq,
            max_len=job.max_len,
            chat=chat,
            stream=stream,
            heal=job.options.get("heal", True),
        )
        chooser = chooser_for(job.spec, sample)
        self.tracer = Tracer(chooser, job.backend) if job.options.get("trace") and alone else None
        self.chooser = self.tracer if self.tracer is not None else chooser
        self.by_value = job.options.get("choices", "values") == "values"
        self.ex.decode_nested = sequential(
            self.chooser, self.tracer, by_value=self.by_value and self.tracer is None
        )
        self.ex.start(job.inputs)

    def advance(self) -> bool:
        """Run on to the next choice: True when the row needs its logits, False when the query is done."""
        while True:
            if self.step is None:
                self.pending = self.ex.advance()
                if self.pending is None:
                    return False
                if self.tracer is not None:
                    self.tracer.hole = self.pending.hole.name
                elif self.by_value:  # a hole with a few possible values, decided whole (as run does)
                    values = candidates(
                        self.ex.backend, self.pending.hc, room=self.ex.max_len - len(self.seq.ids)
                    )
                    if len(values) > 1:  # scored with the next forward pass, beside the other rows
                        self.values = values
                        return True
                    if values:
                        self.decide(values, None)
                        continue
                    if searchable(self.pending.hc, self.chooser):  # on its own batch, as run does
                        out = search_value(
                            self.ex.backend, self.seq, self.pending.hc, max_len=self.ex.max_len
                        )
                        if out is not None:
                            self.ex.value_stream(self.pending)(out.text)
                            self.ex.finish(self.pending, out)
                            continue
                self.step = HoleStep(
                    self.ex.backend,
                    self.seq,
                    self.pending.hc,
                    self.chooser,  # type: ignore[arg-type]
                    max_len=self.ex.max_len,
                    position=self.pending.hole.position,
                    on_token=self.ex.value_stream(self.pending),
                    skip_forced=self.tracer is None,
                )
            if self.step.ready():
                return True
            self.close()

    def decide(self, values: list[Candidate], scores: list[Any] | None) -> None:
        """Finish the hole with the value the chooser picks by ``scores`` (``choices.take_value``)."""
        assert self.pending is not None
        out = take_value(self.seq, values, scores, self.chooser)
        self.values = None
        self.ex.value_stream(self.pending)(out.text)
        self.ex.finish(self.pending, out)

    def take(self, logits: Any, scored: list[Any] | Exception | None = None) -> None:
        """Make the choice due: the hole's next token from ``logits``, or its whole value by ``scored``
        (``Engine._scores``)."""
        if self.values is not None:
            if isinstance(scored, Exception):
                raise scored
            self.decide(self.values, scored)
            return
        assert self.step is not None
        if not self.step.take(logits):
            self.close()

    def close(self) -> None:
        assert self.step is not None and self.pending is not None
        self.ex.finish(self.pending, self.step.output())
        self.step = None

    def result(self) -> QueryResult:
        result = self.ex.result()
        result.trace = self.tracer.steps if self.tracer is not None else None
        assert self.job.spec is not None
        result.decoder = self.job.spec.name
        return result


class Engine:
    """Steps many queries on ``backend`` (a local model, or ``random``) together.

    ``batch_size``: the most rows at once; ``kv_tokens``: the bound on the batch's KV cache, in rows
    times columns; ``prefix_tokens``: the prefix cache's capacity in tokens (0: none)."""

    def __init__(
        self,
        backend: Backend,
        *,
        batch_size: int = 16,
        kv_tokens: int = 1 << 16,
        prefix_tokens: int = 4096,
        prefix_block: int = 16,
    ):
        make = getattr(backend, "ragged", None)
        if make is None:
            raise ValueError(f"{backend.name} has no batch engine (a hosted backend runs on threads)")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.backend = backend
        self.batch_size = batch_size
        self.prefix = PrefixCache(prefix_tokens, prefix_block) if prefix_tokens > 0 else None
        self.ragged: Ragged = make(kv_tokens=kv_tokens, prefix_cache=self.prefix)
        self.counts = {"rows": 0, "steps": 0, "row_steps": 0, "seconds": 0.0}

    def stats(self) -> dict[str, Any]:
        """Rows run, steps (forward passes of the batch), mean rows per step, the KV batch's counts and
        the prefix cache's hit rate."""
        steps = self.counts["steps"]
        mean = self.counts["row_steps"] / steps if steps else 0.0
        return {**self.counts, "mean_rows": round(mean, 2), **self.ragged.stats()}

    def stream(
        self, jobs: Iterable[BatchJob]
    ) -> Iterator[tuple[int, QueryResult | list[QueryResult] | Exception]]:
        """Run ``jobs``; yields (index, result or error) as each finishes."""
        t0 = time.perf_counter()
        waiting = iter(jobs)  # read as rows are admitted: a long iterable is never held whole
        more = True
        queued: list[tuple[BatchJob, int]] = []  # the samples of an admitted job still to join
        groups: dict[int, list[QueryResult | None]] = {}  # a sample(n) job's samples done so far
        failed: set[int] = set()  # sample(n) jobs failed by one sample: their other rows leave
        active: list[_Row] = []
        ragged = self.ragged

        def fail(index: int) -> None:
            failed.add(index)
            del groups[index]

        def done(row: _Row, out: QueryResult | Exception) -> Iterator[Any]:
            """Row ``row`` left with ``out``: its job's result when that is complete."""
            ragged.remove(row.seq)
            index = row.job.index
            if row.job.n == 1:
                yield index, out
            elif index in failed:
                pass
            elif isinstance(out, Exception):
                fail(index)
                yield index, out
            else:
                groups[index][row.sample] = out
                if all(r is not None for r in groups[index]):
                    yield index, groups.pop(index)

        def live(row: _Row) -> bool:
            """False (and the row leaves) when a sibling sample already failed its job."""
            if row.job.index in failed:
                ragged.remove(row.seq)
                return False
            return True

        try:
            while more or queued or active:
                while (more or queued) and len(active) < self.batch_size and ragged.room(0):
                    if not queued:
                        job = next(waiting, None)
                        if job is None:
                            more = False
                            break
                        if not job.batchable or batch_key(job.backend) != batch_key(self.backend):
                            yield job.index, _outcome(job.run_alone)
                            continue
                        if job.n > 1:
                            groups[job.index] = [None] * job.n
                        queued = [(job, i) for i in range(job.n)]
                    job, sample = queued.pop(0)
                    if job.index in failed:
                        continue
                    self.counts["rows"] += 1
                    try:
                        row = _Row(job, ragged, sample)
                    except Exception as err:  # noqa: BLE001 - the job's result is its error
                        if job.n > 1:
                            fail(job.index)
                        yield job.index, err
                        continue
                    try:
                        if row.advance():
                            active.append(row)
                            continue
                        out: QueryResult | Exception = row.result()
                    except Exception as err:  # noqa: BLE001 - this row's result is its error
                        out = err
                    yield from done(row, out)
                active = [r for r in active if live(r)]
                if not active:
                    continue
                self.counts["steps"] += 1
                self.counts["row_steps"] += len(active)
                try:
                    logits = ragged.logits([r.seq for r in active])
                except Exception as err:  # noqa: BLE001 - the model failed: every running row fails
                    for r in active:
                        yield from done(r, err)
                    active = []
                    continue
                scores = self._scores([r for r in active if r.values is not None])
                taken = []
                for r, row_logits in zip(active, logits, strict=True):
                    if not live(r):  # a sibling failed its job earlier in this loop
                        continue
                    try:
                        r.take(row_logits, scores.get(id(r)))
                        taken.append(r)
                    except Exception as err:  # noqa: BLE001 - this row's result is its error
                        yield from done(r, err)
                ragged.prefetch()  # a GPU computes the next pass while the masks below are computed
                active = []
                for r in taken:
                    if not live(r):
                        continue
                    try:
                        if r.advance():
                            active.append(r)
                            continue
                        out = r.result()
                    except Exception as err:  # noqa: BLE001 - this row's result is its error
                        out = err
                    yield from done(r, out)
        finally:
            self.counts["seconds"] += time.perf_counter() - t0

    def _scores(self, deciding: list[_Row]) -> dict[int, list[Any] | Exception]:
        """The whole-value choices due (``_Row.values``), scored in one pass from the rows' KV; by row
        id, the scores or, should the model fail, the error."""
        if not deciding:
            return {}
        try:
            scored = self.ragged.score(
                [r.seq for r in deciding], [[c.scored for c in r.values or ()] for r in deciding]
            )
        except Exception as err:  # noqa: BLE001 - the model failed: every deciding row fails
            return {id(r): err for r in deciding}
        return {id(r): s for r, s in zip(deciding, scored, strict=True)}


def batch_key(backend: Backend | None) -> Any:
    """Backends one engine can batch together: the same one, or clones that give the same logits."""
    return getattr(backend, "batch_key", None) or id(backend)


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - the item's result is its error
        return err


def iter_many(
    items: Iterable[Any], *, batch_size: int = 16, concurrency: int = 8, **common: Any
) -> Iterator[tuple[int, QueryResult | list[QueryResult] | Exception]]:
    """Run ``run_many``'s items, yielding ``(index, result)`` as each finishes (a failed item's result
    is its exception), reading the items lazily. When the first item runs on a local model (or
    ``random``), one engine batches the items on that model, ``batch_size`` rows at once, and runs the
    others (hosted, beams, another model) one at a time as their turn comes; otherwise
    the items run on ``concurrency`` threads (a hosted backend waits on the network, not the CPU)."""
    raw = iter(items)
    first_item = next(raw, None)
    if first_item is None:
        return
    first = prepare_job(0, as_job(first_item, common))
    if not first.batchable:
        yield from iter_threads(
            itertools.chain([first_item], raw), batch_size=batch_size, concurrency=concurrency, **common
        )
        return
    assert first.backend is not None
    rest = (prepare_job(i, as_job(item, common)) for i, item in enumerate(raw, start=1))
    yield from Engine(first.backend, batch_size=batch_size).stream(itertools.chain([first], rest))


def run_many(
    queries: Iterable[Any], *, concurrency: int = 8, batch_size: int = 16, **common: Any
) -> list[Any]:
    """Run many queries. Each item is a query (its text or path), a dict of ``run`` arguments with the
    query under ``"query"``, or a Job; ``common`` arguments apply to all. Results come back in order; a
    failed query's slot holds its exception. Batched on a local model, on threads on a hosted one
    (``iter_many``); hosted results carry their ``usage``."""
    results: dict[int, Any] = dict(
        iter_many(queries, concurrency=concurrency, batch_size=batch_size, **common)
    )
    return [results[i] for i in range(len(results))]

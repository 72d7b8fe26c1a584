"""The batch engine: many executions of queries on one local model, stepped together.

Every running execution (any query, inputs, constraints, decoder) is rows of one ragged batch
(``backends/ragged.py``). A step is one forward pass over every row of every unit; then each unit makes
its choices from its rows' logits, and its moves that need no choice. A unit is:

- a row (``_Row``): one execution under argmax or one sample, choosing under its own mask, and then its
  forced tokens, the end of a value, the prompt text up to its next hole, exactly as ``decode_hole``
  does for one query alone (both drive ``decoding.hole.HoleStep``), so a row's result does not depend
  on what runs beside it. ``sample(n)`` is n rows, sample i with sample i's own random stream
  (``prepare.chooser_for``); its result (the list of samples) comes when its last row finishes, and the
  first row to fail fails it (the others leave).
- a beam group (``beams.BeamGroup``: beam, beam_sample, best_k): its beams are rows, whose forced
  tokens' log-probabilities come from the same pass (``Ragged.scored_logits``); it ranks its candidates,
  its children fork their parents' rows inside the batch (``Ragged.fork``), pruned beams free theirs.

A unit that finishes leaves and the next joins, within ``batch_size`` rows and the KV bound, a beam
group counted at the most rows it may hold (n beams; best_k's frontier of 4n); one that fails yields its
error and the others go on. Rows that join start from the prefix cache, and rows that join together
share one prefill pass. A hole decided by whole values (``decoding/choices.py``) is a choice like a
token's: its values are scored after the step's forward pass, from the row's logits and KV, in one pass
for every row deciding one (``Ragged.score``), never by computing the prompt again.

``run_plan`` runs a beam decoder or a local sample(n) as one job of an engine of its own, and
``run.iter_many`` many jobs of any decoders on one engine: one stepping loop for all of them.

Masks: on the CPU the forward pass keeps both cores busy, so there is nothing to overlap and each
row's mask is computed right after the pass (measured: llguidance's thread pool did not beat filling
the masks one after another on 2 cores, DESIGN.md); on a GPU the next pass is launched first
(``Ragged.prefetch``) and the masks are computed while it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.openai import OpenAIBackend
from ..backends.prefix_cache import PrefixCache
from ..backends.ragged import Ragged, RaggedRow
from ..decoding.choices import Candidate, candidates, take_value
from ..decoding.hole import HoleStep
from ..decoding.search import search_value, searchable
from ..errors import UnsupportedError
from ..language.check import Plan, bind_inputs, compile_source
from ..language.ir import DecoderSpec
from .beams import BeamGroup, reserve
from .execute import Execution, PendingHole, StreamFn
from .prepare import BEAMS, chooser_for, prepare, sequential
from .result import QueryResult
from .trace import Tracer

Outcome = QueryResult | list[QueryResult] | Exception


@dataclass(frozen=True)
class Job:
    """One query to run, with its inputs apart from ``run``'s options, so that an input may be named
    ``model`` or ``query``. ``query`` is a query's text or path, or a compiled Plan whose ``inputs``
    are already checked (``querylm.map`` checks each row before it runs)."""

    query: str | Path | Plan
    inputs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


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
    def beams(self) -> bool:
        return self.spec is not None and self.spec.name in BEAMS

    @property
    def batchable(self) -> bool:
        """Whether it runs in the batch: argmax (one row), ``sample`` (one row per sample) or a beam
        decoder (a group of rows), on a backend with a ragged batch."""
        return (
            self.error is None
            and self.spec is not None
            and (self.spec.name in ("sample", *BEAMS) or (self.spec.name == "argmax" and self.n == 1))
            and getattr(self.backend, "ragged", None) is not None
            and not isinstance(self.backend, OpenAIBackend)
        )

    def execution(self, seq: RaggedRow, stream: StreamFn | None = None) -> Execution:
        """An execution of this job's query on ``seq`` (a row of the batch), with its options: the one
        place a row and a beam group make theirs."""
        assert self.plan is not None and self.backend is not None
        o = self.options
        return Execution(
            self.plan,
            self.backend,
            seq,
            max_len=self.max_len,
            chat=o.get("chat"),
            stream=stream,
            heal=o.get("heal", True),
        )

    @property
    def units(self) -> int:
        """How many units of the engine it runs as: one per sample, one beam group."""
        return 1 if self.beams else self.n

    @property
    def rows(self) -> int:
        """The most rows one of its units holds at once (``beams.reserve``)."""
        return reserve(self.spec.name, self.n) if self.spec is not None and self.beams else 1


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

    reserve = 1

    def __init__(self, job: BatchJob, ragged: Ragged, sample: int = 0):
        self.job = job
        self.sample = sample
        self.ragged = ragged
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
        stream = job.options.get("stream") if alone else None
        self.ex = job.execution(self.seq, stream=stream)
        chooser = chooser_for(job.spec, sample)
        self.tracer = Tracer(chooser, job.backend) if job.options.get("trace") and alone else None
        self.chooser = self.tracer if self.tracer is not None else chooser
        self.by_value = job.options.get("choices", "values") == "values"
        self.ex.decode_nested = sequential(
            self.chooser, self.tracer, by_value=self.by_value and self.tracer is None
        )
        self.ex.start(job.inputs)

    @property
    def rows(self) -> list[RaggedRow]:
        return [self.seq]

    def positions(self) -> list[list[int]]:
        return [[]]  # a row keeps no score: no forced token's log-probability is asked for

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

    def take(self, logits: np.ndarray, forced_lps: list[np.ndarray], scored: Any = None) -> None:
        """Make the choice due: the hole's next token from ``logits`` (its one row's), or its whole value
        by ``scored`` (``Engine._scores``)."""
        if self.values is not None:
            if isinstance(scored, Exception):
                raise scored
            self.decide(self.values, scored)
            return
        assert self.step is not None
        if not self.step.take(logits[0]):
            self.close()

    def close(self) -> None:
        assert self.step is not None and self.pending is not None
        self.ex.finish(self.pending, self.step.output())
        self.step = None

    def release(self) -> None:
        self.ragged.remove(self.seq)

    def result(self) -> QueryResult:
        result = self.ex.result()
        result.trace = self.tracer.steps if self.tracer is not None else None
        assert self.job.spec is not None
        result.decoder = self.job.spec.name
        return result


Unit = _Row | BeamGroup
"""What the engine steps: a row, or a beam group of rows (``rows``, ``positions``, ``take``,
``advance``, ``release``, ``result``)."""


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
        """Units admitted (a row, or a beam group), steps (forward passes of the batch), mean rows per
        step, the KV batch's counts and the prefix cache's hit rate."""
        steps = self.counts["steps"]
        mean = self.counts["row_steps"] / steps if steps else 0.0
        return {**self.counts, "mean_rows": round(mean, 2), **self.ragged.stats()}

    def stream(
        self, jobs: Iterable[BatchJob], alone: Callable[[BatchJob], Any] | None = None
    ) -> Iterator[tuple[int, Outcome]]:
        """Run ``jobs``; yields (index, result or error) as each finishes. A job the engine does not
        batch (a hosted model, another model) runs through ``alone`` when its turn comes (``run``'s
        ``iter_many`` passes ``run_plan``'s path); without ``alone``, its result is an error."""
        t0 = time.perf_counter()
        waiting = iter(jobs)  # read as rows are admitted: a long iterable is never held whole
        more = True
        queued: list[tuple[BatchJob, int]] = []  # the units of an admitted job still to join
        groups: dict[int, list[QueryResult | None]] = {}  # a sample(n) job's samples done so far
        failed: set[int] = set()  # sample(n) jobs failed by one sample: their other rows leave
        active: list[Unit] = []

        def fail(index: int) -> None:
            failed.add(index)
            del groups[index]

        def done(unit: Unit, out: Outcome) -> Iterator[Any]:
            """``unit`` left with ``out``: its job's result when that is complete."""
            unit.release()
            index = unit.job.index
            if unit.job.units == 1:
                yield index, out
            elif index in failed:
                pass
            elif isinstance(out, Exception):
                fail(index)
                yield index, out
            else:
                groups[index][unit.sample] = out  # type: ignore[assignment]
                if all(r is not None for r in groups[index]):
                    yield index, groups.pop(index)

        def live(unit: Unit) -> bool:
            """False (and the row leaves) when a sibling sample already failed its job."""
            if unit.job.index in failed:
                unit.release()
                return False
            return True

        try:
            while more or queued or active:
                while more or queued:
                    if not queued:
                        job = next(waiting, None)
                        if job is None:
                            more = False
                            break
                        if not job.batchable or batch_key(job.backend) != batch_key(self.backend):
                            yield job.index, _outcome(job, alone)
                            continue
                        if job.units > 1:
                            groups[job.index] = [None] * job.n
                        queued = [(job, i) for i in range(job.units)]
                    job, sample = queued[0]
                    if active and not self._room(sum(u.reserve for u in active) + job.rows):
                        break  # the next unit joins when rows leave
                    queued.pop(0)
                    if job.index in failed:
                        continue
                    self.counts["rows"] += 1
                    try:
                        unit = self._unit(job, sample)
                    except Exception as err:  # noqa: BLE001 - the job's result is its error
                        if job.units > 1:
                            fail(job.index)
                        yield job.index, err
                        continue
                    try:
                        if unit.advance():
                            active.append(unit)
                            continue
                        out: Outcome = unit.result()
                    except Exception as err:  # noqa: BLE001 - this unit's result is its error
                        out = err
                    yield from done(unit, out)
                active = [u for u in active if live(u)]
                if not active:
                    continue
                seqs: list[RaggedRow] = []
                positions: list[list[int]] = []
                spans = []
                for u in active:
                    spans.append((len(seqs), len(seqs) + len(u.rows)))
                    seqs += u.rows
                    positions += u.positions()
                self.counts["steps"] += 1
                self.counts["row_steps"] += len(seqs)
                try:
                    logits, forced = self.ragged.scored_logits(seqs, positions)
                except Exception as err:  # noqa: BLE001 - the model failed: every running unit fails
                    for u in active:
                        yield from done(u, err)
                    active = []
                    continue
                scores = self._scores([u for u in active if u.values is not None])
                taken = []
                for u, (a, z) in zip(active, spans, strict=True):
                    if not live(u):  # a sibling failed its job earlier in this loop
                        continue
                    try:
                        u.take(logits[a:z], forced[a:z], scores.get(id(u)))
                        taken.append(u)
                    except Exception as err:  # noqa: BLE001 - this unit's result is its error
                        yield from done(u, err)
                self.ragged.prefetch()  # a GPU computes the next pass while the masks below are computed
                active = []
                for u in taken:
                    if not live(u):
                        continue
                    try:
                        if u.advance():
                            active.append(u)
                            continue
                        out = u.result()
                    except Exception as err:  # noqa: BLE001 - this unit's result is its error
                        out = err
                    yield from done(u, out)
        finally:
            self.counts["seconds"] += time.perf_counter() - t0

    def _room(self, rows: int) -> bool:
        """Whether ``rows`` rows in all fit the batch size and the KV bound."""
        return rows <= self.batch_size and self.ragged.room(rows)

    def _unit(self, job: BatchJob, sample: int) -> Unit:
        """Unit ``sample`` of ``job``, started: a row, or a beam decoder's group."""
        if not job.beams:
            return _Row(job, self.ragged, sample)
        assert job.plan is not None and job.backend is not None and job.spec is not None
        seq = self.ragged.add()
        try:
            root = job.execution(seq)
            root.start(job.inputs)
            return BeamGroup(job, root, self.ragged, job.spec, job.n)
        except Exception:  # a group that can't start leaves at once: its row is freed
            self.ragged.remove(seq)
            raise

    def _scores(self, deciding: list[Unit]) -> dict[int, list[Any] | Exception]:
        """The whole-value choices due (``_Row.values``), scored in one pass from the rows' KV; by row
        id, the scores or, should the model fail, the error."""
        if not deciding:
            return {}
        try:
            scored = self.ragged.score(
                [r.rows[0] for r in deciding], [[c.scored for c in r.values or ()] for r in deciding]
            )
        except Exception as err:  # noqa: BLE001 - the model failed: every deciding row fails
            return {id(r): err for r in deciding}
        return {id(r): s for r, s in zip(deciding, scored, strict=True)}


def batch_key(backend: Backend | None) -> Any:
    """Backends one engine can batch together: the same one, or clones that give the same logits."""
    return getattr(backend, "batch_key", None) or id(backend)


def _outcome(job: BatchJob, alone: Callable[[BatchJob], Any] | None) -> Any:
    """The result of a job the engine does not batch: its error, or what ``alone`` makes of it."""
    try:
        if job.error is not None:
            raise job.error
        if alone is None:
            raise UnsupportedError("this engine batches local runs on its own model only")
        return alone(job)
    except Exception as err:  # noqa: BLE001 - the item's result is its error
        return err

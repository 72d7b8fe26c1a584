"""Beam search over a whole query as rows of the batch engine: ``beam(n)``, ``beam_sample(n,
temperature)``, ``best_k``.

A beam is an execution of the query (its own row of the engine's ragged batch, bound values and
program state) inside one of its holes, with the value it is decoding there (``decoding.beam.Value``).
A ``BeamGroup`` is one beam decoder's job: the engine (``runtime/engine.py``) gives every running beam
its logits in the same forward pass as every other row of the batch (``take``), the best candidates
overall become the next beams (a child's row is a fork of its parent's, its KV copied inside the batch,
never recomputed; a parent left without a child frees its row), and each then makes its moves that need
no choice (``advance``): forced tokens, the end of a value, the program run on to its next hole. The
step math is ``decoding/beam.py``'s; this module drives the programs.

A candidate that finishes the query is kept only if it ranks among the first n, and does not take a
running slot (transformers' beam search with ``length_penalty=0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.ragged import Ragged, RaggedRow
from ..constraints.matcher import fill_masks
from ..decoding.beam import (
    Candidate,
    Choice,
    ListSequence,
    Value,
    attach,
    best_first,
    candidate,
    done,
    log_normalisers,
    options,
    place,
    settle,
)
from ..decoding.choose import END
from ..errors import ConstraintError
from ..language.ir import DecoderSpec
from .execute import Execution, PendingHole
from .prepare import make_rng
from .result import QueryResult


@dataclass
class Beam:
    ex: Execution
    pending: PendingHole
    value: Value

    @property
    def score(self) -> float:
        return self.ex.score


def enter(ex: Execution, backend: Backend) -> Beam | None:
    """Run ``ex`` to its next hole: a beam in it, or None when the query finished."""
    pending = ex.advance()
    if pending is None:
        return None
    return Beam(ex, pending, Value.open(backend, pending.hc, pending.hole.position))


def close(beam: Beam, backend: Backend, ended_by: str) -> Beam | None:
    """End the beam's current value and run on; raises ConstraintError if the value fails a check."""
    beam.ex.finish(beam.pending, beam.value.output(backend, ended_by))
    return enter(beam.ex, backend)


def advance(beam: Beam, backend: Backend, finished: list[Execution]) -> tuple[Beam, Choice] | None:
    """Make the beam's moves that need no choice (``decoding.beam.settle``), ending values that must end
    and running on to the next hole. Returns the beam once it needs a choice, with that choice; None
    when it finished (into ``finished``) or was pruned (a dead end, or a value failing a check)."""
    current: Beam | None = beam
    while current is not None:
        try:
            step = settle(current.value, current.ex.seq, backend, current.ex.max_len)
            if isinstance(step, Choice):
                return current, step
            nxt = close(current, backend, step)
        except ConstraintError:
            return None
        if nxt is None and current.ex.finished:
            finished.append(current.ex)
        current = nxt
    return None


def reserve(decoder: str, n: int) -> int:
    """The most rows a group holds at once: its n beams (best_k: its frontier of 4n), which the engine
    counts against its batch size and KV bound when it admits the group."""
    return 4 * n if decoder == "best_k" else n


class BeamGroup:
    """One beam decoder's search (``spec``: beam, beam_sample or best_k), its beams rows of ``ragged``
    (the engine's batch): the n best finished executions of the query ``root`` (started, its sequence a
    row of ``ragged``), best first. beam_sample samples its candidates (Gumbel keys from the seed's
    stream) instead of ranking them.

    best_k is LMQL's: a best-first search. A frontier of hypotheses (at most 4n,
    all kept in the batch) is ranked by score minus an age penalty; each round expands only the n best
    of it, by their 5 most likely continuations with probability >= 0.05, until ``budget`` hypotheses
    have been expanded (and one query finished).

    ``job``: the engine's item this group runs (the engine reads it back, the group never does)."""

    values = None  # the engine's whole-value choices: a beam's values are searched token by token
    sample = 0

    def __init__(
        self,
        job: Any,
        root: Execution,
        ragged: Ragged,
        spec: DecoderSpec,
        n: int,
    ):
        self.job = job
        self.ragged = ragged
        self.backend = root.backend
        self.decoder = spec.name
        self.n = n
        args = spec.args
        self.rng = make_rng(args.get("seed"), 0) if spec.name == "beam_sample" else None
        self.temperature = float(args.get("temperature", 1.0))
        self.best_k = spec.name == "best_k"
        self.budget = int(args.get("budget", 30))  # best_k's: how many hypotheses it expands
        self.reserve = reserve(spec.name, n)
        self.finished: list[Execution] = []
        first = enter(root, self.backend)
        if first is None:  # a query without a hole: its one execution is the result
            ragged.remove(root.seq)  # type: ignore[arg-type]
            self.finished.append(root)
        self.running = [first] if first is not None else []
        self.choices: list[Choice] = []  # what each running beam may do next (``advance``)
        self.born: dict[int, int] = {}  # id(beam) -> the round it joined the frontier (best_k's age)
        self.round = self.expanded = 0

    @property
    def rows(self) -> list[RaggedRow]:
        """The running beams' rows, which the next forward pass computes."""
        return [b.ex.seq for b in self.running]  # type: ignore[misc]

    def positions(self) -> list[list[int]]:
        """Per row, the positions of the tokens its beam appended without a choice since its last
        logits: their log-probabilities, from the same pass, count in its score."""
        return [b.value.forced for b in self.running]

    def advance(self) -> bool:
        """Every running beam's moves that need no choice; True while the search needs logits, False
        when it is over (no beam left, or none can beat the n-th finished one; best_k: the budget
        spent). A beam that finishes or is pruned frees its row."""
        if self.backend.overlap:  # while the device runs the forward pass: every beam's mask at once
            fill_masks([b.value.matcher for b in self.running])
        settled: list[Beam] = []
        self.choices = []
        for beam in self.running:
            ready = advance(beam, self.backend, self.finished)
            if ready is None:
                self.ragged.remove(beam.ex.seq)  # type: ignore[arg-type]
                continue
            settled.append(ready[0])
            self.choices.append(ready[1])
        self.running = settled
        if not self.running:
            return False
        if not self.best_k:
            return not done([e.score for e in self.finished], [b.score for b in self.running], self.n)
        return not (self.expanded >= self.budget and self.finished)

    def take(self, logits32: np.ndarray, forced_lps: list[np.ndarray], scored: Any = None) -> None:
        """One step of the search from the running beams' ``logits32`` and their forced tokens'
        log-probabilities (``positions``): rank the candidates, make the next beams."""
        for b, lps in zip(self.running, forced_lps, strict=True):
            b.ex.score += float(lps.sum())
            b.value.forced = []
        log_z = log_normalisers(logits32)
        n, running, best_k = self.n, self.running, self.best_k
        if best_k:
            ages = [self.round - self.born.setdefault(id(b), self.round) for b in running]
            expand = best_first([b.score for b in running], ages, n)
            self.expanded += len(expand)
            self.round += 1
        else:
            expand = list(range(len(running)))
        cands: list[Candidate] = []
        for i in expand:
            beam = running[i]
            k = 5 if best_k else 2 * n
            for tok, lp in options(
                beam.value, self.choices[i], logits32[i], log_z[i], k, self.backend, gamma=best_k
            ):
                cands.append(candidate(beam.score, i, tok, lp, self.rng, self.temperature))
        cands.sort(key=lambda c: -c.key)

        # Children are forks (an execution copies its lists; its program is replayed only when its value
        # ends), written first into plain id lists, so that a parent stays intact for its other children.
        children: list[Beam] = []
        parents: list[int] = []
        if best_k:  # the frontier keeps what was not expanded; children join it, best 4n kept
            keep = [i for i in range(len(running)) if i not in set(expand)]
            children = [running[i] for i in keep]
            parents = list(keep)
        quota = self.reserve
        for rank, c in enumerate(cands if best_k else cands[: 2 * n]):
            if len(children) >= quota:
                break
            parent = running[c.parent]
            ex = parent.ex.fork(ListSequence(list(parent.ex.seq.ids)))
            ex.score = c.score
            if c.token == END:
                try:
                    nxt = close(Beam(ex, parent.pending, parent.value), self.backend, "eos")
                except ConstraintError:
                    continue  # a Python predicate rejected the value: pruned
                if nxt is None:
                    if rank < n or best_k:
                        self.finished.append(ex)
                    continue
                children.append(nxt)
            else:
                ex.seq.append([c.token])
                children.append(Beam(ex, parent.pending, parent.value.child(c.token)))
            parents.append(c.parent)
        if best_k and len(children) > quota:
            order = sorted(range(len(children)), key=lambda j: -children[j].score)[:quota]
            children = [children[j] for j in order]
            parents = [parents[j] for j in order]
        self._place(children, parents)
        self.running = children

    def _place(self, children: list[Beam], parents: list[int]) -> None:
        """Give each child a row: a parent's last child takes the parent's row, its others fork it (a
        copy of its KV inside the batch), each brought up to the child's ids (only what differs is
        computed). A parent without a child frees its row first, so the group never holds more rows
        than children."""
        for child, row in zip(children, place(self.ragged, self.rows, parents), strict=True):
            if child.ex.seq is not row:  # (a best_k hypothesis kept in the frontier keeps its row)
                attach(row, child.ex.seq.ids)
                child.ex.seq = row

    def release(self) -> None:
        """Free the rows still held (the search ended, or failed)."""
        for row in self.rows:
            self.ragged.remove(row)

    def result(self) -> list[QueryResult]:
        """The n best finished executions' results, best first."""
        if not self.finished:
            raise ConstraintError("beam search: no beam could complete the query under its constraints")
        self.finished.sort(key=lambda e: -e.score)
        results = [ex.result() for ex in self.finished[: self.n]]
        for r in results:
            r.decoder = self.decoder
        return results

"""Beam search over a whole query: ``beam(n)``, ``beam_sample(n, temperature)``, ``best_k``.

A beam is an execution of the query (its own sequence row, bound values and program state) inside one of
its holes, with the value it is decoding there (``decoding.beam.Value``). Every step, all running beams
go through the model as one batch; the best candidates overall become the next beams (a child copies
its parent's row in the KV cache, never recomputing it). A beam whose value ends runs the program on to
its next hole, or finishes the query. The step math is ``decoding/beam.py``'s; this module drives the
programs.

A candidate that finishes the query is kept only if it ranks among the first n, and does not take a
running slot (transformers' beam search with ``length_penalty=0``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, Batch
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
    settle,
)
from ..decoding.choose import END
from ..errors import ConstraintError
from .execute import Execution, PendingHole


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


def beam_search(
    root: Execution,
    batch: Batch,
    n: int,
    *,
    rng: np.random.Generator | None = None,
    temperature: float = 1.0,
    best_k_budget: int | None = None,
) -> list[Execution]:
    """The n best finished executions of the query ``root`` (started, with ``batch.row(0)`` as its
    sequence), best first. With ``rng``, candidates are sampled (beam_sample) instead of ranked.

    With ``best_k_budget``, LMQL's best_k: a best-first search. A frontier of hypotheses (at most 4n,
    all kept in the batch) is ranked by score minus an age penalty; each round expands only the n best
    of it, by their 5 most likely continuations with probability >= 0.05, until ``budget`` hypotheses
    have been expanded (and one query finished)."""
    backend = root.backend
    finished: list[Execution] = []
    first = enter(root, backend)
    running = [first] if first is not None else []
    best_k = best_k_budget is not None
    born: dict[int, int] = {}  # id(beam) -> the round it joined the frontier (best_k's age)
    round_no = expanded = 0

    def place(beams: list[Beam], parents: list[int]) -> None:
        """Make beam j row j of the batch: a copy of its parent's row, brought up to the beam's ids."""
        rows = attach(batch, [list(b.ex.seq.ids) for b in beams], parents)
        for b, row in zip(beams, rows, strict=True):
            b.ex.seq = row

    while running:
        settled: list[Beam] = []
        choices: list[Choice] = []
        parents: list[int] = []
        if backend.overlap:  # while the device runs the forward pass: every beam's mask at once
            fill_masks([b.value.matcher for b in running])
        for i, beam in enumerate(running):
            beam.ex.seq = ListSequence(list(beam.ex.seq.ids))  # rows may move: detach, re-attach below
            ready = advance(beam, backend, finished)
            if ready is not None:
                settled.append(ready[0])
                choices.append(ready[1])
                parents.append(i)
        place(settled, parents)
        running = settled
        if not running or (not best_k and done([e.score for e in finished], [b.score for b in running], n)):
            break
        if best_k and expanded >= best_k_budget and finished:  # type: ignore[operator]
            break

        logits32, forced_lps = batch.scored_logits([b.value.forced for b in running])
        for b, lps in zip(running, forced_lps, strict=True):
            b.ex.score += float(lps.sum())
            b.value.forced = []
        log_z = log_normalisers(logits32)
        if best_k:
            ages = [round_no - born.setdefault(id(b), round_no) for b in running]
            expand = best_first([b.score for b in running], ages, n)
            expanded += len(expand)
            round_no += 1
        else:
            expand = list(range(len(running)))
        cands: list[Candidate] = []
        for i in expand:
            beam = running[i]
            k = 5 if best_k else 2 * n
            for tok, lp in options(beam.value, choices[i], logits32[i], log_z[i], k, backend, gamma=best_k):
                cands.append(candidate(beam.score, i, tok, lp, rng, temperature))
        cands.sort(key=lambda c: -c.key)

        # Children are forks (an execution copies its lists; its program is replayed only when its value
        # ends), so a parent stays intact for its other children.
        children: list[Beam] = []
        child_parents: list[int] = []
        if best_k:  # the frontier keeps what was not expanded; children join it, best 4n kept
            keep = [i for i in range(len(running)) if i not in set(expand)]
            children = [running[i] for i in keep]
            child_parents = list(keep)
        quota = 4 * n if best_k else n
        for rank, c in enumerate(cands if best_k else cands[: 2 * n]):
            if len(children) >= quota:
                break
            parent = running[c.parent]
            ex = parent.ex.fork(ListSequence(list(parent.ex.seq.ids)))
            ex.score = c.score
            if c.token == END:
                try:
                    nxt = close(Beam(ex, parent.pending, parent.value), backend, "eos")
                except ConstraintError:
                    continue  # a Python predicate rejected the value: pruned
                if nxt is None:
                    if rank < n or best_k:
                        finished.append(ex)
                    continue
                children.append(nxt)
            else:
                ex.seq.append([c.token])
                children.append(Beam(ex, parent.pending, parent.value.child(c.token)))
            child_parents.append(c.parent)
        if best_k and len(children) > quota:
            order = sorted(range(len(children)), key=lambda j: -children[j].score)[:quota]
            children = [children[j] for j in order]
            child_parents = [child_parents[j] for j in order]
        place(children, child_parents)
        running = children
        if backend.overlap:  # the device computes the next logits while settle() computes the masks
            batch.prefetch()

    if not finished:
        raise ConstraintError("beam search: no beam could complete the query under its constraints")
    finished.sort(key=lambda e: -e.score)
    return finished[:n]

"""Beam search over a whole query: ``beam(n)``, ``beam_sample(n, temperature)``.

A beam is an execution of the query (its own sequence row, bound values and program state) inside one of
its holes, with its own matcher. Every step, all running beams go through the model as one batch; each
proposes its best allowed tokens and, when its value may end there, "end the value"; the best candidates
overall become the next beams (a child copies its parent's row in the KV cache, never recomputing it).
A beam whose value ends runs the program on to its next hole, or finishes the query.

Selection follows transformers' beam search with ``length_penalty=0`` (scores are total
log-probabilities): up to 2n candidates are ranked; a candidate that finishes the query is kept only if
it ranks among the first n, and does not take a running slot; the search stops when n queries have
finished and no running beam can still beat the n-th of them (scores only decrease).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..backends.base import Backend, Batch, Sequence
from ..constraints.matcher import Matcher, TokenSet, fill_masks
from ..errors import ConstraintError
from .hole import FREE_TEXT, HoleOutput, end_logit, forced_room, forced_run

if TYPE_CHECKING:
    from ..runtime.execute import Execution, PendingHole


class ListSequence(Sequence):
    """A sequence that only records ids: a program advances on it before it gets a batch row."""

    def __init__(self, ids: list[int]):
        super().__init__()
        self.ids = ids

    def logits(self) -> np.ndarray:  # pragma: no cover - never asked: rows are attached first
        raise RuntimeError("a detached sequence has no logits")

    def truncate(self, n: int) -> None:
        del self.ids[n:]

    def fork(self) -> ListSequence:
        return ListSequence(list(self.ids))


@dataclass
class Beam:
    ex: Execution
    pending: PendingHole
    matcher: Matcher
    tokens: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)
    """Positions in the sequence of tokens appended without a choice, whose log-probabilities the next
    forward pass gives (they are added to the score before the beam is ranked again)."""

    @property
    def score(self) -> float:
        return self.ex.score


@dataclass
class Candidate:
    key: float  # what candidates are ranked by (the score, or a Gumbel-perturbed one when sampling)
    score: float
    parent: int
    token: int  # -1: end the value here


END = -1


def _enter(ex: Execution, backend: Backend) -> Beam | None:
    """Run ``ex`` to its next hole: a beam in it, or None when the query finished."""
    pending = ex.advance()
    if pending is None:
        return None
    return Beam(ex, pending, Matcher(backend.ll_tokenizer, pending.hc.grammars() or [FREE_TEXT]))


def _close(beam: Beam, backend: Backend, ended_by: str) -> Beam | None:
    """End the beam's current value and run on; raises ConstraintError if the value fails a check."""
    beam.ex.finish(beam.pending, HoleOutput(beam.tokens, backend.decode(beam.tokens), ended_by))
    return _enter(beam.ex, backend)


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
    all kept in the batch) is ranked by score minus an age penalty (``sqrt(rounds waited)``, LMQL's
    kappa=1, beta=0.5); each round expands only the n best of it, by their 5 most likely continuations
    with probability >= 0.05, until ``budget`` hypotheses have been expanded (and one query finished)."""
    backend = root.backend
    finished: list[Execution] = []
    first = _enter(root, backend)
    running = [first] if first is not None else []
    best_k = best_k_budget is not None
    born: dict[int, int] = {}  # id(beam) -> the round it joined the frontier (best_k's age)
    round_no = expanded = 0

    def attach(beams: list[Beam], parents: list[int]) -> None:
        """Make beam j row j of the batch: a copy of its parent's row, brought up to the beam's ids."""
        wants = [list(b.ex.seq.ids) for b in beams]
        batch.select(parents)
        for j, b in enumerate(beams):
            want = wants[j]
            have = batch.rows[j]
            common = 0
            while common < min(len(want), len(have)) and want[common] == have[common]:
                common += 1
            batch.truncate(j, common)
            batch.append(j, list(want[common:]))
            b.ex.seq = batch.row(j)

    while running:
        # Forced moves: a value that must end (budget spent, only EOS allowed, max_len) or can't go on;
        # a token that is the only one allowed.
        settled: list[Beam] = []
        allowed_of: list[TokenSet] = []
        complete_of: list[bool] = []
        parents: list[int] = []
        if backend.overlap:  # while the device runs the forward pass: every beam's mask at once
            fill_masks([b.matcher for b in running])
        for i, beam in enumerate(running):
            beam.ex.seq = ListSequence(list(beam.ex.seq.ids))  # rows may move: detach, re-attach below
            ready, allowed, complete = settle(beam, backend, finished)
            if ready is not None:
                settled.append(ready)
                allowed_of.append(allowed)  # type: ignore[arg-type]
                complete_of.append(complete)
                parents.append(i)
        attach(settled, parents)
        running = settled
        if not running or (not best_k and _done(finished, running, n)):
            break
        if best_k and expanded >= best_k_budget and finished:  # type: ignore[operator]
            break

        logits32, forced_lps = batch.scored_logits([b.forced for b in running])
        for b, lps in zip(running, forced_lps, strict=True):
            b.ex.score += float(lps.sum())
            b.forced = []
        # float32 as the model's own log-softmax: only the few chosen tokens' values are kept, in float64
        top = logits32.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(logits32 - top).sum(axis=1, dtype=np.float64))  # float64
        cands: list[Candidate] = []
        if best_k:
            age = np.array([round_no - born.setdefault(id(b), round_no) for b in running], dtype=np.float64)
            ranked = np.argsort(-(np.array([b.score for b in running]) - np.sqrt(age)))
            expand = [int(i) for i in ranked[:n]]
            expanded += len(expand)
            round_no += 1
        else:
            expand = list(range(len(running)))
        per_beam = 5 if best_k else 2 * n
        for i in expand:
            beam = running[i]
            allowed = allowed_of[i]
            row = logits32[i]
            may_end = len(beam.tokens) >= beam.pending.hc.min_tokens and complete_of[i]
            hc = beam.pending.hc
            last = hc.max_tokens is not None and len(beam.tokens) + 1 >= hc.max_tokens
            pick = _best(allowed, row, per_beam, beam.matcher if last else None)
            lp = row[pick].astype(np.float64) - log_z[i]
            if best_k and pick.size:  # LMQL's gamma: drop unlikely continuations, but never all of them
                keep = (lp >= np.log(0.05)) | (lp == lp.max())
                pick, lp = pick[keep], lp[keep]
            options = [(int(t), float(v)) for t, v in zip(pick, lp, strict=True)]
            if may_end:
                options.append((END, end_logit(backend, logits32[i], allowed) - log_z[i]))
            for tok, tok_lp in options:
                score = beam.score + tok_lp
                key = score
                if rng is not None:  # Gumbel-top-k: sampling without replacement by temperature-scaled score
                    key = beam.score + tok_lp / temperature - np.log(-np.log(rng.uniform(1e-12, 1.0)))
                cands.append(Candidate(key, score, i, tok))
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
                    nxt = _close(
                        Beam(ex, parent.pending, parent.matcher, list(parent.tokens)), backend, "eos"
                    )
                except ConstraintError:
                    continue  # a Python predicate rejected the value: pruned
                if nxt is None:
                    if rank < n or best_k:
                        finished.append(ex)
                    continue
                children.append(nxt)
            else:
                matcher = parent.matcher.fork()
                matcher.consume(c.token)
                ex.seq.append([c.token])
                children.append(Beam(ex, parent.pending, matcher, [*parent.tokens, c.token]))
            child_parents.append(c.parent)
        if best_k and len(children) > quota:
            order = sorted(range(len(children)), key=lambda j: -children[j].score)[:quota]
            children = [children[j] for j in order]
            child_parents = [child_parents[j] for j in order]
        attach(children, child_parents)
        running = children
        if backend.overlap:  # the device computes the next logits while settle() computes the masks
            batch.prefetch()

    if not finished:
        raise ConstraintError("beam search: no beam could complete the query under its constraints")
    finished.sort(key=lambda e: -e.score)
    return finished[:n]


def settle(
    beam: Beam, backend: Backend, finished: list[Execution]
) -> tuple[Beam | None, TokenSet | None, bool]:
    """Make the moves of a beam that need no choice: append forced tokens (the only one allowed while
    the value can't end, nor end right after it; scored with the next forward pass); end a value that
    must end (budget spent, only EOS allowed, max_len reached) and run on to the next hole; prune a dead
    end (nothing allowed, or a value that must end but is incomplete). Returns the beam once it needs a choice (None if it
    finished, into ``finished``, or was pruned), the tokens it may go on with (EOS taken out: valid
    until its matcher's next mask) and whether the value may end here."""
    current: Beam | None = beam
    while current is not None:
        hc = current.pending.hc
        allowed = current.matcher.next_tokens()
        complete = allowed.discard(backend.eos_ids)
        at_budget = hc.max_tokens is not None and len(current.tokens) >= hc.max_tokens
        too_long = len(current.ex.seq.ids) >= current.ex.max_len
        only_eos = complete and not allowed.any()
        if not (complete or allowed.any()) or (
            (at_budget or too_long) and not current.matcher.is_accepting()
        ):
            return None, None, False  # a dead end: pruned, never returned
        if not (only_eos or at_budget or too_long):
            room = forced_room(hc, len(current.tokens), current.ex.max_len - len(current.ex.seq.ids))
            # A token after which the value could end is chosen, not forced: the value then always
            # goes on to a chosen token, whose forward pass scores this one before the beam can finish.
            run = [] if complete else forced_run(current.matcher, allowed, room, go_on=True)
            if not run:
                return current, allowed, complete
            start = len(current.ex.seq.ids)
            current.forced.extend(range(start, start + len(run)))
            current.ex.seq.append(run)
            current.tokens.extend(run)
            continue
        try:
            nxt = _close(current, backend, "grammar" if only_eos else "budget")
        except ConstraintError:
            return None, None, False
        if nxt is None and current.ex.finished:
            finished.append(current.ex)
        current = nxt
    return None, None, False


def _best(allowed: TokenSet, row: np.ndarray, k: int, must_complete: Matcher | None) -> np.ndarray:
    """The ``k`` allowed tokens with the highest logits in ``row``; on a value's last budgeted token
    (``must_complete``), only tokens after which the value is complete: a token that leaves it
    unfinished is a dead end."""
    if must_complete is None:
        # Usually the model's favourites are allowed: the allowed ones among its 2k best are then the
        # best allowed (any other has a lower logit), found without listing the allowed set.
        wide = min(2 * k, row.size - 1)
        top = np.argpartition(-row, wide)[:wide]
        found = np.asarray([t for t in top.tolist() if t in allowed], dtype=np.int64)
        if found.size >= k:
            return found[np.argsort(-row[found], kind="stable")[:k]]
        choices = allowed.ids
        k = min(k, choices.size)
        return choices[np.argpartition(-row[choices], k - 1)[:k]] if k else choices
    choices = allowed.ids
    out = []
    for t in choices[np.argsort(-row[choices])]:
        if must_complete.completes(int(t)):
            out.append(t)
            if len(out) == k:
                break
    return np.asarray(out, dtype=np.int64)


def _done(finished: list[Execution], running: list[Beam], n: int) -> bool:
    if len(finished) < n:
        return False
    nth = sorted((e.score for e in finished), reverse=True)[n - 1]
    return max(b.score for b in running) <= nth

"""The steps of beam search over a batch of sequences: forced moves, candidates, selection.

A beam's value is decoded in its own row of a batch with its own matcher (a ``Value``). Every step,
each running beam makes its forced moves (``settle``), then proposes its best allowed tokens and, when
its value may end there, "end the value" (``options``), scored as total log-probabilities; the best
candidates overall become the next beams, each row a copy of its parent's brought up to its own ids
(``attach``). Which program a beam runs, what happens when its value ends, and which rows of the batch
the beams are, is the runtime's (``runtime/beams.py``).

Selection follows transformers' beam search with ``length_penalty=0``: up to 2n candidates are ranked;
the search stops when n queries have finished and no running beam can still beat the n-th of them
(``done``: scores only decrease).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backends.base import Backend, Sequence
from ..backends.ragged import Ragged, RaggedRow
from ..constraints.matcher import Matcher, TokenSet
from ..constraints.where import HoleConstraint
from ..errors import Position
from .budget import forced_room, is_last, must_end
from .choose import END
from .hole import FREE_TEXT, HoleOutput, end_logit, forced_run


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
class Value:
    """One beam's value in the making: its constraint, matcher and tokens so far."""

    hc: HoleConstraint
    position: Position | None
    matcher: Matcher
    tokens: list[int] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)
    """Positions in the sequence of tokens appended without a choice, whose log-probabilities the next
    forward pass gives (they are added to the score before the beam is ranked again)."""

    @classmethod
    def open(cls, backend: Backend, hc: HoleConstraint, position: Position | None) -> Value:
        return cls(hc, position, Matcher(backend.ll_tokenizer, hc.grammars() or [FREE_TEXT]))

    def child(self, token: int) -> Value:
        """This value gone on with ``token`` (a copy: the parent stays intact for its other children)."""
        matcher = self.matcher.fork()
        matcher.consume(token)
        return Value(self.hc, self.position, matcher, [*self.tokens, token])

    def output(self, backend: Backend, ended_by: str) -> HoleOutput:
        return HoleOutput(list(self.tokens), backend.decode(self.tokens), ended_by)


@dataclass
class Choice:
    """A value that needs a choice: the tokens it may go on with (EOS out: valid until its matcher's
    next mask) and whether it may end here."""

    allowed: TokenSet
    complete: bool

    def may_end(self, value: Value) -> bool:
        return self.complete and len(value.tokens) >= value.hc.min_tokens


def settle(value: Value, seq: Sequence, backend: Backend, max_len: int) -> Choice | str:
    """Make the value's moves that need no choice: append forced tokens (the only one allowed while the
    value can't end, nor end right after it; scored with the next forward pass). Returns the choice it
    then needs, or why it ended without one (``budget.must_end``, whose ConstraintError is a dead end)."""
    while True:
        allowed = value.matcher.next_tokens()
        complete = allowed.discard(backend.eos_ids)
        made, length = len(value.tokens), len(seq.ids)
        reason = must_end(
            value.hc,
            value.matcher,
            allowed,
            complete,
            made=made,
            length=length,
            max_len=max_len,
            position=value.position,
            so_far=lambda: backend.decode(value.tokens),
        )
        if reason is not None:
            return reason
        # A token after which the value could end is chosen, not forced: the value then always goes on
        # to a chosen token, whose forward pass scores this one before the beam can finish.
        room = forced_room(value.hc, made, max_len - length)
        run = [] if complete else forced_run(value.matcher, allowed, room, go_on=True)
        if not run:
            return Choice(allowed, complete)
        value.forced.extend(range(length, length + len(run)))
        seq.append(run)
        value.tokens.extend(run)


def log_normalisers(logits32: np.ndarray) -> np.ndarray:
    """Each row's log-partition, in float64 (float32 as the model's own log-softmax: only the few chosen
    tokens' values are kept)."""
    top = logits32.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(logits32 - top).sum(axis=1, dtype=np.float64))


def options(
    value: Value, choice: Choice, row: np.ndarray, log_z: float, k: int, backend: Backend, *, gamma: bool
) -> list[tuple[int, float]]:
    """The value's continuations worth ranking, as (token or END, log-probability): its ``k`` best
    allowed tokens, and ending it when it may end here. With ``gamma`` (LMQL's best_k), only tokens
    with probability >= 0.05, but never none of them."""
    last = is_last(value.hc, len(value.tokens))
    pick = best_allowed(choice.allowed, row, k, value.matcher if last else None)
    lp = row[pick].astype(np.float64) - log_z
    if gamma and pick.size:
        keep = (lp >= np.log(0.05)) | (lp == lp.max())
        pick, lp = pick[keep], lp[keep]
    out = [(int(t), float(v)) for t, v in zip(pick, lp, strict=True)]
    if choice.may_end(value):
        out.append((END, end_logit(backend, row, choice.allowed) - log_z))
    return out


@dataclass
class Candidate:
    key: float  # what candidates are ranked by (the score, or a Gumbel-perturbed one when sampling)
    score: float
    parent: int
    token: int  # END: end the value here


def candidate(
    parent_score: float,
    parent: int,
    token: int,
    lp: float,
    rng: np.random.Generator | None,
    temperature: float,
) -> Candidate:
    """Ranked by score; with ``rng``, Gumbel-top-k: sampling without replacement by the
    temperature-scaled score (beam_sample)."""
    score = parent_score + lp
    key = score
    if rng is not None:
        key = parent_score + lp / temperature - np.log(-np.log(rng.uniform(1e-12, 1.0)))
    return Candidate(key, score, parent, token)


def best_first(scores: list[float], ages: list[int], n: int) -> list[int]:
    """best_k's expansion: the ``n`` hypotheses with the best score minus an age penalty
    (``sqrt(rounds waited)``, LMQL's kappa=1, beta=0.5)."""
    ranked = np.argsort(-(np.array(scores) - np.sqrt(np.array(ages, dtype=np.float64))))
    return [int(i) for i in ranked[:n]]


def attach(seq: Sequence, want: list[int]) -> None:
    """Bring ``seq`` (a copy of a beam's parent's row) up to the beam's ids ``want``: truncated to what
    they share, then the rest appended, so only what differs is computed."""
    have = seq.ids
    common, most = 0, min(len(want), len(have))
    while common < most and want[common] == have[common]:
        common += 1
    if common < len(have):
        seq.truncate(common)
    seq.append(list(want[common:]))


def place(ragged: Ragged, rows: list[RaggedRow], parents: list[int]) -> list[RaggedRow]:
    """The rows of the next beams, beam j a child of ``rows[parents[j]]``: a parent's last child takes
    the parent's row, its other children fork it (a copy of its KV inside the batch, taken before any
    child changes it); a parent without a child frees its row first, so the search never holds more
    rows than beams."""
    last = {p: j for j, p in enumerate(parents)}
    for i, row in enumerate(rows):
        if i not in last:
            ragged.remove(row)
    return [rows[p] if last[p] == j else ragged.fork(rows[p]) for j, p in enumerate(parents)]


def best_allowed(allowed: TokenSet, row: np.ndarray, k: int, must_complete: Matcher | None) -> np.ndarray:
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


def done(finished: list[float], running: list[float], n: int) -> bool:
    """Whether no running beam (``running``: their scores) can still beat the n-th finished one."""
    if len(finished) < n:
        return False
    return max(running) <= sorted(finished, reverse=True)[n - 1]

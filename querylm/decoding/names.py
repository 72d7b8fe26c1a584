"""Choosing among a few names by scoring each in full: the tool of an agent's call.

A grammar that allows several names (``"get_weather" | "get_time"``) lets a token chooser commit to one
on the first token where they differ, judging a whole name by that token. Scoring each name's tokens
(a forward pass per token, once per name) picks the name the model finds most likely as a whole."""

from __future__ import annotations

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints.matcher import TokenSet
from .choose import Chooser, End


class NameScoringChooser:
    """Picks a call's tool by scoring every allowed name, then decodes the rest with ``inner``.

    Greedy decoding commits to a tool on the first token where names differ, seeing only that token;
    where the text so far is inside a call's name (after ``after``, a call's ``{"name": "``, and no
    ``close`` yet) and more than one allowed name goes on from what is written, this scores each of
    those names' rest in full (the sum of its tokens' log probabilities, with ``close``, the closing
    quote, so that a name must end there) and spells out the best. The first choice may come after
    part of the name: the decoder does not ask about forced tokens, and names with a common start
    (``get_weather``, ``get_time``) have it forced. Costs one forward pass per name token, once per
    call."""

    def __init__(
        self,
        inner: Chooser,
        backend: Backend,
        seq: Sequence,
        names: tuple[str, ...],
        *,
        after: str = '{"name": "',
        close: str = '"',
    ):
        self.inner = inner
        self.backend = backend
        self.seq = seq
        self.names = names
        self.after, self.close = after, close
        self.start = len(seq.ids)
        self.plan: list[int] = []
        self.plan_at = 0  # where in the sequence the plan starts
        self.scores: dict[str, float] = {}
        self.scored: set[int] = set()  # the calls (where their name starts in the text) already scored

    def choose(self, logits: np.ndarray, allowed: TokenSet | np.ndarray, end: End = None) -> int:
        # The decoder does not ask about forced tokens, so the plan is followed by position: the tokens
        # since it began must be its prefix.
        done = self.seq.ids[self.plan_at :]
        if self.plan and len(done) < len(self.plan) and self.plan[: len(done)] == done:
            token = self.plan[len(done)]
            if int(token) in allowed:
                return int(token)
        self.plan = []
        inside = self._in_name()
        if inside is not None:
            at, written = inside
            candidates = tuple(n for n in self.names if n.startswith(written))
            if len(candidates) > 1 and at not in self.scored:
                self.scored.add(at)
                best = self._best_name(candidates, written)
                self.plan = self.backend.encode(best[len(written) :] + self.close)
                self.plan_at = len(self.seq.ids)
                if int(self.plan[0]) in allowed:
                    return int(self.plan[0])
                self.plan = []
        return self.inner.choose(logits, allowed, end)

    def _in_name(self) -> tuple[int, str] | None:
        """Where the name being written starts in the turn's text, and its part written so far; None
        outside a name."""
        text = self.backend.decode(self.seq.ids[self.start :])
        at = text.rfind(self.after)
        if at < 0:
            return None
        written = text[at + len(self.after) :]
        return None if self.close in written else (at, written)

    def _best_name(self, candidates: tuple[str, ...], written: str) -> str:
        """The candidate whose rest after ``written`` (and the closing quote) the model scores highest."""
        scores = {}
        for name in candidates:
            total = 0.0
            branch = self.seq.fork()
            for token in self.backend.encode(name[len(written) :] + self.close):
                row = branch.logits().astype(np.float64)
                top = row.max()
                total += float(row[token] - top - np.log(np.exp(row - top).sum()))
                branch.append([token])
            scores[name] = total
        self.scores = scores
        return max(scores, key=scores.__getitem__)

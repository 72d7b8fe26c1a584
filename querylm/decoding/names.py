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
    where the text so far ends with ``after`` (a call's ``{"name": "``) this scores each allowed name
    in full (the sum of its tokens' log probabilities, with ``close``, the closing quote, so that a
    name must end there) and spells out the best. Costs one forward pass per name token, once per
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

    def choose(self, logits: np.ndarray, allowed: TokenSet | np.ndarray, end: End = None) -> int:
        # The decoder does not ask about forced tokens, so the plan is followed by position: the tokens
        # since it began must be its prefix.
        done = self.seq.ids[self.plan_at :]
        if self.plan and len(done) < len(self.plan) and self.plan[: len(done)] == done:
            token = self.plan[len(done)]
            if int(token) in allowed:
                return int(token)
        self.plan = []
        if len(self.names) > 1:
            text = self.backend.decode(self.seq.ids[self.start :])
            if text.endswith(self.after):
                best = self._best_name()
                self.plan, self.plan_at = self.backend.encode(best + self.close), len(self.seq.ids)
                if int(self.plan[0]) in allowed:
                    return int(self.plan[0])
                self.plan = []
        return self.inner.choose(logits, allowed, end)

    def _best_name(self) -> str:
        scores = {}
        for name in self.names:
            total = 0.0
            branch = self.seq.fork()
            for token in self.backend.encode(name + self.close):
                row = branch.logits().astype(np.float64)
                top = row.max()
                total += float(row[token] - top - np.log(np.exp(row - top).sum()))
                branch.append([token])
            scores[name] = total
        self.scores = scores
        return max(scores, key=scores.__getitem__)

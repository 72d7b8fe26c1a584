"""Choosing one token from the allowed ones: argmax, or sampling with temperature / top-k / top-p.

Ending the value is one more option, whose logit is the mass of the tokens that end it (EOS, and every
token that can't continue the value; see ``hole.end_logit``).

This runs every token right after the forward pass, with cold caches, where every numpy call costs
several microseconds: argmax first asks whether the model's favourite is allowed (one bit of the
``TokenSet``; on free text it nearly always is), and decides about ending from the largest ending logit
when that is enough. Otherwise, and for sampling, work happens on the allowed subset, gathered once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..constraints.matcher import TokenSet

END = -1
"""What ``choose`` returns when ending the value wins over every allowed token."""


End = float | np.ndarray | None
"""A chooser's ``end``: None when the value may not end here; else the logit of ending it, or the tokens
whose mass that logit is (ids or a bool per token), so that argmax can often skip summing it."""


class Chooser(Protocol):
    """Picks the next token of a value: what every decoder (the token loop, samples, traces) asks."""

    def choose(self, logits: np.ndarray, allowed: TokenSet | np.ndarray, end: End = None) -> int:
        """One of ``allowed`` (or ``END`` when ending the value wins) by ``logits``, the model's row
        for this step; ``end`` as in ``End``."""
        ...


@dataclass
class Argmax:
    def choose(self, logits: np.ndarray, allowed: TokenSet | np.ndarray, end: End = None) -> int:
        allowed = _as_set(allowed, logits.size)
        best = fav = int(logits.argmax())  # the model's favourite (the first of equals, as among the allowed)
        if fav not in allowed:  # masked: look among the allowed only
            ids = allowed.ids
            if ids.size == 0:
                return END
            best = int(ids[logits[ids].argmax()])
        if end is not None and _ending_wins(logits, end, float(logits[best]), fav):
            return END
        return best


@dataclass
class Sample:
    rng: np.random.Generator
    temperature: float = 1.0  # 1.0 = the model's distribution, < 1.0 = less random
    top_k: int | None = None  # keep only the k most likely allowed tokens
    top_p: float | None = None  # keep the smallest set of allowed tokens with this much probability

    def choose(self, logits: np.ndarray, allowed: TokenSet | np.ndarray, end: End = None) -> int:
        cand = allowed.ids if isinstance(allowed, TokenSet) else np.asarray(allowed)
        sub = logits[cand].astype(np.float64)
        if end is not None:  # ending is one more candidate, with the mass of all that can't go on
            cand = np.append(cand, END)
            sub = np.append(sub, logsumexp(logits, end) if isinstance(end, np.ndarray) else end)
        if cand.size == 0:
            return END
        if self.temperature <= 0:
            return int(cand[int(np.argmax(sub))])
        sub = sub / self.temperature
        if self.top_k is not None and self.top_k < len(sub):
            keep = np.argpartition(-sub, self.top_k - 1)[: self.top_k]
            cand, sub = cand[keep], sub[keep]
        probs = np.exp(sub - sub.max())
        probs /= probs.sum()
        if self.top_p is not None and self.top_p < 1.0:
            order = np.argsort(-probs)
            cut = int(np.searchsorted(np.cumsum(probs[order]), self.top_p)) + 1
            keep = order[:cut]
            cand, probs = cand[keep], probs[keep] / probs[keep].sum()
        return int(cand[int(self.rng.choice(len(probs), p=probs))])


def logsumexp(logits: np.ndarray, index: np.ndarray) -> float:
    """The log of the total mass of ``logits[index]`` (ids or a bool per token)."""
    return _logsumexp(logits[index])


def _logsumexp(vals: np.ndarray) -> float:
    """``vals``: a copy, overwritten (at 49k values, fresh arrays cost more than the arithmetic)."""
    top = vals.max()
    np.exp(np.subtract(vals, top, out=vals), out=vals)
    return float(top) + float(np.log(vals.sum()))


def _ending_wins(logits: np.ndarray, end: float | np.ndarray, best: float, fav: int) -> bool:
    """Whether the logit of ending beats ``best``. Given the ending tokens, often from their largest logit
    alone: their mass is at least that and at most ``end.size`` times it. When the model's favourite
    ``fav`` is one of them, that largest logit is known without reading the others."""
    if not isinstance(end, np.ndarray):
        return end > best
    vals = None
    if end.dtype == bool and end[fav]:
        top = float(logits[fav])
    else:
        vals = logits[end]
        top = float(vals[vals.argmax()])  # = vals.max(), without waking numpy's reductions for it
    if math.isfinite(top):
        if top > best:
            return True
        if top + math.log(end.size) + 1e-3 < best:  # the margin covers float32 rounding
            return False
    return _logsumexp(logits[end] if vals is None else vals) > best


def _as_set(allowed: TokenSet | np.ndarray, size: int) -> TokenSet:
    """Choosers also take a sorted array of ids (tests, callers outside the decoding loop)."""
    return allowed if isinstance(allowed, TokenSet) else TokenSet.of(allowed, size)

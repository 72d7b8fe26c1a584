"""Choosing one token from the allowed ones: argmax, or sampling with temperature / top-k / top-p.

Work happens on the allowed subset only (gathered once), so the cost of a step follows the number of
allowed tokens, not the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

END = -1
"""What ``choose`` returns when ending the value wins over every allowed token."""


@dataclass
class Argmax:
    def choose(self, logits: np.ndarray, allowed: np.ndarray, end: float | None = None) -> int:
        """``end``: the logit of ending the value here (None when it may not end)."""
        if allowed.size == 0:
            return END
        best = int(np.argmax(logits[allowed]))
        if end is not None and end > logits[allowed[best]]:
            return END
        return int(allowed[best])


@dataclass
class Sample:
    rng: np.random.Generator
    temperature: float = 1.0  # 1.0 = the model's distribution, < 1.0 = less random
    top_k: int | None = None  # keep only the k most likely allowed tokens
    top_p: float | None = None  # keep the smallest set of allowed tokens with this much probability

    def choose(self, logits: np.ndarray, allowed: np.ndarray, end: float | None = None) -> int:
        cand = allowed
        sub = logits[allowed].astype(np.float64)
        if end is not None:  # ending is one more candidate, with the mass of all that can't go on
            cand = np.append(allowed, END)
            sub = np.append(sub, end)
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


Chooser = Argmax | Sample

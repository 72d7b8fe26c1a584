"""``random``: seeded random logits over a real tokenizer, for tests of constraint logic.

The logits of a step depend only on the seed and the last tokens, so a run is reproducible, and the
vocabulary (and so every tokenization problem a mask engine meets) is a real model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend, Sequence
from .ragged import Ragged, RaggedRow


def _logits(backend: RandomBackend, ids: list[int]) -> np.ndarray:
    """Depends only on the seed, the length and the last three tokens: reproducible, and cheap."""
    rng = np.random.default_rng([backend.seed, len(ids), *ids[-3:]])
    return (rng.standard_normal(backend.vocab_size, dtype=np.float32) * backend.scale).astype(np.float32)


class RandomSequence(Sequence):
    def __init__(self, backend: RandomBackend):
        super().__init__()
        self.backend = backend

    def logits(self) -> np.ndarray:
        tail = self.ids[-3:]
        rng = np.random.default_rng([self.backend.seed, len(self.ids), *tail])
        return (rng.standard_normal(self.backend.vocab_size, dtype=np.float32) * self.backend.scale).astype(
            np.float32
        )

    def truncate(self, n: int) -> None:
        del self.ids[n:]

    def fork(self) -> RandomSequence:
        other = RandomSequence(self.backend)
        other.ids = list(self.ids)
        return other


class RandomBackend(Backend):
    def __init__(self, tokenizer: Any, *, seed: int = 0, scale: float = 3.0, name: str = "random"):
        self.name = name
        self.tokenizer = tokenizer
        self.seed = seed
        self.scale = scale
        self.generation_eos = None

    def new_sequence(self) -> RandomSequence:
        return RandomSequence(self)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Clones over one tokenizer with one seed give the same logits: one engine batches them all."""
        return ("random", id(self.tokenizer), self.seed, self.scale)

    def ragged(self, **options: Any) -> RandomRagged:
        """The batch engine's rows (``options``, the KV bounds of a real model, mean nothing here)."""
        return RandomRagged(self)

    def score(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        out = []
        for cont in continuations:
            lps = []
            for j, tok in enumerate(cont):
                logits = _logits(self, prefix + cont[:j]).astype(np.float64)
                top = logits.max()
                lps.append(logits[tok] - top - np.log(np.exp(logits - top).sum()))
            out.append(np.asarray(lps))
        return out


class RandomRagged(Ragged):
    def __init__(self, backend: RandomBackend):
        self.backend = backend

    def scored_logits(
        self, rows: list[RaggedRow], positions: list[list[int]]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        for r in rows:
            r.fed = len(r.ids)
        score = self.backend.score
        lps = [
            np.asarray([score(r.ids[:q], [[r.ids[q]]])[0][0] for q in at], dtype=np.float64)
            for r, at in zip(rows, positions, strict=True)
        ]
        return np.stack([_logits(self.backend, r.ids) for r in rows]), lps

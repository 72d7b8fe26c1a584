"""``random``: seeded random logits over a real tokenizer, for tests of constraint logic.

The logits of a step depend only on the seed and the last tokens, so a run is reproducible, and the
vocabulary (and so every tokenization problem a mask engine meets) is a real model's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Backend, Sequence


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

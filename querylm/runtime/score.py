"""``querylm.score``: how likely a model finds each continuation of a prompt."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import Backend
from ..backends.models import resolve


@dataclass
class Score:
    continuation: str
    tokens: list[str]
    logprobs: list[float]
    """log P of each token given the prompt and the tokens before it."""

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


def score(prompt: str, continuations: list[str], *, model: str | Backend | None = None) -> list[Score]:
    """Score each continuation of ``prompt`` (raw text, no chat template) in two forward passes whatever
    their number: the prompt once, then all continuations as one batch over copies of its cache."""
    backend = model if isinstance(model, Backend) else resolve(model)
    prefix = backend.encode(prompt)
    if not prefix:
        bos = backend.tokenizer.bos_token_id
        prefix = [bos if bos is not None else backend.eos_ids[0]]
    ids = [backend.encode(c) for c in continuations]
    out = []
    for text, cont, lps in zip(continuations, ids, backend.score(prefix, ids), strict=True):
        out.append(Score(text, [backend.decode([t]) for t in cont], [float(x) for x in lps]))
    return out

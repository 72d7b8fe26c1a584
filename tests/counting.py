"""A model wrapper for tests that count forward passes and what each is fed."""

from __future__ import annotations

import torch


class CountingModel(torch.nn.Module):
    """Wraps a model and records each forward pass's input. Its signature has the ``cache`` argument
    of transformers 5.2x, and no ``logits_to_keep``: every position's logits come back."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.fed: list[int] = []
        self.inputs: list[list[int]] = []
        self.generation_config = model.generation_config

    def forward(self, input_ids, cache=None, **kw):  # noqa: ANN001, ANN003
        self.fed.append(int(input_ids.shape[1]))
        self.inputs.append(input_ids[0].tolist())
        return self.inner(input_ids=input_ids, cache=cache, **kw)

"""The local backend: a transformers causal LM on torch, GPU when present, CPU otherwise.

A sequence keeps the model's KV cache: appended tokens are fed in one forward pass when logits are next
asked for, so a prompt segment, a hole's tokens and the next segment never re-encode what came before.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Backend, Sequence

DTYPES = ("float32", "bfloat16", "float16")


class LocalSequence(Sequence):
    def __init__(self, backend: LocalBackend):
        super().__init__()
        self.backend = backend
        self.cache: Any = None
        self.cached = 0  # how many of self.ids the cache holds
        self.last: np.ndarray | None = None

    def logits(self) -> np.ndarray:
        torch = self.backend.torch
        if self.cached == len(self.ids) and self.last is not None:
            return self.last
        if self.cached == len(self.ids):  # truncated back to a point we have no logits for: redo one
            self.cached = len(self.ids) - 1
            self.cache.crop(self.cached)
        new = self.ids[self.cached :]
        model = self.backend.model
        with torch.inference_mode():
            inp = torch.tensor([new], device=self.backend.device)
            out = model(input_ids=inp, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.cached = len(self.ids)
        row = out.logits[0, -1, : self.backend.vocab_size]
        self.last = row.float().cpu().numpy()
        return self.last

    def truncate(self, n: int) -> None:
        del self.ids[n:]
        if self.cached > n:
            if self.cache is not None:
                self.cache.crop(n)
            self.cached = n
            self.last = None

    def fork(self) -> LocalSequence:
        other = LocalSequence(self.backend)
        other.ids = list(self.ids)
        other.cache = copy.deepcopy(self.cache)
        other.cached = self.cached
        other.last = self.last
        return other


class LocalBackend(Backend):
    def __init__(self, name: str, model: Any, tokenizer: Any):
        import torch

        self.torch = torch
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        gen = getattr(model, "generation_config", None)
        self.generation_eos = getattr(gen, "eos_token_id", None)

    def new_sequence(self) -> LocalSequence:
        return LocalSequence(self)


def load(path: str, *, device: str | None = None, dtype: str | None = None, **kwargs: Any) -> LocalBackend:
    """Load a transformers model folder or hub id; ``device`` defaults to CUDA when present."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI streams the prompt on stdout; keep stderr for errors
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif dtype in DTYPES:
        torch_dtype = getattr(torch, dtype)
    else:
        raise ModelError(f"unknown dtype '{dtype}' (use one of {', '.join(DTYPES)})")
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    return LocalBackend(path, model.to(device), tokenizer)  # type: ignore[arg-type]

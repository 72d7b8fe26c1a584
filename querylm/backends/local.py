"""The local backend: a transformers causal LM on torch, GPU when present, CPU otherwise.

A sequence keeps the model's KV cache: appended tokens are fed in one forward pass when logits are next
asked for, so a prompt segment, a hole's tokens and the next segment never re-encode what came before.
"""

from __future__ import annotations

import copy
import inspect
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Backend, Sequence
from .prefix_cache import PrefixCache
from .ragged import LocalRagged

DTYPES = ("float32", "bfloat16", "float16")


def _crop(cache: Any, n: int) -> None:
    """Keep the first ``n`` positions. transformers 5 refuses ``crop(n)`` with n > 0; a negative
    argument (drop that many from the end) means the same in 4.x and 5.x."""
    have = cache.get_seq_length()
    if n < have:
        cache.crop(n - have)


def _cache_of(out: Any) -> Any:
    """A forward pass's KV cache, under the name the installed transformers gives it."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class LocalSequence(Sequence):
    def __init__(self, backend: LocalBackend):
        super().__init__()
        self.backend = backend
        self.cache: Any = None
        self.cached = 0  # how many of self.ids the cache holds
        self.last: np.ndarray | None = None
        self._launched: Any = None  # the last position's logits on the device, not yet copied back

    def prefetch(self) -> None:
        """Launch the forward pass over the tokens appended since the last one. On CUDA the call returns
        while the GPU works, so the caller can compute the next mask meanwhile; ``logits()`` waits."""
        torch = self.backend.torch
        if self.cached == len(self.ids) and (self.last is not None or self._launched is not None):
            return
        if self.cached == len(self.ids):  # truncated back to a point we have no logits for: redo one
            self.cached = len(self.ids) - 1
            _crop(self.cache, self.cached)
        new = self.ids[self.cached :]
        with torch.inference_mode():
            inp = torch.tensor([new], device=self.backend.device)
            out = self.backend.forward(1, input_ids=inp, cache=self.cache)
        self.cache = _cache_of(out)
        self.cached = len(self.ids)
        self._launched = out.logits[0, -1, : self.backend.vocab_size]
        self.last = None

    def logits(self) -> np.ndarray:
        self.prefetch()
        if self._launched is not None:
            self.last = self._launched.float().cpu().numpy()  # waits for the device
            self._launched = None
        assert self.last is not None
        return self.last

    def truncate(self, n: int) -> None:
        del self.ids[n:]
        if self.cached > n:
            if self.cache is not None:
                _crop(self.cache, n)
            self.cached = n
            self.last = self._launched = None

    def score(
        self, backend: Backend, continuations: list[list[int]], messages: list[dict[str, str]] | None = None
    ) -> list[np.ndarray]:
        """From this sequence's own cache: the prompt's pending tokens are fed once (decoding goes on
        from them), and the continuations run over a copy of the cache."""
        if not self.ids:
            raise ValueError("score() needs a non-empty prefix")
        first = self.backend.torch.log_softmax(self.backend.torch.from_numpy(self.logits()), dim=-1)
        multi = max((len(c) for c in continuations), default=0) > 1
        cache = copy.deepcopy(self.cache) if multi else None
        return self.backend.score_after(first, cache, len(self.ids), continuations)

    def fork(self) -> LocalSequence:
        other = LocalSequence(self.backend)
        other.ids = list(self.ids)
        other.cache = copy.deepcopy(self.cache)
        other.cached = self.cached
        other.last = self.last
        other._launched = self._launched  # read-only on both sides
        return other


class LocalBackend(Backend):
    def __init__(self, name: str, model: Any, tokenizer: Any):
        import torch

        self.torch = torch
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.overlap = self.device.type == "cuda"
        """Launch each forward pass before computing the next masks (``Sequence.prefetch``), so that
        on a GPU the masks cost no time; on the CPU the forward pass runs at once, nothing to overlap."""
        gen = getattr(model, "generation_config", None)
        self.generation_eos = getattr(gen, "eos_token_id", None)

    def new_sequence(self) -> LocalSequence:
        return LocalSequence(self)

    def forward(self, keep: int, *, cache: Any, **inputs: Any) -> Any:
        """The model's forward pass over ``cache`` (None: none yet), with logits for the last ``keep``
        positions only where the model allows it: the vocabulary projection of every prompt position
        costs time and memory, and only the last one (or a beam's forced tokens) is read."""
        if "logits_to_keep" in self._parameters:
            inputs["logits_to_keep"] = keep
        return self.model(**inputs, **self._cache_arg(cache))

    def _cache_arg(self, cache: Any) -> dict[str, Any]:
        """transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name warns)."""
        return {"cache" if "cache" in self._parameters else "past_key_values": cache, "use_cache": True}

    @cached_property
    def _parameters(self) -> set[str]:
        return set(inspect.signature(self.model.forward).parameters)

    def ragged(self, *, kv_tokens: int = 1 << 20, prefix_cache: PrefixCache | None = None) -> LocalRagged:
        """The batch engine's rows: they join and leave while the others decode."""
        return LocalRagged(self, kv_tokens=kv_tokens, prefix_cache=prefix_cache)

    def score(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        """Two forward passes whatever the number of continuations: the prefix once, then every
        continuation together (right-padded) over copies of the prefix's cache."""
        if not prefix:
            raise ValueError("score() needs a non-empty prefix")
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1, : self.vocab_size].float(), dim=-1)
        return self.score_after(first, _cache_of(out), len(prefix), continuations)

    def score_after(
        self, first: Any, cache: Any, length: int, continuations: list[list[int]]
    ) -> list[np.ndarray]:
        """Each continuation's token log-probabilities after a prefix of ``length`` tokens, given the
        log-probabilities of the token after it (``first``) and its KV ``cache``, which this consumes
        (repeated for the continuations); one pass for all of them."""
        torch = self.torch
        conts = list(continuations)
        width = max((len(c) for c in conts), default=0)
        rest = None
        if width > 1:
            k = len(conts)
            cache.batch_repeat_interleave(k)
            inp = torch.zeros((k, width), dtype=torch.long)
            mask = torch.zeros((k, length + width), dtype=torch.long)
            mask[:, :length] = 1
            for r, c in enumerate(conts):
                inp[r, : len(c)] = torch.tensor(c)
                mask[r, length : length + len(c)] = 1
            pos = torch.arange(length, length + width).expand(k, width)
            with torch.inference_mode():
                rest = (
                    self.model(
                        input_ids=inp.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=pos.to(self.device),
                        **self._cache_arg(cache),
                    )
                    .logits[:, :, : self.vocab_size]
                    .float()
                )
                rest = torch.log_softmax(rest, dim=-1)
        result = []
        for r, c in enumerate(conts):
            lps = [float(first[c[0]])] if c else []
            for j in range(1, len(c)):
                assert rest is not None
                lps.append(float(rest[r, j - 1, c[j]]))
            result.append(np.asarray(lps, dtype=np.float64))
        return result


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

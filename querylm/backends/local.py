"""The local backend: a transformers causal LM on torch, GPU when present, CPU otherwise.

A sequence keeps the model's KV cache: appended tokens are fed in one forward pass when logits are next
asked for, so a prompt segment, a hole's tokens and the next segment never re-encode what came before.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..errors import ModelError
from .base import Backend, Batch, Sequence

DTYPES = ("float32", "bfloat16", "float16")


def _crop(cache: Any, n: int) -> None:
    """Keep the first ``n`` positions. transformers 5 refuses ``crop(n)`` with n > 0; a negative
    argument (drop that many from the end) means the same in 4.x and 5.x."""
    have = cache.get_seq_length()
    if n < have:
        cache.crop(n - have)


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
            _crop(self.cache, self.cached)
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
                _crop(self.cache, n)
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

    def new_batch(self, rows: int, prefix: list[int]) -> LocalBatch:
        return LocalBatch(self, rows, prefix)

    def score(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        """Two forward passes whatever the number of continuations: the prefix once, then every
        continuation together (right-padded) over copies of the prefix's cache."""
        torch = self.torch
        conts = [c for c in continuations]
        if not prefix:
            raise ValueError("score() needs a non-empty prefix")
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1, : self.vocab_size].float(), dim=-1)
            width = max((len(c) for c in conts), default=0)
            rest = None
            if width > 1:
                k = len(conts)
                cache = out.past_key_values
                cache.batch_repeat_interleave(k)
                inp = torch.zeros((k, width), dtype=torch.long)
                mask = torch.zeros((k, len(prefix) + width), dtype=torch.long)
                mask[:, : len(prefix)] = 1
                for r, c in enumerate(conts):
                    inp[r, : len(c)] = torch.tensor(c)
                    mask[r, len(prefix) : len(prefix) + len(c)] = 1
                pos = torch.arange(len(prefix), len(prefix) + width).expand(k, width)
                rest = (
                    self.model(
                        input_ids=inp.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=pos.to(self.device),
                        past_key_values=cache,
                        use_cache=True,
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


class LocalBatch(Batch):
    """Rows sharing one KV cache of shape [rows, ..., columns].

    Every step feeds each row's new tokens right-aligned in one [rows, new] input; rows with fewer new
    tokens are padded on the left and the pads are masked out. A column's cache entry is attended to
    only where ``mask`` is 1, so truncating a row is masking its last columns, and position ids count a
    row's real tokens, so RoPE positions stay right whatever the padding.
    """

    def __init__(self, backend: LocalBackend, rows: int, prefix: list[int]):
        super().__init__()
        torch = backend.torch
        self.backend = backend
        self.rows = [list(prefix)]
        self.cache: Any = None
        self.mask = torch.zeros((1, 0), dtype=torch.long, device=backend.device)
        self.slots: list[list[int]] = [[]]  # the cache column of each fed token, per row
        self.last: list[np.ndarray | None] = [None]
        if prefix:
            self.logits()  # the shared prefix, computed once
        self.select([0] * rows)

    def logits(self) -> np.ndarray:
        torch = self.backend.torch
        for r, ids in enumerate(self.rows):
            if len(self.slots[r]) == len(ids) and self.last[r] is None and ids:
                self._unfeed(r, len(ids) - 1)  # logits lost by a truncation: feed the last token again
        pending = [ids[len(self.slots[r]) :] for r, ids in enumerate(self.rows)]
        width = max(len(p) for p in pending)
        if width:
            b = len(self.rows)
            inp = torch.zeros((b, width), dtype=torch.long)
            new_mask = torch.zeros((b, width), dtype=torch.long)
            pos = torch.zeros((b, width), dtype=torch.long)
            for r, p in enumerate(pending):
                if p:
                    inp[r, width - len(p) :] = torch.tensor(p)
                    new_mask[r, width - len(p) :] = 1
                    start = len(self.slots[r])
                    pos[r, width - len(p) :] = torch.arange(start, start + len(p))
            dev = self.backend.device
            mask = torch.cat([self.mask, new_mask.to(dev)], dim=1)
            with torch.inference_mode():
                out = self.backend.model(
                    input_ids=inp.to(dev),
                    attention_mask=mask,
                    position_ids=pos.to(dev),
                    past_key_values=self.cache,
                    use_cache=True,
                )
            base = self.mask.shape[1]
            self.cache, self.mask = out.past_key_values, mask
            rows_logits = out.logits[:, -1, : self.backend.vocab_size].float().cpu().numpy()
            for r, p in enumerate(pending):
                if p:
                    self.slots[r].extend(range(base + width - len(p), base + width))
                    self.last[r] = rows_logits[r]
        return np.stack([x for x in self.last])  # type: ignore[misc]

    def _unfeed(self, row: int, n: int) -> None:
        drop = self.slots[row][n:]
        if drop:
            self.mask[row, drop] = 0
        del self.slots[row][n:]
        self.last[row] = None

    def truncate(self, row: int, n: int) -> None:
        del self.rows[row][n:]
        if len(self.slots[row]) > n:
            self._unfeed(row, n)

    def select(self, indices: list[int]) -> None:
        idx = self.backend.torch.tensor(indices, dtype=self.backend.torch.long, device=self.backend.device)
        if self.cache is not None:
            self.cache.reorder_cache(idx)
        self.mask = self.mask.index_select(0, idx)
        self.rows = [list(self.rows[i]) for i in indices]
        self.slots = [list(self.slots[i]) for i in indices]
        self.last = [self.last[i] for i in indices]

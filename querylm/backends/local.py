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
from .base import Backend, Batch, Sequence
from .prefix_cache import PrefixCache
from .ragged import LocalRagged, logprobs

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

    def new_batch(self, rows: int, prefix: list[int]) -> LocalBatch:
        return LocalBatch(self, rows, prefix)

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
        self._launched: tuple[Any, list[int]] | None = None  # device logits of a prefetch, and their rows
        if prefix:
            self.logits()  # the shared prefix, computed once
        self.select([0] * rows)

    def logits(self) -> np.ndarray:
        return self.scored_logits([[] for _ in self.rows])[0]

    def prefetch(self) -> None:
        """Launch the forward pass over every row's new tokens; ``logits()`` (or a change of rows) waits
        for it. On CUDA the masks of the next step are computed meanwhile."""
        self._sync()
        self._launched = self._feed([[] for _ in self.rows])[0]

    def scored_logits(self, positions: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        self._sync()
        self._launched, scored = self._feed(positions)
        self._sync()
        return np.stack([x for x in self.last]), scored  # type: ignore[misc]

    def _sync(self) -> None:
        """Copy the logits of a launched forward pass back from the device (waiting for it)."""
        if self._launched is not None:
            dev, rows = self._launched
            self._launched = None
            arr = dev.float().cpu().numpy()
            for r in rows:
                self.last[r] = arr[r]

    def _feed(self, positions: list[list[int]]) -> tuple[tuple[Any, list[int]] | None, list[np.ndarray]]:
        """One forward pass over every row's new tokens: their last position's logits, left on the
        device, and the log-probabilities of the tokens at ``positions``."""
        torch = self.backend.torch
        scored = [np.zeros(0) for _ in self.rows]
        for r, ids in enumerate(self.rows):
            if len(self.slots[r]) == len(ids) and self.last[r] is None and ids:
                self._unfeed(r, len(ids) - 1)  # logits lost by a truncation: feed the last token again
        fed = [len(s) for s in self.slots]
        pending = [ids[fed[r] :] for r, ids in enumerate(self.rows)]
        for r, at in enumerate(positions):
            if at and not fed[r] <= min(at) <= max(at) < len(self.rows[r]):
                raise ValueError(f"scored_logits: row {r}'s positions {at} are not all new tokens")
        # Logits are kept for the positions that predict a scored token (the first new token's
        # prediction is the row's previous logits), and the last.
        keep = max(
            [1] + [len(self.rows[r]) - max(min(at), fed[r] + 1) + 1 for r, at in enumerate(positions) if at]
        )
        width = max(len(p) for p in pending)
        if not width:
            return None, scored
        b = len(self.rows)
        inp = torch.zeros((b, width), dtype=torch.long)
        new_mask = torch.zeros((b, width), dtype=torch.long)
        pos = torch.zeros((b, width), dtype=torch.long)
        for r, p in enumerate(pending):
            if p:
                inp[r, width - len(p) :] = torch.tensor(p)
                new_mask[r, width - len(p) :] = 1
                pos[r, width - len(p) :] = torch.arange(fed[r], fed[r] + len(p))
        dev = self.backend.device
        mask = torch.cat([self.mask, new_mask.to(dev)], dim=1)
        with torch.inference_mode():
            out = self.backend.forward(
                keep,
                input_ids=inp.to(dev),
                attention_mask=mask,
                position_ids=pos.to(dev),
                cache=self.cache,
            )
        base = self.mask.shape[1]
        self.cache, self.mask = _cache_of(out), mask
        vocab = self.backend.vocab_size
        rows = [r for r, p in enumerate(pending) if p]
        for r in rows:
            p = pending[r]
            if positions[r]:
                rel = [q - fed[r] for q in positions[r]]
                scored[r] = logprobs(self.backend.torch, out.logits[r, :, :vocab], p, rel, self.last[r])
            self.slots[r].extend(range(base + width - len(p), base + width))
            self.last[r] = None
        return (out.logits[:, -1, :vocab], rows), scored

    def _unfeed(self, row: int, n: int) -> None:
        drop = self.slots[row][n:]
        if drop:
            self.mask[row, drop] = 0
        del self.slots[row][n:]
        self.last[row] = None

    def truncate(self, row: int, n: int) -> None:
        self._sync()
        del self.rows[row][n:]
        if len(self.slots[row]) > n:
            self._unfeed(row, n)

    def select(self, indices: list[int]) -> None:
        self._sync()
        if indices == list(range(len(self.rows))):
            return  # the same rows: reordering would copy the whole KV cache for nothing
        idx = self.backend.torch.tensor(indices, dtype=self.backend.torch.long, device=self.backend.device)
        if self.cache is not None:
            self.cache.reorder_cache(idx)
        self.mask = self.mask.index_select(0, idx)
        self.rows = [list(self.rows[i]) for i in indices]
        self.slots = [list(self.slots[i]) for i in indices]
        self.last = [self.last[i] for i in indices]

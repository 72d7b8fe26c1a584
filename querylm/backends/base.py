"""What every backend provides to the runtime and the decoders.

A backend owns a tokenizer and hands out ``Sequence`` objects: a token history whose next-token
logits it can compute, keeping its cache across prompt segments and holes (appended tokens are fed to
the model lazily, in one forward pass, when logits are next needed), and that can be truncated (to undo
a dropped stop phrase or unwind a nested query) or forked.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any

import llguidance
import llguidance.hf
import numpy as np

from ..errors import ModelError

_ENCODING = threading.Lock()
"""transformers applies ``split_special_tokens`` by setting it on the shared Rust tokenizer for the call:
two threads encoding at once (``run_many``/``map`` on threads, an MCP server) could tokenize a chat
template's ``<|im_start|>`` as text, or user text as a special token. Encoding holds this lock."""


class Sequence(ABC):
    def __init__(self) -> None:
        self.ids: list[int] = []

    def append(self, ids: list[int]) -> None:
        self.ids.extend(ids)

    def prefetch(self) -> None:
        """Start computing the logits of ``self.ids`` where the model runs asynchronously (a GPU); the
        next ``logits()`` waits for them. Called only on backends with ``overlap`` set."""
        return None  # synchronous backends compute logits when asked

    @abstractmethod
    def logits(self) -> np.ndarray:
        """float32 logits over the tokenizer's vocabulary for the token after ``self.ids``."""

    @abstractmethod
    def truncate(self, n: int) -> None:
        """Forget every token after the first ``n``."""

    @abstractmethod
    def fork(self) -> Sequence:
        """An independent copy that shares nothing mutable with this one."""

    def score(
        self, backend: Backend, continuations: list[list[int]], messages: list[dict[str, str]] | None = None
    ) -> list[np.ndarray]:
        """``backend.score`` after ``self.ids``: a sequence that keeps a KV cache (a local model's)
        scores from it, so the prompt is computed once, for the scores and the decoding after them.
        ``messages``: the chat so far, for a sequence whose model is reached through a chat API (a
        hosted one's); the others score their token ids."""
        return backend.score(list(self.ids), continuations)


class Backend(ABC):
    name: str
    supports_beams = True
    """False for backends without next-token log-probabilities (hosted APIs)."""
    heals = True
    """Whether a hole may back off the prompt's last token (token healing, ``decoding/heal.py``): the
    decoder must see and re-tokenize the prompt it continues."""
    overlap = False
    """Whether decoders should launch a forward pass (``prefetch``) before computing the next masks."""
    tokenizer: Any
    """A Hugging Face tokenizer (``transformers`` fast tokenizer)."""

    @abstractmethod
    def new_sequence(self) -> Sequence: ...

    @abstractmethod
    def score(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        """The log-probability of each token of each continuation after ``prefix`` (float64 arrays)."""

    @cached_property
    def eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gen = getattr(self, "generation_eos", None)
        for src in (gen, self.tokenizer.eos_token_id):
            if isinstance(src, int):
                ids.add(src)
            elif src:
                ids.update(src)
        return sorted(ids)

    @cached_property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @cached_property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """The vocabulary as the mask engine sees it (built once per backend: ~0.5 s at 49k tokens)."""
        return llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size, eos_token=self.eos_ids)

    @cached_property
    def byte_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(first byte of each token, 256 for special or empty ones; the id of each single-byte token,
        -1 where the vocabulary has none). Used to tell which tokens can't continue a value."""
        tok = self.ll_tokenizer
        first = np.full(tok.vocab_size, 256, dtype=np.int16)
        single = np.full(256, -1, dtype=np.int64)
        for t in range(tok.vocab_size):
            if tok.is_special_token(t):
                continue
            b = tok.decode_bytes([t])
            if b:
                first[t] = b[0]
                if len(b) == 1 and single[b[0]] < 0:
                    single[b[0]] = t
        return first, single

    def encode(self, text: str, *, special: bool = False) -> list[int]:
        """Token ids for ``text``. User text never turns into special tokens (no prompt injection of
        ``<|im_start|>``); chat-template text (``special=True``) does."""
        if not text:
            return []
        with _ENCODING:
            return list(
                self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special)
            )

    def decode(self, ids: list[int]) -> str:
        return self.ll_tokenizer.decode_bytes(ids).decode("utf-8", errors="replace")

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_transition(self, prev: str | None, role: str) -> str:
        """The chat-template text between the end of a ``prev`` message's content (None: the start of
        the conversation) and the start of a ``role`` message's content, found by rendering the
        template around sentinels."""
        key = (prev, role)
        cache = self.__dict__.setdefault("_transitions", {})
        if key not in cache:
            cache[key] = self._render_transition(prev, role)
        return cache[key]

    def _render_transition(self, prev: str | None, role: str) -> str:
        a, b = "\x1eQLM_A\x1e", "\x1eQLM_B\x1e"
        attempts = (
            [[{"role": role, "content": b}]]
            if prev is None
            else [
                [{"role": prev, "content": a}, {"role": role, "content": b}],
                [
                    {"role": "user", "content": "x"},
                    {"role": prev, "content": a},
                    {"role": role, "content": b},
                ],
            ]
        )
        last: Exception | None = None
        for messages in attempts:
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            except Exception as err:  # templates raise for role orders they refuse
                last = err
                continue
            if b not in text or (prev is not None and a not in text):
                continue
            start = text.index(a) + len(a) if prev is not None else 0
            return text[start : text.index(b)]
        raise ModelError(
            f"the model's chat template does not accept a {role} message after {prev or 'the start'}: {last}"
        )

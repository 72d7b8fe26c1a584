"""Whether a hole's grammars admit any value at all, decided before a model runs.

``INT(X) and X in [" abc"]`` is a language with no string in it: decoding it can only fail (an empty mask
at the first token, or a value no check accepts). llguidance decides that for one grammar: over a
vocabulary of single bytes, a matcher whose language is empty is stopped at its start, not accepting,
with no byte allowed. Its regular part is one lexeme, the intersection of the conjuncts' regexes, whose
emptiness llguidance's regex engine checks (within its fuel: when it gives up, the language counts as
non-empty). A hole with several grammars (JSON, GRAMMAR files) has their masks AND-ed, and an
intersection across matchers is empty only if no byte string passes all of them: a search over the AND
of their byte masks, bounded, which proves emptiness when every path dies and otherwise says nothing.
So the answer "empty" is always right; a language too large to search is never called empty.
"""

from __future__ import annotations

from functools import lru_cache

import llguidance
import numpy as np

from .matcher import LIMITS

_EOS = 256
SEARCH_STEPS = 4000
"""Bytes consumed at most by the search across several matchers (each step costs a few µs)."""


class _Bytes:
    """A vocabulary of the 256 bytes and an end token, in the shape llguidance's TokenizerWrapper reads."""

    eos_token_id = _EOS
    bos_token_id = None
    tokens = [bytes([b]) for b in range(256)] + [b"<eos>"]
    special_token_ids = [_EOS]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode("utf-8"))


@lru_cache(maxsize=1)
def _tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


def _bytes_allowed(matchers: list[llguidance.LLMatcher]) -> np.ndarray:
    """The bytes (not the end token) every matcher allows next."""
    allowed = np.ones(257, dtype=bool)
    for m in matchers:
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed &= bits[:257].astype(bool)
    return np.flatnonzero(allowed[:256])


@lru_cache(maxsize=256)
def is_empty(grammars: tuple[str, ...]) -> bool:
    """True only when no string is in every one of ``grammars`` (llguidance TopLevelGrammar JSON texts);
    False when one is, or when that can't be decided cheaply (a grammar this byte vocabulary can't compile,
    such as one naming a model's special tokens, or a search past its bound)."""
    matchers = []
    for g in grammars:
        m = llguidance.LLMatcher(_tokenizer(), g, log_level=0, limits=LIMITS)
        if m.is_error():
            return False
        matchers.append(m)
    if len(matchers) == 1:  # llguidance's own answer: no first byte can start a value
        return not matchers[0].is_accepting() and _bytes_allowed(matchers).size == 0
    # Depth first over the AND of the byte masks; a stack of the bytes still to try at each depth
    # (the matchers hold the path: consume going down, roll back coming up).
    stack = [list(_bytes_allowed(matchers))]
    for _ in range(SEARCH_STEPS):
        if all(m.is_accepting() for m in matchers):
            return False
        while stack and not stack[-1]:
            stack.pop()
            if stack:
                for m in matchers:
                    m.rollback(1)
        if not stack:
            return True
        byte = int(stack[-1].pop())
        for m in matchers:
            m.consume_token(byte)
        stack.append(list(_bytes_allowed(matchers)))
    return False

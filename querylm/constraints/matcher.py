"""The token-mask engine (llguidance) behind one hole: one matcher per grammar, masks AND-ed.

Grammars are compiled once per vocabulary and forked (llguidance's ``deep_copy``, ~1 µs) for each use.
"""

from __future__ import annotations

from functools import lru_cache

import llguidance
import llguidance.numpy as llnp
import numpy as np


@lru_cache(maxsize=512)
def _template(tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    m = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
    if m.is_error():
        raise ValueError(m.get_error())
    return m


class Matcher:
    """The AND of one or more llguidance matchers over one vocabulary."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammars: list[str]):
        assert grammars, "an unconstrained hole still gets a grammar (free text), so special tokens stay out"
        self.tokenizer = tokenizer
        self.matchers = [_template(tokenizer, g).deep_copy() for g in grammars]
        self.bitmask = llnp.allocate_token_bitmask(1, tokenizer.vocab_size)
        self._other = llnp.allocate_token_bitmask(1, tokenizer.vocab_size) if len(grammars) > 1 else None

    def allowed(self) -> np.ndarray:
        """The ids of the tokens every matcher allows next (EOS among them when the value may end)."""
        llnp.fill_next_token_bitmask(self.matchers[0], self.bitmask, 0)
        for m in self.matchers[1:]:
            assert self._other is not None
            llnp.fill_next_token_bitmask(m, self._other, 0)
            np.bitwise_and(self.bitmask, self._other, out=self.bitmask)
        bits = np.unpackbits(self.bitmask[0].view(np.uint8), bitorder="little")
        return np.flatnonzero(bits[: self.tokenizer.vocab_size])

    def consume(self, token: int) -> None:
        for m in self.matchers:
            if not m.consume_token(token):
                raise RuntimeError(f"mask engine refused token {token}: {m.get_error()}")

    def is_accepting(self) -> bool:
        return all(m.is_accepting() for m in self.matchers)

    def fork(self) -> Matcher:
        other = object.__new__(Matcher)
        other.tokenizer = self.tokenizer
        other.matchers = [m.deep_copy() for m in self.matchers]
        other.bitmask = llnp.allocate_token_bitmask(1, self.tokenizer.vocab_size)
        other._other = (
            llnp.allocate_token_bitmask(1, self.tokenizer.vocab_size) if self._other is not None else None
        )
        return other


def accepts(tokenizer: llguidance.LLTokenizer, grammar: str, text: str) -> bool:
    """Whether ``grammar`` accepts the whole of ``text`` (for checking a finished value)."""
    m = _template(tokenizer, grammar).deep_copy()
    ids = tokenizer.tokenize_str(text)
    return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()

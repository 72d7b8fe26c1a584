"""The token-mask engine (llguidance) behind one hole: one matcher per grammar, masks AND-ed.

Grammars are compiled once per vocabulary and forked (llguidance's ``deep_copy``, ~1 µs) for each use.
A mask is computed every token, so it stays a bitmask in a buffer allocated once per matcher: listing the
allowed ids of a 49k vocabulary costs more than the mask itself, and most steps never need them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import llguidance
import llguidance.numpy as llnp
import numpy as np

# Counted free text with stop phrases (len(X) < 40 and len(WORDS(X)) < 8 and STOPS_AT(X, ".")) is one
# large lexeme: llguidance's default lexer fuel gives up on it ("lexer precomputation failed"). Ten
# times the default builds it in ~0.2 s once per grammar, and steps stay ~20 µs.
LIMITS = llguidance.LLParserLimits(initial_lexer_fuel=10_000_000, step_lexer_fuel=10_000_000)


@lru_cache(maxsize=512)
def _template(tokenizer: llguidance.LLTokenizer, grammar: str) -> llguidance.LLMatcher:
    m = llguidance.LLMatcher(tokenizer, grammar, log_level=0, limits=LIMITS)
    if m.is_error():
        raise ValueError(m.get_error())
    return m


class TokenSet:
    """A set of token ids as llguidance stores it: bit ``t % 32`` of word ``t // 32`` is token ``t``.

    Testing one token is one bit; the sorted ids are computed only when asked (and then once). The words
    may be a buffer that the next mask overwrites: a TokenSet is good for one decoding step.
    """

    __slots__ = ("words", "size", "_ids")

    def __init__(self, words: np.ndarray, size: int):
        assert words.dtype == np.uint32 and words.size * 32 >= size
        self.words = words
        self.size = size  # the vocabulary size
        self._ids: np.ndarray | None = None

    @classmethod
    def of(cls, ids: np.ndarray | list[int], size: int) -> TokenSet:
        bits = np.zeros(-(-size // 32) * 32, dtype=bool)
        bits[np.asarray(ids, dtype=np.int64)] = True
        return cls(np.packbits(bits, bitorder="little").view(np.uint32), size)

    def __contains__(self, token: int) -> bool:
        return 0 <= token < self.size and bool((self.words.item(token >> 5) >> (token & 31)) & 1)

    def discard(self, tokens: list[int]) -> bool:
        """Take ``tokens`` out of the set; whether any of them was in it."""
        found = False
        for t in tokens:
            word, bit = self.words.item(t >> 5), 1 << (t & 31)
            if word & bit:
                self.words[t >> 5] = word & ~bit
                found = True
        self._ids = None
        return found

    def any(self) -> bool:
        return bool(np.count_nonzero(self.words))  # cheaper than .any() on cold caches

    def only(self) -> int | None:
        """The one token in the set, or None when it holds none or several."""
        if np.count_nonzero(self.words) != 1:
            return None
        at = int(np.flatnonzero(self.words)[0])
        word = self.words.item(at)
        if word & (word - 1):  # more than one bit
            return None
        return 32 * at + word.bit_length() - 1

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            nz = np.flatnonzero(self.words)
            if nz.size == 0:
                self._ids = nz
            else:  # unpack only from the first to the last word with a bit set: few on tight constraints
                lo, hi = int(nz[0]), int(nz[-1]) + 1
                bits = np.unpackbits(self.words[lo:hi].view(np.uint8), bitorder="little")
                ids = np.flatnonzero(bits.view(bool)) + 32 * lo
                self._ids = ids[ids < self.size] if 32 * hi > self.size else ids
        return self._ids


class Matcher:
    """The AND of one or more llguidance matchers over one vocabulary."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammars: list[str]):
        assert grammars, "an unconstrained hole still gets a grammar (free text), so special tokens stay out"
        self.tokenizer = tokenizer
        self.matchers = [_template(tokenizer, g).deep_copy() for g in grammars]
        self._buffers()

    def _buffers(self) -> None:
        self._filled = False  # the buffer already holds the next mask (fill_masks)
        size = self.tokenizer.vocab_size
        self.bitmask = llnp.allocate_token_bitmask(1, size)
        self.words = self.bitmask[0].view(np.uint32)
        self._other = llnp.allocate_token_bitmask(1, size)[0].view(np.uint32)  # the next grammar's mask
        self._tail = np.uint32((1 << (size % 32)) - 1) if size % 32 else None  # bits past the vocabulary
        self._ptrs = (self.words.ctypes.data, self._other.ctypes.data)  # .ctypes costs µs: once

    def next_tokens(self) -> TokenSet:
        """The tokens every matcher allows next (EOS among them when the value may end), computed into
        this matcher's buffer: the set is valid until the next call."""
        if self._filled:
            self._filled = False
            return TokenSet(self.words, self.tokenizer.vocab_size)
        # What llnp.fill_next_token_bitmask does, less its per-call checks: the buffers are ours,
        # contiguous, and live as long as the matcher.
        words, other = self._ptrs
        self.matchers[0].unsafe_compute_mask_ptr(words, self.words.nbytes)
        for m in self.matchers[1:]:
            m.unsafe_compute_mask_ptr(other, self._other.nbytes)
            np.bitwise_and(self.words, self._other, out=self.words)
        if self._tail is not None:
            self.words[-1] &= self._tail
        return TokenSet(self.words, self.tokenizer.vocab_size)

    def allowed(self) -> np.ndarray:
        """The ids of the tokens every matcher allows next (EOS among them when the value may end)."""
        return self.next_tokens().ids

    def forced(self) -> list[int]:
        """The tokens the grammar forces next (its fixed text, canonically tokenized by llguidance,
        which leaves out a last token that a longer one could still replace): what every matcher
        accepts of the first matcher's fast-forward tokens. Not consumed."""
        ff = self.matchers[0].compute_ff_tokens()
        for m in self.matchers[1:]:
            if not ff:
                break
            ff = ff[: m.validate_tokens(ff)]
        return ff

    def consume(self, token: int) -> None:
        self._filled = False
        for m in self.matchers:
            if not m.consume_token(token):
                raise RuntimeError(f"mask engine refused token {token}: {m.get_error()}")

    def completes(self, token: int) -> bool:
        """Whether the value would be complete after ``token`` (tried, then rolled back)."""
        done = []
        ok = True
        for m in self.matchers:
            if not m.consume_token(token):
                ok = False
                break
            done.append(m)
        ok = ok and all(m.is_accepting() for m in self.matchers)
        for m in done:
            m.rollback(1)
        return ok

    def is_accepting(self) -> bool:
        return all(m.is_accepting() for m in self.matchers)

    def fork(self) -> Matcher:
        other = object.__new__(Matcher)
        other.tokenizer = self.tokenizer
        other.matchers = [m.deep_copy() for m in self.matchers]
        other._buffers()
        return other


@lru_cache(maxsize=1)
def _executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor()


def fill_masks(matchers: list[Matcher]) -> None:
    """Compute the next masks of several matchers at once, on llguidance's thread pool; each matcher's
    next ``next_tokens()`` returns its mask without computing it. Beams on a GPU call this while the
    forward pass runs: with more cores than beams it beats filling them one after another (on two
    cores it does not, so only the CUDA path uses it)."""
    if not matchers:
        return
    subs = [sub for m in matchers for sub in m.matchers]
    masks = llnp.allocate_token_bitmask(len(subs), matchers[0].tokenizer.vocab_size)
    llnp.fill_next_token_bitmask_par(_executor(), [(sub, i) for i, sub in enumerate(subs)], masks)
    words = masks.view(np.uint32)
    row = 0
    for m in matchers:
        np.copyto(m.words, words[row])
        for k in range(1, len(m.matchers)):
            np.bitwise_and(m.words, words[row + k], out=m.words)
        row += len(m.matchers)
        if m._tail is not None:
            m.words[-1] &= m._tail
        m._filled = True


def accepts(tokenizer: llguidance.LLTokenizer, grammar: str, text: str) -> bool:
    """Whether ``grammar`` accepts the whole of ``text`` (for checking a finished value)."""
    m = _template(tokenizer, grammar).deep_copy()
    ids = tokenizer.tokenize_str(text)
    return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()


class PrefixMatcher:
    """A matcher over a value written elsewhere (a hosted model's answer): it feeds the text in and
    keeps its longest valid prefix, so that an invalid answer is cut and continued, never returned.

    ``encode`` is the tokenizer's own text → ids (the model's, which the mask engine's vocabulary was
    built from), ``eos_ids`` its end tokens."""

    def __init__(
        self,
        tokenizer: llguidance.LLTokenizer,
        grammars: list[str],
        encode: Callable[[str], list[int]],
        eos_ids: Sequence[int],
    ):
        self.tokenizer = tokenizer
        self.encode = encode
        self.eos_ids = list(eos_ids)
        self.m = Matcher(tokenizer, grammars)
        self.text = ""
        self.ids: list[int] = []
        self._last = 0

    def feed(self, text: str, limit: int | None = None) -> str:
        """Consume the longest prefix of ``text`` the constraints allow, in at most ``limit`` tokens;
        return it."""
        if not text:
            return ""
        ids = self.encode(text)
        if limit is not None and len(ids) > limit:
            ids = ids[: max(0, limit)]
            cut = self.tokenizer.decode_bytes(ids)
            while ids and not whole_utf8(cut):
                ids = ids[:-1]
                cut = self.tokenizer.decode_bytes(ids)
            text = cut.decode("utf-8")
        n = self._consume(ids)
        if n == len(ids):
            self._commit(text, ids)
            return text
        good_ids = ids[:n]
        good = self.tokenizer.decode_bytes(good_ids)
        # cut on a character boundary
        while good_ids and not whole_utf8(good):
            self._rollback(1)
            good_ids = good_ids[:-1]
            good = self.tokenizer.decode_bytes(good_ids)
        good_text = good.decode("utf-8")
        self._commit(good_text, good_ids)
        # the rejected token may still start with valid characters
        rest = text[len(good_text) :]
        for j in range(min(len(rest), 16) - 1, 0, -1):
            sub = self.encode(rest[:j])
            if limit is not None and len(good_ids) + len(sub) > limit:
                continue
            if self._consume(sub) == len(sub):
                self._commit(rest[:j], sub)
                return good_text + rest[:j]
            self._rollback(self._last)
        return good_text

    def _consume(self, ids: list[int]) -> int:
        counts = []
        for m in self.m.matchers:
            counts.append(m.try_consume_tokens(ids))
        n = min(counts)
        for m, c in zip(self.m.matchers, counts, strict=True):
            if c > n:
                m.rollback(c - n)
        self._last = n
        return n

    def _rollback(self, k: int) -> None:
        if k:
            for m in self.m.matchers:
                m.rollback(k)

    def _commit(self, text: str, ids: list[int]) -> None:
        self.text += text
        self.ids.extend(ids)

    def accepting(self) -> bool:
        return self.m.is_accepting()

    def retreat(self, keep: int, min_tokens: int) -> bool:
        """Go back, a token at a time but not before ``keep`` characters, to the last point where the
        value was complete; False (and nothing changed) when there is none."""
        popped: list[int] = []
        while self.ids and len(self.text) > keep:
            self._rollback(1)
            popped.append(self.ids.pop())
            self.text = self.tokenizer.decode_bytes(self.ids).decode("utf-8", errors="replace")
            if (
                self.accepting()
                and len(self.ids) >= min_tokens
                and whole_utf8(self.tokenizer.decode_bytes(self.ids))
            ):
                return True
        popped.reverse()
        self._consume(popped)
        self.ids.extend(popped)
        self.text = self.tokenizer.decode_bytes(self.ids).decode("utf-8", errors="replace")
        return False

    def can_continue(self) -> bool:
        """Some token other than the end may come next."""
        allowed = self.m.next_tokens()
        eos = self.eos_ids
        words = allowed.words.copy()
        for e in eos:
            if e < allowed.size:
                words[e >> 5] &= ~np.uint32(1 << (e & 31))
        return bool(words.any())

    def forced(self) -> str:
        """Text every value must continue with from here (whole characters), e.g. the rest of the only
        choice left."""
        best = b""
        for m in self.m.matchers:
            ff = bytes(m.compute_ff_bytes())
            if len(ff) > len(best):
                best = ff
        while best and not whole_utf8(best):
            best = best[:-1]
        return best.decode("utf-8", errors="ignore")


def whole_utf8(b: bytes) -> bool:
    """Whether ``b`` ends on a character boundary (a cut token may end inside a character)."""
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False

"""Decoding one hole: the constrained token loop.

Per step: the mask engine gives the allowed tokens; the token budget may remove EOS (too short) or
end the hole (spent); the chooser picks among the allowed tokens from the model's logits; the token is
consumed by the matchers and appended to the sequence (fed to the model with the next forward pass).
A forced token (the only one allowed, and the value can't end: fixed text of a grammar such as a JSON
key) needs no choice, so it is appended without asking for logits: a run of forced tokens costs one
forward pass, with the next real choice, instead of one each.
The hole ends at EOS, when the grammar can't go on (only EOS allowed, no forward pass spent on it), or
when the budget is spent on a complete value. Anything else is a ConstraintError naming the constraint.

A step runs right after the forward pass, on cold caches, where each numpy call costs microseconds: the
allowed tokens stay a bitmask (EOS is a bit test), ids are listed only when needed, and the mass of
ending is summed only when it can decide (benchmarks/constraint_overhead.py measures this loop).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints.matcher import Matcher, TokenSet
from ..constraints.where import HoleConstraint
from ..errors import ConstraintError, Position
from .budget import forced_room, is_last, must_end, over_budget
from .choose import END, Chooser, logsumexp
from .guide import JsonGuide

FREE_TEXT = '{"grammars": [{"lark_grammar": "start: /(?s:.*)/\\n"}]}'
"""An unconstrained hole still runs under a grammar: it keeps special tokens (``<|im_start|>``) out."""


@dataclass
class HoleOutput:
    tokens: list[int]
    text: str
    ended_by: str
    """"eos", "grammar", "budget" or "max_len"."""
    searched: bool = False
    """Whether the value was found by a search over whole values (``decoding/search.py``)."""


def decode_hole(
    backend: Backend,
    seq: Sequence,
    hc: HoleConstraint,
    chooser: Chooser,
    *,
    max_len: int,
    position: Position | None,
    on_token: Callable[[str], None] | None = None,
    timings: list[float] | None = None,
    skip_forced: bool = True,
    guide: JsonGuide | None = None,
) -> HoleOutput:
    """``timings``: when given, gets for each generated token the seconds spent outside the model's
    forward pass (mask, EOS and end handling, choosing, consuming): what the constraints cost.
    ``skip_forced=False`` asks the chooser about forced tokens too (a trace records every token's
    probability, so it needs the logits of each); the result is the same either way. ``guide``: revises
    chosen tokens of a JSON value (``decoding/guide.py``)."""
    step = HoleStep(
        backend,
        seq,
        hc,
        chooser,
        max_len=max_len,
        position=position,
        on_token=on_token,
        timings=timings,
        skip_forced=skip_forced,
        guide=guide,
    )
    while step.ready() and step.take(seq.logits()):
        if backend.overlap:  # the device computes the next logits while the next mask is computed
            seq.prefetch()
    return step.output()


class HoleStep:
    """The token loop of one hole, one step at a time: ``ready()`` makes the moves that need no logits
    (forced tokens, ending the value) and says whether a choice is due; ``take(logits)`` makes it.
    ``decode_hole`` drives it with one sequence's logits; the batch engine drives many, each with its
    row of one forward pass, so a row decodes exactly as it would alone."""

    def __init__(
        self,
        backend: Backend,
        seq: Sequence,
        hc: HoleConstraint,
        chooser: Chooser,
        *,
        max_len: int,
        position: Position | None,
        on_token: Callable[[str], None] | None = None,
        timings: list[float] | None = None,
        skip_forced: bool = True,
        guide: JsonGuide | None = None,
    ):
        self.backend, self.seq, self.hc, self.chooser = backend, seq, hc, chooser
        self.guide = guide
        self.max_len, self.position, self.on_token = max_len, position, on_token
        self.timings, self.skip_forced = timings, skip_forced
        self.matcher = Matcher(backend.ll_tokenizer, hc.grammars(staged=True) or [FREE_TEXT])
        self.staged = hc.stop_after > 0  # still under the grammar without its stop phrases
        self.ending = end_table(backend)
        self.clock = time.perf_counter if timings is not None else float  # float() is 0.0: no timing
        self.tokens: list[int] = []
        self.emitted = 0
        self.ended_by = "eos"
        self.allowed: TokenSet | None = None
        self.complete = False
        self.t0 = self.t1 = 0.0

    def ready(self) -> bool:
        """Make the moves that need no choice; True when the next token must be chosen from the logits
        of ``seq``, False when the value has ended (``output()``). A dead end raises ConstraintError."""
        hc, matcher, seq, tokens = self.hc, self.matcher, self.seq, self.tokens
        while True:
            self.t0 = t0 = self.clock()
            if self.staged and len(tokens) >= hc.stop_after:
                self.matcher = matcher = restage(self.backend, hc, tokens, self.position)
                self.staged = False
            allowed = matcher.next_tokens()
            complete = allowed.discard(self.backend.eos_ids)  # EOS allowed: the value may end here
            reason = must_end(
                hc,
                matcher,
                allowed,
                complete,
                made=len(tokens),
                length=len(seq.ids),
                max_len=self.max_len,
                position=self.position,
                so_far=lambda: self.backend.decode(tokens),
            )
            if reason is not None:
                self.ended_by = reason
                return False
            room = forced_room(hc, len(tokens), self.max_len - len(seq.ids))
            if self.staged:  # the stop phrases start to count at a token of their own
                room = min(room, hc.stop_after - len(tokens))
            run = forced_run(matcher, allowed, room) if self.skip_forced and not complete else []
            if not run:
                self.allowed, self.complete = allowed, complete
                self.t1 = self.clock()
                return True
            seq.append(run)  # no choice to make: no logits needed
            tokens.extend(run)
            if self.timings is not None:
                self.timings.extend([(self.clock() - t0) / len(run)] * len(run))
            self.emitted = _emit(self.backend, tokens, self.emitted, self.on_token)

    def take(self, logits: np.ndarray) -> bool:
        """Choose the next token from ``logits`` (the model's row after ``seq``) and append it; False
        when ending the value won instead."""
        hc, matcher, tokens, allowed = self.hc, self.matcher, self.tokens, self.allowed
        assert allowed is not None, "take() follows a ready() that returned True"
        t2 = self.clock()
        may_end = self.complete and len(tokens) >= hc.min_tokens
        end = self.ending.tokens(allowed) if may_end else None  # what can't continue: from all allowed
        allowed = budgeted(hc, matcher, allowed, logits, tokens, may_end, self.backend.decode, self.position)
        token = self.chooser.choose(logits, allowed, end)
        self.allowed = None
        if token == END:
            return False
        run = [token]
        if self.guide is not None and not is_last(hc, len(tokens)):
            room = max(1, forced_room(hc, len(tokens), self.max_len - len(self.seq.ids)))
            run = self.guide.revise(matcher, tokens, token, logits, allowed, self.chooser, room)
        for t in run:
            matcher.consume(t)
        self.seq.append(run)
        tokens.extend(run)
        if self.timings is not None:
            self.timings.extend([(self.clock() - t2 + self.t1 - self.t0) / len(run)] * len(run))
        self.emitted = _emit(self.backend, tokens, self.emitted, self.on_token)
        return True

    def output(self) -> HoleOutput:
        text = self.backend.decode(self.tokens)
        if self.on_token is not None and len(text) > self.emitted:
            self.on_token(text[self.emitted :])
        return HoleOutput(self.tokens, text, self.ended_by)


def restage(backend: Backend, hc: HoleConstraint, tokens: list[int], position: Position | None) -> Matcher:
    """The matcher once a stop phrase's token minimum is met (``HoleConstraint.stop_after``): the
    value's grammar with its stop phrases counting after the text made so far, which it has consumed.
    Tokens that end inside a character count from the character's start: a phrase can't end inside the
    character, and one ending with it ends after those tokens."""
    text = backend.decode(tokens)
    matcher = Matcher(backend.ll_tokenizer, hc.grammars_after(text.rstrip("\ufffd")))
    try:
        for t in tokens:
            matcher.consume(t)
    except RuntimeError:
        raise ConstraintError(
            f"{hc.hole}: its first {len(tokens)} tokens don't end on a whole character, so its stop "
            f"phrases can't start to count there: {hc.description}",
            position,
        ) from None
    return matcher


def _emit(backend: Backend, tokens: list[int], emitted: int, on_token: Callable[[str], None] | None) -> int:
    """Stream the value's new text; returns how many characters have been streamed."""
    if on_token is None:
        return emitted
    text = backend.decode(tokens)
    if text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
        return emitted
    on_token(text[emitted:])
    return len(text)


def forced_run(matcher: Matcher, allowed: TokenSet, room: int, *, go_on: bool = False) -> list[int]:
    """The forced tokens at this point, consumed by ``matcher``: when ``allowed`` (EOS out, the value
    unable to end here) holds one token, that token and the fixed text after it (llguidance's
    fast-forward tokens), at most ``room`` of them. With ``go_on``, none after which the value could
    end (a beam scores forced tokens with the forward pass of its next choice, so one must follow)."""
    only = allowed.only() if room > 0 else None
    if only is None:
        return []
    run = matcher.forced()[:room]
    if not run or run[0] != only:
        run = [only]
    taken = []
    for t in run:
        if go_on and matcher.completes(t):
            break
        matcher.consume(t)
        taken.append(t)
    return taken


def budgeted(
    hc: HoleConstraint,
    matcher: Matcher,
    allowed: TokenSet,
    logits: np.ndarray,
    tokens: list[int],
    may_end: bool,
    decode: Callable[[list[int]], str],
    position: Position | None,
) -> TokenSet:
    """The tokens a value with ``tokens`` made may choose next: on its last budgeted one, only those
    that leave it whole (``completing``); none, when it can't end here either, is a ConstraintError."""
    if not is_last(hc, len(tokens)):
        return allowed
    allowed = completing(matcher, allowed, logits)
    if not allowed.any() and not may_end:
        raise over_budget(hc, decode(tokens), position)
    return allowed


def completing(matcher: Matcher, allowed: TokenSet, logits: np.ndarray, first: int = 64) -> TokenSet:
    """The allowed tokens after which the value is complete, for a value's last budgeted token (so a
    budget never ends a value half-way: ``budget.is_last``). Checks the ``first`` most
    likely allowed tokens, and the rest in order of likelihood only if none of those completes it."""
    ids = allowed.ids
    minus = -logits[ids]
    top = ids[np.argpartition(minus, first)[:first]] if ids.size > first else ids  # no sort of 49k
    good = [int(t) for t in top if matcher.completes(int(t))]
    if not good:
        tried = set(top.tolist())
        rest = (int(t) for t in ids[np.argsort(minus)] if int(t) not in tried)
        good = next(([t] for t in rest if matcher.completes(t)), [])
    return TokenSet.of(good, allowed.size)


_STARTS_A_CHARACTER = np.zeros(257, dtype=bool)
_STARTS_A_CHARACTER[:0x80] = True  # ASCII
_STARTS_A_CHARACTER[0xC2:0xF5] = True  # lead bytes of multi-byte characters
_STARTS_A_CHARACTER[256] = True  # special tokens


def end_logit(backend: Backend, logits: np.ndarray, allowed: TokenSet | np.ndarray) -> float:
    """The logit of "the value ends here": the mass of EOS and of every token that can't continue the
    value even by its first byte. After ``INT`` has read "8", a model that wants " legs" is saying the
    number is over; a model that wants ".\n" under ``STOPS_AT(X, ".")`` is not (the "." can come
    alone)."""
    return logsumexp(logits, end_table(backend).tokens(allowed))


class EndTable:
    """The tokens that end the value (``end_logit``), by which single-byte tokens are allowed: few such
    sets recur (free text, digits...), so each is worked out once."""

    def __init__(self, backend: Backend):
        self.vocab = backend.ll_tokenizer
        self.first, single = backend.byte_tables
        self.eos_ids = backend.eos_ids
        # Asked only when the value may end, so EOS counts as allowed (should a vocabulary have EOS as
        # a single-byte token), whether or not ``allowed`` still holds it.
        self.eos_byte = np.isin(single, self.eos_ids)
        has = (single >= 0) & ~self.eos_byte
        at = np.where(has, single, 0)
        self.word = at >> 5  # where each byte's single-byte token sits in a bitmask
        self.bit = np.where(has, np.left_shift(1, at & 31), 0).astype(np.uint32)
        lo, hi = int(self.word[has].min(initial=0)), int(self.word[has].max(initial=0)) + 1
        # The key of a set: the few words holding all the single-byte tokens when they sit together (as
        # in byte-level BPE vocabularies; their other bits only make keys finer), else the bits alone.
        self.span = slice(lo, hi) if hi - lo <= 64 else None
        self.by_key: dict[bytes, np.ndarray] = {}

    def tokens(self, allowed: TokenSet | np.ndarray) -> np.ndarray:
        """The ending tokens for ``allowed``: ids when they are few, else a bool per token (both index
        the logits)."""
        if not isinstance(allowed, TokenSet):  # ids
            allowed = TokenSet.of(allowed, self.first.size)
        words = allowed.words
        key = words[self.span].tobytes() if self.span else (words[self.word] & self.bit).tobytes()
        ends = self.by_key.get(key)
        if ends is None:
            if len(self.by_key) >= 64:  # bounded: an entry can be one bool per token
                self.by_key.clear()
            ends = self.by_key[key] = self._ends((words[self.word] & self.bit) != 0)
        return ends

    def _ends(self, single_ok: np.ndarray) -> np.ndarray:
        byte_ok = np.append(single_ok | self.eos_byte, False)  # index 256: special and empty tokens
        # A token starting with a UTF-8 continuation byte is a fragment, not a wish to end: it can't come
        # after a complete character whatever the constraint, so it does not count.
        ends = ~byte_ok[self.first] & _STARTS_A_CHARACTER[self.first]
        ends[self.eos_ids] = True
        return np.flatnonzero(ends) if 8 * np.count_nonzero(ends) < ends.size else ends


_END_TABLES: weakref.WeakKeyDictionary[Backend, EndTable] = weakref.WeakKeyDictionary()


def end_table(backend: Backend) -> EndTable:
    table = _END_TABLES.get(backend)
    if table is None:
        # Backends over one vocabulary (the random backend's per-seed copies) share a table, and so
        # skip building the byte tables (~0.1 s at 49k tokens) once each.
        same = (
            t
            for t in _END_TABLES.values()
            if t.vocab is backend.ll_tokenizer and t.eos_ids == backend.eos_ids
        )
        table = _END_TABLES[backend] = next(same, None) or EndTable(backend)
    return table

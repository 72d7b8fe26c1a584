"""Decoding one hole: the constrained token loop.

Per step: the mask engine gives the allowed tokens; the token budget may remove EOS (too short) or
end the hole (spent); the chooser picks among the allowed tokens from the model's logits; the token is
consumed by the matchers and appended to the sequence (fed to the model with the next forward pass).
The hole ends at EOS, when the grammar can't go on (only EOS allowed, no forward pass spent on it), or
when the budget is spent on a complete value. Anything else is a ConstraintError naming the constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints.matcher import Matcher
from ..constraints.where import HoleConstraint
from ..errors import ConstraintError, Position
from .choose import END, Chooser

FREE_TEXT = '{"grammars": [{"lark_grammar": "start: /(?s:.*)/\\n"}]}'
"""An unconstrained hole still runs under a grammar: it keeps special tokens (``<|im_start|>``) out."""


@dataclass
class HoleOutput:
    tokens: list[int]
    text: str
    ended_by: str
    """"eos", "grammar", "budget" or "max_len"."""


def decode_hole(
    backend: Backend,
    seq: Sequence,
    hc: HoleConstraint,
    chooser: Chooser,
    *,
    max_len: int,
    position: Position | None,
    on_token: Callable[[str], None] | None = None,
) -> HoleOutput:
    grammars = hc.grammars() or [FREE_TEXT]
    matcher = Matcher(backend.ll_tokenizer, grammars)
    eos = np.asarray(backend.eos_ids, dtype=np.int64)
    tokens: list[int] = []
    emitted = 0
    ended_by = "eos"
    while True:
        allowed = matcher.allowed()
        if allowed.size == 0:
            raise ConstraintError(
                f"the constraints on {hc.hole} can't be met from here (no token is allowed after "
                f"{backend.decode(tokens)!r}): {hc.description}",
                position,
            )
        only_eos = np.isin(allowed, eos).all()
        if only_eos:
            ended_by = "grammar"
            break
        if hc.max_tokens is not None and len(tokens) >= hc.max_tokens:
            if matcher.is_accepting():
                ended_by = "budget"
                break
            raise ConstraintError(
                f"{hc.hole} could not be completed within its budget of {hc.max_tokens} tokens "
                f"(so far {backend.decode(tokens)!r}): {hc.description}",
                position,
            )
        if len(tokens) < hc.min_tokens:
            allowed = allowed[~np.isin(allowed, eos)]
            if allowed.size == 0:
                raise ConstraintError(
                    f"{hc.hole} can't reach its minimum of {hc.min_tokens} tokens: the value "
                    f"{backend.decode(tokens)!r} can't be extended: {hc.description}",
                    position,
                )
        if len(seq.ids) >= max_len:
            if matcher.is_accepting() and len(tokens) >= hc.min_tokens:
                ended_by = "max_len"
                break
            raise ConstraintError(
                f"{hc.hole} reached max_len={max_len} tokens before its value was complete: {hc.description}",
                position,
            )
        logits = seq.logits()
        may_end = len(tokens) >= hc.min_tokens and bool(np.isin(eos, allowed).any())
        choices = allowed[~np.isin(allowed, eos)]
        end = end_logit(backend, logits, allowed) if may_end else None
        token = chooser.choose(logits, choices, end)
        if token == END:
            break
        matcher.consume(token)
        seq.append([token])
        tokens.append(token)
        if on_token is not None:
            text = backend.decode(tokens)
            if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                on_token(text[emitted:])
                emitted = len(text)
    text = backend.decode(tokens)
    if on_token is not None and len(text) > emitted:
        on_token(text[emitted:])
    return HoleOutput(tokens, text, ended_by)


def end_logit(backend: Backend, logits: np.ndarray, allowed: np.ndarray) -> float:
    """The logit of "the value ends here": the mass of EOS and of every token that can't continue the
    value even by its first byte. After ``INT`` has read "8", a model that wants " legs" is saying the
    number is over; a model that wants ".\n" under ``STOPS_AT(X, ".")`` is not (the "." can come
    alone)."""
    first, single = backend.byte_tables
    ok = np.zeros(logits.size, dtype=bool)
    ok[allowed] = True
    byte_ok = np.zeros(257, dtype=bool)
    byte_ok[:256] = (single >= 0) & ok[np.maximum(single, 0)]
    ends = ~byte_ok[first]
    ends[backend.eos_ids] = True
    vals = logits[: first.size][ends]
    top = float(vals.max())
    return top + float(np.log(np.exp(vals - top).sum()))

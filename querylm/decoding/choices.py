"""Whole-value choices: a hole that must be one of a few values is decided by each value's total
log-probability, not by its first token.

Token by token, the first token decides: under ``X in [" positive", " negative"]`` a model that finds
both " pos..." and " neg..." unlikely after a chat template's "assistant\\n" picks whichever first
piece it dislikes least, and the rest of the value is forced. Scoring every whole value (as the
``distribution`` clause and ``querylm.score`` do: one forward pass for the prefix, one batch for all
values) asks the model about the values themselves. The chooser of the run decides among them: argmax
takes the most likely, a sample draws by these probabilities (with its temperature, top-k and top-p,
from its own seeded stream).

Only values the hole's whole constraint accepts compete (the set is a superset: another conjunct may
rule some out), and only those that fit the token budget and the sequence's ``max_len``. A value is
scored in its own tokenization, which the mask engine accepts like any other. ``choices="tokens"``
switches back to token-by-token decoding.

With token healing (``decoding/heal.py``) a value is scored as the healed text and the value, the way
the model would write both. Where the hole opens a message or a line (``HoleConstraint.line_start``:
a chat template's "assistant\\n", or prompt text ending in a newline), a value's leading whitespace is
layout the boundary already gives: LMQL's style ``X in [" positive", " negative"]`` is scored as
"positive" / "negative", which is how the model starts a reply or a line, while the value stays exactly
the option written (" positive") and is written into the sequence so, for what follows. Measured on
the default model (sentiment of four reviews, chat template): scored with their spaces 2 of 4 right,
without them 3 of 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints.matcher import accepts
from ..constraints.where import HoleConstraint
from .choose import END, Chooser
from .hole import HoleOutput

MODES = ("values", "tokens")
"""``choices=`` of a run: "values" (the default) decides a small finite set by whole values, "tokens"
decodes every hole token by token."""


@dataclass(frozen=True)
class Candidate:
    """One value of a whole-value choice (``candidates``)."""

    text: str
    """The healed text and the value as written, as the token loop's text would be."""
    scored: list[int]
    """The tokens its log-probability is taken over (leading whitespace left out at a line start)."""
    written: list[int]
    """The tokens it is written into the sequence as: they spell ``text``."""


def candidates(backend: Backend, hc: HoleConstraint, *, room: int) -> list[Candidate]:
    """The values of ``hc.choices`` the hole's constraint accepts (``hc.heal`` first; see the module's
    docstring for ``line_start``) that fit its token budget and ``room`` (tokens left in the sequence)."""
    if not hc.choices:
        return []
    grammars = hc.grammars()
    heal = hc.heal  # never with a token budget (``HoleConstraint.counts_tokens``)
    out = []
    for value in dict.fromkeys(hc.choices):  # each value once, in the order given
        text = heal + value
        written = backend.encode(text)
        layout = hc.line_start and value[:1].isspace() and not value.isspace()
        scored = backend.encode(heal + value.lstrip()) if layout else written
        limit = min(room, hc.max_tokens if hc.max_tokens is not None else room)
        fits = hc.min_tokens <= len(written) <= limit
        if written and fits and all(accepts(backend.ll_tokenizer, g, text) for g in grammars):
            out.append(Candidate(text, scored, written))
    return out


def decide_value(
    backend: Backend, seq: Sequence, hc: HoleConstraint, chooser: Chooser, *, max_len: int
) -> HoleOutput | None:
    """Choose the hole's value among its ``choices`` by total log-probability and append its tokens to
    ``seq``; None when the hole has no finite set of values to choose from (decode it token by token)."""
    values = candidates(backend, hc, room=max_len - len(seq.ids))
    if not values:
        return None
    scores = seq.score(backend, [c.scored for c in values]) if len(values) > 1 else None
    return take_value(seq, values, scores, chooser)


def take_value(
    seq: Sequence, values: list[Candidate], scores: list[np.ndarray] | None, chooser: Chooser
) -> HoleOutput:
    """Append the value of ``values`` (``candidates``) that ``chooser`` picks by its total
    log-probability (``scores``: each value's token log-probabilities; None for a single value).
    ``decide_value`` scores them alone, the batch engine in one pass for all its rows deciding one."""
    if scores is None:
        best = values[0]
    else:
        totals = np.array([lp.sum() for lp in scores])
        pick = chooser.choose(totals, np.arange(len(values)))
        best = values[pick if pick != END else int(np.argmax(totals))]
    seq.append(best.written)
    return HoleOutput(list(best.written), best.text, "choice")

"""Value search: argmax over a hole's whole value, not over its next token.

Token by token, argmax commits to the best allowed first token even when the model wanted something
the constraint forbids: asked for a name where it would write "The prize was won by David Chen", it
takes "The" and then must go on in capitals ("The Prize"); asked for ``YYYY-MM-DD`` after "on 9 May
1955", it starts the year with the day ("9555-00-09"). The model itself scores the right values far
higher as wholes ("David Chen" -1.8 against "The Prize" -5.6 in total log-probability, measured on the
default model), so searching for the most likely whole value finds them. This is a beam search of
``WIDTH`` over the one hole (``decoding/beam.py``'s steps, as ``beam(n)`` runs over a whole query),
ranked by total log-probability with the end of the value counted (``hole.end_logit``), stopped as
soon as the best finished value can't be beaten (scores only fall), and the value it finds is
appended to the sequence. Argmax only: a sample draws its value token by token, which is already a
draw from the whole values' distribution.

A value longer than ``MAX_TOKENS`` is not searched (the search gives up and the hole is decoded token
by token): search costs ``WIDTH`` rows per token, worth it for a date or a name, not for a paragraph.
Free text (stop phrases and budgets only) and JSON holes are never searched; nor are holes decided by
whole-value choices (``choices.py``, exact), nor a stop phrase waiting for a token minimum.

Layout at a line start: LMQL's style puts a value's space in the value (``"Name:[N]" where
REGEX(N, r" [A-Z][a-z]+")``). Where the hole opens a message or a line (``HoleConstraint.line_start``,
as the chat template's "assistant\\n" does) that space is layout the boundary already gives, and a
model conditioned on a lone space there is lost (on the quality benchmark's dates, the right values
after a lone space averaged -15 nats in total, against -4 in its style without the space). So when every value must start with a space, the space is taken as
given: the rest of the value is searched right after the boundary, and the value is written into the
sequence with its space, as ``choices.py`` does for whole values. Not under a token budget, which
counts the tokens as written.
"""

from __future__ import annotations

from ..backends.base import Backend, Sequence
from ..backends.ragged import Ragged, RaggedRow
from ..constraints.lang import Grammar, Lang
from ..constraints.where import HoleConstraint
from ..errors import ConstraintError
from .beam import Candidate, Choice, Value, candidate, done, log_normalisers, options, place, settle
from .choose import END, Argmax, Chooser
from .hole import HoleOutput

WIDTH = 4
"""Beams per searched value. On the quality benchmark's dates and names, 8 found no more right values."""
MAX_TOKENS = 24
"""Values longer than this are decoded token by token (a date is 10-11 tokens, a full name 2-6)."""


def searchable(hc: HoleConstraint, chooser: Chooser) -> bool:
    """Whether ``hc``'s value is searched under ``chooser`` (the module docstring says which are)."""
    if not isinstance(chooser, Argmax) or hc.choices or hc.stop_after:
        return False
    if hc.regular is None and not hc.cfgs:  # free text: at most stop phrases and budgets
        return False
    return not any(_has_json(g) for g in hc.cfgs)


def _has_json(lang: Lang) -> bool:
    if isinstance(lang, Grammar):
        return lang.kind == "json"
    parts = getattr(lang, "parts", None)
    if parts is not None:
        return any(_has_json(p) for p in parts)
    part = getattr(lang, "part", None)
    return part is not None and _has_json(part)


def search_value(
    backend: Backend, seq: Sequence, hc: HoleConstraint, *, max_len: int, width: int = WIDTH
) -> HoleOutput | None:
    """The most likely whole value of ``hc`` after ``seq`` that the search finds, appended to ``seq``;
    None (``seq`` untouched) when the search gives up (a value past ``MAX_TOKENS``, none found, or a
    backend without a ragged batch): the caller then decodes the hole token by token, which also
    reports a dead end properly.

    The beams are rows of a ragged batch of the search's own (``backends/ragged.py``), whose first row
    computes the prompt once: in the batch engine too, so that a searching row never takes more of the
    engine's rows than its own (its ``batch_size`` and KV bound hold), at the cost of that prompt pass."""
    if not seq.ids:
        return None
    make = getattr(backend, "ragged", None)
    if make is None:
        return None
    root = Value.open(backend, hc, None)
    lead = _layout(backend, hc, root)
    ragged: Ragged = make()
    first = ragged.add()
    first.append(list(seq.ids))
    running: list[tuple[float, Value, RaggedRow]] = [(0.0, root, first)]
    finished: list[tuple[float, Value, str]] = []
    # The batch is the search's own: whatever rows it still holds when the search ends go with it.
    while running:
        settled: list[tuple[float, Value, RaggedRow]] = []
        choices = []
        for score, value, row in running:
            if len(value.tokens) > MAX_TOKENS:
                return None
            try:
                step = settle(value, row, backend, max_len)
            except ConstraintError:
                step = None  # a dead end: this beam is pruned
            if isinstance(step, Choice):
                settled.append((score, value, row))
                choices.append(step)
                continue
            if step is not None:
                finished.append((score, value, step))
            ragged.remove(row)
        if not settled or done([f[0] for f in finished], [s for s, _, _ in settled], 1):
            break
        rows = [r for _, _, r in settled]
        logits32, forced_lps = ragged.scored_logits(rows, [v.forced for _, v, _ in settled])
        scored = []
        for (score, value, _row), lps in zip(settled, forced_lps, strict=True):
            value.forced = []
            scored.append((score + float(lps.sum()), value))
        log_z = log_normalisers(logits32)
        cands = []
        for i, ((score, value), choice) in enumerate(zip(scored, choices, strict=True)):
            for tok, lp in options(value, choice, logits32[i], log_z[i], 2 * width, backend, gamma=False):
                cands.append(candidate(score, i, tok, lp, None, 1.0))
        cands.sort(key=lambda c: -c.key)
        picked: list[Candidate] = []  # the next beams' candidates
        for rank, c in enumerate(cands[: 2 * width]):
            if len(picked) >= width:
                break
            if c.token == END:
                if rank < width:
                    finished.append((c.score, scored[c.parent][1], "eos"))
                continue
            picked.append(c)
        running = []
        for c, row in zip(picked, place(ragged, rows, [c.parent for c in picked]), strict=True):
            row.append([c.token])
            running.append((c.score, scored[c.parent][1].child(c.token), row))
    if not finished:
        return None
    _, value, ended_by = max(finished, key=lambda f: f[0])
    text = lead + backend.decode(value.tokens)
    written = backend.encode(text) if lead else list(value.tokens)
    seq.append(written)
    return HoleOutput(written, text, ended_by, searched=True)


def _layout(backend: Backend, hc: HoleConstraint, root: Value) -> str:
    """A space when the hole opens a line and every value starts with one that the search may take as
    given (module docstring), consumed by ``root``'s matcher; else ""."""
    if not hc.line_start or hc.heal or hc.counts_tokens:
        return ""
    first, single = backend.byte_tables
    space = int(single[ord(" ")])
    allowed = root.matcher.next_tokens()
    if space < 0 or space not in allowed:
        return ""
    allowed.discard(backend.eos_ids)
    ids = allowed.ids
    if ids.size == 0 or not (first[ids] == ord(" ")).all():
        return ""
    root.matcher.consume(space)
    return " "

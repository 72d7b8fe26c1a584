"""``sample(n)``: n samples decoded side by side, one forward pass per step for all of them.

Each sample is its own execution of the query, with its own random stream (so a sample's result does
not depend on how many run beside it) and its own row in the batch. A sample that finishes its query
simply stops feeding its row. A value that can't be completed fails the run, as in the token loop.
"""

from __future__ import annotations

from ..backends.base import Backend, Batch
from ..constraints.matcher import fill_masks
from ..decoding.beam import Choice, Value, settle
from ..decoding.choices import decide_value
from ..decoding.choose import END, Chooser
from ..decoding.hole import budgeted, end_logit
from .beams import Beam, close, enter
from .execute import Execution


def sample_batch(
    root: Execution, batch: Batch, choosers: list[Chooser], *, by_value: bool = False
) -> list[Execution]:
    """Run ``len(choosers)`` samples of the (started) execution ``root``, whose sequence is
    ``batch.row(0)`` of a one-row batch. The prompt up to the first hole is computed once, then the
    row is copied for every sample. With ``by_value``, a sample draws a hole with a few possible
    values among the whole values (``decoding/choices.py``)."""
    backend = root.backend
    n = len(choosers)
    first = enter(root, backend)
    if first is None:  # no hole at all: every sample is the same text
        return [root] + [root.fork(root.seq) for _ in range(n - 1)]
    batch.logits()
    batch.select([0] * n)
    roots = [root] + [root.fork(batch.row(i)) for i in range(1, n)]
    root.seq = batch.row(0)
    active: dict[int, Beam] = {}
    for i, ex in enumerate(roots):
        v = first.value
        active[i] = Beam(ex, first.pending, v if i == 0 else Value(v.hc, v.position, v.matcher.fork()))
    while active:
        choices: dict[int, Choice] = {}
        if backend.overlap:  # while the device runs the forward pass: every sample's mask at once
            fill_masks([b.value.matcher for b in active.values()])
        for i, beam in list(active.items()):
            ready = _settle(beam, backend, choosers[i] if by_value else None)
            if ready is None:
                del active[i]
            else:
                active[i], choices[i] = ready
        if not active:
            break
        logits = batch.logits()
        for i, beam in list(active.items()):
            choice, value = choices[i], beam.value
            value.forced = []  # samples have no score to keep
            may_end = choice.may_end(value)
            end = end_logit(backend, logits[i], choice.allowed) if may_end else None
            allowed = budgeted(
                value.hc,
                value.matcher,
                choice.allowed,
                logits[i],
                value.tokens,
                may_end,
                backend.decode,
                value.position,
            )
            token = choosers[i].choose(logits[i], allowed, end)
            if token == END:
                nxt = close(beam, backend, "eos")
                if nxt is None:
                    del active[i]
                else:
                    active[i] = nxt
                continue
            value.matcher.consume(token)
            beam.ex.seq.append([token])
            value.tokens.append(token)
        if backend.overlap:  # the device computes the next logits while settle() computes the masks
            batch.prefetch()
    return roots


def _settle(beam: Beam, backend: Backend, by_value: Chooser | None) -> tuple[Beam, Choice] | None:
    """The sample's moves that need no choice (``decoding.beam.settle``), running on to its next hole
    when a value ends; None when the query finished. A dead end raises its ConstraintError. With
    ``by_value`` (the sample's chooser), a new hole with a few possible values is drawn whole."""
    current: Beam | None = beam
    while current is not None:
        if by_value is not None and not current.value.tokens:
            ex = current.ex
            out = decide_value(backend, ex.seq, current.value.hc, by_value, max_len=ex.max_len)
            if out is not None:
                ex.finish(current.pending, out)
                current = enter(ex, backend)
                continue
        step = settle(current.value, current.ex.seq, backend, current.ex.max_len)
        if isinstance(step, Choice):
            return current, step
        current = close(current, backend, step)
    return None

"""``sample(n)``: n samples decoded side by side, one forward pass per step for all of them.

Each sample is its own execution of the query, with its own random stream (so a sample's result does
not depend on how many run beside it) and its own row in the batch. A sample that finishes its query
simply stops feeding its row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..backends.base import Batch
from ..constraints.matcher import TokenSet, fill_masks
from ..errors import ConstraintError
from .beam import Beam, _close, _enter, settle
from .choose import END, Chooser
from .hole import end_logit

if TYPE_CHECKING:
    from ..runtime.execute import Execution


def sample_batch(root: Execution, batch: Batch, choosers: list[Chooser]) -> list[Execution]:
    """Run ``len(choosers)`` samples of the (started) execution ``root``, whose sequence is
    ``batch.row(0)`` of a one-row batch. The prompt up to the first hole is computed once, then the
    row is copied for every sample."""
    backend = root.backend
    finished: list[Execution] = []
    n = len(choosers)
    first = _enter(root, backend)
    if first is None:  # no hole at all: every sample is the same text
        return [root] + [root.fork(root.seq) for _ in range(n - 1)]
    batch.logits()
    batch.select([0] * n)
    roots = [root] + [root.fork(batch.row(i)) for i in range(1, n)]
    root.seq = batch.row(0)
    active: dict[int, Beam] = {}
    for i, ex in enumerate(roots):
        matcher = first.matcher if i == 0 else first.matcher.fork()
        active[i] = Beam(ex, first.pending, matcher, [])
    while active:
        allowed_of: dict[int, tuple[TokenSet, bool]] = {}
        if backend.overlap:  # while the device runs the forward pass: every sample's mask at once
            fill_masks([b.matcher for b in active.values()])
        for i, beam in list(active.items()):
            ready, allowed, complete = settle(beam, backend, finished)
            if ready is None:
                del active[i]
                if not beam.ex.finished:
                    raise ConstraintError(
                        f"the constraints on {beam.pending.hole.name} can't be met: {beam.pending.hc.description}",
                        beam.pending.hole.position,
                    )
            else:
                active[i] = ready
                allowed_of[i] = (allowed, complete)  # type: ignore[assignment]
        if not active:
            break
        logits = batch.logits()
        for i, beam in list(active.items()):
            allowed, complete = allowed_of[i]
            beam.forced = []  # samples have no score to keep
            may_end = len(beam.tokens) >= beam.pending.hc.min_tokens and complete
            end = end_logit(backend, logits[i], allowed) if may_end else None
            token = choosers[i].choose(logits[i], allowed, end)
            if token == END:
                nxt = _close(beam, backend, "eos")
                if nxt is None:
                    del active[i]
                else:
                    active[i] = nxt
                continue
            beam.matcher.consume(token)
            beam.ex.seq.append([token])
            beam.tokens.append(token)
        if backend.overlap:  # the device computes the next logits while settle() computes the masks
            batch.prefetch()
    return roots

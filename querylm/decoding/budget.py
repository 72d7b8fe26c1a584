"""When a value must end without a choice: the one ending policy of every decoder.

A value ends by the model's choice (EOS, or a token that can't continue it: ``hole.end_logit``), or
without one: when the grammar allows nothing but EOS ("grammar"), when its ``max_tokens`` are spent
("budget"), or when the sequence reaches ``max_len`` ("max_len"). A value that must end but can't (no
token allowed and EOS neither; a spent budget or a full sequence on an incomplete value) is a
ConstraintError naming the constraint: the token loop raises it, beams prune the beam that hit it.
"""

from __future__ import annotations

from collections.abc import Callable

from ..constraints.matcher import Matcher, TokenSet
from ..constraints.where import HoleConstraint
from ..errors import BudgetError, ConstraintError, Position


def must_end(
    hc: HoleConstraint,
    matcher: Matcher,
    allowed: TokenSet,
    complete: bool,
    *,
    made: int,
    length: int,
    max_len: int,
    position: Position | None,
    so_far: Callable[[], str],
) -> str | None:
    """Why the value must end here ("grammar", "budget" or "max_len"), or None when it goes on with a
    chosen or forced token. ``allowed``: the tokens that continue it (EOS out), ``complete``: whether EOS
    was allowed; ``made``: its tokens so far, ``length``: the sequence's; ``so_far``: its text, for the
    error message."""
    if not allowed.any():
        if not complete:
            raise ConstraintError(
                f"the constraints on {hc.hole} can't be met from here (no token is allowed after "
                f"{so_far()!r}): {hc.description}",
                position,
            )
        return "grammar"  # only EOS was allowed
    if hc.max_tokens is not None and made >= hc.max_tokens:
        if matcher.is_accepting():
            return "budget"
        raise over_budget(hc, so_far(), position)
    if length >= max_len:
        if matcher.is_accepting() and made >= hc.min_tokens:
            return "max_len"
        raise ConstraintError(
            f"{hc.hole} reached max_len={max_len} tokens before its value was complete: {hc.description}",
            position,
        )
    return None


def over_budget(hc: HoleConstraint, so_far: str, position: Position | None) -> BudgetError:
    """The value can't be completed within its ``max_tokens``."""
    return BudgetError(
        f"{hc.hole} could not be completed within its budget of {hc.max_tokens} tokens "
        f"(so far {so_far!r}): {hc.description}",
        position,
    )


def is_last(hc: HoleConstraint, made: int) -> bool:
    """Whether the next token is the value's last budgeted one: it must leave the value complete (so a
    budget never ends a value half-way, e.g. inside a multi-byte character)."""
    return hc.max_tokens is not None and made + 1 >= hc.max_tokens


def forced_room(hc: HoleConstraint, made: int, left: int) -> int:
    """How many tokens may be forced into a value with ``made`` tokens and ``left`` before max_len: the
    last budgeted token is always chosen, since it must complete the value (``is_last``)."""
    return left if hc.max_tokens is None else min(left, hc.max_tokens - made - 1)

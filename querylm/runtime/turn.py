"""An assistant turn run as a query: one hole ``[TURN: turn]`` opening an assistant message, its language
the caller's Lark grammar (an agent's answer-or-calls union), its token budget a where clause. The
hole is filled by the runtime's Execution with the decoder every query's holes get (``run.sequential``:
the token loop, streaming, the end/budget policy, the final checks), so an agent is not a second
runtime.

A turn continues a chat the caller keeps on one sequence (``runtime/chat.py``): its KV cache carries
over from turn to turn, and the caller appends what follows (tool results) before the next turn.

A hosted backend writes a turn in one request, which the caller shapes (native tools, or its grammar in
the server's parameter): ``HostedChat`` sends it through the backend's client (retries, errors) and
accounts each turn as one hole of the run's Usage, as the hosted hole decoder does for a query's holes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import Backend, Sequence
from ..backends.hosted.client import HoleUsage, Usage
from ..backends.models import resolve
from ..backends.openai import OpenAIBackend
from ..constraints.lang import Grammar
from ..constraints.types import TypedHole
from ..decoding.choose import Argmax, Chooser, Sample
from ..decoding.names import NameScoringChooser
from ..errors import ConstraintError, ModelError
from ..language.check import compile_source
from .execute import Execution
from .run import sequential

TURN_QUERY = """argmax
    "{:assistant}[TURN: turn]"
where len(TOKENS(TURN)) <= budget
"""

UNBOUNDED = 1 << 30
"""A turn's max_len: its budget bounds it, not the sequence's length."""


@dataclass(frozen=True)
class TurnLanguage:
    """The ``turn`` input of TURN_QUERY: a typed hole whose language is a Lark grammar."""

    grammar: str
    label: str = "assistant turn"

    def __querylm_hole__(self) -> TypedHole:
        return TypedHole(Grammar("lark", self.grammar, self.label), str, self.label)


@dataclass
class TurnValue:
    """What a turn generated: its text and token count; ``complete`` False when the budget ran out before
    the grammar allowed the turn to end (``text`` is then what was generated: never a value to use)."""

    text: str
    tokens: int
    complete: bool


HostedBackend = OpenAIBackend
"""The hosted backend's type: its ``server`` (capabilities, request parameters), ``mechanisms``,
``endpoint`` and tokenizer are what a caller shapes a hosted turn's request with."""


def chat_backend(model: str | Backend | None, *, device: str | None = None) -> Backend:
    """The backend of a chat (a model id, or a backend as is): one with a chat template."""
    backend = model if isinstance(model, Backend) else resolve(model, device=device)
    if not backend.has_chat_template:
        raise ModelError(f"the agent needs a chat model; {backend.name} has no chat template")
    return backend


def is_hosted(backend: Backend) -> bool:
    """Whether turns on ``backend`` are hosted requests (``HostedChat``) rather than turn queries."""
    return isinstance(backend, OpenAIBackend)


class HostedChat:
    """The requests of one chat's turns on a hosted backend, each accounted as one hole of ``usage``."""

    def __init__(self, backend: HostedBackend):
        self.backend = backend
        self.usage = Usage()

    def new_turn(self, label: str) -> HoleUsage:
        """The accounting of the next turn: the caller records there how the request constrains it."""
        hole = HoleUsage(label)
        self.usage.holes.append(hole)
        return hole

    def send(self, kind: str, params: dict[str, Any], hole: HoleUsage, where: str) -> Any:
        """One request ("chat" or "completions") for the turn ``hole``: the backend client's Answer."""
        answer = self.backend.client.send(kind, params, self.usage, hole, where)
        hole.ended_by = answer.finish or ""
        return answer


def turn_chooser(temperature: float, seed: int | None) -> Chooser:
    """The chooser of a chat's turns: argmax at temperature 0, else one sample stream for all of them."""
    if temperature <= 0:
        return Argmax()
    return Sample(np.random.default_rng(seed), temperature=temperature)


def run_turn(
    backend: Backend,
    seq: Sequence,
    role: str | None,
    grammar: str,
    *,
    budget: int,
    chooser: Chooser,
    names: tuple[str, ...] = (),
    on_token: Callable[[str], None] | None = None,
) -> TurnValue:
    """Generate the assistant's turn after a message of ``role`` on ``seq`` (a chat the caller renders),
    under ``grammar`` and at most ``budget`` tokens. ``names``: where the turn writes ``{"name": "``,
    pick among these by scoring each in full (``decoding/names.py``) instead of token by token."""
    plan = compile_source(TURN_QUERY)
    ex = Execution(plan, backend, seq, max_len=UNBOUNDED, chat=True, stream=on_token)
    ex.role = role
    ex.start({"turn": TurnLanguage(grammar), "budget": budget})
    pending = ex.advance()
    assert pending is not None, "TURN_QUERY has one hole"
    if len(names) > 1:
        chooser = NameScoringChooser(chooser, backend, seq, names)
    try:
        out = sequential(chooser)(ex, pending)
        ex.finish(pending, out)
    except ConstraintError:  # the budget ran out inside the grammar: never a half value
        return TurnValue(backend.decode(seq.ids[pending.start :]), len(seq.ids) - pending.start, False)
    return TurnValue(out.text, len(seq.ids) - pending.start, True)

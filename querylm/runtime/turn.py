"""An assistant turn run as a query: one hole ``[TURN: turn]`` opening an assistant message, its language
the caller's grammar (an agent's answer-or-calls union), its token budget a where clause. The hole is
filled by the runtime's Execution with the decoder every query's holes get: on a local backend the
token loop (``prepare.sequential``: streaming, the end/budget policy, the final checks), on a hosted one
the hosted hole decoder (``hosted.HostedHoles``: request, validate, cut to the valid prefix, continue), so
an agent is not a second runtime.

A turn continues a chat the caller keeps: on a local backend one sequence whose KV cache carries over
from turn to turn (``runtime/chat.py``), the caller appending what follows (tool results) before the
next turn; on a hosted one the conversation's messages, which each request is written from.

How turns are decoded comes from a decoder clause, as a query's holes do (``TurnDecoder``): argmax, or
``sample(temperature=..., seed=...)``, one sample stream for all the turns of a chat.

Where a turn is not a grammar hole (OpenAI's native tools: the server returns structured calls),
``HostedChat`` sends its one request through the backend's client (retries, errors) and accounts it as
one hole of the chat's Usage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..backends.base import Backend, Sequence
from ..backends.hosted.client import HoleUsage, Usage
from ..backends.models import resolve
from ..backends.openai import OpenAIBackend
from ..constraints.lang import Grammar
from ..constraints.types import TypedHole
from ..decoding.choose import Chooser
from ..decoding.guide import GuideRules, JsonGuide
from ..decoding.names import NameScoringChooser
from ..errors import BudgetError, ConstraintError, ModelError, QueryInputError, UnsupportedError
from ..language.check import check_decoder, compile_source
from ..language.ir import DecoderSpec
from ..language.parse import parse_decoder
from .execute import Decode, Execution
from .hosted import HostedHoles
from .prepare import chooser_for, sequential

TURN_QUERY = """argmax
    "{:assistant}[TURN: turn]"
where len(TOKENS(TURN)) <= budget
"""

UNBOUNDED = 1 << 30
"""A turn's max_len: its budget bounds it, not the sequence's length."""


@dataclass(frozen=True)
class TurnLanguage:
    """The ``turn`` input of TURN_QUERY: a typed hole whose language is a Lark grammar (``kind``
    "lark") or a JSON Schema ("json"); ``gbnf``: the same language written as GBNF for a grammar
    server, where the caller has it (``constraints.lang.Grammar.gbnf``)."""

    grammar: str
    label: str = "assistant turn"
    kind: str = "lark"
    gbnf: str | None = None

    def __querylm_hole__(self) -> TypedHole:
        return TypedHole(Grammar(self.kind, self.grammar, self.label, self.gbnf), str, self.label)


@dataclass
class TurnValue:
    """What a turn generated: its text and token count; ``complete`` False when no whole value of the
    grammar came (``text`` is then what was generated: never a value to use), ``budget_spent`` True
    when that is because the budget ran out (a call cut short) rather than a server's answers that
    could not be made valid; ``error``: why."""

    text: str
    tokens: int
    complete: bool
    budget_spent: bool = False
    error: str = ""


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
    """Whether turns on ``backend`` are written by a hosted API (whole answers, no logits)."""
    return isinstance(backend, OpenAIBackend)


TURN_DECODERS = ("argmax", "sample")


def turn_spec(decoder: str | None, temperature: float = 0.0, seed: int | None = None) -> DecoderSpec:
    """The decoder clause of a chat's turns, read and checked as a query's is (``"argmax"``,
    ``"sample(temperature=0.7, seed=1)"``); without one, ``temperature`` and ``seed`` say it (0:
    argmax). Beams are refused: a beam decoder keeps several turns alive, and a tool call can't be
    run for one branch and taken back; each turn's tools run before the next turn is decoded."""
    if decoder is not None and (temperature or seed is not None):
        raise QueryInputError(f"give decoder={decoder!r} or temperature/seed, not both")
    if decoder is None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise QueryInputError(f"temperature must be a number >= 0, not {temperature!r}")
        args: dict[str, Any] = {"temperature": float(temperature)}
        if seed is not None:
            args["seed"] = seed
        spec = DecoderSpec("sample", args) if temperature > 0 else DecoderSpec("argmax", {})
        if spec.name == "argmax" and seed is not None:
            spec = DecoderSpec("argmax", {"seed": seed})
        return check_decoder(spec)
    spec = parse_decoder(decoder)
    if spec.arg_exprs:
        raise QueryInputError(f"an agent's decoder takes values, not expressions: {decoder!r}")
    if spec.name not in TURN_DECODERS:
        raise UnsupportedError(
            f"an agent's turns take argmax or sample(...), not {spec.name}: a beam keeps several turns "
            "alive, and a tool call can't be run for one branch and taken back"
        )
    spec = check_decoder(spec)
    if int(spec.args.get("n", 1)) != 1:
        raise UnsupportedError("an agent's turns are one sample each: sample(n=1), or run the agent n times")
    return spec


class TurnDecoder:
    """How one chat's turns are decoded, from its decoder clause: on a local backend the runtime's
    chooser (``prepare.chooser_for``: one stream for all the turns), on a hosted one the hosted hole decoder
    queries use (``hosted.HostedHoles``, the clause's temperature, top_p and seed in every request);
    ``usage``: what a hosted chat cost, one hole per turn (None on a local backend)."""

    def __init__(self, backend: Backend, spec: DecoderSpec):
        self.backend = backend
        self.spec = spec
        self.chooser: Chooser = chooser_for(spec, 0)
        self.hosted = HostedHoles(backend, spec, 0) if isinstance(backend, OpenAIBackend) else None
        self.usage: Usage | None = self.hosted.usage if self.hosted is not None else None
        self.sampling: dict[str, Any] = dict(self.hosted.decoder.sampling) if self.hosted is not None else {}
        """A hosted request's sampling parameters from the clause (temperature, top_p, top_k, seed)."""


class HostedChat:
    """The requests of a chat's turns that are not grammar holes (OpenAI's native tools), each
    accounted as one hole of ``usage`` (the chat's, shared with its turns run as holes)."""

    def __init__(self, backend: HostedBackend, usage: Usage):
        self.backend = backend
        self.usage = usage

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


def run_turn(
    backend: Backend,
    seq: Sequence,
    role: str | None,
    language: TurnLanguage | str,
    *,
    budget: int,
    decoder: TurnDecoder,
    names: tuple[str, ...] = (),
    on_token: Callable[[str], None] | None = None,
    messages: Iterable[Mapping[str, str]] | None = None,
    guide: GuideRules | None = None,
) -> TurnValue:
    """Generate the assistant's turn after a message of ``role`` on ``seq`` (a chat the caller renders),
    in ``language`` (a TurnLanguage, or a Lark grammar) and at most ``budget`` tokens. ``names``: on a
    local backend, where the turn writes a call's name, pick among these by scoring each in full
    (``decoding/names.py``) instead of token by token. ``messages``: the chat so far as plain
    role/content messages, which a hosted chat endpoint is sent (its sequence holds no tokens).
    ``guide``: on a local backend, the rules of the guide of the turn's JSON (``decoding/guide.py``:
    repetition, excluded phrases, digit groups, optional keys by scoring)."""
    plan = compile_source(TURN_QUERY)
    ex = Execution(plan, backend, seq, max_len=UNBOUNDED, chat=True, stream=on_token)
    ex.role = role
    ex.messages = [dict(m) for m in messages or ()]
    lang = language if isinstance(language, TurnLanguage) else TurnLanguage(language)
    ex.start({"turn": lang, "budget": budget})
    pending = ex.advance()
    assert pending is not None, "TURN_QUERY has one hole"
    decode: Decode
    if decoder.hosted is not None:
        decode = decoder.hosted
    else:
        chooser = decoder.chooser
        if len(names) > 1:
            chooser = NameScoringChooser(chooser, backend, seq, names)
        decode = sequential(chooser, guide=JsonGuide(guide, backend, seq) if guide is not None else None)
    try:
        out = decode(ex, pending)
        ex.finish(pending, out)
    except ConstraintError as err:  # the budget ran out inside the grammar, or no valid answer came
        partial = backend.decode(seq.ids[pending.start :])
        # on a local backend the mask keeps every token valid: only the budget can end a turn early
        spent = decoder.hosted is None or isinstance(err, BudgetError)
        return TurnValue(partial, len(seq.ids) - pending.start, False, spent, str(err))
    return TurnValue(out.text, len(seq.ids) - pending.start, True)

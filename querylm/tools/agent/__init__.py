"""The agent loop: each assistant turn is either a text answer or a list of tool calls; calls run
concurrently, their results (errors included) go back to the model, until it answers or a budget ends
the run. Every call is validated with the registry (jsonschema) before it runs; one that fails becomes
an error result the model reads, never an exception.

Backends (one turns driver each: ``local.py``, ``hosted.py``; what they share is ``turns.py``):

- local models: each turn is generated under one grammar (``turn_grammar``), so calls are valid by
  construction. The model's chat template is used for the roles; the tools section, which small models'
  templates lack, is written by a ToolFormat (default: the format SmolLM2 was tuned on: a ``<tools>``
  list in the system prompt, ``<tool_call>[...]</tool_call>`` calls, ``<tool_response>`` results in a
  user message).
- ``model="openai/..."`` (``querylm.backends.openai.OpenAIBackend``): each turn is one chat-completions
  request through the backend (its retries, errors and usage accounting; ``AgentResult.usage``). On
  OpenAI (flavour ``openai``) tools go as native ``tools`` (strict where the schema allows it), with
  ``tool_choice`` and ``parallel_tool_calls`` passed through. On grammar servers (``llamacpp``,
  ``vllm``, ``sglang``) the turn is generated under the same union grammar as on local models, sent as
  GBNF in the server's grammar parameter; where it can't be written as GBNF (or on ``ollama``) the
  server gets a JSON Schema of ``{"answer": ...}`` or ``{"tool_calls": [...]}`` instead. Either way the
  answer is checked again with the local matcher. See ``hosted.py`` here.

tool_choice is a constraint on the grammar, not a request: "auto" (answer or call), "required" (a call),
"none" (an answer), a tool's name (a call of that tool), a list of names (answer or a call of those), or
``{"mode": "required", "tools": [...]}`` (OpenAI's ``{"type": "function", ...}`` and ``{"type":
"allowed_tools", ...}`` forms are read too). On OpenAI it is passed through (a subset as
``allowed_tools``), and a call of a tool it does not allow is refused locally. The set of tools a
choice allows holds for the whole run and never widens: the grammar can't generate another tool's call,
and dispatch refuses one (a hosted server may ignore the grammar) as an ``unknown_tool`` error result,
never running it. With ``reset_tool_choice`` (the default) only the *obligation* to call lapses after
the first turn: "required" or a forced name then lets the model answer in text, but it may still call
only the tools the choice allowed (a forced name stays the only one).

Streaming: on local models ``token`` events come token by token; hosted turns are not streamed, so a
turn's text comes as one ``token`` event when its answer arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from ...runtime.chat import ChatPrefix
from ...runtime.turn import TurnDecoder, chat_backend, is_hosted, turn_spec
from ..registry import Approve, ToolCall, ToolRegistry, ToolResult, run_sync
from ..tool import ToolError
from .local import LocalTurns
from .turns import (
    TEXT_TURN_TOKENS,
    AgentEvent,
    AgentResult,
    Choice,
    StopReason,
    ToolChoice,
    ToolFormat,
    TurnOutput,
    forces_call,
    resolve_choice,
    turn_grammar,
)


def _driver_type(backend: Any) -> Any:
    if is_hosted(backend):
        from .hosted import HostedTurns

        return HostedTurns
    return LocalTurns


# -- the agent ------------------------------------------------------------------------------------------


class Agent:
    """An agent over a local model or a hosted one (``model="openai/..."`` or an OpenAIBackend):
    ``run(message)``, ``await arun(message)``, ``stream(message)`` / ``astream(message)`` yielding
    AgentEvents."""

    def __init__(
        self,
        model: Any = None,
        tools: ToolRegistry | list[Any] | None = None,
        instructions: str = "",
        *,
        max_turns: int = 4,
        max_tool_calls: int = 8,
        max_tokens: int | None = None,
        max_turn_tokens: int | None = None,
        tool_choice: ToolChoice = "auto",
        reset_tool_choice: bool = True,
        parallel_tool_calls: int = 1,
        max_concurrency: int | None = None,
        approve: Approve | None = None,
        answer_last_turn: bool | None = None,
        score_tool_names: bool = True,
        guide_values: bool = True,
        decoder: str | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        tool_format: ToolFormat | None = None,
        device: str | None = None,
    ):
        """``max_turns``: assistant turns per run; ``max_tool_calls``: calls per run; ``max_tokens``:
        tokens generated per run (None: no limit but the turns'); ``max_turn_tokens``: per turn (a call
        that does not fit is reported as truncated, never run). None sizes each turn to its calls: the
        most tokens the allowed tools' calls can take under their bounded schemas (``call_token_bound``),
        at least ``TEXT_TURN_TOKENS``; so a call always fits and is valid by construction.
        ``reset_tool_choice``: after the first turn a choice that forces a call ("required", a name,
        mode "required") lets the model answer instead; the tools it allows stay the same for the run.
        ``parallel_tool_calls``: calls one turn may make (run concurrently, at most ``max_concurrency``
        at once). ``approve(call, tool)``: called before each tool runs; False or a reason refuses the
        call (the model reads why). ``answer_last_turn``: the last turn
        allowed (by max_turns or max_tool_calls) must answer in text; None (the default): it must,
        unless it is the first turn and the choice forces a call (``tool_choice="required"`` with
        ``max_turns=1`` makes the call, never a text answer); True with such a choice and one turn
        contradicts it: an error. ``score_tool_names``: pick each
        call's tool by scoring the allowed names in full (NameScoringChooser) rather than greedily by
        their first token. ``guide_values``: on a local model, guide the calls' JSON past the mask
        (``decoding/guide.py``): a string or array that repeats itself is ended, a string may not
        contain the format's closing tag, a number the question writes "$200,000" is not cut at its
        comma, and whether an object takes another optional key is decided by scoring. ``decoder``: how turns are decoded, a decoder clause as a query takes
        (``"argmax"``, the default, or ``"sample(temperature=0.7, seed=1)"``; on a hosted model its
        temperature, top_p and seed go into every request); ``temperature`` and ``seed`` are the short
        form of ``sample(...)`` (0: argmax) when no decoder is given.

        Settings that contradict each other are a ToolError here (and, for a run's own
        ``tool_choice``, when the run starts), never a run that quietly does something else: an
        unknown tool in ``tool_choice``; a required call with no tool to call or ``max_tool_calls=0``;
        ``answer_last_turn=True`` with a forced call and one turn; ``answer_last_turn=False`` with a
        choice that allows no tool (``"none"``); budgets below one turn, call or token."""
        self.model = model
        self.registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools or [])
        self.instructions = instructions
        self.max_turns = max_turns
        self.max_tool_calls = max_tool_calls
        self.max_tokens = max_tokens
        self.max_turn_tokens = max_turn_tokens
        self.tool_choice = tool_choice
        self.reset_tool_choice = reset_tool_choice
        self.parallel_tool_calls = parallel_tool_calls
        self.max_concurrency = max_concurrency
        self.approve = approve
        self.answer_last_turn = answer_last_turn
        self.score_tool_names = score_tool_names
        self.guide_values = guide_values
        self.decoder = turn_spec(decoder, temperature, seed)  # checked now: a bad clause fails early
        self.format = tool_format or ToolFormat()
        self.device = device
        self._check_budgets()
        self._check_choice(tool_choice)  # fail early: an unknown name, a choice the settings contradict
        self._backend: Any = None
        self._prefix: ChatPrefix | None = None

    def _check_budgets(self) -> None:
        """Budgets no run can keep are errors here, not a run that silently does something else."""
        least = {"max_turns": 1, "max_tool_calls": 0, "parallel_tool_calls": 1, "max_tokens": 1}
        for name, low in {**least, "max_turn_tokens": 1}.items():
            value = getattr(self, name)
            if value is None and name.endswith("_tokens"):  # no limit
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ToolError(f"{name} must be a whole number >= {low}, not {value!r}")

    def _check_choice(self, asked: ToolChoice) -> Choice:
        """``asked`` resolved (``resolve_choice``: an unknown tool is a ToolError naming the known
        ones), refusing the settings that contradict it: a call required of no tool, or with no call
        allowed by ``max_tool_calls``; the one turn made to answer while the choice forces a call; the
        last turn left free to call (``answer_last_turn=False``) while the choice allows no tool."""
        choice = resolve_choice(asked, self.registry)
        if not choice.text and not choice.tools:
            known = ", ".join(self.registry.names) or "none"
            raise ToolError(f"tool_choice={asked!r} requires a call but allows no tool (registered: {known})")
        if forces_call(choice) and self.max_tool_calls == 0:
            raise ToolError(
                f"tool_choice={asked!r} requires a call, but max_tool_calls=0 allows none: allow a call, "
                'or use tool_choice="none"'
            )
        if self.answer_last_turn and self.max_turns == 1 and forces_call(choice):
            raise ToolError(
                "tool_choice forces a call on the first turn, but answer_last_turn=True makes the one turn "
                "(max_turns=1) answer in text: leave answer_last_turn unset, or allow more turns"
            )
        if self.answer_last_turn is False and not choice.tools and len(self.registry):
            raise ToolError(
                f"answer_last_turn=False leaves the last turn free to call a tool, but tool_choice={asked!r} "
                "allows none: leave answer_last_turn unset"
            )
        return choice

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = chat_backend(self.model, device=self.device)
        return self._backend

    # -- entry points -----------------------------------------------------------------------------------

    def turn_budget(self, choice: Choice, max_calls: int) -> int:
        """The tokens a turn may take: ``max_turn_tokens`` if set, else enough for ``max_calls`` of the
        longest call ``choice`` allows (with the call format's tags), at least ``TEXT_TURN_TOKENS``."""
        if self.max_turn_tokens is not None:
            return self.max_turn_tokens
        bound = self.registry.call_token_bound(choice.tools) if choice.tools else None
        if bound is None:
            return TEXT_TURN_TOKENS
        tags = len((self.format.call_open + self.format.call_close).encode())
        calls = max_calls * bound + (max_calls - 1) * len(self.format.call_sep.encode())
        return max(TEXT_TURN_TOKENS, tags + calls)

    def run(self, message: str, **kwargs: Any) -> AgentResult:
        return run_sync(lambda: self.arun(message, **kwargs))

    async def arun(self, message: str, **kwargs: Any) -> AgentResult:
        final: AgentResult | None = None
        async for ev in self.astream(message, **kwargs):
            if ev.type == "final":
                final = ev.result
        assert final is not None
        return final

    def stream(self, message: str, **kwargs: Any) -> Iterator[AgentEvent]:
        """The events of a run, from sync code (tools run on a private event loop)."""
        agen = self.astream(message, **kwargs)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    break
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    async def astream(
        self,
        message: str,
        *,
        history: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run the loop for ``message`` (after ``history``, a previous result's messages), yielding
        token, tool_call_started, tool_arguments_complete, tool_result, turn_end and final events."""
        backend = await asyncio.to_thread(lambda: self.backend)
        driver_type = _driver_type(backend)
        messages = [dict(m) for m in history] if history else []
        if not messages:
            system = driver_type.system_prompt(self)
            if system:
                messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": message})
        driver = await asyncio.to_thread(driver_type, self, backend, messages)
        choice_arg: ToolChoice = tool_choice if tool_choice is not None else self.tool_choice
        # Resolved once: the allowed tools hold for the whole run; a reset only lifts the obligation.
        run_choice = self._check_choice(choice_arg)
        results: list[ToolResult] = []
        tokens = 0
        output = ""
        stopped: StopReason = "max_turns"
        turn = 0
        for turn in range(1, self.max_turns + 1):
            choice = run_choice
            calls_left = self.max_tool_calls - len(results)
            last = turn == self.max_turns or calls_left <= 0
            # A first turn that must call keeps that obligation on the last turn too (unless the
            # caller asked for the answer explicitly, which _check_choice refused for one turn).
            obliged = turn == 1 and forces_call(choice) and self.answer_last_turn is None
            if calls_left <= 0 or (last and self.answer_last_turn is not False and not obliged):
                choice = Choice(True, ())
            max_calls = min(self.parallel_tool_calls, max(calls_left, 1))
            turn_budget = self.turn_budget(choice, max_calls)
            budget = turn_budget if self.max_tokens is None else min(turn_budget, self.max_tokens - tokens)
            if budget <= 0:
                stopped = "max_tokens"
                break
            out = TurnOutput()
            async for ev in driver.turn(turn, choice, budget, max_calls, out):
                yield ev
            tokens += out.tokens
            if out.truncated is not None:
                results.append(out.truncated)
                yield AgentEvent("error", turn, text=out.truncated.message, result=out.truncated)
                stopped = "max_tokens" if budget < turn_budget else "truncated"
                break
            if out.calls is None:  # a text answer: the run is over
                output = out.text.strip()
                messages.append({"role": "assistant", "content": output})
                yield AgentEvent("turn_end", turn, text=out.text)
                stopped = "final"
                break
            calls = [c for c in out.calls if isinstance(c, ToolCall)]
            messages.append(
                out.message
                or {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls]}
            )
            for c in calls:
                yield AgentEvent("tool_arguments_complete", turn, name=c.name, call=c)
            turn_results = await self._dispatch(out.calls, choice, min(max(calls_left, 0), max_calls))
            for r in turn_results:
                results.append(r)
                messages.append({**r.to_message(), "name": r.name})
                yield AgentEvent("tool_result", turn, name=r.name, call=r.call, result=r)
            driver.add_results(turn_results)
            yield AgentEvent("turn_end", turn, text=out.text)
            if self.reset_tool_choice:
                run_choice = Choice(True, run_choice.tools)
        else:
            stopped = "max_turns"
        result = AgentResult(output, messages, results, turn, tokens, stopped, driver.usage)
        yield AgentEvent("final", turn, text=output, result=result)

    async def _dispatch(
        self, calls: list[ToolCall | ToolResult], choice: Choice, limit: int
    ) -> list[ToolResult]:
        """Run a turn's calls (at most ``limit``; the rest are refused), each validated by the registry
        narrowed to the tools ``choice`` allows; calls that already failed (a server's malformed call)
        keep their error result."""
        registry = self.registry
        view = registry if set(choice.tools) == set(registry.names) else registry.only(*choice.tools)
        allowed = calls[:limit]
        ran = iter(
            await view.adispatch_many(
                [c for c in allowed if isinstance(c, ToolCall)],
                approve=self.approve,
                max_concurrency=self.max_concurrency,
            )
        )
        results = [next(ran) if isinstance(c, ToolCall) else c for c in allowed]
        for c in calls[limit:]:  # the grammar already caps the count; a hosted model may send more
            call = c if isinstance(c, ToolCall) else c.call
            results.append(
                registry.error_result(call, "denied", "the turn's or the run's tool-call budget is spent")
            )
        return results

    # -- helpers ----------------------------------------------------------------------------------------

    def new_decoder(self, backend: Any) -> TurnDecoder:
        """The decoder of one run's turns (a sampling run's stream starts anew with each run)."""
        return TurnDecoder(backend, self.decoder)

    def start_sequence(self, messages: list[dict[str, Any]]) -> tuple[Any, str | None]:
        """The sequence of ``messages`` and the role it ends in, the system message's part forked from a
        cached copy (``runtime.chat.ChatPrefix``)."""
        if self._prefix is None or self._prefix.backend is not self.backend:
            self._prefix = ChatPrefix(self.backend)
        return self._prefix.start(self.plain_messages(messages))

    def plain_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        """The conversation as plain role/content messages for a template without a tools section:
        calls and results written in the ToolFormat, a run of tool results as one message."""
        out: list[dict[str, str]] = []
        pending: list[ToolResult] = []

        def flush() -> None:
            if pending:
                out.append({"role": self.format.result_role, "content": self.format.results_text(pending)})
                pending.clear()

        for m in messages:
            if m["role"] == "tool":
                call = ToolCall(m.get("name") or "", {}, m.get("tool_call_id") or "")
                pending.append(ToolResult(call, True, content=str(m.get("content", ""))))
                continue
            flush()
            content = m.get("content") or ""
            if m.get("tool_calls"):
                calls = [self.registry.parse_call(c) for c in m["tool_calls"]]
                content = self.format.calls_text([c for c in calls if isinstance(c, ToolCall)])
            out.append({"role": m["role"], "content": content})
        flush()
        return out

    def in_call(self, text: str) -> bool:
        """Whether a turn's text is (the start of) tool calls rather than a text answer."""
        fmt = self.format
        return fmt.call_open.startswith(text) or text.startswith(fmt.call_open)

    def parse_calls(self, text: str) -> list[ToolCall] | None:
        fmt = self.format
        if not (text.startswith(fmt.call_open) and text.endswith(fmt.call_close)):
            return None
        body = text[len(fmt.call_open) : len(text) - len(fmt.call_close)]
        parsed = (
            json.loads("[" + body.replace(fmt.call_sep, ",") + "]") if fmt.call_sep.strip() == "," else None
        )
        if parsed is None:  # pragma: no cover - a custom separator without a comma
            parsed = [json.loads(p) for p in body.split(fmt.call_sep)]
        calls = []
        for obj in parsed:
            call = self.registry.parse_call(obj)
            assert isinstance(call, ToolCall), "the grammar guarantees well-formed calls"
            calls.append(call)
        return calls


__all__ = [
    "Agent",
    "AgentEvent",
    "AgentResult",
    "Choice",
    "ToolChoice",
    "ToolFormat",
    "TurnOutput",
    "resolve_choice",
    "turn_grammar",
]

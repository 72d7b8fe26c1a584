"""The agent's turns on a hosted model (an OpenAIBackend), through the runtime: the backend's client,
its retries and the run's usage accounting (one hole per turn).

- OpenAI (flavour ``openai``): native ``tools`` (``ToolRegistry.to_openai()``: strict where the schema
  allows it), ``tool_choice`` passed through (a subset of the tools as ``{"type": "allowed_tools"}``),
  ``parallel_tool_calls``. The returned ``tool_calls`` are parsed here; a call that does not parse
  (bad JSON, no name) becomes an error result, and the rest are validated by the registry before they
  run, like every call. Results go back as ``role: "tool"`` messages with their ``tool_call_id``.
- Grammar servers (``llamacpp``, ``vllm``, ``sglang``): the turn is generated under the union grammar the
  local path uses (``turns.turn_grammar``: a text answer or ``<tool_call>[...]</tool_call>`` honouring
  tool_choice), written as GBNF (``server_grammar``) and sent in the server's grammar parameter
  (llama.cpp ``grammar``, vLLM ``structured_outputs.grammar``, SGLang ``ebnf``). The conversation is
  written in the agent's ToolFormat, as for a local model whose template has no tools section.
- Where the union grammar has no GBNF form (a tool schema ``constraints.gbnf`` can't translate), the
  ``grammar`` mechanism is switched off, or the server takes no grammar (``ollama``): the server gets a
  JSON Schema (``calls_schema``: ``{"answer": "..."}`` or ``{"tool_calls": [...]}``) in its
  ``json_schema`` parameter. Where neither is possible the run fails with an UnsupportedError.

On grammar servers (and the JSON Schema fallback) a turn is the runtime's turn query
(``runtime.turn.run_turn``), its hole filled by the hosted hole decoder every query's holes get: each
answer validated with the local llguidance matcher, one cut by ``max_tokens`` or breaking the grammar
(a server that ignored it) cut to its valid prefix and continued, or asked again, a bounded number of
requests. A call that still does not fit the turn's budget is reported as truncated and never run; a
turn whose answers could not be made valid comes back to the model as an ``invalid_call`` error.

Native-tools turns are one request each (OpenAI's API can't continue a partly written message); their
calls are validated one by one before they run. Turns are not streamed token by token: a turn's text
arrives as its answers are validated.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...constraints import automata, gbnf, regex
from ...constraints.lang import And, Not, Term
from ...constraints.schema import closed_object, for_server
from ...errors import ModelError, UnsupportedError
from ...runtime.chat import render
from ...runtime.turn import HoleUsage, HostedBackend, HostedChat, TurnLanguage
from ..registry import ToolCall, ToolRegistry, ToolResult, new_call_id
from .turns import AgentEvent, Choice, Generation, ToolFormat, TurnOutput, turn_grammar

if TYPE_CHECKING:
    from . import Agent

log = logging.getLogger("querylm.agent")


# -- tool_choice and grammars in the forms servers take ---------------------------------------------------


def openai_tool_choice(choice: Choice, registry: ToolRegistry) -> str | dict[str, Any]:
    """A resolved tool_choice as OpenAI's ``tool_choice``: "auto", "required", "none", a named function,
    or ``allowed_tools`` for a subset (all the tools are still sent: the list stays cacheable); tools
    named by their wire names, as ``to_openai`` sends them."""
    if not choice.tools:
        return "none"
    if set(choice.tools) == set(registry.names):
        return "auto" if choice.text else "required"
    wire = [registry.wire_name(n) for n in choice.tools]
    if len(wire) == 1 and not choice.text:
        return {"type": "function", "function": {"name": wire[0]}}
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto" if choice.text else "required",
            "tools": [{"type": "function", "function": {"name": n}} for n in wire],
        },
    }


def _text_dfa(fmt: ToolFormat) -> automata.Automaton:
    """The TEXT terminal of ``turn_grammar``: some text that does not start (after whitespace) with a
    reserved prefix."""
    starts = f"{regex.WS}*{regex.alternation(list(fmt.reserved) or [fmt.call_open])}(?s:.*)"
    return automata.lang_dfa(And((Term("(?s:.+)"), Not(Term(starts)))))


def server_grammar(registry: ToolRegistry, choice: Choice, fmt: ToolFormat, max_calls: int) -> str:
    """``turn_grammar`` as GBNF (checked); NotTranslatable where a tool's schema has no GBNF form."""
    alts = []
    lines = []
    if choice.tools:
        schema = for_server(registry.call_schema(choice.tools))
        first, _, rest = gbnf.json_gbnf(schema).partition("\n")
        lines.append("call ::= " + first.removeprefix("root ::= "))
        lines += [line for line in rest.splitlines() if line]
        body = "call"
        for _ in range(max(1, max_calls) - 1):
            body = f"call ( sep {body} )?"
        lines.append(f"sep ::= {gbnf.gbnf_literal(fmt.call_sep)}")
        lines.append(
            f"calls ::= {gbnf.gbnf_literal(fmt.call_open)} {body} {gbnf.gbnf_literal(fmt.call_close)}"
        )
        alts.append("calls")
    if choice.text:
        start, rules = gbnf.dfa_rules(_text_dfa(fmt), prefix="t")
        lines.append(f"text ::= {start}")
        lines += rules
        alts.append("text")
    text = "root ::= " + " | ".join(alts) + "\n" + "\n".join(lines) + "\n"
    gbnf.check_gbnf(text)  # an invalid grammar kills a llama.cpp server
    return text


def calls_schema(registry: ToolRegistry, choice: Choice, max_calls: int) -> dict[str, Any]:
    """The JSON Schema of a turn for servers that take JSON Schema but no grammar:
    ``{"answer": text}`` (when the turn may answer) or ``{"tool_calls": [call, ...]}``."""
    branches: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    if choice.text:
        branches.append(closed_object({"answer": {"type": "string", "minLength": 1}}))
    if choice.tools:
        call = for_server(registry.call_schema(choice.tools))
        defs = call.pop("$defs", {})
        items = {"type": "array", "items": call, "minItems": 1, "maxItems": max(1, max_calls)}
        branches.append(closed_object({"tool_calls": items}))
    schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {**schema, "$defs": defs} if defs else schema


def _wire_message(message: dict[str, Any], registry: ToolRegistry) -> dict[str, Any]:
    """A message of the conversation as OpenAI is sent it: an assistant's calls name their tools by
    wire name (the conversation keeps the tools' own names), a tool result goes without its name."""
    if message["role"] == "tool":
        return {k: v for k, v in message.items() if k != "name"}
    calls = message.get("tool_calls")
    if not calls:
        return message
    wired = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            c = {**c, "function": {**fn, "name": registry.wire_name(fn["name"])}}
        wired.append(c)
    return {**message, "tool_calls": wired}


@dataclass
class _Plan:
    """How a grammar server's turn is constrained: ``mode`` "grammar" (the union grammar, sent as
    GBNF), "json" (a JSON Schema of the turn) or "none" (a text-only turn on a server without grammars,
    checked locally only); ``language``: the turn hole's language."""

    mode: str
    language: TurnLanguage


# -- the driver ---------------------------------------------------------------------------------------


class HostedTurns:
    """The agent's turns on an OpenAIBackend (see the module docstring)."""

    @staticmethod
    def system_prompt(agent: Agent) -> str:
        if agent.backend.server.native_tools:
            return agent.instructions  # the tools go as native tools, not in the prompt
        return agent.format.system_prompt(agent.registry, agent.instructions)

    def __init__(self, agent: Agent, backend: HostedBackend, messages: list[dict[str, Any]]):
        self.agent = agent
        self.backend = backend
        self.messages = messages
        """The run's conversation (the loop appends to it): every request is written from it."""
        self.decoder = agent.new_decoder(backend)
        assert self.decoder.usage is not None
        self.usage = self.decoder.usage
        self.native = backend.server.native_tools
        if self.native and backend.endpoint != "chat":
            raise ModelError(f"{backend.name}: tool calls need the chat endpoint (endpoint='chat')")
        self.requests = HostedChat(backend, self.usage)
        self.sampling = self.decoder.sampling
        self._plans: dict[tuple[Choice, int], _Plan] = {}

    async def turn(
        self, turn: int, choice: Choice, budget: int, max_calls: int, out: TurnOutput
    ) -> AsyncIterator[AgentEvent]:
        if not self.native:
            async for ev in self._constrained_turn(turn, choice, budget, max_calls, out):
                yield ev
            return
        hole = self.requests.new_turn(f"turn {turn}")
        params = self._native_params(choice, budget, max_calls, hole)
        answer = await asyncio.to_thread(
            self.requests.send, "chat", params, hole, f"turn {turn} of the agent"
        )
        b = self.backend
        out.tokens = int(getattr(answer.usage, "completion_tokens", 0) or 0) or len(b.encode(answer.text))
        self._read_native(answer, budget, out)
        if out.text:
            yield AgentEvent("token", turn, text=out.text)
        for c in out.calls or []:
            yield AgentEvent(
                "tool_call_started", turn, name=c.name if isinstance(c, ToolCall) else (c.name or "")
            )

    def add_results(self, results: list[ToolResult]) -> None:
        pass  # each request is written from the conversation, where the loop put the results

    # -- OpenAI: native tools ---------------------------------------------------------------------------

    def _native_params(self, choice: Choice, budget: int, max_calls: int, hole: HoleUsage) -> dict[str, Any]:
        registry = self.agent.registry
        messages = [_wire_message(m, registry) for m in self.messages]
        params: dict[str, Any] = {"model": self.backend.model, "messages": messages, **self.sampling}
        params["max_completion_tokens"] = budget
        hole.mechanisms.append("max_tokens")
        if len(registry):
            params["tools"] = registry.to_openai()
            params["tool_choice"] = openai_tool_choice(choice, registry)
            if choice.tools:
                params["parallel_tool_calls"] = max_calls > 1
            hole.mechanisms.insert(0, "tools")
            hole.server = [f"tool_choice {json.dumps(params['tool_choice'])}"]
        hole.local = ["every call validated against its tool's JSON Schema"]
        return params

    def _read_native(self, answer: Any, budget: int, out: TurnOutput) -> None:
        registry = self.agent.registry
        raw_calls = []
        for tc in answer.tool_calls:
            raw = tc.model_dump(exclude_none=True) if hasattr(tc, "model_dump") else dict(tc)
            raw.setdefault("id", new_call_id())
            fn = raw.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):  # the conversation keeps real names
                raw["function"] = {**fn, "name": registry.real_name(fn["name"])}
            raw_calls.append(raw)
        out.text = answer.text
        if not raw_calls:
            return  # a text answer
        if answer.finish == "length":  # a call cut by max_completion_tokens: never run
            out.truncated = registry.truncated(json.dumps(raw_calls), budget)
            return
        entries: list[ToolCall | ToolResult] = []
        for raw in raw_calls:
            parsed = registry.parse_openai(raw)
            if isinstance(parsed, ToolResult) and parsed.call is None:
                # the result still answers the server's call id
                name = (
                    (raw.get("function") or {}).get("name") if isinstance(raw.get("function"), dict) else None
                )
                parsed.call = ToolCall(str(name or ""), {}, str(raw["id"]))
            entries.append(parsed)
        out.calls = entries
        out.message = {"role": "assistant", "content": answer.text or None, "tool_calls": raw_calls}

    # -- grammar servers --------------------------------------------------------------------------------

    def _plan(self, choice: Choice, max_calls: int) -> _Plan:
        key = (choice, max_calls)
        if key in self._plans:
            return self._plans[key]
        agent, b = self.agent, self.backend
        grammar = turn_grammar(agent.registry, choice, agent.format, max_calls)
        label = "the turn's grammar (answer or tool calls, tool_choice)"
        why = f"flavour {b.flavour} takes no grammar"
        plan = None
        if "grammar" not in b.mechanisms:
            why = "the grammar mechanism is switched off"
        elif b.server.grammar:
            try:
                text = server_grammar(agent.registry, choice, agent.format, max_calls)
                plan = _Plan("grammar", TurnLanguage(grammar, label, gbnf=text))
            except (automata.NotTranslatable, ValueError) as err:
                why = f"the union grammar has no GBNF form ({err})"
                log.info("%s: %s; trying JSON Schema", b.name, why)
        if plan is None and not choice.tools:
            plan = _Plan("none", TurnLanguage(grammar, label))  # a text answer: checked locally only
        if plan is None:
            if "json_schema" not in b.mechanisms:
                raise UnsupportedError(
                    f"{b.name}: the agent's tool calls can't be constrained on this server: {why}, and the "
                    "json_schema mechanism is switched off"
                )
            if not b.server.takes_json(b.endpoint == "chat"):
                raise UnsupportedError(
                    f"{b.name}: the agent's tool calls can't be constrained on this server: {why}, and "
                    f"{b.flavour} takes a JSON Schema on the chat endpoint only (use endpoint='chat')"
                )
            schema = calls_schema(agent.registry, choice, max_calls)
            language = TurnLanguage(
                json.dumps(schema), "the turn's JSON Schema (answer or tool calls)", "json"
            )
            plan = _Plan("json", language)
        self._plans[key] = plan
        return plan

    def _chat(self, plain: list[dict[str, str]]) -> tuple[Any, str | None]:
        """The turn's sequence and the role it follows: on the chat endpoint the server renders the
        messages (the sequence holds no tokens); on completions the chat template is rendered here."""
        b = self.backend
        seq = b.new_sequence()
        if b.endpoint == "chat":
            return seq, plain[-1]["role"] if plain else None
        if not getattr(b.tokenizer, "chat_template", None):
            raise ModelError(
                f"{b.name}: the completions endpoint needs the model's chat template here (pass "
                "tokenizer=, or use endpoint='chat')"
            )
        return seq, render(b, seq, plain)

    async def _constrained_turn(
        self, turn: int, choice: Choice, budget: int, max_calls: int, out: TurnOutput
    ) -> AsyncIterator[AgentEvent]:
        agent, registry = self.agent, self.agent.registry
        plan = self._plan(choice, max_calls)
        plain = agent.plain_messages(self.messages)
        seq, role = await asyncio.to_thread(self._chat, plain)
        gen = Generation(self.backend, seq, role, plan.language, budget, self.decoder, messages=plain)
        async for piece in gen.tokens():
            yield AgentEvent("token", turn, text=piece)
            for name in gen.new_call_names():
                yield AgentEvent("tool_call_started", turn, name=name)
        value = gen.value
        hole = self.usage.holes[-1]
        hole.name = f"turn {turn}"
        hole.local.append("every call validated against its tool's JSON Schema")
        out.tokens = hole.completion_tokens or value.tokens
        if not value.complete and value.budget_spent:
            out.truncated = registry.truncated(value.text, budget)
            return
        if not value.complete:  # the server's answers broke the grammar, and repairs did not help
            log.warning("%s: turn %d: no valid answer: %s", self.backend.name, turn, value.error)
            out.message = {"role": "assistant", "content": value.text}
            why = "the answer broke the turn's grammar: answer in plain text, or call tools as instructed"
            out.calls = [registry.error_result(None, "invalid_call", why, raw=value.error)]
            return
        if plan.mode == "json":
            self._read_json(value.text, out)
            return
        out.text = value.text
        calls = agent.parse_calls(value.text)
        out.calls = list(calls) if calls is not None else None

    def _read_json(self, text: str, out: TurnOutput) -> None:
        """A turn valid under ``calls_schema``: ``{"answer": text}``, or calls (each still validated
        against its tool's schema by the registry before it runs)."""
        obj = json.loads(text)
        if "answer" in obj:
            out.text = obj["answer"]
            return
        out.text = text
        out.calls = [self.agent.registry.parse_call(c) for c in obj["tool_calls"]]
        if any(isinstance(c, ToolResult) for c in out.calls):
            out.message = {"role": "assistant", "content": text}

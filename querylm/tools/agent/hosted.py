"""The agent's turns on a hosted model (an OpenAIBackend): one chat-completions request per turn, sent
through the runtime (``runtime.turn.HostedChat``: the backend's client, its retries and the run's usage
accounting).

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

The answer of a grammar server is validated again with the local llguidance matcher; an answer that
breaks the grammar (the server ignored it) is not trusted: calls that can be read are still validated
one by one, the rest come back to the model as an error. A call cut by ``max_tokens`` is never run.

Turns are not streamed: a turn's text arrives as one ``token`` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...constraints import automata, gbnf, regex
from ...constraints.lang import And, Grammar, Not, Term, to_grammar
from ...constraints.matcher import PrefixMatcher
from ...constraints.schema import closed_object, for_server
from ...errors import ModelError, UnsupportedError
from ...runtime.turn import HoleUsage, HostedBackend, HostedChat
from ..registry import ToolCall, ToolRegistry, ToolResult, json_fault, new_call_id
from .turns import CALL_START, AgentEvent, Choice, ToolFormat, TurnOutput, turn_grammar

if TYPE_CHECKING:
    from . import Agent

log = logging.getLogger("querylm.agent")


# -- tool_choice and grammars in the forms servers take ---------------------------------------------------


def openai_tool_choice(choice: Choice, registry: ToolRegistry) -> str | dict[str, Any]:
    """A resolved tool_choice as OpenAI's ``tool_choice``: "auto", "required", "none", a named function,
    or ``allowed_tools`` for a subset (all the tools are still sent: the list stays cacheable)."""
    if not choice.tools:
        return "none"
    if set(choice.tools) == set(registry.names):
        return "auto" if choice.text else "required"
    if len(choice.tools) == 1 and not choice.text:
        return {"type": "function", "function": {"name": choice.tools[0]}}
    return {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "auto" if choice.text else "required",
            "tools": [{"type": "function", "function": {"name": n}} for n in choice.tools],
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


@dataclass
class _Plan:
    """How a grammar server's turn is constrained: ``mode`` "grammar" (``payload`` is GBNF), "json"
    (a JSON Schema) or "none" (a text-only turn on a server without grammars); ``local``: the
    llguidance grammars the answer is validated with."""

    mode: str
    payload: Any
    local: list[str]


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
        self.requests = HostedChat(backend)
        self.usage = self.requests.usage
        self.native = backend.server.native_tools
        if self.native and backend.endpoint != "chat":
            raise ModelError(f"{backend.name}: tool calls need the chat endpoint (endpoint='chat')")
        self.sampling: dict[str, Any] = {"temperature": float(agent.temperature)}
        if agent.seed is not None:
            self.sampling["seed"] = int(agent.seed)
        self._plans: dict[tuple[Choice, int], _Plan] = {}

    async def turn(
        self, turn: int, choice: Choice, budget: int, max_calls: int, out: TurnOutput
    ) -> AsyncIterator[AgentEvent]:
        b = self.backend
        hole = self.requests.new_turn(f"turn {turn}")
        if self.native:
            kind, params, plan = "chat", self._native_params(choice, budget, max_calls, hole), None
        else:
            plan = self._plan(choice, max_calls)
            kind, params = self._constrained_params(plan, budget, hole)
        answer = await asyncio.to_thread(self.requests.send, kind, params, hole, f"turn {turn} of the agent")
        out.tokens = int(getattr(answer.usage, "completion_tokens", 0) or 0) or len(b.encode(answer.text))
        if plan is None:
            self._read_native(answer, budget, out)
        else:
            self._read_constrained(plan, answer, budget, out, hole)
        if out.text:
            yield AgentEvent("token", turn, text=out.text)
        if out.calls is not None and self.native:
            names = [c.name if isinstance(c, ToolCall) else (c.name or "") for c in out.calls]
        else:
            names = CALL_START.findall(out.text)
        for name in names:
            yield AgentEvent("tool_call_started", turn, name=name)

    def add_results(self, results: list[ToolResult]) -> None:
        pass  # each request is written from the conversation, where the loop put the results

    # -- OpenAI: native tools ---------------------------------------------------------------------------

    def _native_params(self, choice: Choice, budget: int, max_calls: int, hole: HoleUsage) -> dict[str, Any]:
        registry = self.agent.registry
        messages = [
            {k: v for k, v in m.items() if not (m["role"] == "tool" and k == "name")} for m in self.messages
        ]
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
        local = [
            to_grammar(
                Grammar("lark", turn_grammar(agent.registry, choice, agent.format, max_calls), "turn"), [], []
            )
        ]
        why = f"flavour {b.flavour} takes no grammar"
        plan = None
        if "grammar" not in b.mechanisms:
            why = "the grammar mechanism is switched off"
        elif b.server.grammar:
            try:
                plan = _Plan(
                    "grammar", server_grammar(agent.registry, choice, agent.format, max_calls), local
                )
            except (automata.NotTranslatable, ValueError) as err:
                why = f"the union grammar has no GBNF form ({err})"
                log.info("%s: %s; trying JSON Schema", b.name, why)
        if plan is None and not choice.tools:
            plan = _Plan("none", None, local)  # a text answer: checked locally only
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
            plan = _Plan("json", schema, [to_grammar(Grammar("json", json.dumps(schema), "turn"), [], [])])
        self._plans[key] = plan
        return plan

    def _constrained_params(self, plan: _Plan, budget: int, hole: HoleUsage) -> tuple[str, dict[str, Any]]:
        b = self.backend
        plain = self.agent.plain_messages(self.messages)
        params: dict[str, Any] = {"model": b.model, **self.sampling, "max_tokens": budget}
        if b.endpoint == "chat":
            kind = "chat"
            params["messages"] = plain
        else:
            if not getattr(b.tokenizer, "chat_template", None):
                raise ModelError(
                    f"{b.name}: the completions endpoint needs the model's chat template here (pass "
                    "tokenizer=, or use endpoint='chat')"
                )
            kind = "completions"
            params["prompt"] = b.tokenizer.apply_chat_template(
                plain, tokenize=False, add_generation_prompt=True
            )
        extra: dict[str, Any] = {}
        if plan.mode == "grammar":
            extra.update(b.server.grammar_params(plan.payload, None)[0])
            hole.mechanisms.append("grammar")
            hole.server = ["the turn's grammar (answer or tool calls, tool_choice)"]
        elif plan.mode == "json":
            entries, body = b.server.json_params(plan.payload, "agent_turn", kind == "chat")
            params.update(entries)
            extra.update(body)
            hole.mechanisms.append("json_schema")
            hole.server = ["the turn's JSON Schema (answer or tool calls, tool_choice)"]
        hole.mechanisms.append("max_tokens")
        hole.local = ["the turn's grammar", "every call validated against its tool's JSON Schema"]
        if extra:
            params["extra_body"] = extra
        return kind, params

    def _read_constrained(
        self, plan: _Plan, answer: Any, budget: int, out: TurnOutput, hole: HoleUsage
    ) -> None:
        agent, registry, fmt = self.agent, self.agent.registry, self.agent.format
        text = answer.text
        b = self.backend
        v = PrefixMatcher(b.ll_tokenizer, plan.local, b.encode, b.eos_ids)
        valid = v.feed(text) == text and v.accepting()
        if not valid:
            log.warning(
                "%s: turn answer outside its grammar (%s): %r", self.backend.name, plan.mode, text[:200]
            )
            hole.local.append("the answer broke the turn's grammar")
        if plan.mode == "json":
            self._read_json(text, answer.finish, budget, out)
            return
        if valid:
            out.text = text
            calls = agent.parse_calls(text)
            out.calls = list(calls) if calls is not None else None
            return
        out.text = text
        opening, closing = fmt.call_open.strip(), fmt.call_close.strip()
        stripped = text.strip()
        if stripped and (stripped.startswith(opening) or agent.in_call(text)):
            if answer.finish == "length":
                out.truncated = registry.truncated(text, budget)
                return
            out.message = {"role": "assistant", "content": text}
            if stripped.endswith(closing):
                out.calls = _read_list(registry, "[" + stripped[len(opening) : -len(closing)] + "]", text)
            else:
                out.calls = [
                    registry.error_result(None, "invalid_call", "the tool calls are not closed", raw=text)
                ]
            return
        if text.strip():
            reserved = ", ".join(repr(r) for r in fmt.reserved)
            msg = (
                f"an answer may not start with {reserved}: answer in plain text, or call tools as instructed"
            )
        else:
            msg = "the answer was empty: answer in plain text, or call tools as instructed"
        out.message = {"role": "assistant", "content": text}
        out.calls = [registry.error_result(None, "invalid_call", msg, raw=text)]

    def _read_json(self, text: str, finish: str | None, budget: int, out: TurnOutput) -> None:
        registry = self.agent.registry
        out.text = text
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as err:
            if finish == "length":
                out.truncated = registry.truncated(text, budget)
                return
            out.message = {"role": "assistant", "content": text}
            out.calls = [
                registry.error_result(
                    None, "invalid_json", f"the turn is not valid JSON: {json_fault(err)}", raw=text
                )
            ]
            return
        if isinstance(obj, dict) and isinstance(obj.get("answer"), str):
            out.text = obj["answer"]
            return
        out.message = {"role": "assistant", "content": text}
        if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list) and obj["tool_calls"]:
            out.calls = [registry.parse_call(c) for c in obj["tool_calls"]]
            out.message = None  # valid calls are recorded as tool_calls
            if any(isinstance(c, ToolResult) for c in out.calls):
                out.message = {"role": "assistant", "content": text}
            return
        out.calls = [
            registry.error_result(
                None, "invalid_call", 'expected {"answer": ...} or {"tool_calls": [...]}', raw=text
            )
        ]


def _read_list(registry: ToolRegistry, body: str, raw: str) -> list[ToolCall | ToolResult]:
    try:
        items = json.loads(body)
    except (ValueError, RecursionError) as err:
        why = json_fault(err)
        return [
            registry.error_result(None, "invalid_json", f"the tool calls are not valid JSON: {why}", raw=raw)
        ]
    if not isinstance(items, list) or not items:
        return [registry.error_result(None, "invalid_call", "expected a list of calls", raw=raw)]
    return [registry.parse_call(c) for c in items]

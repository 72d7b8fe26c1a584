"""What every turn of the agent shares, on a local model or a hosted one: the events and the result of
a run, how tools are written into the chat (ToolFormat), tool_choice resolved to a Choice, the union
grammar a turn is generated under, the turn query run in a worker thread (Generation) and what a turn
produced (TurnOutput)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...constraints import regex
from ...runtime.turn import GuideRules, TurnDecoder, TurnLanguage, TurnValue, Usage, run_turn
from ..registry import ToolCall, ToolRegistry, ToolResult
from ..tool import ToolError

TEXT_TURN_TOKENS = 160
"""A turn's budget when nothing bounds it (a text answer, or tools whose schemas are unbounded)."""

EventType = Literal[
    "token", "tool_call_started", "tool_arguments_complete", "tool_result", "turn_end", "final", "error"
]  # fmt: skip
ToolChoice = str | list[str] | tuple[str, ...] | dict[str, Any]
StopReason = Literal["final", "max_turns", "max_tool_calls", "max_tokens", "truncated"]


@dataclass
class AgentEvent:
    """One step of a streamed run. ``token``: ``text`` is the new text; ``tool_call_started``: ``name``
    (the call's arguments are being generated); ``tool_arguments_complete``: ``call``; ``tool_result``:
    ``result``; ``turn_end``: ``text`` is the turn's text; ``final``: ``result`` is the AgentResult;
    ``error``: ``text`` says what ended the run early (a truncated call)."""

    type: EventType
    turn: int
    text: str = ""
    name: str | None = None
    call: ToolCall | None = None
    result: Any = None


@dataclass
class AgentResult:
    output: str
    """The final answer (empty when a budget ended the run before one)."""
    messages: list[dict[str, Any]]
    """The conversation in OpenAI's message format (pass as ``history=`` to continue it)."""
    tool_results: list[ToolResult] = field(default_factory=list)
    turns: int = 0
    tokens: int = 0
    """Tokens generated in all turns."""
    stopped_by: StopReason = "final"
    usage: Usage | None = None
    """Hosted models: requests, retries and billed tokens of the run (one ``holes`` entry per turn,
    with the mechanism that constrained it); None on local models."""

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [r.call for r in self.tool_results if r.call is not None]


# -- how tools are written into the chat -------------------------------------------------------------------

SMOLLM2_SYSTEM = """You are an expert in composing functions. You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the functions can be used, point it out and refuse to answer.
If the given question lacks the parameters required by the function, also point it out.
You have access to the following tools:
<tools>{tools}</tools>
The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. If no function call is needed, answer in plain text.
<tool_call>[
{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},
(more tool calls as required)
]</tool_call>"""

_PY_TYPES = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool",
    "array": "list",
    "object": "dict",
}


def apigen_listing(registry: ToolRegistry) -> str:
    """Tools as in the APIGen data SmolLM2 was tuned on: ``{"name", "description", "parameters":
    {arg: {"description", "type": "str", "default"}}}``, shorter than full JSON Schemas (the grammar
    carries the exact schema; the listing only has to tell the model what each tool is for)."""
    out = []
    for t in registry:
        params = {}
        for name, sub in t.parameters.get("properties", {}).items():
            entry: dict[str, Any] = {"description": sub.get("description", "")}
            kind = sub.get("type")
            if isinstance(kind, str):
                entry["type"] = _PY_TYPES.get(kind, kind)
            elif "enum" in sub:
                entry["type"] = "str"
                entry["description"] = (
                    entry["description"] + " One of: " + ", ".join(map(str, sub["enum"]))
                ).strip()
            if "default" in sub:
                entry["default"] = sub["default"]
            params[name] = entry
        out.append({"name": t.name, "description": t.description, "parameters": params})
    return json.dumps(out, ensure_ascii=False)


@dataclass
class ToolFormat:
    """How tools, calls and results are written for a model whose chat template has no tools section."""

    system: str = SMOLLM2_SYSTEM
    """The system prompt's tools part; ``{tools}`` is replaced by ``listing(registry)``."""
    listing: Callable[[ToolRegistry], str] = apigen_listing
    reserved: tuple[str, ...] = ("<",)
    """A text answer may not start with these, after any whitespace: "answer" and "call" are told apart
    by the first character, and a small model can't answer by imitating a tool's result in made-up
    tags (``<tool_response>...``, ``<user_response>...``)."""
    call_open: str = "<tool_call>[\n"
    call_sep: str = ",\n"
    call_close: str = "\n]</tool_call>"
    result_role: str = "user"
    result_open: str = "<tool_response>\n"
    result_close: str = "\n</tool_response>"
    string_excludes: tuple[str, ...] = ("</tool_call>",)
    """Text a call's string values may not contain: the call's closing tag, which would end the call
    for any reader that finds calls by their tags (``decoding/guide.py``)."""

    def guide_rules(self) -> GuideRules:
        """The guide of a turn's calls in this format: JSON from the opening tag on."""
        return GuideRules(json_after=self.call_open, excluded=self.string_excludes)

    def system_prompt(self, registry: ToolRegistry, instructions: str) -> str:
        text = self.system.replace("{tools}", self.listing(registry)).replace("{{", "{").replace("}}", "}")
        return f"{text}\n\n{instructions}".strip() if instructions else text

    def calls_text(self, calls: list[ToolCall]) -> str:
        body = self.call_sep.join(json.dumps(c.to_json(), ensure_ascii=False) for c in calls)
        return self.call_open + body + self.call_close

    def results_text(self, results: list[ToolResult]) -> str:
        if len(results) == 1:
            body = results[0].content
        else:
            body = json.dumps([{"name": r.name, "content": r.content} for r in results], ensure_ascii=False)
        return self.result_open + body + self.result_close


# -- tool_choice ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """A resolved tool_choice: may the turn answer in text, and which tools may it call."""

    text: bool
    tools: tuple[str, ...]


def forces_call(choice: Choice) -> bool:
    """Whether the choice obliges the turn to call a tool (``"required"``, a name)."""
    return not choice.text and bool(choice.tools)


def resolve_choice(choice: ToolChoice, registry: ToolRegistry) -> Choice:
    """``choice`` (the forms in the agent's docstring) as a Choice; a form it can't be read as, or a
    tool it names that the registry lacks, is a ToolError."""
    names = tuple(registry.names)
    if isinstance(choice, dict) and choice.get("type") == "function":  # OpenAI's named form
        return Choice(False, _known([(choice.get("function") or {}).get("name")], registry))
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        inner = choice.get("allowed_tools") or {}
        listed = [(t.get("function") or {}).get("name") for t in inner.get("tools", [])]
        choice = {"mode": inner.get("mode", "auto"), "tools": listed}
    if isinstance(choice, dict):
        mode = choice.get("mode", "auto")
        tools = choice.get("tools", names)
        if not isinstance(tools, (list, tuple)) or mode not in ("auto", "required"):
            raise ToolError(
                f'tool_choice {choice!r}: a dict is {{"mode": "auto" | "required", "tools": [names]}}'
            )
        return Choice(mode == "auto", _known(tools, registry))
    if isinstance(choice, (list, tuple)):
        return Choice(True, _known(choice, registry))
    if choice == "auto":
        return Choice(True, names)
    if choice == "required":
        return Choice(False, names)
    if choice == "none":
        return Choice(True, ())
    if isinstance(choice, str):
        return Choice(False, _known([choice], registry))
    raise ToolError(
        f"unknown tool_choice {choice!r}: auto, required, none, a tool's name, a list of names, or a dict"
    )


def _known(names: Any, registry: ToolRegistry) -> tuple[str, ...]:
    unknown = [n for n in names if n not in registry]
    if unknown:
        known = ", ".join(registry.names) or "none"
        listed = ", ".join(map(repr, unknown))
        raise ToolError(f"tool_choice names unknown tool{'s' * (len(unknown) > 1)} {listed} (known: {known})")
    return tuple(names)


def turn_grammar(registry: ToolRegistry, choice: Choice, fmt: ToolFormat, max_calls: int) -> str:
    """The Lark grammar of one assistant turn: a text answer that does not start a call, or
    ``call_open call (call_sep call)* call_close`` with at most ``max_calls`` calls of ``choice.tools``."""
    lines = []
    alts = []
    if choice.tools:
        lines.append(f"call: %json {json.dumps(registry.call_schema(choice.tools))}")
        body = "call"
        for _ in range(max(1, max_calls) - 1):
            body = f"call (SEP {body})?"
        lines += [
            f"OPEN: /{regex.literal(fmt.call_open)}/",
            f"SEP: /{regex.literal(fmt.call_sep)}/",
            f"CLOSE: /{regex.literal(fmt.call_close)}/",
            f"calls: OPEN {body} CLOSE",
        ]
        alts.append("calls")
    if choice.text:
        lines += [
            "SOME: /(?s:.+)/",
            f"STARTS_CALL: /{regex.WS}*{regex.alternation(list(fmt.reserved) or [fmt.call_open])}(?s:.*)/",
            "TEXT: SOME & ~STARTS_CALL",
        ]
        alts.append("TEXT")
    return "start: " + " | ".join(alts) + "\n" + "\n".join(lines) + "\n"


# -- one turn, per backend -------------------------------------------------------------------------------


@dataclass
class TurnOutput:
    """What a driver's turn produced: a text answer (``calls`` None), calls (a ToolCall each, or the
    error result of one the model got wrong), or a call cut by the budget (``truncated``)."""

    text: str = ""
    calls: list[ToolCall | ToolResult] | None = None
    tokens: int = 0
    truncated: ToolResult | None = None
    message: dict[str, Any] | None = None
    """The assistant message to record, when the driver has its own (a hosted model's tool_calls)."""


CALL_START = re.compile(r'\{"name": "([^"\\]+)", "arguments": ')
"""Where a call starts in a turn's text, with the tool's name (which ``tool.NAME_RE`` keeps free of
quotes and backslashes, so JSON writes it as it is): streamed as ``tool_call_started``."""


class Generation:
    """One assistant turn (``runtime.turn.run_turn``) run in a worker thread (the model, the mask
    engine and a hosted API's requests are blocking), its text handed to the event loop as it comes:
    token by token on a local model, as each answer is validated on a hosted one."""

    def __init__(
        self,
        backend: Any,
        seq: Any,
        role: str | None,
        language: TurnLanguage | str,
        budget: int,
        decoder: TurnDecoder,
        names: tuple[str, ...] = (),
        messages: Iterable[Mapping[str, str]] | None = None,
        guide: GuideRules | None = None,
    ):
        self.backend, self.seq, self.role = backend, seq, role
        self.guide = guide
        self.language, self.budget, self.decoder, self.names = language, budget, decoder, names
        self.messages = messages
        self.value = TurnValue("", 0, True)
        self.streamed = ""
        self._seen_calls = 0

    async def tokens(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def on_token(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        def work() -> None:
            try:
                self.value = run_turn(
                    self.backend,
                    self.seq,
                    self.role,
                    self.language,
                    budget=self.budget,
                    decoder=self.decoder,
                    names=self.names,
                    on_token=on_token,
                    messages=self.messages,
                    guide=self.guide,
                )
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        while True:
            piece = await queue.get()
            if piece is None:
                break
            self.streamed += piece
            yield piece
        await task

    def new_call_names(self) -> list[str]:
        found = CALL_START.findall(self.streamed)
        new = found[self._seen_calls :]
        self._seen_calls = len(found)
        return new

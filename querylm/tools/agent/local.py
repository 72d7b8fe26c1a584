"""The agent's turns on a local model: each is a query on the runtime (``runtime.turn.run_turn``: a turn
hole under ``turn_grammar``) on one KV-cached chat sequence, with the tool's name picked by scoring the
allowed names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ...runtime.chat import render
from ..registry import ToolResult
from .turns import AgentEvent, Choice, Generation, TurnOutput, turn_grammar

if TYPE_CHECKING:
    from . import Agent


class LocalTurns:
    """Turns of a local model: each run as a turn query under ``turn_grammar`` on one KV-cached chat
    sequence that the tool results are appended to."""

    usage = None

    @staticmethod
    def system_prompt(agent: Agent) -> str:
        return agent.format.system_prompt(agent.registry, agent.instructions)

    def __init__(self, agent: Agent, backend: Any, messages: list[dict[str, Any]]):
        self.agent = agent
        self.backend = backend
        self.seq, self.role = agent.start_sequence(messages)
        self.decoder = agent.new_decoder(backend)

    async def turn(
        self, turn: int, choice: Choice, budget: int, max_calls: int, out: TurnOutput
    ) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        grammar = turn_grammar(agent.registry, choice, agent.format, max_calls)
        names = choice.tools if agent.score_tool_names else ()
        guide = agent.format.guide_rules() if agent.guide_values else None
        gen = Generation(self.backend, self.seq, self.role, grammar, budget, self.decoder, names, guide=guide)
        self.role = "assistant"
        async for piece in gen.tokens():
            yield AgentEvent("token", turn, text=piece)
            for name in gen.new_call_names():
                yield AgentEvent("tool_call_started", turn, name=name)
        value = gen.value
        out.tokens = value.tokens
        text, complete = value.text, value.complete
        if not complete and not agent.in_call(text):
            # A text answer cut by the budget inside a multi-byte character: keep the whole ones.
            text, complete = text.rstrip("\ufffd"), True
        if not complete:
            out.truncated = agent.registry.truncated(text, budget)
            return
        out.text = text
        calls = agent.parse_calls(text)
        out.calls = list(calls) if calls is not None else None

    def add_results(self, results: list[ToolResult]) -> None:
        fmt = self.agent.format
        message = {"role": fmt.result_role, "content": fmt.results_text(results)}
        self.role = render(self.backend, self.seq, [message], self.role)

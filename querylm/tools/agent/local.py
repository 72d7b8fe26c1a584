"""The agent's turns on a local model: each is a query on the runtime (``runtime.turn.run_turn``: a turn
hole under ``turn_grammar``) on one KV-cached chat sequence, with the tool's name picked by scoring the
allowed names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ...runtime.chat import render
from ...runtime.turn import Chooser, TurnValue, run_turn
from ..registry import ToolResult
from .turns import CALL_START, AgentEvent, Choice, TurnOutput, turn_grammar

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
        self.chooser = agent.new_chooser()

    async def turn(
        self, turn: int, choice: Choice, budget: int, max_calls: int, out: TurnOutput
    ) -> AsyncIterator[AgentEvent]:
        agent = self.agent
        grammar = turn_grammar(agent.registry, choice, agent.format, max_calls)
        names = choice.tools if agent.score_tool_names else ()
        gen = _Generation(self.backend, self.seq, self.role, grammar, budget, self.chooser, names)
        self.role = "assistant"
        async for piece in gen.tokens():
            yield AgentEvent("token", turn, text=piece)
            for name in gen.new_call_names():
                yield AgentEvent("tool_call_started", turn, name=name)
        out.tokens = gen.count
        if not gen.complete and not agent.in_call(gen.text):
            # A text answer cut by the budget inside a multi-byte character: keep the whole ones.
            gen.text, gen.complete = gen.text.rstrip("\ufffd"), True
        if not gen.complete:
            out.truncated = agent.registry.truncated(gen.text, budget)
            return
        out.text = gen.text
        calls = agent.parse_calls(gen.text)
        out.calls = list(calls) if calls is not None else None

    def add_results(self, results: list[ToolResult]) -> None:
        fmt = self.agent.format
        message = {"role": fmt.result_role, "content": fmt.results_text(results)}
        self.role = render(self.backend, self.seq, [message], self.role)


class _Generation:
    """One assistant turn run in a worker thread (the model and the mask engine are blocking), its
    tokens handed to the event loop as they come."""

    def __init__(
        self,
        backend: Any,
        seq: Any,
        role: str | None,
        grammar: str,
        budget: int,
        chooser: Chooser,
        names: tuple[str, ...],
    ):
        self.backend, self.seq, self.role = backend, seq, role
        self.grammar, self.budget, self.chooser, self.names = grammar, budget, chooser, names
        self.text = ""
        self.streamed = ""
        self.count = 0
        self.complete = True
        self._seen_calls = 0

    async def tokens(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def on_token(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        def work() -> None:
            value: TurnValue | None = None
            try:
                value = run_turn(
                    self.backend,
                    self.seq,
                    self.role,
                    self.grammar,
                    budget=self.budget,
                    chooser=self.chooser,
                    names=self.names,
                    on_token=on_token,
                )
            finally:
                if value is not None:
                    self.text, self.count, self.complete = value.text, value.tokens, value.complete
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

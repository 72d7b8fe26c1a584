"""The agent's turns on a local model: generated token by token under ``turn_grammar`` on one KV-cached
sequence, with the tool's name picked by scoring the allowed names (NameScoringChooser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ...constraints.lang import Grammar
from ...constraints.where import HoleConstraint
from ...decoding.choose import Chooser
from ...decoding.hole import decode_hole
from ...errors import ConstraintError
from ..registry import ToolResult
from .turns import CALL_START, AgentEvent, Choice, TurnOutput, turn_grammar

if TYPE_CHECKING:
    from . import Agent


class LocalTurns:
    """Turns of a local model: generated token by token under ``turn_grammar`` on one KV-cached
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
        agent, backend, seq = self.agent, self.backend, self.seq
        grammar = turn_grammar(agent.registry, choice, agent.format, max_calls)
        seq.append(backend.encode(backend.chat_transition(self.role, "assistant"), special=True))
        self.role = "assistant"
        turn_chooser: Chooser | NameScoringChooser = self.chooser
        if agent.score_tool_names and len(choice.tools) > 1:
            turn_chooser = NameScoringChooser(self.chooser, backend, seq, choice.tools)
        gen = _Generation(backend, seq, grammar, budget, turn_chooser)
        async for piece in gen.tokens():
            yield AgentEvent("token", turn, text=piece)
            for name in gen.new_call_names():
                yield AgentEvent("tool_call_started", turn, name=name)
        out.tokens = gen.count
        if gen.error is not None and not agent.in_call(gen.text):
            # A text answer cut by the budget inside a multi-byte character: keep the whole ones.
            gen.text, gen.error = gen.text.rstrip("\ufffd"), None
        if gen.error is not None:
            out.truncated = agent.registry.truncated(gen.text, budget)
            return
        out.text = gen.text
        calls = agent.parse_calls(gen.text)
        out.calls = list(calls) if calls is not None else None

    def add_results(self, results: list[ToolResult]) -> None:
        fmt, backend = self.agent.format, self.backend
        self.seq.append(backend.encode(backend.chat_transition(self.role, fmt.result_role), special=True))
        self.seq.append(backend.encode(fmt.results_text(results)))
        self.role = fmt.result_role


class NameScoringChooser:
    """Picks a call's tool by scoring every allowed name, then decodes the rest with ``inner``.

    Greedy decoding commits to a tool on the first token where names differ, seeing only that token;
    at the start of a call's name this scores each allowed name in full (the sum of its tokens' log
    probabilities, with the closing quote so that a name must end there) and spells out the best.
    Costs one forward pass per name token, once per call."""

    def __init__(self, inner: Chooser, backend: Any, seq: Any, names: tuple[str, ...]):
        self.inner = inner
        self.backend = backend
        self.seq = seq
        self.names = names
        self.start = len(seq.ids)
        self.plan: list[int] = []
        self.plan_at = 0  # where in the sequence the plan starts
        self.scores: dict[str, float] = {}

    def choose(self, logits: Any, allowed: Any, end: float | None = None) -> int:
        # The decoder does not ask about forced tokens, so the plan is followed by position: the tokens
        # since it began must be its prefix.
        done = self.seq.ids[self.plan_at :]
        if self.plan and len(done) < len(self.plan) and self.plan[: len(done)] == done:
            token = self.plan[len(done)]
            if int(token) in allowed:
                return int(token)
        self.plan = []
        if len(self.names) > 1:
            text = self.backend.decode(self.seq.ids[self.start :])
            if text.endswith('{"name": "'):
                best = self._best_name()
                self.plan, self.plan_at = self.backend.encode(best + '"'), len(self.seq.ids)
                if int(self.plan[0]) in allowed:
                    return int(self.plan[0])
                self.plan = []
        return self.inner.choose(logits, allowed, end)

    def _best_name(self) -> str:
        import numpy as np

        scores = {}
        for name in self.names:
            total = 0.0
            branch = self.seq.fork()
            for token in self.backend.encode(name + '"'):
                row = branch.logits().astype(np.float64)
                top = row.max()
                total += float(row[token] - top - np.log(np.exp(row - top).sum()))
                branch.append([token])
            scores[name] = total
        self.scores = scores
        return max(scores, key=scores.__getitem__)


class _Generation:
    """One assistant turn decoded in a worker thread (the model and the mask engine are blocking), its
    tokens handed to the event loop as they come."""

    def __init__(self, backend: Any, seq: Any, grammar: str, budget: int, chooser: Any):
        self.backend = backend
        self.seq = seq
        self.hc = HoleConstraint("turn", cfgs=[Grammar("lark", grammar, "assistant turn")], max_tokens=budget)
        self.chooser = chooser
        self.text = ""
        self.streamed = ""
        self.count = 0
        self.error: ConstraintError | None = None
        self._seen_calls = 0

    async def tokens(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        start = len(self.seq.ids)

        def on_token(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        def work() -> None:
            try:
                out = decode_hole(
                    self.backend,
                    self.seq,
                    self.hc,
                    self.chooser,
                    max_len=1 << 30,
                    position=None,
                    on_token=on_token,
                )
                self.text = out.text
            except ConstraintError as err:  # the budget ran out inside a call: never a half call
                self.error = err
                self.text = self.backend.decode(self.seq.ids[start:])
            finally:
                self.count = len(self.seq.ids) - start
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

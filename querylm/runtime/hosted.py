"""Hosted runs: one sample's holes filled by the hosted hole decoder (``HostedHoles``), and ``sample(n)``'s
samples side by side (``hosted_samples``), so that samples which need the same request (the first hole's,
whose prompt every sample shares) get it as one request with ``n`` choices where the server takes ``n``.

Each choice is then that sample's answer alone: validated, cut and continued by its own hole decoder
exactly as a single answer is (``decoding/hosted.py``); only the requests are shared.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..backends.openai import OpenAIBackend
from ..decoding.hole import HoleOutput
from ..decoding.hosted import Ask, HoleRequest, HostedDecode, HostedValue, send_grouped
from ..language.ir import DecoderSpec
from .execute import Execution, PendingHole


class HostedHoles:
    """The holes of one hosted run (one sample): each pending hole becomes a HoleRequest for the hosted
    decoder (``decoding/hosted.py``, which never sees an execution), and its value goes back into the
    execution's sequence and score. ``usage`` is what the run cost."""

    def __init__(self, backend: OpenAIBackend, spec: DecoderSpec, index: int):
        self.decoder = HOSTED_DECODERS.get(type(backend), HostedDecode)(backend, spec, index)
        self.usage = self.decoder.usage
        backend.begin_run(self.usage)

    def __call__(self, ex: Execution, pending: PendingHole) -> HoleOutput:
        return self.take(ex, self.decoder.fill(self.request(ex, pending)))

    def request(self, ex: Execution, pending: PendingHole) -> HoleRequest:
        return HoleRequest(
            hc=pending.hc,
            position=pending.hole.position,
            prompt_ids=list(ex.seq.ids[: pending.start]),
            used=len(ex.seq.ids),
            max_len=ex.max_len,
            messages=[dict(m) for m in ex.messages],
            prompt="".join(ex.prompt),
            emit=ex.emit,
        )

    def take(self, ex: Execution, value: HostedValue) -> HoleOutput:
        """The decoded value into ``ex``'s sequence and score; the output for ``ex.finish``."""
        ex.score += value.logprob
        ex.seq.append(value.output.tokens)
        return value.output


HOSTED_DECODERS: dict[type, type[HostedDecode]] = {}
"""A hosted backend class whose holes another decoder fills (the naive arm of benchmarks/hosted.py)."""


class _Sample:
    """One sample's place: its execution, its holes' decoder, and the hole it is filling."""

    def __init__(self, ex: Execution, holes: HostedHoles):
        self.ex, self.holes = ex, holes
        self.pending: PendingHole | None = None
        self.steps: Generator[Ask, Any, HostedValue] | None = None
        self.ask: Ask | None = None

    def next_ask(self) -> None:
        """Run on to the next request this sample needs (``ask``), through the holes that need none;
        ``ask`` stays None once the query has finished."""
        self.ask = None
        while (pending := self.ex.advance()) is not None:
            self.pending = pending
            self.steps = self.holes.decoder.steps(self.holes.request(self.ex, pending))
            try:
                self.ask = next(self.steps)
                return
            except StopIteration as done:
                self.close(done.value)

    def answer(self, answer: Any) -> None:
        assert self.steps is not None
        try:
            self.ask = self.steps.send(answer)
        except StopIteration as done:
            self.close(done.value)
            self.next_ask()

    def close(self, value: HostedValue) -> None:
        assert self.pending is not None
        self.ex.finish(self.pending, self.holes.take(self.ex, value))
        self.steps = None


def hosted_samples(
    roots: list[Execution], backend: OpenAIBackend, spec: DecoderSpec, inputs: dict[str, Any]
) -> list[HostedHoles]:
    """Run the (unstarted) executions ``roots``, sample i with its own HostedHoles (returned, for the
    usage), side by side: each round, every sample's next request is gathered and equal ones are sent
    as one (``send_grouped``); a sample the server gave no choice asks again the next round. A hole
    that can't be filled fails the run, as in ``run``."""
    samples = []
    for i, ex in enumerate(roots):
        holes = HostedHoles(backend, spec, i)
        ex.decode_nested = holes
        ex.start(inputs)
        samples.append(_Sample(ex, holes))
    for s in samples:
        s.next_ask()
    while waiting := [s for s in samples if s.ask is not None]:
        answers = send_grouped(backend, [s.ask for s in waiting if s.ask is not None])
        for s, answer in zip(waiting, answers, strict=True):
            if answer is not None:
                s.answer(answer)
    return [s.holes for s in samples]

"""A chat on one backend sequence: role transitions from the model's chat template, messages rendered
into the sequence, and the prefix-cache fork of a conversation's fixed start. Queries (role tags,
``runtime/execute.py``) and agent turns (``tools/agent/``) render through this one place, so a role
is written the same way wherever it comes from.

Role transitions are the template's special tokens; contents are always encoded as plain text, so a
message can never smuggle a special token (``<|im_start|>``) into the prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..backends.base import Backend, Sequence


def open_role(backend: Backend, seq: Sequence, prev: str | None, role: str) -> None:
    """Append the chat template's transition from the message of role ``prev`` (None: the start of the
    conversation) to a new message of ``role``."""
    seq.append(backend.encode(backend.chat_transition(prev, role), special=True))


def render(
    backend: Backend, seq: Sequence, messages: Iterable[Mapping[str, str]], role: str | None = None
) -> str | None:
    """Append ``messages`` (plain role/content dicts) after a message of ``role``; returns the role of the
    last one (the role the next transition starts from)."""
    for m in messages:
        open_role(backend, seq, role, m["role"])
        seq.append(backend.encode(m["content"]))
        role = m["role"]
    return role


class ChatPrefix:
    """The sequence of a conversation's first message (its system prompt), rendered and its KV filled
    once, then forked for each conversation that starts with it: an agent's tools section is the longest
    part of every prompt, and the same in every run."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.cached: tuple[str, Sequence] | None = None

    def start(self, messages: list[dict[str, str]]) -> tuple[Sequence, str | None]:
        """A new sequence holding ``messages`` (plain role/content dicts), and the role it ends in; a
        leading system message comes from the cache."""
        backend = self.backend
        first = messages[0] if messages and messages[0]["role"] == "system" else None
        if first is None:
            seq = backend.new_sequence()
            return seq, render(backend, seq, messages)
        key = first["content"]
        if self.cached is None or self.cached[0] != key:
            seq = backend.new_sequence()
            render(backend, seq, [first])
            seq.logits()  # fill the cache once
            self.cached = (key, seq)
        seq = self.cached[1].fork()
        return seq, render(backend, seq, messages[1:], role="system")

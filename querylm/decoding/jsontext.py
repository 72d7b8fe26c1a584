"""Where generated JSON text stands: which object, array, string or number the next character is in.

The mask engine knows this, but only as its parser's state; a guide (``decoding/guide.py``) that
chooses tokens by what they do to a JSON value (end a string, close an object) reads it from the text,
which the grammar has kept valid JSON. The scan is incremental (text only grows while a value is
decoded) and copies cheaply, so what a token would do is found by scanning its text on a copy.
Text outside any object or array (a tool-call format's tags and separators) is skipped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

NUMBER_CHARS = frozenset("0123456789+-.eE")


@dataclass
class Frame:
    """An open object or array: ``start`` is the offset just after its bracket; ``state`` what comes
    next: "key" (a key or the close), "colon", "value", "after" (a separator or the close)."""

    kind: str
    start: int
    state: str
    keys: list[str] = field(default_factory=list)
    closing: bool = False
    """Marked by the guide: the array repeats itself, so it is closed where its grammar allows."""


@dataclass
class Event:
    """What a character did to an object whose value had just ended (``JsonScan.feed``): "," (another
    key follows) or "}" (it closed), at ``offset`` in the text; ``depth``: the object's frame index."""

    kind: str
    offset: int
    depth: int


class JsonScan:
    """The state of JSON text fed to it so far."""

    def __init__(self, start: int = 0):
        self.pos = start
        self.stack: list[Frame] = []
        self.string: int | None = None
        """Where the open string's content starts, None outside a string."""
        self.is_key = False
        self.escaped = False
        self.number: int | None = None
        """Where the number being written starts, None outside a number."""
        self.literal = False
        self.key = ""

    def copy(self) -> JsonScan:
        return copy.deepcopy(self)

    def feed(self, text: str, end: int | None = None) -> list[Event]:
        """Scan ``text`` from where the last call stopped to ``end``; the events of objects whose value
        ended and which then took a separator or closed."""
        events: list[Event] = []
        stop = len(text) if end is None else end
        while self.pos < stop:
            self._char(text, self.pos, events)
            self.pos += 1
        return events

    @property
    def top(self) -> Frame | None:
        return self.stack[-1] if self.stack else None

    def in_value_string(self) -> bool:
        return self.string is not None and not self.is_key

    def _value_ended(self) -> None:
        if self.stack:
            self.stack[-1].state = "after"

    def _char(self, text: str, i: int, events: list[Event]) -> None:
        c = text[i]
        if self.string is not None:
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                if self.is_key and self.stack:
                    self.key = text[self.string : i]
                    self.stack[-1].keys.append(self.key)
                    self.stack[-1].state = "colon"
                else:
                    self._value_ended()
                self.string = None
            return
        if self.number is not None:
            if c in NUMBER_CHARS:
                return
            self.number = None
            self._value_ended()
        if self.literal:
            if c.isalpha():
                return
            self.literal = False
            self._value_ended()
        top = self.top
        if c in "{[":
            if top is None or top.state == "value":
                self.stack.append(
                    Frame("object" if c == "{" else "array", i + 1, "key" if c == "{" else "value")
                )
            return
        if top is None:  # text between top-level values: a format's tags
            return
        if c in "}]":
            if top.kind == "object" and top.state == "after":
                events.append(Event("}", i, len(self.stack) - 1))
            self.stack.pop()
            self._value_ended()
        elif c == ",":
            if top.kind == "object" and top.state == "after":
                events.append(Event(",", i, len(self.stack) - 1))
            top.state = "key" if top.kind == "object" else "value"
        elif c == ":":
            top.state = "value"
        elif c == '"':
            self.string, self.is_key = i + 1, top.kind == "object" and top.state == "key"
        elif top.state == "value" and (c.isdigit() or c == "-"):
            self.number = i
        elif top.state == "value" and c.isalpha():
            self.literal = True

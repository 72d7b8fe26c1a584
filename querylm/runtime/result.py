"""What running a query returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class HoleRecord:
    """One filled hole, in the order holes were filled (a hole in a loop appears once per pass)."""

    name: str
    value: Any
    text: str
    tokens: int
    constraint: str
    ended_by: str
    ids: list[int] = field(default_factory=list)
    """The value's token ids as decoded (a constraint lets the model pick any tokenization of a text)."""
    searched: bool = False
    """Whether argmax found the value by searching whole values (``decoding/search.py``), not token by
    token."""


@dataclass
class QueryResult:
    prompt: str
    """The full prompt text with every hole filled (chat role tags are not part of it: see messages)."""
    variables: dict[str, Any]
    """Each hole's value, converted: INT and typed holes give Python values. A hole filled several
    times (in a loop) holds its last value; ``holes`` has them all."""
    return_value: Any = None
    """What the query's ``return`` statement returned (None without one)."""
    returned: bool = False
    """Whether a ``return X`` ran (X may be None); False after a bare ``return`` or the query's end."""
    messages: list[dict[str, str]] = field(default_factory=list)
    """The chat messages the prompt was rendered as, when the model has a chat template."""
    holes: list[HoleRecord] = field(default_factory=list)
    model: str = ""
    decoder: str = ""
    usage: dict[str, Any] | None = None
    """Hosted backends: requests, prompt/completion/cached tokens, and the mechanism of each hole."""
    trace: list[Any] | None = None
    """With ``run(..., trace=True)``: a TraceStep per generated token (see runtime/trace.py)."""
    score: float = 0.0
    """Total log-probability of the generated tokens (and of ending each value), as beams rank it."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt": self.prompt,
            "variables": {k: jsonable(v) for k, v in self.variables.items()},
        }
        if self.usage is not None:
            out["usage"] = jsonable(self.usage)
        return out


def jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    import dataclasses
    import enum

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    return str(value)

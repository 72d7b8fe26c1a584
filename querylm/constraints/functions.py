"""The where clause's functions, with their meaning on a finished value.

The token masks enforce these while decoding; when a hole closes, the whole where clause is evaluated
again in Python with these definitions, so an output that breaks a constraint is never returned, even if
a mask and its Python meaning were ever to disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

NAMES = ("STOPS_AT", "STOPS_BEFORE", "TOKENS", "WORDS", "INT", "FLOAT", "REGEX", "GRAMMAR")
"""Functions a where clause may call besides Python's builtins."""

_INT = re.compile(r" ?-?[0-9]+")
_FLOAT = re.compile(r" ?-?[0-9]+(?:\.[0-9]+)?")


def INT(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and _INT.fullmatch(value) is not None)


def FLOAT(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and _FLOAT.fullmatch(value) is not None)


def REGEX(value: Any, pattern: str) -> bool:
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _phrases(phrase: str | Sequence[str]) -> list[str]:
    return [phrase] if isinstance(phrase, str) else list(phrase)


def STOPS_AT(value: Any, phrase: str | Sequence[str]) -> bool:
    """True if the value ends at the first phrase it holds: no phrase occurs before its last character
    (decoding stops as soon as one is complete, and keeps it)."""
    head = str(value)[:-1]
    return all(p not in head for p in _phrases(phrase))


def STOPS_BEFORE(value: Any, phrase: str | Sequence[str]) -> bool:
    """True if no phrase occurs in ``value`` (decoding stopped before the first, and dropped it)."""
    return all(p not in str(value) for p in _phrases(phrase))


def first_stop(value: Any, phrase: str | Sequence[str], holds: Callable[[str], Any]) -> bool:
    """A stop phrase with side conditions (LMQL's semantics): the value runs past no text that ends
    with a phrase and on which ``holds`` (the other constraints) is true."""
    text = str(value)
    return not any(
        text[:i].endswith(p) and holds(text[:i]) for i in range(1, len(text)) for p in _phrases(phrase)
    )


FIRST_STOP = "__querylm_first_stop"


def WORDS(value: Any) -> list[str]:
    return str(value).split()


def namespace(tokens: Callable[[Any], list[str]], grammar: Callable[[Any, str], bool]) -> dict[str, Any]:
    """The functions for evaluating a where clause; TOKENS and GRAMMAR need the model's tokenizer."""
    return {
        "INT": INT,
        "FLOAT": FLOAT,
        "REGEX": REGEX,
        "STOPS_AT": STOPS_AT,
        "STOPS_BEFORE": STOPS_BEFORE,
        "WORDS": WORDS,
        "TOKENS": tokens,
        "GRAMMAR": grammar,
        FIRST_STOP: first_stop,
    }

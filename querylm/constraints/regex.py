"""Regular expressions in llguidance's (Rust regex) syntax for the constraint forms of the where clause.

Every literal character outside [A-Za-z0-9_ ] is written as ``\\x{HEX}``: that escape means the same in
Rust's regex crate and inside Lark's ``/.../`` for any character, so no user string can break out.
"""

from __future__ import annotations

from typing import Any

ANY = r"(?s:.*)"

_SPACE = r"\t-\r\x{1C}-\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
WS = f"[{_SPACE}]"
"""Python's whitespace (``str.isspace``, what ``str.split()`` splits on). Not the regex ``\\s``: Unicode's
White_Space lacks U+001C..U+001F, which Python splits on."""
NONWS = f"[^{_SPACE}]"


_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
CALENDAR_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    rf"|02-(?:0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
"""A YYYY-MM-DD date that exists: February 29 in leap years only, no year 0 (what ``jsonschema`` and
``datetime.date`` accept). llguidance's own ``date`` format admits any February 29."""


def exact_dates(schema: dict[str, Any]) -> dict[str, Any]:
    """A string schema of format ``date`` or ``date-time`` with ``CALENDAR_DATE`` as its pattern too
    (llguidance intersects the two), so a generated date is one the validators accept. A schema with a
    pattern of its own keeps it."""
    if schema.get("format") in ("date", "date-time") and "pattern" not in schema:
        end = "$" if schema["format"] == "date" else "T"
        return {**schema, "pattern": f"^{CALENDAR_DATE}{end}"}
    return schema


def literal(text: str) -> str:
    return "".join(c if (c.isascii() and (c.isalnum() or c in "_ ")) else f"\\x{{{ord(c):X}}}" for c in text)


def alternation(texts: list[str]) -> str:
    return "(?:" + "|".join(literal(t) for t in texts) + ")" if texts else "[^\\s\\S]"


def contains(texts: list[str]) -> str:
    return f"{ANY}{alternation(texts)}{ANY}"


def chars(op: str, n: int) -> str:
    """A value of ``len(X) <op> n`` characters."""
    lo, hi = bounds(op, n)
    lo = max(lo, 0)  # len(X) >= -1
    if hi is not None and (hi < 0 or lo > hi):
        return "[^\\s\\S]"
    return f"(?s:.{{{lo},{'' if hi is None else hi}}})"


def words(op: str, n: int) -> str:
    """A value of ``len(WORDS(X)) <op> n`` whitespace-separated words (Python's ``str.split()``)."""
    lo, hi = bounds(op, n)
    if hi is not None and (hi < 0 or lo > hi):
        return "[^\\s\\S]"
    if hi == 0:
        return f"{WS}*"
    rest_hi = "" if hi is None else str(hi - 1)
    some = f"{WS}*{NONWS}+(?:{WS}+{NONWS}+){{{max(lo - 1, 0)},{rest_hi}}}{WS}*"
    return some if lo >= 1 else f"(?:{WS}*|{some})"


def bounds(op: str, n: int) -> tuple[int, int | None]:
    """Inclusive (lo, hi) for ``<op> n`` over non-negative counts; hi None = unbounded."""
    return {
        "<": (0, n - 1),
        "<=": (0, n),
        "==": (n, n),
        ">": (n + 1, None),
        ">=": (n, None),
    }[op]  # type: ignore[return-value]


INT = r" ?-?[0-9]+"
FLOAT = r" ?-?[0-9]+(?:\.[0-9]+)?"
BOOL = r" ?(?:True|False|true|false)"

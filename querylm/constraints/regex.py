"""Regular expressions in llguidance's (Rust regex) syntax for the constraint forms of the where clause.

Every literal character outside [A-Za-z0-9_ ] is written as ``\\x{HEX}``: that escape means the same in
Rust's regex crate and inside Lark's ``/.../`` for any character, so no user string can break out.
"""

from __future__ import annotations

ANY = r"(?s:.*)"


def literal(text: str) -> str:
    return "".join(c if (c.isascii() and (c.isalnum() or c in "_ ")) else f"\\x{{{ord(c):X}}}" for c in text)


def alternation(texts: list[str]) -> str:
    return "(?:" + "|".join(literal(t) for t in texts) + ")" if texts else "[^\\s\\S]"


def contains(texts: list[str]) -> str:
    return f"{ANY}{alternation(texts)}{ANY}"


def chars(op: str, n: int) -> str:
    """A value of ``len(X) <op> n`` characters."""
    lo, hi = bounds(op, n)
    if hi is not None and hi < 0 or (hi is not None and lo > hi):
        return "[^\\s\\S]"
    return f"(?s:.{{{lo},{'' if hi is None else hi}}})"


def words(op: str, n: int) -> str:
    """A value of ``len(WORDS(X)) <op> n`` whitespace-separated words (Python's ``str.split()``)."""
    lo, hi = bounds(op, n)
    if hi is not None and (hi < 0 or lo > hi):
        return "[^\\s\\S]"
    if hi == 0:
        return r"\s*"
    rest_hi = "" if hi is None else str(hi - 1)
    some = rf"\s*\S+(?:\s+\S+){{{max(lo - 1, 0)},{rest_hi}}}\s*"
    return some if lo >= 1 else rf"(?:\s*|{some})"


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

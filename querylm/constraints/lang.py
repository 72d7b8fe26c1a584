"""The language a hole's value must belong to, as a small tree, and its translation to llguidance's Lark.

Regular parts (regexes, and their and/or/not) become one Lark terminal, so llguidance sees a single
lexeme and tokens may cross every boundary inside it; context-free parts (GRAMMAR files, JSON Schema)
become rules. Stop phrases are folded into the terminal: the value ends at the first phrase it holds
where the other constraints hold (LMQL's side conditions).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import regex


@dataclass(frozen=True)
class Term:
    """A regular expression (Rust regex syntax)."""

    pattern: str


@dataclass(frozen=True)
class Grammar:
    """A context-free language: a Lark grammar (``kind="lark"``) or a JSON Schema (``kind="json"``)."""

    kind: str
    text: str
    label: str
    gbnf: str | None = None
    """The same language as GBNF for server-side grammars, where its author wrote one (an agent turn's
    union grammar: ``%json`` rules and ``&``/``~`` terminals have no automatic translation); else it
    is translated from ``text`` where possible (``constraints.gbnf.lark_gbnf``)."""


@dataclass(frozen=True)
class And:
    parts: tuple[Lang, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Lang, ...]


@dataclass(frozen=True)
class Not:
    part: Lang


Lang = Term | Grammar | And | Or | Not


def is_regular(lang: Lang) -> bool:
    if isinstance(lang, Term):
        return True
    if isinstance(lang, Grammar):
        return False
    if isinstance(lang, Not):
        return is_regular(lang.part)
    return all(is_regular(p) for p in lang.parts)


class NotExpressible(Exception):
    """A combination one grammar can't express (the negation or intersection of context-free parts)."""


@dataclass
class _Builder:
    lines: list[str] = field(default_factory=list)
    subgrammars: list[dict[str, str]] = field(default_factory=list)
    count: int = 0

    def new(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def term(self, lang: Lang) -> str:
        name = self.new("T")
        if isinstance(lang, Term):
            self.lines.append(f"{name}: /{lang.pattern}/")
        elif isinstance(lang, And):
            self.lines.append(f"{name}: " + " & ".join(self.term(p) for p in lang.parts))
        elif isinstance(lang, Or):
            self.lines.append(f"{name}: " + " | ".join(self.term(p) for p in lang.parts))
        elif isinstance(lang, Not):
            self.lines.append(f"{name}: ANY & ~{self.term(lang.part)}")
        else:  # pragma: no cover - guarded by is_regular
            raise NotExpressible(lang)
        return name

    def rule(self, lang: Lang) -> str:
        if is_regular(lang):
            return self.term(lang)
        name = self.new("r")
        if isinstance(lang, Grammar):
            if lang.kind == "json":
                self.lines.append(f"{name}: %json {lang.text}")
            else:
                sub = self.new("g")
                self.subgrammars.append({"name": sub, "lark_grammar": lang.text})
                self.lines.append(f"{name}: @{sub}")
        elif isinstance(lang, Or):
            self.lines.append(f"{name}: " + " | ".join(self.rule(p) for p in lang.parts))
        else:
            raise NotExpressible(lang)
        return name


def _overlap(stops: list[str]) -> bool:
    """Whether a phrase can start inside another one's end (or be a prefix of it): then a string that
    ends with a phrase may hold an earlier one that straddles the two."""
    return any(q.endswith(p[:k]) for p in stops for q in stops for k in range(1, len(p)))


def to_grammar(
    value: Lang | None,
    stops_at: list[str],
    stops_before: list[str],
    *,
    prefix: str | None = None,
    heal: str = "",
) -> str:
    """A llguidance TopLevelGrammar (JSON text) for a value in ``value`` that ends at the first stop
    phrase: kept in the value for ``stops_at``, generated and then dropped for ``stops_before``.

    With other constraints (``value``), LMQL's semantics: a phrase ends the value only where those
    constraints hold on the text so far (phrase included), so ``STOPS_AT(X, ".") and len(X) > 40`` may
    hold a "." before its 41st character. ``prefix``: the text generated before a side condition that
    the grammar can't see (a token minimum) came to hold; only a phrase ending after it counts.
    ``heal``: prompt text backed off by token healing (``decoding/heal.py``), which the value's first
    token(s) must write again before the value itself; ``value`` None with nothing else is free text."""
    b = _Builder(lines=[f"ANY: /{regex.ANY}/"])
    if value is None and not stops_at and not stops_before:
        value = Term(regex.ANY)
    stops = stops_at + stops_before
    if stops and value is not None and not is_regular(value):
        raise NotExpressible(value)
    if not stops:
        assert value is not None
        start = b.rule(value)
    elif value is None and prefix is None:
        # The value ends at the first stop phrase: a string that holds one must end with it and hold
        # none before its last character (with "\n\n", "a\n\n\n" is not a value: it stopped at "a\n\n").
        ns = b.term(Not(Term(regex.contains(stops))))
        alts = [ns]
        # A string in ``ns`` followed by a phrase can hold an earlier one only where phrases overlap
        # ("\n\n" with itself, "a" in "ab"): only then the costlier "no phrase ends before the end".
        first = (
            f" & {b.term(Not(Term(f'{regex.ANY}{regex.alternation(stops)}(?s:.)+')))}"
            if _overlap(stops)
            else ""
        )
        if stops_before:
            alts.append(f"({ns} /{regex.alternation(stops_before)}/){first}")
        if stops_at:
            alts.append(f"({ns} /{regex.alternation(stops_at)}/){first}")
        start = b.new("V")
        b.lines.append(f"{start}: " + " | ".join(alts))
    else:
        # Side-conditioned: the value's stop points are the texts in ``value`` that end with a phrase
        # (after ``prefix``); a value is in ``value`` and runs past none of them.
        v = b.term(value) if value is not None else "ANY"
        after = ""
        if prefix is not None:
            lit = b.new("P")
            b.lines.append(f"{lit}: /{regex.literal(prefix)}/")
            after = f" & ({lit} /(?s:.)+/)"
            v = f"({v} & ({lit} /(?s:.)*/))"
        stop_point = b.new("M")
        b.lines.append(f"{stop_point}: {v}{after} & /{regex.ANY}{regex.alternation(stops)}/")
        start = b.new("V")
        b.lines.append(f"{start}: {v} & ~({stop_point} /(?s:.)+/)")
    if heal:  # a lexeme of its own: the value's grammar starts where the healed text ends
        lit = b.new("H")
        b.lines.append(f"{lit}: /{regex.literal(heal)}/")
        start = f"{lit} {start}"
    lark = f"start: {start}\n" + "\n".join(b.lines) + "\n"
    return json.dumps({"grammars": [{"lark_grammar": lark}, *b.subgrammars]})


def server_lark(grammar: str, tail: int = 0) -> str | None:
    """A hole's llguidance grammar (``grammar``, the TopLevelGrammar JSON text the local matcher
    compiles) as one ``%llguidance`` Lark text for a server built with llguidance, so that the server
    enforces what the local matcher checks; None where it is not one Lark grammar (a grammar file
    within other constraints refers to its subgrammar, which one text can't carry).

    ``tail`` > 0: after a value the model may also write up to ``tail`` characters of anything. A
    server ends an answer only at its end-of-text token, so where a value is complete but could go on
    (an INT after "8"), the model could otherwise only go on in digits where it wants " legs"; with the
    tail it says " legs", which is the end, as the local decoder reads it. The caller cuts the tail off
    (and the server's tokens, which may run past the value mid-token, are re-validated locally)."""
    top = json.loads(grammar)
    grammars = top.get("grammars", [])
    if len(grammars) == 2 and grammars[0].get("lark_grammar", "").startswith("start: r"):
        # a grammar file alone: the main grammar only points at it ("start: r1 ... r1: @g2")
        main = grammars[0]["lark_grammar"]
        name = grammars[1].get("name", "")
        if main.strip().splitlines()[-1].endswith(f": @{name}") and main.count("\n") == 3:
            grammars = grammars[1:]
    if len(grammars) != 1 or "lark_grammar" not in grammars[0]:
        return None
    lark = grammars[0]["lark_grammar"]
    if not tail:
        return f"%llguidance {{}}\n{lark}"
    # the value's own start rule, renamed: the new start is the value and then perhaps the tail
    renamed = re.sub(r"(?m)^(\??)start(\s*:)", r"\1qlm_value\2", lark)
    renamed = re.sub(r"(?<![\w\"'/])start(?![\w\"'/])", "qlm_value", renamed)
    return f"%llguidance {{}}\nstart: qlm_value QLM_TAIL?\nQLM_TAIL: /(?s:.){{1,{tail}}}/\n{renamed}"

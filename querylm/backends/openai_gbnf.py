"""Hole languages as server-side grammars: automata over Unicode code points, GBNF, JSON Schema.

Servers take grammars in their own syntax (llama.cpp's GBNF, xgrammar's EBNF, which reads GBNF), not
llguidance's Lark. A regular hole language (regexes with and/or/not, stop phrases folded in) becomes a
DFA whose transitions are code-point interval sets; a DFA is a right-linear GBNF grammar, exactly, and a
DFA advanced over an already validated prefix is the grammar of the rest (continuing a cut value under
the same constraint). JSON Schema (the subset pydantic writes) gets its own GBNF, formatted as the local
mask engine formats JSON. Every grammar is checked on the client before it is sent: an invalid grammar
kills a llama.cpp server.

Anything not translated raises NotTranslatable: the hole then runs without a server grammar and the
local matcher alone decides.
"""

from __future__ import annotations

import bisect
import json
import re
import warnings
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

try:  # Python 3.11+
    import re._constants as _c
    import re._parser as _sre
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _sre  # type: ignore[no-redef]

from ..constraints import regex as rx
from ..constraints.lang import And, Grammar, Lang, Not, Term

MAXCP = 0x10FFFF
SURROGATES = ((0xD800, 0xDFFF),)
MAX_STATES = 3000
"""Automata larger than this are not translated (the grammar would be too big to be worth sending)."""


class NotTranslatable(Exception):
    """This language has no server grammar here: validate locally only."""


# -- code-point sets: sorted, disjoint, non-adjacent inclusive intervals ------------------------------

Charset = tuple[tuple[int, int], ...]
FULL: Charset = ((0, MAXCP),)


def cs_norm(ivs: Iterable[tuple[int, int]]) -> Charset:
    out: list[list[int]] = []
    for lo, hi in sorted(ivs):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((a, b) for a, b in out)


def cs_complement(cs: Charset) -> Charset:
    out = []
    prev = 0
    for lo, hi in cs:
        if lo > prev:
            out.append((prev, lo - 1))
        prev = hi + 1
    if prev <= MAXCP:
        out.append((prev, MAXCP))
    return tuple(out)


def cs_union(*sets: Charset) -> Charset:
    return cs_norm(iv for s in sets for iv in s)


def cs_minus(a: Charset, b: Charset) -> Charset:
    return cs_intersect(a, cs_complement(b))


def cs_intersect(a: Charset, b: Charset) -> Charset:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def cs_contains(cs: Charset, c: int) -> bool:
    i = bisect.bisect_right(cs, (c, MAXCP + 1)) - 1
    return i >= 0 and cs[i][0] <= c <= cs[i][1]


def cs_size(cs: Charset) -> int:
    return sum(hi - lo + 1 for lo, hi in cs)


def refine(items: Sequence[tuple[Charset, Hashable]]) -> list[tuple[Charset, frozenset]]:
    """Split overlapping labelled sets into disjoint pieces, each with the labels that cover it."""
    events: dict[int, list[tuple[int, Hashable]]] = defaultdict(list)
    for cs, label in items:
        for lo, hi in cs:
            events[lo].append((1, label))
            events[hi + 1].append((-1, label))
    points = sorted(events)
    active: dict[Hashable, int] = {}
    groups: dict[frozenset, list[tuple[int, int]]] = {}
    for i, pt in enumerate(points):
        for sign, label in events[pt]:
            n = active.get(label, 0) + sign
            if n:
                active[label] = n
            else:
                active.pop(label, None)
        if active and i + 1 < len(points):
            groups.setdefault(frozenset(active), []).append((pt, points[i + 1] - 1))
    return [(cs_norm(ivs), key) for key, ivs in groups.items()]


@lru_cache(maxsize=16)
def _category(name: str) -> Charset:
    """Python's Unicode \\d, \\s, \\w (what the local re-check and ``re`` use)."""
    test = {
        "digit": str.isdecimal,
        "space": str.isspace,
        "word": lambda ch: ch.isalnum() or ch == "_",
    }[name]
    ivs = []
    start = None
    for c in range(MAXCP + 2):
        inside = c <= MAXCP and not (0xD800 <= c <= 0xDFFF) and test(chr(c))
        if inside and start is None:
            start = c
        elif not inside and start is not None:
            ivs.append((start, c - 1))
            start = None
    return tuple(ivs)


_ASCII_CATEGORY = {
    "digit": ((48, 57),),
    "space": ((9, 13), (32, 32)),
    "word": ((48, 57), (65, 90), (95, 95), (97, 122)),
}


# -- automata -----------------------------------------------------------------------------------------


@dataclass
class Automaton:
    """An NFA (epsilon moves allowed) or, after ``determinize``, a DFA whose transitions out of each
    state are disjoint."""

    eps: list[list[int]] = field(default_factory=list)
    trans: list[list[tuple[Charset, int]]] = field(default_factory=list)
    accept: list[bool] = field(default_factory=list)
    start: int = 0

    def add(self, accept: bool = False) -> int:
        self.eps.append([])
        self.trans.append([])
        self.accept.append(accept)
        if len(self.accept) > 40 * MAX_STATES:
            raise NotTranslatable("automaton too large")
        return len(self.accept) - 1

    def __len__(self) -> int:
        return len(self.accept)

    # DFA queries

    def step(self, state: int, ch: str) -> int | None:
        c = ord(ch)
        for cs, tgt in self.trans[state]:
            if cs_contains(cs, c):
                return tgt
        return None

    def walk(self, text: str, state: int | None = None) -> int | None:
        s: int | None = self.start if state is None else state
        for ch in text:
            if s is None:
                return None
            s = self.step(s, ch)
        return s

    def is_empty(self) -> bool:
        return not self.accept[self.start] and not self.trans[self.start]


def _closure(a: Automaton, states: Iterable[int]) -> frozenset[int]:
    seen = set(states)
    todo = list(seen)
    while todo:
        s = todo.pop()
        for t in a.eps[s]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return frozenset(seen)


def determinize(a: Automaton) -> Automaton:
    d = Automaton()
    first = _closure(a, [a.start])
    ids = {first: d.add(any(a.accept[s] for s in first))}
    todo = [first]
    while todo:
        cur = todo.pop()
        src = ids[cur]
        items = [(cs, t) for s in cur for cs, t in a.trans[s]]
        by_target: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for cs, targets in refine(items):
            nxt = _closure(a, targets)  # type: ignore[arg-type]
            if nxt not in ids:
                if len(ids) >= MAX_STATES:
                    raise NotTranslatable("DFA too large")
                ids[nxt] = d.add(any(a.accept[s] for s in nxt))
                todo.append(nxt)
            by_target[ids[nxt]].extend(cs)
        d.trans[src] = [(cs_norm(ivs), t) for t, ivs in by_target.items()]
    return d


def product(a: Automaton, b: Automaton, both: bool) -> Automaton:
    """The DFA of the intersection (``both``) or union of two DFAs' languages."""
    d = Automaton()
    Pair = tuple[int | None, int | None]

    def acc(p: Pair) -> bool:
        x = p[0] is not None and a.accept[p[0]]
        y = p[1] is not None and b.accept[p[1]]
        return (x and y) if both else (x or y)

    first: Pair = (a.start, b.start)
    ids = {first: d.add(acc(first))}
    todo = [first]
    while todo:
        cur = todo.pop()
        x, y = cur
        items: list[tuple[Charset, object]] = []
        if x is not None:
            items += [(cs, ("a", t)) for cs, t in a.trans[x]]
        if y is not None:
            items += [(cs, ("b", t)) for cs, t in b.trans[y]]
        by_target: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for cs, labels in refine(items):
            ta = next((t for side, t in labels if side == "a"), None)  # type: ignore[misc]
            tb = next((t for side, t in labels if side == "b"), None)  # type: ignore[misc]
            if both and (ta is None or tb is None):
                continue
            nxt = (ta, tb)
            if nxt not in ids:
                if len(ids) >= MAX_STATES:
                    raise NotTranslatable("DFA too large")
                ids[nxt] = d.add(acc(nxt))
                todo.append(nxt)
            by_target[ids[nxt]].extend(cs)
        d.trans[ids[cur]] = [(cs_norm(ivs), t) for t, ivs in by_target.items()]
    return trim(d)


def complement(a: Automaton) -> Automaton:
    """The DFA of every string (of valid characters) not in a DFA's language."""
    d = Automaton(
        eps=[[] for _ in a.accept], trans=[list(t) for t in a.trans], accept=[not x for x in a.accept]
    )
    d.start = a.start
    sink = d.add(True)
    valid = cs_minus(FULL, SURROGATES)
    d.trans[sink] = [(valid, sink)]
    for s in range(len(a.accept)):
        missing = cs_minus(valid, cs_union(*(cs for cs, _ in a.trans[s])))
        if missing:
            d.trans[s].append((missing, sink))
    return trim(d)


def concat(a: Automaton, b: Automaton) -> Automaton:
    n = Automaton()
    offset_b = len(a)
    for s in range(len(a)):
        n.add(False)
        n.trans[s] = list(a.trans[s])
        n.eps[s] = list(a.eps[s])
    for s in range(len(b)):
        n.add(b.accept[s])
        n.trans[offset_b + s] = [(cs, t + offset_b) for cs, t in b.trans[s]]
        n.eps[offset_b + s] = [t + offset_b for t in b.eps[s]]
    for s in range(len(a)):
        if a.accept[s]:
            n.eps[s].append(offset_b + b.start)
    n.start = a.start
    return trim(determinize(n))


def trim(a: Automaton) -> Automaton:
    """Only the states reachable from the start that can still reach acceptance (an empty language
    keeps a lone non-accepting start)."""
    reach = {a.start}
    todo = [a.start]
    while todo:
        s = todo.pop()
        for t in [t for _, t in a.trans[s]] + a.eps[s]:
            if t not in reach:
                reach.add(t)
                todo.append(t)
    rev: dict[int, list[int]] = defaultdict(list)
    for s in reach:
        for t in [t for _, t in a.trans[s]] + a.eps[s]:
            rev[t].append(s)
    live = {s for s in reach if a.accept[s]}
    todo = list(live)
    while todo:
        s = todo.pop()
        for p in rev[s]:
            if p not in live:
                live.add(p)
                todo.append(p)
    keep = sorted(live | {a.start}, key=lambda s: (s != a.start, s))
    index = {s: i for i, s in enumerate(keep)}
    out = Automaton()
    for s in keep:
        out.add(a.accept[s])
    for s in keep:
        out.trans[index[s]] = [(cs, index[t]) for cs, t in a.trans[s] if t in live]
        out.eps[index[s]] = [index[t] for t in a.eps[s] if t in live]
    out.start = 0
    return out


def minimize(a: Automaton) -> Automaton:
    """Moore's partition refinement (the DFA's grammar gets as few rules as the language needs)."""
    cls = [int(x) for x in a.accept]
    while True:
        sigs: dict[tuple, int] = {}
        new = []
        for s in range(len(a)):
            merged: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for cs, t in a.trans[s]:
                merged[cls[t]].extend(cs)
            sig = (cls[s], tuple(sorted((k, cs_norm(v)) for k, v in merged.items())))
            new.append(sigs.setdefault(sig, len(sigs)))
        if len(sigs) == len(set(cls)):
            cls = new
            break
        cls = new
    out = Automaton()
    for _ in range(max(cls) + 1):
        out.add()
    done = set()
    for s in range(len(a)):
        c = cls[s]
        out.accept[c] = a.accept[s]
        if c in done:
            continue
        done.add(c)
        merged = defaultdict(list)
        for cs, t in a.trans[s]:
            merged[cls[t]].extend(cs)
        out.trans[c] = [(cs_norm(v), t) for t, v in merged.items()]
    out.start = cls[a.start]
    return out


# -- regexes (llguidance's Rust syntax, as the constraints write them) → automata ---------------------


def _to_python_syntax(pattern: str) -> str:
    """``\\x{HEX}`` (Rust) → ``\\UXXXXXXXX`` (Python); everything else the constraints emit means the
    same in both."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            if pattern[i + 1] == "x" and i + 2 < len(pattern) and pattern[i + 2] == "{":
                end = pattern.index("}", i)
                out.append(f"\\U{int(pattern[i + 3 : end], 16):08X}")
                i = end + 1
                continue
            if pattern[i + 1] in "pPzA":  # Unicode classes, anchors: not translated
                raise NotTranslatable(f"regex escape \\{pattern[i + 1]}")
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_regex(pattern: str) -> Automaton:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible set operation" etc.: Rust reads those differently
            tree = _sre.parse(_to_python_syntax(pattern), 0)
    except (re.error, FutureWarning, ValueError, OverflowError) as err:
        raise NotTranslatable(f"regex: {err}") from None
    a = Automaton()
    s, e = _seq(a, list(tree), tree.state.flags)
    a.accept[e] = True
    a.start = s
    return trim(determinize(a))


def _seq(a: Automaton, items: list, flags: int) -> tuple[int, int]:
    s = e = a.add()
    for op, av in items:
        s2, e2 = _node(a, op, av, flags)
        a.eps[e].append(s2)
        e = e2
    return s, e


def _chars(a: Automaton, cs: Charset) -> tuple[int, int]:
    s, e = a.add(), a.add()
    cs = cs_minus(cs, SURROGATES)
    if cs:
        a.trans[s].append((cs, e))
    return s, e


def _class_items(items: list, flags: int) -> Charset:
    negate = False
    ivs: list[tuple[int, int]] = []
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            ivs.append((av, av))
        elif op is _c.RANGE:
            ivs.append(av)
        elif op is _c.CATEGORY:
            ivs.extend(_category_set(av, flags))
        else:
            raise NotTranslatable(f"regex class item {op}")
    cs = cs_norm(ivs)
    return cs_complement(cs) if negate else cs


def _category_set(cat: object, flags: int) -> Charset:
    names = {
        _c.CATEGORY_DIGIT: ("digit", False),
        _c.CATEGORY_NOT_DIGIT: ("digit", True),
        _c.CATEGORY_SPACE: ("space", False),
        _c.CATEGORY_NOT_SPACE: ("space", True),
        _c.CATEGORY_WORD: ("word", False),
        _c.CATEGORY_NOT_WORD: ("word", True),
    }
    if cat not in names:
        raise NotTranslatable(f"regex category {cat}")
    name, neg = names[cat]  # type: ignore[index]
    cs = _ASCII_CATEGORY[name] if flags & _c.SRE_FLAG_ASCII else _category(name)
    return cs_complement(cs) if neg else cs


def _node(a: Automaton, op: object, av: Any, flags: int) -> tuple[int, int]:
    if flags & (_c.SRE_FLAG_IGNORECASE | _c.SRE_FLAG_MULTILINE):
        raise NotTranslatable("regex flags i/m")
    if op is _c.LITERAL:
        return _chars(a, ((av, av),))  # type: ignore[arg-type]
    if op is _c.NOT_LITERAL:
        return _chars(a, cs_complement(((av, av),)))  # type: ignore[arg-type]
    if op is _c.ANY:
        return _chars(a, FULL if flags & _c.SRE_FLAG_DOTALL else cs_complement(((10, 10),)))
    if op is _c.IN:
        return _chars(a, _class_items(av, flags))  # type: ignore[arg-type]
    if op is _c.BRANCH:
        s, e = a.add(), a.add()
        for alt in av[1]:  # type: ignore[index]
            s2, e2 = _seq(a, list(alt), flags)
            a.eps[s].append(s2)
            a.eps[e2].append(e)
        return s, e
    if op is _c.SUBPATTERN:
        _group, add, delete, sub = av  # type: ignore[misc]
        return _seq(a, list(sub), (flags | add) & ~delete)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", None)):
        lo, hi, sub = av  # type: ignore[misc]
        unbounded = hi is _c.MAXREPEAT or hi == _c.MAXREPEAT
        if lo > 1000 or (not unbounded and hi > 1000):
            raise NotTranslatable("regex repeat too large")
        s = e = a.add()
        for _ in range(lo):
            s2, e2 = _seq(a, list(sub), flags)
            a.eps[e].append(s2)
            e = e2
        if unbounded:
            s2, e2 = _seq(a, list(sub), flags)
            a.eps[e].append(s2)
            a.eps[e2].append(s2)
            end = a.add()
            a.eps[e].append(end)
            a.eps[e2].append(end)
            return s, end
        end = a.add()
        a.eps[e].append(end)
        for _ in range(hi - lo):
            s2, e2 = _seq(a, list(sub), flags)
            a.eps[e].append(s2)
            a.eps[e2].append(end)
            e = e2
        return s, end
    raise NotTranslatable(f"regex construct {op}")


# -- hole languages → DFAs ----------------------------------------------------------------------------


@lru_cache(maxsize=256)
def lang_dfa(lang: Lang) -> Automaton:
    if isinstance(lang, Term):
        return minimize(parse_regex(lang.pattern))
    if isinstance(lang, Grammar):
        raise NotTranslatable("a context-free grammar")
    if isinstance(lang, Not):
        return minimize(complement(lang_dfa(lang.part)))
    parts = [lang_dfa(p) for p in lang.parts]
    out = parts[0]
    for p in parts[1:]:
        out = product(out, p, isinstance(lang, And))
    return minimize(out)


@lru_cache(maxsize=256)
def hole_dfa(value: Lang | None, stops_at: tuple[str, ...], stops_before: tuple[str, ...]) -> Automaton:
    """The DFA of ``lang.to_grammar(value, stops_at, stops_before)``: the same language, built the
    same way (the value ends at the first stop phrase it holds)."""
    stops = list(stops_at + stops_before)
    v = lang_dfa(value) if value is not None else lang_dfa(Term(rx.ANY))
    if not stops:
        return v
    if value is not None:  # side-conditioned: no value runs past a text of ``value`` ending in a phrase
        stop_point = product(v, lang_dfa(Term(rx.ANY + rx.alternation(stops))), True)
        return minimize(product(v, complement(concat(stop_point, lang_dfa(Term("(?s:.)+")))), True))
    ns = lang_dfa(Not(Term(rx.contains(stops))))
    first = product(concat(ns, lang_dfa(Term("(?s:.)"))), lang_dfa(Term(rx.contains(stops))), True)
    v_ns = product(v, ns, True)
    out = v_ns
    if stops_before:
        out = product(
            out, product(concat(v_ns, lang_dfa(Term(rx.alternation(list(stops_before))))), first, True), False
        )
    if stops_at:
        tail = lang_dfa(Term(rx.ANY + rx.alternation(list(stops_at))))
        out = product(out, product(product(v, first, True), tail, True), False)
    return minimize(out)


def finite_strings(dfa: Automaton, state: int | None = None, limit: int = 64) -> list[str] | None:
    """Every string the DFA accepts from ``state``, if there are at most ``limit`` (else None)."""
    start = dfa.start if state is None else state
    out: list[str] = []
    on_path: set[int] = set()

    def walk(s: int, prefix: str) -> bool:
        if s in on_path:
            return False  # a cycle: infinitely many strings
        if dfa.accept[s]:
            out.append(prefix)
            if len(out) > limit:
                return False
        on_path.add(s)
        for cs, t in dfa.trans[s]:
            if cs_size(cs) > limit:
                return False
            for lo, hi in cs:
                for c in range(lo, hi + 1):
                    if not walk(t, prefix + chr(c)):
                        return False
        on_path.discard(s)
        return True

    return out if walk(start, "") else None


# -- GBNF ---------------------------------------------------------------------------------------------

_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")


def _gbnf_char(c: int) -> str:
    """A code point inside a GBNF class or literal: plain letters, digits and space as they are, other
    ASCII and Latin-1 as ``\\xHH``, the rest as the UTF-8 character itself (llama.cpp reads UTF-8; its
    ``\\u``/``\\U`` escapes are not read alike everywhere)."""
    ch = chr(c)
    if ch in _PLAIN:
        return ch
    if c < 0x100:
        return f"\\x{c:02X}"
    return ch


_UNSENDABLE: Charset = ((0, 0), *SURROGATES)
"""NUL (llama.cpp's grammar engine ends strings with it) and surrogates (not characters)."""


def gbnf_class(cs: Charset) -> str:
    cs = cs_minus(cs, _UNSENDABLE)
    comp = cs_minus(cs_complement(cs), _UNSENDABLE)
    neg = bool(comp) and len(comp) < len(cs)
    body = []
    for lo, hi in comp if neg else cs:
        if lo == hi:
            body.append(_gbnf_char(lo))
        else:
            body.append(f"{_gbnf_char(lo)}-{_gbnf_char(hi)}")
    return ("[^" if neg else "[") + "".join(body) + "]"


def gbnf_literal(text: str) -> str:
    return '"' + "".join(_gbnf_char(ord(c)) for c in text) + '"'


def dfa_gbnf(dfa: Automaton, state: int | None = None, tail: int = 0) -> str:
    """A right-linear GBNF grammar for the DFA's language from ``state``; one rule per state.

    ``tail`` > 0: where a value may end but could also go on, the grammar also lets the model write
    what can't continue it (a character outside the value's next characters, then up to ``tail - 1``
    more) and then stops. Under the bare language a model can only end a value by its end-of-text token:
    after "8" an INT hole would run on in digits where the model wants " legs". With the tail it says
    " legs", which is the end, as the local decoder reads it; the caller cuts the tail off."""
    start, lines = dfa_rules(dfa, state, tail=tail)
    if start == '""':
        raise NotTranslatable("the language is the empty string alone")
    return "\n".join([f"root ::= {start}", *lines]) + "\n"


def dfa_rules(
    dfa: Automaton, state: int | None = None, *, tail: int = 0, prefix: str = "s"
) -> tuple[str, list[str]]:
    """GBNF rules (named ``<prefix><n>``) for a DFA from ``state``: the start rule's name (``""`` for
    the empty string alone) and the rule lines. NotTranslatable for an empty language."""
    # NUL and surrogates can't be sent: drop them, and what only they led to
    clean = Automaton(
        eps=[[] for _ in dfa.accept],
        trans=[[(c, t) for cs, t in tr if (c := cs_minus(cs, _UNSENDABLE))] for tr in dfa.trans],
        accept=list(dfa.accept),
        start=dfa.start if state is None else state,
    )
    dfa = trim(clean)
    start = dfa.start
    if not dfa.trans[start]:
        if dfa.accept[start]:
            return '""', []
        raise NotTranslatable("the language is empty")
    order = [start]
    seen = {start}
    for s in order:
        for _, t in dfa.trans[s]:
            if t not in seen:
                seen.add(t)
                order.append(t)
    leaf = {s for s in order if dfa.accept[s] and not dfa.trans[s]}
    names = {s: f"{prefix}{i}" for i, s in enumerate(order)}
    lines = []
    for s in order:
        if s in leaf:
            continue
        alts = [gbnf_class(cs) + ("" if t in leaf else f" {names[t]}") for cs, t in dfa.trans[s]]
        if tail and dfa.accept[s]:
            ends = cs_minus(cs_complement(cs_union(*(cs for cs, _ in dfa.trans[s]))), _UNSENDABLE)
            if ends:
                alts.append(gbnf_class(ends) + (f" {gbnf_class(FULL)}{{0,{tail - 1}}}" if tail > 1 else ""))
        body = " | ".join(alts)
        lines.append(f"{names[s]} ::= " + (f"( {body} )?" if dfa.accept[s] else body))
    return names[start], lines


# -- JSON Schema → GBNF (llguidance's compact formatting: ", " and ": ", no other whitespace) ----------


_JSON_CHAR = '( [^"\\\\\\x00-\\x1F\\x7F] | "\\\\" ["\\\\bfnrt] )'
"""A character of a JSON string as the mask engine writes them: no ``\\u`` or ``\\/`` escapes, no DEL."""


class _JsonGbnf:
    def __init__(self, root: dict):
        self.root = root
        self.rules: dict[str, str] = {}
        self.refs: dict[str, str] = {}
        self.count = 0

    def new(self, body: str, prefix: str = "j") -> str:
        self.count += 1
        name = f"{prefix}{self.count}"
        self.rules[name] = body
        return name

    def basic(self, kind: str) -> str:
        bodies = {
            "string": f'"\\"" {_JSON_CHAR}* "\\""',
            "integer": '"-"? ( "0" | [1-9] [0-9]* )',
            "number": '"-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?',
            "boolean": '"true" | "false"',
            "null": '"null"',
        }
        name = f"json-{kind}"
        if name not in self.rules:
            self.rules[name] = bodies[kind]
        return name

    def any_value(self) -> str:
        if "json-value" not in self.rules:
            self.rules["json-value"] = "json-object | json-array | " + " | ".join(
                self.basic(k) for k in ("string", "number", "boolean", "null")
            )
            self.rules["json-object"] = (
                f'"{{" ( {self.basic("string")} "\\x3A " json-value ( ", " {self.basic("string")} '
                f'"\\x3A " json-value )* )? "}}"'
            )
            self.rules["json-array"] = '"[" ( json-value ( ", " json-value )* )? "]"'
        return "json-value"

    def schema(self, s: object) -> str:
        if s is True or s == {}:
            return self.any_value()
        if not isinstance(s, dict):
            raise NotTranslatable("schema")
        s = {
            k: v
            for k, v in s.items()
            if k
            not in (
                "title",
                "description",
                "default",
                "examples",
                "x-guidance",
                "$defs",
                "definitions",
                "$schema",
            )
        }
        if "$ref" in s:
            ref = s.pop("$ref")
            if s:
                raise NotTranslatable("$ref with siblings")
            return self.ref(ref)
        if "const" in s:
            return self.new(gbnf_literal(json.dumps(s["const"], ensure_ascii=False)))
        if "enum" in s:
            return self.new(" | ".join(gbnf_literal(json.dumps(v, ensure_ascii=False)) for v in s["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in s:
                if set(s) - {key}:
                    raise NotTranslatable(f"{key} with siblings")
                return self.new(" | ".join(self.schema(x) for x in s[key]))
        if "allOf" in s:
            if len(s["allOf"]) != 1 or set(s) - {"allOf"}:
                raise NotTranslatable("allOf")
            return self.schema(s["allOf"][0])
        tp = s.get("type")
        if isinstance(tp, list):
            return self.new(" | ".join(self.schema({**s, "type": t}) for t in tp))
        unsupported = set(s) - {
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "minItems",
            "maxItems",
            "minLength",
            "maxLength",
        }
        if unsupported:
            raise NotTranslatable(f"schema keywords {sorted(unsupported)}")
        if tp in ("integer", "number", "boolean", "null"):
            return self.basic(tp)
        if tp == "string":
            lo, hi = s.get("minLength"), s.get("maxLength")
            if lo is None and hi is None:
                return self.basic("string")
            return self.new(f'"\\"" {_JSON_CHAR}{{{lo or 0},{"" if hi is None else hi}}} "\\""')
        if tp == "array":
            item = self.schema(s.get("items", True))
            lo, hi = s.get("minItems", 0), s.get("maxItems")
            if lo == 0 and hi is None:
                return self.new(f'"[" ( {item} ( ", " {item} )* )? "]"')
            if hi == 0:
                return self.new('"[]"')
            rest = f'( ", " {item} ){{{max(lo - 1, 0)},{"" if hi is None else hi - 1}}}'
            body = f'"[" {item} {rest} "]"'
            return self.new(body if lo >= 1 else f'"[" ( {item} {rest} )? "]"')
        if tp == "object":
            if s.get("additionalProperties", True) is not False and not s.get("properties"):
                return self.any_value()
            return self.obj(s.get("properties", {}), set(s.get("required", [])))
        raise NotTranslatable(f"schema type {tp!r}")

    def obj(self, props: dict, required: set) -> str:
        names = list(props)
        # rest[i][first]: the properties from i on, ``first`` when none has been written yet
        rest: dict[tuple[int, bool], str] = {}
        for i in range(len(names), -1, -1):
            for first in (True, False):
                if i == len(names):
                    rest[(i, first)] = '""'
                    continue
                key = names[i]
                kv = f'{gbnf_literal(json.dumps(key, ensure_ascii=False))} "\\x3A " {self.schema(props[key])}'
                sep = "" if first else '", " '
                nxt = rest[(i + 1, False)]
                take = f"{sep}{kv}" + ("" if nxt == '""' else f" {nxt}")
                if key in required:
                    body = take
                else:
                    skip = rest[(i + 1, first)]
                    body = f"{take} | {skip}" if skip != '""' else f"( {take} )?"
                rest[(i, first)] = self.new(body, "p")
        head = rest[(0, True)]
        return self.new(f'"{{" {head} "}}"' if head != '""' else '"{}"')

    def ref(self, ref: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        m = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref)
        if not m or m.group(2) not in self.root.get(m.group(1), {}):
            raise NotTranslatable(f"$ref {ref}")
        name = f"d{len(self.refs)}"
        self.refs[ref] = name
        self.rules[name] = self.schema(self.root[m.group(1)][m.group(2)])
        return name


def json_gbnf(schema: dict) -> str:
    g = _JsonGbnf(schema)
    top = g.schema(schema)
    return "root ::= " + top + "\n" + "".join(f"{k} ::= {v}\n" for k, v in g.rules.items())


# -- checking GBNF before it is sent (the syntax llama.cpp's parser takes) -----------------------------

_NAME = re.compile(r"[a-zA-Z0-9-]+")


def check_gbnf(text: str) -> None:
    """Raise ValueError unless ``text`` is GBNF that llama.cpp's parser reads: every rule defined once,
    every reference defined, ``root`` present, literals, classes and groups well formed."""
    defined: dict[str, int] = {}
    used: set[str] = set()
    pos = 0
    n = len(text)

    def fail(msg: str) -> ValueError:
        return ValueError(f"GBNF: {msg} at offset {pos}: {text[max(0, pos - 20) : pos + 20]!r}")

    def space(newlines: bool) -> None:
        nonlocal pos
        while pos < n:
            if text[pos] == "#":
                while pos < n and text[pos] not in "\r\n":
                    pos += 1
            elif text[pos] in " \t" or (newlines and text[pos] in "\r\n"):
                pos += 1
            elif not newlines and text[pos] in "\r\n" and _continues():
                pos += 1
            else:
                break

    def _continues() -> bool:
        # inside a parenthesised group newlines are plain space
        return depth > 0

    def char() -> None:
        nonlocal pos
        if text[pos] == "\\":
            esc = text[pos + 1 : pos + 2]
            width = {"x": 2, "u": 4, "U": 8}.get(esc)
            if width:
                digits = text[pos + 2 : pos + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise fail("bad escape")
                pos += 2 + width
            elif esc in ('"', "\\", "[", "]", "n", "r", "t"):
                pos += 2
            else:
                raise fail("unknown escape")
        else:
            if text[pos] in "\r\n":
                raise fail("newline in literal")
            pos += 1

    depth = 0

    def sequence() -> None:
        nonlocal pos, depth
        items = 0
        while True:
            space(False)
            if pos >= n or text[pos] in "|)\r\n":
                return
            c = text[pos]
            if c == '"':
                pos += 1
                while pos < n and text[pos] != '"':
                    char()
                if pos >= n:
                    raise fail("unterminated literal")
                pos += 1
            elif c == "[":
                pos += 1
                if pos < n and text[pos] == "^":
                    pos += 1
                if pos < n and text[pos] == "]":
                    raise fail("empty class")
                while pos < n and text[pos] != "]":
                    char()
                    if pos < n and text[pos] == "-" and pos + 1 < n and text[pos + 1] != "]":
                        pos += 1
                        char()
                if pos >= n:
                    raise fail("unterminated class")
                pos += 1
            elif c == "(":
                pos += 1
                depth += 1
                alternates()
                space(True)
                if pos >= n or text[pos] != ")":
                    raise fail("expected )")
                depth -= 1
                pos += 1
            elif (m := _NAME.match(text, pos)) is not None:
                used.add(m.group())
                pos = m.end()
            else:
                raise fail("unexpected character")
            items += 1
            # postfix operators
            while pos < n and text[pos] in "*+?{":
                if text[pos] == "{":
                    m = re.compile(r"\{(\d+)(,(\d*))?\}").match(text, pos)
                    if not m:
                        raise fail("bad repetition")
                    if m.group(3) and int(m.group(3)) < int(m.group(1)):
                        raise fail("repetition max < min")
                    pos = m.end()
                else:
                    pos += 1

    def alternates() -> None:
        nonlocal pos
        sequence()
        while True:
            space(depth > 0)
            if pos < n and text[pos] == "|":
                pos += 1
                space(True)
                sequence()
            else:
                return

    while True:
        space(True)
        if pos >= n:
            break
        m = _NAME.match(text, pos)
        if not m:
            raise fail("expected a rule name")
        name = m.group()
        if name in defined:
            raise fail(f"rule {name} defined twice")
        defined[name] = pos
        pos = m.end()
        space(False)
        if not text.startswith("::=", pos):
            raise fail("expected ::=")
        pos += 3
        space(True)
        alternates()
        space(False)
        if pos < n and text[pos] not in "\r\n":
            raise fail("junk after rule")
    if "root" not in defined:
        raise ValueError("GBNF: no root rule")
    missing = used - set(defined)
    if missing:
        raise ValueError(f"GBNF: undefined rules {sorted(missing)}")


# -- Lark (llguidance's dialect, the common part) → GBNF -------------------------------------------------

_LARK_TOKEN = re.compile(
    r"""(?P<ws>[ \t]+)|(?P<nl>\r?\n)|(?P<comment>//[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"i?)
    |(?P<regex>/(?:[^/\\\n]|\\.)+/[a-z]*)
    |(?P<directive>%[a-z]+)
    |(?P<name>[?!]?[A-Za-z_][A-Za-z_0-9]*(?:\.-?\d+)?)
    |(?P<op>->|\.\.|[:|()\[\]?*+~])
    |(?P<number>\d+)""",
    re.X,
)


def _lark_tokens(text: str) -> list[list[tuple[str, str]]]:
    """The definitions of a Lark grammar, each a list of (kind, text) tokens."""
    defs: list[list[tuple[str, str]]] = []
    line_start = True
    pos = 0
    while pos < len(text):
        m = _LARK_TOKEN.match(text, pos)
        if not m:
            raise NotTranslatable(f"lark: unexpected {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        tok = m.group()
        pos = m.end()
        if kind in ("comment",):
            continue
        if kind == "nl":
            line_start = True
            continue
        if kind == "ws":
            line_start = False if not line_start else "indented"  # type: ignore[assignment]
            continue
        if line_start is True and kind in ("name", "directive"):
            defs.append([])
        line_start = False
        if not defs:
            raise NotTranslatable("lark: text before the first definition")
        defs[-1].append((kind, tok))
    return defs


class _LarkParser:
    def __init__(self, toks: list[tuple[str, str]]):
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def alts(self) -> tuple:
        out = [self.seq()]
        while (t := self.peek()) is not None and t == ("op", "|"):
            self.i += 1
            out.append(self.seq())
        return ("alt", out) if len(out) > 1 else out[0]

    def seq(self) -> tuple:
        items = []
        while (t := self.peek()) is not None and t not in (("op", "|"), ("op", ")"), ("op", "]")):
            if t == ("op", "->"):  # an alias names the tree node: no meaning for the language
                self.i += 2
                continue
            items.append(self.item())
        return ("seq", items)

    def item(self) -> tuple:
        kind, tok = self.toks[self.i]
        self.i += 1
        if kind == "string":
            if tok.endswith("i"):
                raise NotTranslatable("lark: case-insensitive string")
            import ast as _ast

            node: tuple = ("lit", _ast.literal_eval(tok))
        elif kind == "regex":
            body, _, flags = tok[1:].rpartition("/")
            if set(flags) - {"s"}:
                raise NotTranslatable(f"lark: regex flags {flags}")
            pattern = re.sub(r"\\/", "/", body)
            node = ("re", f"(?s:{pattern})" if "s" in flags else pattern)
        elif kind == "name":
            node = ("ref", tok.lstrip("?!").split(".")[0])
        elif tok == "(":
            node = self.alts()
            self.expect(")")
        elif tok == "[":
            node = ("rep", self.alts(), 0, 1)
            self.expect("]")
        else:
            raise NotTranslatable(f"lark: unexpected {tok!r}")
        while (t := self.peek()) is not None and t[0] == "op" and t[1] in "?*+~":
            self.i += 1
            if t[1] == "?":
                node = ("rep", node, 0, 1)
            elif t[1] == "*":
                node = ("rep", node, 0, None)
            elif t[1] == "+":
                node = ("rep", node, 1, None)
            else:
                lo = int(self.expect_kind("number"))
                hi = lo
                if self.peek() == ("op", ".."):
                    self.i += 1
                    hi = int(self.expect_kind("number"))
                node = ("rep", node, lo, hi)
        return node

    def expect(self, op: str) -> None:
        if self.peek() != ("op", op):
            raise NotTranslatable(f"lark: expected {op!r}")
        self.i += 1

    def expect_kind(self, kind: str) -> str:
        t = self.peek()
        if t is None or t[0] != kind:
            raise NotTranslatable(f"lark: expected a {kind}")
        self.i += 1
        return t[1]


def lark_gbnf(text: str, *, tail: int = 0) -> str:
    """GBNF for a Lark grammar: terminals become DFAs (exact), rules keep their structure, ``%ignore``
    becomes optional ignored text after every terminal, direct left recursion becomes repetition (GBNF
    parsers don't take left recursion). The lexer's longest-match rule has no GBNF form, so the result
    may accept a little more than the grammar: the local matcher has the last word. ``tail`` as for
    ``dfa_gbnf``, after a complete value."""
    rules: dict[str, tuple] = {}
    terminals: dict[str, tuple] = {}
    ignores: list[tuple] = []
    for toks in _lark_tokens(text):
        kind, head = toks[0]
        if kind == "directive":
            if head != "%ignore":
                raise NotTranslatable(f"lark: {head}")
            p = _LarkParser(toks[1:])
            ignores.append(p.alts())
            continue
        if len(toks) < 2 or toks[1] != ("op", ":"):
            raise NotTranslatable(f"lark: definition {head!r} without ':'")
        name = head.lstrip("?!").split(".")[0]
        p = _LarkParser(toks[2:])
        body = p.alts()
        if p.i != len(p.toks):
            raise NotTranslatable(f"lark: can't read the definition of {name}")
        (terminals if name.lstrip("_")[:1].isupper() else rules)[name] = body
    if "start" not in rules:
        raise NotTranslatable("lark: no start rule")

    def term_regex(node: tuple, seen: tuple[str, ...] = ()) -> str:
        kind = node[0]
        if kind == "lit":
            return rx.literal(node[1]) or "(?:)"
        if kind == "re":
            return f"(?:{node[1]})"
        if kind == "ref":
            if node[1] not in terminals or node[1] in seen:
                raise NotTranslatable(f"lark: terminal {node[1]} refers to a rule or to itself")
            return f"(?:{term_regex(terminals[node[1]], (*seen, node[1]))})"
        if kind == "seq":
            return "".join(term_regex(x, seen) for x in node[1]) or "(?:)"
        if kind == "alt":
            return "(?:" + "|".join(term_regex(x, seen) for x in node[1]) + ")"
        _, sub, lo, hi = node
        return f"(?:{term_regex(sub, seen)}){{{lo},{'' if hi is None else hi}}}"

    lines: list[str] = []
    term_names: dict[str, str] = {}

    def terminal(key: str, regex: str) -> str:
        if key not in term_names:
            prefix = f"t{len(term_names)}-"
            start, body = dfa_rules(lang_dfa(Term(regex)), prefix=prefix)
            lines.extend(body)
            term_names[key] = start
        return term_names[key]

    ws = ""
    if ignores:
        ign = "(?:" + "|".join(term_regex(i) for i in ignores) + ")"
        d = lang_dfa(Term(ign))
        closed = product(concat(d, d), complement(d), True).is_empty()  # L·L ⊆ L: then L* = L | ""
        ws = " ws"
        name = terminal("%ignore", ign)
        lines.append(f"ws ::= ( {name} )?" if closed else f"ws ::= ( {name} )*")

    safe = {n: f"r{i}-{re.sub(r'[^a-zA-Z0-9]', '', n)}" for i, n in enumerate(rules)}

    def expr(node: tuple) -> str:
        kind = node[0]
        if kind == "lit":
            return (gbnf_literal(node[1]) if node[1] else '""') + ws
        if kind == "re":
            return terminal("/" + node[1], node[1]) + ws
        if kind == "ref":
            if node[1] in rules:
                return safe[node[1]]
            if node[1] in terminals:
                return terminal(node[1], term_regex(terminals[node[1]])) + ws
            raise NotTranslatable(f"lark: undefined {node[1]}")
        if kind == "seq":
            return " ".join(expr(x) for x in node[1]) or '""'
        if kind == "alt":
            return "( " + " | ".join(expr(x) for x in node[1]) + " )"
        _, sub, lo, hi = node
        inner = f"( {expr(sub)} )"
        if (lo, hi) == (0, 1):
            return inner + "?"
        if (lo, hi) == (0, None):
            return inner + "*"
        if (lo, hi) == (1, None):
            return inner + "+"
        return inner + f"{{{lo},{'' if hi is None else hi}}}"

    for name, body in rules.items():
        alts = body[1] if body[0] == "alt" else [body]
        rec, base = [], []
        for a in alts:
            items = a[1] if a[0] == "seq" else [a]
            if items and items[0] == ("ref", name):
                rec.append(("seq", items[1:]))
            else:
                base.append(a)
        if rec and not base:
            raise NotTranslatable(f"lark: {name} only recurs")
        text_ = " | ".join(expr(a) for a in base)
        if rec:
            text_ = f"( {text_} ) ( " + " | ".join(expr(a) for a in rec) + " )*"
        lines.append(f"{safe[name]} ::= {text_}")
    _check_left_recursion(rules)
    root = f"root ::= {safe['start']}"  # ignored text between tokens only (and, a superset, at the end)
    if tail:
        root += f" ( {gbnf_class(FULL)}{{1,{tail}}} )?"
    return "\n".join([root, *lines]) + "\n"


def _check_left_recursion(rules: dict[str, tuple]) -> None:
    """Indirect left recursion (a rule reached again before any text) has no GBNF form here."""

    def firsts(node: tuple) -> tuple[set[str], bool]:
        """The rules a node may start with, and whether it may match the empty string."""
        kind = node[0]
        if kind in ("lit", "re"):
            return set(), kind == "lit" and not node[1]
        if kind == "ref":
            return ({node[1]} if node[1] in rules else set()), False
        if kind == "seq":
            out: set[str] = set()
            for x in node[1]:
                f, empty = firsts(x)
                out |= f
                if not empty:
                    return out, False
            return out, True
        if kind == "alt":
            out, empty = set(), False
            for x in node[1]:
                f, e = firsts(x)
                out |= f
                empty = empty or e
            return out, empty
        f, e = firsts(node[1])
        return f, e or node[2] == 0

    graph = {}
    for name, body in rules.items():
        alts = body[1] if body[0] == "alt" else [body]
        starts: set[str] = set()
        for a in alts:
            items = a[1] if a[0] == "seq" else [a]
            rest = ("seq", items[1:]) if items and items[0] == ("ref", name) else a
            starts |= firsts(rest)[0]
        graph[name] = starts
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        state[n] = 1
        for m in graph.get(n, ()):
            if state.get(m) == 1:
                raise NotTranslatable(f"lark: left recursion through {n} and {m}")
            if m not in state:
                visit(m)
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n)

"""Regular hole languages as automata over Unicode code points.

A regular hole language (regexes with and/or/not, stop phrases folded in) becomes a DFA whose
transitions are code-point interval sets. Servers take such languages as grammars (see gbnf.py: a DFA is
a right-linear GBNF grammar, exactly), and a DFA advanced over an already validated prefix is the
language of the rest (continuing a cut value under the same constraint). The hosted decoder also reads
small facts off a DFA: its finite set of strings (a choice), the longest value it allows (max_tokens).

Anything not translated raises NotTranslatable: the hole then runs without a server grammar and the
local matcher alone decides.
"""

from __future__ import annotations

import bisect
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

from . import regex as rx
from .lang import And, Grammar, Lang, Not, Term

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


def longest_bytes(dfa: Automaton, state: int) -> int | None:
    """The most UTF-8 bytes a value can still have from ``state`` (None: unbounded). A token is at
    least a byte, so this bounds ``max_tokens`` without cutting any value."""
    memo: dict[int, int | None] = {}
    on_path: set[int] = set()

    def walk(s: int) -> int | None:
        if s in memo:
            return memo[s]
        if s in on_path:
            return None
        on_path.add(s)
        best = 0
        for cs, t in dfa.trans[s]:
            width = len(chr(cs[-1][1]).encode("utf-8", errors="replace")) if cs else 1
            sub = walk(t)
            if sub is None:
                on_path.discard(s)
                memo[s] = None
                return None
            best = max(best, width + sub)
        on_path.discard(s)
        memo[s] = best
        return best

    return walk(state)


def ends_open(dfa: Automaton) -> bool:
    """Whether a value may end where it could also go on (an accepting state with a way out): a
    server that ends answers only at end-of-text needs a tail there to let the model say it ends."""
    return any(dfa.accept[s] and dfa.trans[s] for s in range(len(dfa)))

"""Hole languages as server-side grammars: GBNF from automata, JSON Schema and Lark.

Servers take grammars in their own syntax (llama.cpp's GBNF, xgrammar's EBNF, which reads GBNF), not
llguidance's Lark. A DFA (automata.py) is a right-linear GBNF grammar, exactly. JSON Schema (the subset
pydantic writes) gets its own GBNF, formatted as the local mask engine formats JSON. Every grammar is
checked on the client before it is sent (``check_gbnf``): an invalid grammar kills a llama.cpp server.

Anything not translated raises NotTranslatable: the hole then runs without a server grammar and the
local matcher alone decides.
"""

from __future__ import annotations

import json
import re

from . import regex as rx
from .automata import (
    FULL,
    SURROGATES,
    Automaton,
    Charset,
    NotTranslatable,
    complement,
    concat,
    cs_complement,
    cs_minus,
    cs_union,
    lang_dfa,
    product,
    trim,
)
from .lang import Term

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


_DIGITS = 19
"""The most digits a number's integer part (and its fraction) may have on a server: a small model at
temperature 0 can repeat a digit until ``max_tokens`` (measured: ``"population": 1111…`` for 200 tokens on
llama.cpp's native server, whose generation then took minutes). 19 digits hold any 64-bit integer; the
local matcher, which takes any number, still validates what comes back."""


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
            "integer": f'"-"? ( "0" | [1-9] [0-9]{{0,{_DIGITS - 1}}} )',
            "number": f'"-"? ( "0" | [1-9] [0-9]{{0,{_DIGITS - 1}}} ) ( "." [0-9]{{1,{_DIGITS}}} )? '
            "( [eE] [-+]? [0-9]{1,3} )?",
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

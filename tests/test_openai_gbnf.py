"""Server-side grammars for hosted holes: the DFA/GBNF translation must accept exactly what the local mask
engine accepts (or a subset, for JSON), and every grammar sent must parse."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Literal

import llguidance
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llguidance.gbnf_to_lark import gbnf_to_lark

from querylm.backends.hub import byte_tokenizer
from querylm.backends.random import RandomBackend
from querylm.constraints import automata as A
from querylm.constraints import gbnf as G
from querylm.constraints import regex as rx
from querylm.constraints.lang import And, Not, Or, Term, to_grammar
from querylm.constraints.matcher import accepts
from querylm.constraints.types import typed_hole


@pytest.fixture(scope="module")
def ll() -> llguidance.LLTokenizer:
    return RandomBackend(byte_tokenizer()).ll_tokenizer


CASES = {
    "int": (Term(rx.INT), (), ()),
    "stops_at_newline": (None, ("\n",), ()),
    "stops_before_two": (None, (), (".", "\n")),
    "stops_at_word": (None, ("END", "."), ()),
    "int_and_len": (And((Term(rx.INT), Term(rx.chars("<", 5)))), (), ()),
    "choices": (Term(rx.alternation(["yes", "no", "New York", "Newark"])), (), ()),
    "choices_words_stop": (
        And((Term(rx.words("<", 4)), Term(rx.alternation(["apple", "banana split", "cherry"])))),
        (),
        ("\n",),
    ),
    "not_in": (Not(Term(rx.alternation(["a", "b"]))), (), ()),
    "date": (Term(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"), (), ()),
    "or_regex": (Or((Term(r"[a-c]+"), Term(r"x{2,3}"))), (), ()),
    "contains": (Term(rx.contains(["ab"])), (), ()),
    "words_and_stop": (Term(rx.words("<=", 2)), (".",), ()),
    "float_stop_before": (Term(rx.FLOAT), (), (" ",)),
}
ALPHABET = "ab.\n -0123xyEND NewYorkspl"


def _samples(dfa: A.Automaton, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = [""]
    out += [("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12)))) for _ in range(n)]
    finite = A.finite_strings(dfa, limit=40) or []
    out += finite
    out += [s + c for s in finite for c in "a. \n"]  # just past the language
    out += [s[:-1] for s in finite if s]
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_dfa_language_is_the_mask_language(ll: llguidance.LLTokenizer, name: str) -> None:
    value, stops_at, stops_before = CASES[name]
    dfa = A.hole_dfa(value, stops_at, stops_before)
    grammar = (
        to_grammar(value, list(stops_at), list(stops_before)) if value or stops_at or stops_before else None
    )
    assert grammar is not None
    for s in _samples(dfa, 150, seed=hash(name) % 1000):
        state = dfa.walk(s)
        mine = state is not None and dfa.accept[state]
        assert mine == accepts(ll, grammar, s), (name, s)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gbnf_parses_and_means_the_dfa(ll: llguidance.LLTokenizer, name: str) -> None:
    """The GBNF passes our llama.cpp-syntax check and llguidance's own GBNF reader, and the language it
    reads back is the DFA's: from the start and after a prefix (continuations)."""
    value, stops_at, stops_before = CASES[name]
    dfa = A.hole_dfa(value, stops_at, stops_before)
    samples = _samples(dfa, 80, seed=7)
    for prefix in ["", *sorted({s[:2] for s in samples if s and dfa.walk(s[:2]) is not None})[:3]]:
        state = dfa.walk(prefix)
        assert state is not None
        try:
            text = G.dfa_gbnf(dfa, state)
        except A.NotTranslatable:
            assert dfa.accept[state] and not dfa.trans[state]  # only "" left: nothing to send
            continue
        G.check_gbnf(text)
        lark = gbnf_to_lark(text)
        assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", lark)) == ""
        top = json.dumps({"grammars": [{"lark_grammar": lark}]})
        for s in samples:
            if not s.startswith(prefix):
                continue
            rest = s[len(prefix) :]
            end = dfa.walk(rest, state)
            assert (end is not None and dfa.accept[end]) == accepts(ll, top, rest), (name, prefix, rest)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab.\n 1-", max_size=10))
def test_stop_phrase_dfa_matches_python_semantics(s: str) -> None:
    """STOPS_AT(X, ".") and STOPS_BEFORE(X, "\\n") together: the value ends at the first phrase."""
    dfa = A.hole_dfa(None, (".",), ("\n",))
    state = dfa.walk(s)
    ok = state is not None and dfa.accept[state]
    first = min((i for i in (s.find("."), s.find("\n")) if i >= 0), default=-1)
    assert ok == (first == -1 or first == len(s) - 1)


def test_finite_strings() -> None:
    dfa = A.hole_dfa(Term(rx.alternation(["yes", "no", "New York"])), (), ())
    assert sorted(A.finite_strings(dfa) or []) == ["New York", "no", "yes"]
    assert A.finite_strings(A.hole_dfa(Term(rx.INT), (), ())) is None
    assert A.finite_strings(A.hole_dfa(Term("[a-z]{3}"), (), ()), limit=100) is None  # 17576 strings
    n = A.hole_dfa(Term(rx.alternation(["New York", "Newark"])), (), ())
    assert sorted(A.finite_strings(n, n.walk("New")) or []) == [" York", "ark"]


def test_untranslatable_regexes_are_refused() -> None:
    for pattern in [r"(a)\1", r"(?i)abc", r"(?=a)b", r"\bword"]:
        with pytest.raises(A.NotTranslatable):
            A.parse_regex(pattern)


def test_gbnf_classes_escape_everything_odd() -> None:
    dfa = A.hole_dfa(Term(r'[\[\]\\"\^\-]|é|😀|\x{0}x'), (), ())
    text = G.dfa_gbnf(dfa)
    G.check_gbnf(text)
    assert "\x00" not in text and "\\x00" not in text  # NUL never reaches llama.cpp
    lark = gbnf_to_lark(text)
    assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", lark)) == ""


@pytest.mark.parametrize(
    "bad",
    [
        "root ::= foo\n",  # undefined rule
        'root ::= "abc\n',  # unterminated literal
        "root ::= [a-z\n",  # unterminated class
        'root ::= "\\q"\n',  # unknown escape
        'root ::= "\\x4"\n',  # short escape
        'foo ::= "a"\n',  # no root
        'root ::= "a"\nroot ::= "b"\n',  # defined twice
        'root ::= ( "a" \n',  # unbalanced
        'root ::= "a"{3,1}\n',  # bad repetition
        "root ::= []\n",  # empty class
        'root_x ::= "a"\n',  # llama.cpp names have no underscore
    ],
)
def test_check_gbnf_rejects_what_llama_cpp_would_choke_on(bad: str) -> None:
    with pytest.raises(ValueError):
        G.check_gbnf(bad)


def test_check_gbnf_accepts_llama_cpp_syntax() -> None:
    G.check_gbnf('root ::= ( "a" | [b-c]+ x )? # comment\nx ::= [^\\n"]{2,5} "\\""\n')
    G.check_gbnf('root ::= (\n  "a"\n  | "b"\n)\n')


@dataclasses.dataclass
class Inner:
    x: int
    tags: list[str]


@dataclasses.dataclass
class Person:
    name: str
    age: int
    score: float = 1.5
    inner: Inner | None = None
    kind: Literal["a", "b"] = "a"


JSON_SAMPLES = [
    '{"name": "Bob", "age": 3}',
    '{"name": "Bob", "age": 3, "score": 2.5}',
    '{"name":"Bob","age":3}',
    '{"name": "Bob", "age": 3, "inner": {"x": 1, "tags": ["a", "b"]}, "kind": "b"}',
    '{"age": 3, "name": "Bob"}',
    '{"name": "Bob", "age": 3, "inner": null}',
    '{"name": "B\\"o\\u00e9b", "age": -30, "score": 1e5}',
    '{"name": "Bob", "age": 03}',
    '{"name": "Bob", "kind": "a", "age": 3}',
    '{"name": "Bob", "age": 3, "score": 1.0E+2}',
    '{"name": "\\n\\t\\\\ é😀", "age": 12345678901234567890}',
    '{"name": "Bob", "age": 3, "inner": {"x": 1, "tags": []}}',
    '{"name": "Bob", "age": 3, "kind": "c"}',
]


def test_json_gbnf_is_the_mask_engines_json(ll: llguidance.LLTokenizer) -> None:
    hole = typed_hole(Person)
    schema = json.loads(hole.lang.text)
    text = G.json_gbnf(schema)
    G.check_gbnf(text)
    mine = json.dumps({"grammars": [{"lark_grammar": gbnf_to_lark(text)}]})
    theirs = to_grammar(hole.lang, [], [])
    results = [(accepts(ll, mine, s), accepts(ll, theirs, s)) for s in JSON_SAMPLES]
    differ = [s for s, (a, b) in zip(JSON_SAMPLES, results, strict=True) if a != b]
    assert differ == ['{"name": "\\n\\t\\\\ é😀", "age": 12345678901234567890}']  # 20 digits: past the bound
    assert sum(a for a, _ in results) >= 5


def test_json_gbnf_refuses_what_it_cant_express() -> None:
    with pytest.raises(A.NotTranslatable):
        G.json_gbnf({"type": "string", "pattern": "^a+$"})
    with pytest.raises(A.NotTranslatable):
        G.json_gbnf({"$ref": "#/$defs/Missing"})


LARK_SAMPLES = {
    "iso_date": [
        "2024-02-29",
        "2023-02-29",
        "1969-07-20",
        "0000-01-01",
        "2024-13-01",
        "2024-1-01",
        "1999-12-31 ",
    ],
    "iso_datetime": [
        "2024-01-01T10:20Z",
        "2024-01-01T10:20:30.5+01:00",
        "2024-01-01T24:00",
        "2024-01-01T10:20",
    ],
    "arithmetic": ["2+3*4", "2 + 3 * (4 - 1)", "-2", "2 +", "(1", "1.5/0.5", "2  *  -3", "01"],
    "json": [
        '{"a": [1, 2, {"b": null}]}',
        " [ ] ",
        "[ ] ",
        '{"a" 1}',
        '"x"',
        "tru",
        '{"k":"v","n":-1.5e3}',
        "[1,]",
    ],
    "csv_row": ['a,b,"c,d"', '"x""y",', 'a"b', ",,", "plain"],
}


@pytest.mark.parametrize("name", sorted(LARK_SAMPLES))
def test_lark_grammars_become_gbnf(ll: llguidance.LLTokenizer, name: str) -> None:
    """The shipped grammars translate; the GBNF rejects nothing the grammar accepts (it may accept a
    little more: the local matcher decides), and here it means the same on every sample."""
    from querylm.constraints.lang import Grammar
    from querylm.constraints.where import GRAMMAR_DIR

    text = (GRAMMAR_DIR / f"{name}.lark").read_text()
    gb = G.lark_gbnf(text)
    G.check_gbnf(gb)
    mine = json.dumps({"grammars": [{"lark_grammar": gbnf_to_lark(gb)}]})
    theirs = to_grammar(Grammar("lark", text, name), [], [])
    for s in LARK_SAMPLES[name]:
        a, b = accepts(ll, mine, s), accepts(ll, theirs, s)
        assert a or not b, (name, s)  # never narrower
        if s == s.rstrip():  # ignored text at the very end: the GBNF allows it, the matcher doesn't
            assert a == b, (name, s)
    G.check_gbnf(G.lark_gbnf(text, tail=8))


def test_lark_left_recursion() -> None:
    direct = G.lark_gbnf('start: sum\nsum: sum "+" NUM | NUM\nNUM: /[0-9]+/\n')
    assert "sum ::= ( " in direct and ")*" in direct  # A: A x | y  →  A: y (x)*
    with pytest.raises(A.NotTranslatable, match="left recursion"):
        G.lark_gbnf('start: a\na: b "x" | "y"\nb: a "z"\n')
    with pytest.raises(A.NotTranslatable):
        G.lark_gbnf('start: %json {"type": "integer"}\n')


def test_json_gbnf_bounds_the_digits_of_numbers(ll: llguidance.LLTokenizer) -> None:
    """A number's digits are bounded on the server (a model can repeat a digit until max_tokens), at a
    size every 64-bit integer fits; what fits is exactly what the local matcher takes."""
    for schema in ({"type": "integer"}, {"type": "number"}):
        text = G.json_gbnf(schema)
        G.check_gbnf(text)
        mine = json.dumps({"grammars": [{"lark_grammar": gbnf_to_lark(text)}]})
        for value in ["0", "-7", str(2**63 - 1), str(-(2**63)), "9" * 19]:
            assert accepts(ll, mine, value), (schema, value)
        assert not accepts(ll, mine, "1" * 20)
    number = json.dumps({"grammars": [{"lark_grammar": gbnf_to_lark(G.json_gbnf({"type": "number"}))}]})
    assert accepts(ll, number, "-1.5e3") and accepts(ll, number, "3.14159")

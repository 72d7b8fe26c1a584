"""The query language without a model: source → IR (parse) → generator (compile_source).

Tables of sources and what they must parse to; the compiled generator is driven by hand, answering its
("hole", ...) events, so the order of events and the binding of hole values are checked exactly.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import querylm
from querylm import UnsupportedError, compile_source
from querylm.language import check as plan_module
from querylm.language.compile import RETURNED, compile_query
from querylm.language.ir import Hole, Interpolation, Role, Text
from querylm.language.parse import parse

# -- helpers ----------------------------------------------------------------------------------------


def segments(src: str) -> list[list[tuple[Any, ...]]]:
    return segments_of(parse(src))


def segments_of(q: Any) -> list[list[tuple[Any, ...]]]:
    """Each prompt's segments as plain tuples: ("text", s), ("hole", name, type), ("interp", src),
    ("role", name)."""
    out = []
    for prompt in q.prompts:
        row: list[tuple[Any, ...]] = []
        for seg in prompt.segments:
            if isinstance(seg, Text):
                row.append(("text", seg.text))
            elif isinstance(seg, Hole):
                row.append(("hole", seg.name, seg.type_source))
            elif isinstance(seg, Interpolation):
                row.append(("interp", seg.source))
            else:
                assert isinstance(seg, Role)
                row.append(("role", seg.role))
        out.append(row)
    return out


def drive(compiled: Any, answers: dict[str, list[Any]] | None = None, **inputs: Any):
    """Run a compiled query's generator by hand. Each hole takes the next value of its name in
    ``answers``; returns the events seen (interpolations evaluated) and the return value."""
    queues = {k: list(v) for k, v in (answers or {}).items()}
    gen = compiled.function(**inputs)
    events: list[tuple[Any, ...]] = []
    send: Any = None
    while True:
        try:
            event = gen.send(send)
        except StopIteration as stop:  # `return X` comes back marked: (RETURNED, X)
            marked = isinstance(stop.value, tuple) and stop.value[:1] == (RETURNED,)
            return events, stop.value[1] if marked else stop.value
        send = None
        kind = event[0]
        if kind == "text":
            events.append(("text", event[1]))
        elif kind == "interp":
            events.append(("interp", event[2]()))
        elif kind == "role":
            events.append(("role", event[1]))
        else:
            assert kind == "hole"
            hole = compiled.query.holes[event[1]]
            type_ = event[2]() if event[2] is not None else None
            send = queues[hole.name].pop(0)
            events.append(("hole", hole.name, type_, send))


def line_col(text: str, marker: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based line and column of ``marker`` in ``text`` (its ``occurrence``-th appearance)."""
    idx = -1
    for _ in range(occurrence + 1):
        idx = text.index(marker, idx + 1)
    before = text[:idx]
    return before.count("\n") + 1, idx - (before.rfind("\n") + 1) + 1


# -- the decoder clause -----------------------------------------------------------------------------

DECODERS = [
    ('"a [X]"', "argmax", {}),
    ('argmax\n    "a [X]"', "argmax", {}),
    ('argmax(max_len=50)\n    "a [X]"', "argmax", {"max_len": 50}),
    ('sample\n    "a [X]"', "sample", {}),
    (
        'sample(temperature=0.7, top_k=5, top_p=0.9, n=2, seed=3)\n    "a [X]"',
        "sample",
        {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "n": 2, "seed": 3},
    ),
    ('sample(\n    temperature=0.5,\n    n=3,\n)\n    "a [X]"', "sample", {"temperature": 0.5, "n": 3}),
]


@pytest.mark.parametrize("src, name, args", DECODERS)
def test_decoder_clause(src: str, name: str, args: dict[str, Any]) -> None:
    q = parse(src)
    assert (q.decoder.name, q.decoder.args) == (name, args)
    assert [h.name for h in q.holes] == ["X"]
    assert compile_source(src).compiled.query.decoder.args == args


OTHER_DECODERS = [
    ("beam(n=2)", "beam", {"n": 2}),
    ("beam_search(n=3)", "beam", {"n": 3}),
    ("num_beams(n=2)", "beam", {"n": 2}),
    ("beam_sample(n=2, temperature=0.5)", "beam_sample", {"n": 2, "temperature": 0.5}),
    ("best_k(n=2)", "best_k", {"n": 2}),
]


@pytest.mark.parametrize("clause, name, args", OTHER_DECODERS)
def test_other_decoders_parse_to_their_canonical_name(clause: str, name: str, args: dict[str, Any]) -> None:
    src = f'{clause}\n    "Q: [X]"'
    q = parse(src)
    assert (q.decoder.name, q.decoder.args) == (name, args)
    assert q.decoder.position is not None and (q.decoder.position.line, q.decoder.position.col) == (1, 1)
    if name in plan_module.IMPLEMENTED:
        assert compile_source(src).compiled.query.decoder.args == args
    else:
        with pytest.raises(UnsupportedError, match="not supported yet"):
            compile_source(src)


def test_a_parsed_but_unimplemented_decoder_is_unsupported(monkeypatch) -> None:
    monkeypatch.setattr(plan_module, "IMPLEMENTED", {"argmax", "sample"})
    src = 'best_k(n=2)\n    "Q: [X]"'
    with pytest.raises(UnsupportedError, match="best_k decoder is parsed but not supported yet") as info:
        plan_module.plan(compile_query(parse(src)))
    assert info.value.position is not None
    assert (info.value.position.line, info.value.position.col) == (1, 1)


# -- prompt statements ------------------------------------------------------------------------------

PROMPTS = [
    ('"a [X] b"', [[("text", "a "), ("hole", "X", None), ("text", " b")]]),
    ('"[X]"', [[("hole", "X", None)]]),
    ('"[ X ]"', [[("hole", "X", None)]]),
    ('"[N: int]"', [[("hole", "N", "int")]]),
    ('"[N:float]"', [[("hole", "N", "float")]]),
    ('"[B: bool]"', [[("hole", "B", "bool")]]),
    ('"[S: str]"', [[("hole", "S", "str")]]),
    ("\"[M: Literal['happy', 'sad']]\"", [[("hole", "M", "Literal['happy', 'sad']")]]),
    ('\'[M: Literal["a]", "b"]]\'', [[("hole", "M", 'Literal["a]", "b"]')]]),
    ('"[P: Person]"', [[("hole", "P", "Person")]]),
    ('"{x} and {y + 1}"', [[("interp", "x"), ("text", " and "), ("interp", "y + 1")]]),
    ('\'{ {"k": 1}["k"] }\'', [[("interp", '{"k": 1}["k"]')]]),
    ('"[[X]] {{y}} [X]"', [[("text", "[X] {y} "), ("hole", "X", None)]]),
    ('"[[not a hole]] {{not code}}"', [[("text", "[not a hole] {not code}")]]),
    ('"a]b ]] c"', [[("text", "a]b ] c")]]),
    ('"a\\nb\\t[X]"', [[("text", "a\nb\t"), ("hole", "X", None)]]),
    ('r"a\\n[X]"', [[("text", "a\\n"), ("hole", "X", None)]]),
    ('"""one\ntwo [X]"""', [[("text", "one\ntwo "), ("hole", "X", None)]]),
    (
        '"{:system}Be brief.{:user}Hi {name}{:assistant}[A]"',
        [
            [
                ("role", "system"),
                ("text", "Be brief."),
                ("role", "user"),
                ("text", "Hi "),
                ("interp", "name"),
                ("role", "assistant"),
                ("hole", "A", None),
            ]
        ],
    ),
    (
        '"first [A]"\n"second [B]"',
        [[("text", "first "), ("hole", "A", None)], [("text", "second "), ("hole", "B", None)]],
    ),
    ('"[A][B]"', [[("hole", "A", None), ("hole", "B", None)]]),
    ("'single quotes [X]'", [[("text", "single quotes "), ("hole", "X", None)]]),
]


@pytest.mark.parametrize("src, expected", PROMPTS)
def test_prompt_segments(src: str, expected: list[list[tuple[Any, ...]]]) -> None:
    assert segments(src) == expected


def test_roles_are_flagged() -> None:
    assert parse('"{:user}Hi [X]"').uses_roles
    assert not parse('"Hi [X]"').uses_roles


HOLE_POSITIONS = [
    ('"a [X]"', [(1, 4)]),
    ('"[A] and [A]"', [(1, 2), (1, 10)]),
    ('"[[X]] [X]"', [(1, 8)]),
    ('"a\\n\\t[X]"', [(1, 7)]),
    ('x = 1\n"""one\n  two [X]"""', [(3, 7)]),
    ('for i in range(2):\n    "- [ITEM]"', [(2, 8)]),
    ('"café [X]"', [(1, 7)]),
    ('argmax\n    "a [X]"', [(2, 8)]),
]


@pytest.mark.parametrize("src, where", HOLE_POSITIONS)
def test_hole_positions(src: str, where: list[tuple[int, int]]) -> None:
    holes = parse(src).holes
    assert [(h.position.line, h.position.col) for h in holes] == where
    for h in holes:
        assert h.position.source_line == src.split("\n")[h.position.line - 1]


# -- Python between prompts and the events of the compiled generator --------------------------------


def test_events_in_order_with_roles_interpolations_and_holes() -> None:
    src = '"{:system}Be brief.{:user}Q: {q} [[x]]\\n"\n"{:assistant}[A: int] then {A + 1}"\nreturn A * 2'
    compiled = compile_source(src).compiled
    events, value = drive(compiled, {"A": [20]}, q="why?")
    assert events == [
        ("role", "system"),
        ("text", "Be brief."),
        ("role", "user"),
        ("text", "Q: "),
        ("interp", "why?"),
        ("text", " [x]\n"),
        ("role", "assistant"),
        ("hole", "A", int, 20),
        ("text", " then "),
        ("interp", 21),
    ]
    assert value == 40


BRANCHES = [
    ({"A": ["yes"]}, [("hole", "A", None, "yes"), ("text", "Y")]),
    ({"A": ["maybe"]}, [("hole", "A", None, "maybe"), ("text", "M")]),
    ({"A": ["no"]}, [("hole", "A", None, "no"), ("text", "N")]),
]


@pytest.mark.parametrize("answers, events", BRANCHES)
def test_if_elif_else_on_a_hole_value(answers: dict[str, list[Any]], events: list[tuple[Any, ...]]) -> None:
    src = '"[A]"\nif A == "yes":\n    "Y"\nelif A.startswith("may"):\n    "M"\nelse:\n    "N"'
    assert drive(compile_source(src).compiled, answers) == (events, None)


def test_for_loop_binds_each_value_for_later_code() -> None:
    src = """
items = []
for i in range(n):
    "{i}. [ITEM]\\n" where len(TOKENS(ITEM)) < 5
    items.append(ITEM.strip())
"Last: {ITEM}"
return items
"""
    compiled = compile_source(src).compiled
    assert compiled.inputs == ["n"]
    events, value = drive(compiled, {"ITEM": [" a", " b ", "c"]}, n=3)
    assert value == ["a", "b", "c"]
    assert events[:3] == [("interp", 0), ("text", ". "), ("hole", "ITEM", None, " a")]
    assert events[-2:] == [("text", "Last: "), ("interp", "c")]
    assert [e[3] for e in events if e[0] == "hole"] == [" a", " b ", "c"]


def test_while_loop_stops_on_a_hole_value() -> None:
    src = 'count = 0\nwhile True:\n    "more? [A]"\n    count += 1\n    if A == "stop":\n        break\nreturn count'
    events, value = drive(compile_source(src).compiled, {"A": ["go", "go", "stop"]})
    assert value == 3
    assert events.count(("text", "more? ")) == 3


def test_assignments_and_function_calls_between_prompts() -> None:
    src = """
def shout(s):
    return s.upper() + "!"
words = text.split()
"There are {len(words)} words. [X]"
loud = shout(X)
"{loud}"
return loud
"""
    compiled = compile_source(src).compiled
    assert compiled.inputs == ["text"]
    events, value = drive(compiled, {"X": ["ok"]}, text="a b c")
    assert events == [
        ("text", "There are "),
        ("interp", 3),
        ("text", " words. "),
        ("hole", "X", None, "ok"),
        ("interp", "OK!"),
    ]
    assert value == "OK!"


def test_a_string_inside_a_nested_function_is_python_not_a_prompt() -> None:
    src = 'def doc():\n    "not a prompt [Y]"\n    return 1\n"a [X]"'
    q = parse(src)
    assert [h.name for h in q.holes] == ["X"]
    assert len(q.prompts) == 1


def test_interpolations_see_the_current_values() -> None:
    src = 'x = 1\n"{x} "\nx = 2\n"{x} [A]"'
    events, _ = drive(compile_source(src).compiled, {"A": ["z"]})
    assert [e[1] for e in events if e[0] == "interp"] == [1, 2]


# -- inputs: the names a string query reads without defining them ---------------------------------

INPUTS = [
    ('"{a} [X]"', ["a"]),
    ('"{b} {a} [X]"', ["a", "b"]),
    ('"[X: T]"', ["T"]),
    ('x = 1\n"{x} [X]"', []),
    ('for i in range(n):\n    "{i} [X]"', ["n"]),
    ('import math\n"{math.pi} [X]"', []),
    ('from math import pi\n"{pi} [X]"', []),
    ('"[X]"\n"{X}"', []),
    ('"{len(items)} {sorted(items)} [X]"', ["items"]),
    ('"{[i * k for i in xs]} [X]"', ["k", "xs"]),
    ('def f(a):\n    return a + c\n"{f(b)} [X]"', ["b", "c"]),
    ('try:\n    "a [X]"\nexcept ValueError as e:\n    "{e}"', []),
    ('"[X]"\nwhere X in OPTIONS', ["OPTIONS"]),
    ('"[X]" where len(TOKENS(X)) < limit and STOPS_AT(X, stop)', ["limit", "stop"]),
]


@pytest.mark.parametrize("src, inputs", INPUTS)
def test_free_names_become_inputs(src: str, inputs: list[str]) -> None:
    assert compile_source(src).compiled.inputs == inputs


def test_function_form_inputs_are_its_parameters() -> None:
    assert doc_query.plan().compiled.inputs == ["topic"]


# -- the from clause --------------------------------------------------------------------------------

FROMS = [
    ('"a [X]"\nfrom "random"', "random", (2, 6)),
    ('argmax\n    "a [X]"\nfrom "local:smollm2"\nwhere len(TOKENS(X)) < 3', "local:smollm2", (3, 6)),
    ('"a [X]"\nwhere len(TOKENS(X)) < 3\nfrom   "org/name"', "org/name", (3, 8)),
    ('"a [X]"', None, None),
    ('from math import pi\n"{pi} [X]"', None, None),
]


@pytest.mark.parametrize("src, model, where", FROMS)
def test_from_clause(src: str, model: str | None, where: tuple[int, int] | None) -> None:
    q = parse(src)
    assert q.model == model
    pos = q.model_position
    assert ((pos.line, pos.col) if pos else None) == where


# -- where clauses ----------------------------------------------------------------------------------

WHERES = [
    ('"[X]"\nwhere INT(X)', "INT(X)", 1),
    ('"[X] [Y]"\nwhere len(TOKENS(X)) < 5 and INT(Y)', "len(TOKENS(X)) < 5 and INT(Y)", 2),
    (
        '"[X]"\nwhere len(X) < 9 and (INT(X) or X in ["a", "b"]) and not X in ["1"]',
        "len(X) < 9 and (INT(X) or X in ['a', 'b']) and (not X in ['1'])",
        3,
    ),
    (
        '"[X] [Y]"\nwhere len(TOKENS(X)) < 5 and\n    INT(Y) and\n    STOPS_AT(X, ".")',
        "len(TOKENS(X)) < 5 and INT(Y) and STOPS_AT(X, '.')",
        3,
    ),
    (
        '"[X] [Y]"\nwhere (len(TOKENS(X)) < 5\n       # a comment\n       and INT(Y))\n',
        "len(TOKENS(X)) < 5 and INT(Y)",
        2,
    ),
    ('"[X] [Y]"\nwhere STOPS_AT(X, ".") and len(Y) < len(X)', "STOPS_AT(X, '.') and len(Y) < len(X)", 2),
]


@pytest.mark.parametrize("src, text, n_conjuncts", WHERES)
def test_where_clause(src: str, text: str, n_conjuncts: int) -> None:
    q = parse(src)
    assert q.where is not None and ast.unparse(q.where) == text
    assert len(compile_source(src).global_conjuncts) == n_conjuncts


def test_global_conjunct_waits_for_the_other_holes_it_reads() -> None:
    plan = compile_source('"[X] [Y]"\nwhere STOPS_AT(X, ".") and len(Y) < len(X)')
    x, y = plan.compiled.query.holes
    assert [ast.unparse(c) for c in plan.conjuncts_for(x, set())] == ["STOPS_AT(X, '.')"]
    assert plan.conjuncts_for(y, set()) == []
    assert [ast.unparse(c) for c in plan.conjuncts_for(y, {"X"})] == ["len(Y) < len(X)"]


def test_inline_where_applies_to_its_own_statement_only() -> None:
    src = (
        '"[A] [B]" where len(A) < 3 and INT(B)\n"[C]"\n"[D]" where len(TOKENS(D)) < 4\nwhere STOPS_AT(C, ".")'
    )
    plan = compile_source(src)
    a, b, c, d = plan.compiled.query.holes
    assert a.inline_where is b.inline_where and ast.unparse(a.inline_where) == "len(A) < 3 and INT(B)"
    assert c.inline_where is None
    assert [ast.unparse(x) for x in plan.conjuncts_for(a, set())] == ["len(A) < 3"]
    assert [ast.unparse(x) for x in plan.conjuncts_for(b, set())] == ["INT(B)"]
    assert [ast.unparse(x) for x in plan.conjuncts_for(c, set())] == ["STOPS_AT(C, '.')"]
    assert [ast.unparse(x) for x in plan.conjuncts_for(d, set())] == ["len(TOKENS(D)) < 4"]
    assert ast.unparse(plan.compiled.query.where) == "STOPS_AT(C, '.')"


def test_the_word_where_inside_a_prompt_is_text() -> None:
    q = parse('"where are you? [X]" where len(X) < 3')
    assert segments('"where are you? [X]" where len(X) < 3')[0][0] == ("text", "where are you? ")
    assert q.holes[0].inline_where is not None and q.where is None


def test_inline_where_inside_a_loop() -> None:
    src = 'for i in range(2):\n    "[X]" where STOPS_AT(X, ".")\n    "{X}"'
    events, _ = drive(compile_source(src).compiled, {"X": ["a.", "b."]})
    assert [e[1] for e in events if e[0] == "interp"] == ["a.", "b."]
    assert ast.unparse(parse(src).holes[0].inline_where) == "STOPS_AT(X, '.')"


def test_where_positions_are_the_users() -> None:
    src = '"[X]"\nwhere len(TOKENS(X)) < 5 and\n      STOPS_AT(X, ".")'
    q = parse(src)
    conj = q.where.body.values  # type: ignore[union-attr]
    pos = [q.source_map.of(c) for c in conj]
    assert [(p.line, p.col) for p in pos] == [(2, 7), (3, 7)]


# -- files and the function form --------------------------------------------------------------------


def test_file_query_positions_name_the_file(write_query) -> None:
    text = 'argmax\n    "Q: {q}\\nA: [ANSWER]"\nwhere STOPS_AT(ANSWER, ".")\n'
    path = write_query(text, "capital.lmql")
    plan = compile_source(path)
    q = plan.compiled.query
    assert q.name == "capital"
    pos = q.holes[0].position
    assert (pos.filename, pos.line, pos.col) == (str(path), *line_col(text, "[ANSWER]"))
    assert line_col(text, "[ANSWER]") == (2, 17)
    assert plan.compiled.inputs == ["q"]


@querylm.query
def doc_query(topic: str):
    """lmql
    "Tell me about {topic}.\n[FACT]" where STOPS_AT(FACT, "\n")
    "A backslash-n: \\n, a tab:\t, braces: {{}}"
    return FACT.strip()
    """


@querylm.query
def doc_with_clauses(q):
    """lmql
    sample(n=2, seed=1)
        "Q: {q}\n[A]"
        "{A}"
    from "random"
    where len(TOKENS(A)) < 4
    """


def test_docstring_query_escapes_and_positions() -> None:
    plan = doc_query.plan()
    q = plan.compiled.query
    assert segments_of(q) == [
        [("text", "Tell me about "), ("interp", "topic"), ("text", ".\n"), ("hole", "FACT", None)],
        [("text", "A backslash-n: \\n, a tab:\t, braces: {}")],
    ]
    assert ast.unparse(q.holes[0].inline_where) == "STOPS_AT(FACT, '\\n')"
    text = Path(__file__).read_text()
    line, col = line_col(text, "[FACT]")
    pos = q.holes[0].position
    assert (pos.filename, pos.line, pos.col) == (inspect.getsourcefile(doc_query.fn), line, col)
    assert pos.source_line.strip() == text.split("\n")[line - 1].strip()
    events, value = drive(plan.compiled, {"FACT": [" cats "]}, topic="cats")
    assert events[:4] == [
        ("text", "Tell me about "),
        ("interp", "cats"),
        ("text", ".\n"),
        ("hole", "FACT", None, " cats "),
    ]
    assert value == "cats"


def test_docstring_query_with_decoder_from_and_where() -> None:
    q = doc_with_clauses.plan().compiled.query
    assert (q.decoder.name, q.decoder.args) == ("sample", {"n": 2, "seed": 1})
    assert q.model == "random"
    assert ast.unparse(q.where) == "len(TOKENS(A)) < 4"
    text = Path(__file__).read_text()
    line, col = line_col(text, 'from "random"\n    where len(TOKENS(A)) < 4')
    assert (q.model_position.line, q.model_position.col) == (line, col + len("from "))


def test_f_form_is_an_inline_where() -> None:
    f = querylm.F("Summarize {text}:[S]", "STOPS_AT(S, '.')")
    q = f.plan.compiled.query
    assert f.plan.compiled.inputs == ["text"]
    assert ast.unparse(q.holes[0].inline_where) == "STOPS_AT(S, '.')"


# -- LMQL's variable decorators [@f X] ---------------------------------------------------------------

DECORATED = [
    ('"a [@f X]"', "X", ["f"], None),
    ('"a [@post @stream @pre RESPONSE]"', "RESPONSE", ["post", "stream", "pre"], None),
    ('"a [@lmql.decorators.pre X: int]"', "X", ["lmql.decorators.pre"], "int"),
    ("\"a [@chat(a=12, b='x y') @g X]\"", "X", ["chat(a=12, b='x y')", "g"], None),
]


@pytest.mark.parametrize("src, name, decorators, type_src", DECORATED)
def test_hole_decorators(src: str, name: str, decorators: list[str], type_src: str | None) -> None:
    (hole,) = parse(src).holes
    assert (hole.name, [ast.unparse(d) for d in hole.decorators], hole.type_source) == (
        name,
        decorators,
        type_src,
    )


@pytest.mark.parametrize(
    "src, message, col",
    [
        ('"a [@ X]"', "invalid decorator '@'", 4),
        ('"a [@f( X]"', "invalid decorator '@f( X'", 4),
        ('"ab [@1x X]"', "invalid decorator '@1x'", 5),
    ],
)
def test_hole_decorator_errors_keep_positions(src: str, message: str, col: int) -> None:
    with pytest.raises(querylm.QuerySyntaxError, match=re.escape(message)) as err:
        parse(src)
    assert err.value.position is not None and (err.value.position.line, err.value.position.col) == (1, col)

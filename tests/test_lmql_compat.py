"""LMQL programs run unchanged: tables of LMQL programs with the behaviour LMQL gives them (its docs and
its own tests in eth-sri/lmql ``src/lmql/tests/``), on the random model (fast, offline)."""

from __future__ import annotations

import pytest

import querylm
from querylm.backends.models import resolve

RANDOM = resolve("random")


def value(where: str, prompt: str = "Q: [X]") -> str:
    r = querylm.run(f"{prompt!r} where {where}", model="random")
    assert isinstance(r, querylm.QueryResult)
    return r.variables["X"]


# -- 1. stop phrases with side conditions -------------------------------------------------------------
# LMQL (ops.execute_op_stops_at_only): a stop phrase in an `and` ends the value only where its sibling
# constraints hold on the text so far, phrase included; the value is then cut at the earliest phrase in
# its last token (test_stopping.py::test_stop_overlapping_before).

EXACT = [
    ('STOPS_BEFORE(X, "c") and X == "abc"', "ab"),  # the example; LMQL gives "ab"
    ('STOPS_AT(X, ".") and X == "a.b."', "a.b."),  # "a." is no stop point: X == "a.b." fails there
    ('X == "a.b." and STOPS_BEFORE(X, ".")', "a.b"),
    (
        "STOPS_BEFORE(X, ',') and STOPS_BEFORE(X, '\"') and STOPS_BEFORE(X, ']') and len(TOKENS(X)) < 10 "
        "and X == 'abc\",'",
        "abc",  # LMQL's test_stop_overlapping_before
    ),
    # the side condition holds only on "abc", generated as one token holding a "b": LMQL cuts there too
    ('STOPS_AT(X, "b") and X == "abc"', "ab"),
    ('STOPS_AT(X, "b") and X == "a bc"', "a b"),
    ('STOPS_AT(X, ".")', None),  # no side condition: the first phrase ends it, as before
]


@pytest.mark.parametrize("where,expected", EXACT)
def test_stop_with_side_conditions_exact(where: str, expected: str | None) -> None:
    got = value(where)
    if expected is None:
        assert "." not in got[:-1]
    else:
        assert got == expected


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("kind", ["STOPS_AT", "STOPS_BEFORE"])
def test_stop_waits_for_a_token_minimum(kind: str, n: int) -> None:
    """``len(TOKENS(X)) > n``: an "e" in the first n tokens does not end the value; the first one
    ending after them does (kept or dropped)."""
    r = querylm.run(f'"Q: [X]" where {kind}(X, "e") and len(TOKENS(X)) > {n}', model="random")
    rec = r.holes[0]
    text = r.variables["X"]
    head = RANDOM.decode(rec.ids[:n])  # the first n generated tokens (a dropped phrase keeps them)
    assert text.startswith(head) and len(rec.ids) >= n
    assert "e" in head, "the random model put no 'e' early: the side condition is not tested"
    if kind == "STOPS_AT":
        assert len(rec.ids) > n and text.endswith("e") and "e" not in text[len(head) : -1]
    else:
        assert "e" not in text[len(head) :]


def test_stop_with_a_character_minimum_may_pass_earlier_phrases() -> None:
    """The issue's ``STOPS_AT(S, ".") and len(...) > 40`` in characters (the grammar's side condition):
    "." may appear before the 41st character; the value ends at the first "." after it."""
    got = value('STOPS_AT(X, "e") and len(X) > 40')
    assert len(got) > 40 and got.endswith("e")
    assert "e" not in got[40:-1]
    assert "e" in got[:40]  # the random model's text does hold an earlier "e": the case is tested


def test_a_token_minimum_stop_is_refused_by_beams() -> None:
    with pytest.raises(querylm.UnsupportedError, match="token minimum"):
        querylm.run('beam(n=2)\n    "Q: [X]"\nwhere STOPS_AT(X, ".") and len(TOKENS(X)) > 3', model="random")


# -- 2. nested queries with arguments run at decode time ---------------------------------------------


@querylm.query
def one_of(choices: list):
    """lmql
    "Among {choices}, what do you consider \
    most likely? [ANSWER]" where ANSWER in choices
    return ANSWER
    """


@querylm.query(model="random")
def capital():
    """lmql
    "Q: What is the capital of France? \
    [ANSWER: one_of(['Berlin', 'Paris', 'London'])]"
    return ANSWER
    """


@querylm.query
def cot_one_of(choices: list):
    """lmql
    "A: Let's think step by step. [ANSWER: one_of(choices)]" where len(TOKENS(ANSWER)) < 4
    return ANSWER.strip()
    """


@querylm.query(model="random")
def double_tail_call():
    """lmql
    "The answer is [ANSWER: cot_one_of(['Hello', 'Greetings'])]"
    return ANSWER
    """


def test_nested_query_with_arguments_runs_when_reached() -> None:
    plan = capital.plan()  # compiling runs nothing
    assert plan.compiled.query.holes[0].name == "ANSWER"
    assert capital() in ["Berlin", "Paris", "London"]
    r = capital.run()
    assert r.holes[0].constraint == "nested query one_of" and r.prompt.endswith(r.variables["ANSWER"])


def test_nested_tail_calls_unwind() -> None:
    """cot_one_of's own prompt and one_of's are unwound: only the returned value stays."""
    r = double_tail_call.run()
    assert r.variables["ANSWER"] in ["Hello", "Greetings"]
    assert r.prompt == "The answer is " + r.variables["ANSWER"]


# -- 3. the from clause takes any expression; clause keywords alone on a line, upper case --------------

CLAUSE_FORMS = [
    'argmax\n    "Q: [A]"\nfrom\n    "random"\nwhere\n    len(TOKENS(A)) < 4',
    'ARGMAX\n    "Q: [A]"\nFROM\n    "random"\nWHERE\n    len(TOKENS(A)) < 4',
    'argmax\n    "Q: [A]"\nfrom MODEL\nwhere len(TOKENS(A)) < 4',
    'argmax\n    "Q: [A]"\nfrom\n    pick("random")\nwhere\n    len(TOKENS(A)) < 4',
    'SAMPLE(temperature=0.0)\n    "Q: [A]"\nFROM "random"\nWHERE len(TOKENS(A)) < 4',
    # LMQL's one-line form (common in docstrings), with the decoder's arguments and a from expression
    'argmax "Q: [A]" from "random" where len(TOKENS(A)) < 4',
    'argmax(max_len=64, chunksize=4) "Q: [A]" FROM pick("random") WHERE len(TOKENS(A)) < 4',
    'sample(temperature=0.0) "Q: [A]" where len(TOKENS(A)) < 4 from MODEL',
]


@pytest.mark.parametrize("src", CLAUSE_FORMS)
def test_clause_forms(src: str) -> None:
    inputs = (
        {"MODEL": "random"} if "MODEL" in src else {"pick": lambda m: resolve(m)} if "pick" in src else {}
    )
    r = querylm.run(src, **inputs)
    assert isinstance(r, querylm.QueryResult) and r.model == "random"
    assert 0 < r.holes[0].tokens < 4


def test_from_expression_is_evaluated_at_run_time_with_seed() -> None:
    src = 'argmax\n    "Q: [A]"\nfrom\n    resolve("random", seed=SEED)\nwhere\n    len(TOKENS(A)) < 5'
    a = querylm.run(src, resolve=resolve, SEED=1).variables["A"]
    b = querylm.run(src, resolve=resolve, SEED=2).variables["A"]
    assert a != b and a == querylm.run(src, resolve=resolve, SEED=1).variables["A"]


@pytest.mark.parametrize(
    "src,message,line,col",
    [
        ('argmax\n    "Q: [A]"\nfrom 3', "the from clause takes a model", 3, 6),
        ('argmax "Q: [A]" from 3 where len(TOKENS(A)) < 4', "the from clause takes a model", 1, 22),
        ('argmax "Q: [A]" from "random" where len(TOKENS(A) < 4', "was never closed", 1, 40),
        ('argmax\n    "Q: [A]"\nfrom "random"\nFROM "random"', "a second from clause", 4, 1),
        ('argmax\n    "Q: [A]"\nfrom\n    (1 / 0)', "ZeroDivisionError", 4, 6),  # raised when it runs
    ],
)
def test_from_clause_errors_keep_positions(src: str, message: str, line: int, col: int) -> None:
    with pytest.raises(querylm.QueryError, match=message) as err:
        querylm.run(src)
    pos = err.value.position
    assert pos is not None and (pos.line, pos.col) == (line, col)


# -- 4. context -------------------------------------------------------------------------------------


def test_context_prompt() -> None:
    r = querylm.run('"Q: [X]" where len(TOKENS(X)) < 3\np = context.prompt\n"!"\nreturn p', model="random")
    assert r.return_value == "Q: " + r.variables["X"] and r.prompt == r.return_value + "!"


# -- 5. scoping -------------------------------------------------------------------------------------


class Asker:
    def __init__(self) -> None:
        self.a = 12

    @querylm.query
    def chain_of_thought(self):
        """lmql
        "A. Let's think step by step ({self.a}): [ANSWER]" where len(TOKENS(ANSWER)) < 3
        return ANSWER.strip()
        """

    @querylm.query(model="random")
    def question(self):
        """lmql
        "Q: Why is the sky blue?\n[ANSWER: self.chain_of_thought]"
        return ANSWER + "|" + str(self.a)
        """


def test_query_methods_get_self() -> None:
    asker = Asker()
    out = asker.question()
    assert out.endswith("|12") and out != "|12"
    assert asker.chain_of_thought.__name__ == "chain_of_thought"


def test_locals_of_the_enclosing_function() -> None:
    def f(x: int) -> int:
        return x + 41

    @querylm.query(model="random")
    def q():
        """lmql
        "Value {f(1)}: [X]" where len(TOKENS(X)) < 2
        return f(1)
        """

    assert q() == 42
    assert q.run().prompt.startswith("Value 42: ")


def test_decoder_and_from_expressions_see_the_enclosing_function() -> None:
    """The decoder's arguments and the from clause are evaluated with the names the body sees."""
    model, n = "random", 2  # noqa: F841 - read by the query's text

    @querylm.query
    def q(word: str):
        """lmql
        sample(n=n)
            "Say {word}: [X]" where len(TOKENS(X)) < 3
        from model
        """

    rs = q.run("fig")
    assert isinstance(rs, list) and len(rs) == 2 and rs[0].prompt.startswith("Say fig: ")


def test_decoder_arguments_from_inputs_and_import_in_body() -> None:
    src = (
        'sample(n=k, temperature=t)\n    import math\n    "Q {math.floor(2.5)}: [X]" where len(TOKENS(X)) < 3'
    )
    rs = querylm.run(src, model="random", k=2, t=0.5)
    assert isinstance(rs, list) and len(rs) == 2 and rs[0].prompt.startswith("Q 2: ")
    with pytest.raises(querylm.QueryCompileError, match="n must be"):
        querylm.run(src, model="random", k=0, t=0.5)


# -- 6. return values -------------------------------------------------------------------------------


@querylm.query
def returns_none():
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    return None
    """


@querylm.query(model="random")
def calls_returns_none():
    """lmql
    "A: [Y: returns_none]"
    return Y
    """


@querylm.query(model="random")
def bare_return(flag: bool):
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    if flag:
        return
    return X
    """


@querylm.query(model="random")
def code_only(a: int):
    """lmql
    b = a * 2
    return b + 1
    """


def test_return_values() -> None:
    assert calls_returns_none() is None  # an explicit None, not the callee's text
    r = calls_returns_none.run()
    assert r.prompt == "A: None" and r.returned
    assert isinstance(bare_return(True), querylm.QueryResult)  # a bare return: the run's result
    assert isinstance(bare_return(False), str)
    assert code_only(3) == 7  # no prompt at all
    assert querylm.run("x = 3\nreturn x", model="random").return_value == 3


@querylm.query(model="random")
def defines_a_query():
    '''lmql
    @querylm.query
    def items(n: int):
        """lmql
        for i in range(n):
            "-[ITEM]\n" where STOPS_AT(ITEM, "\n") and len(TOKENS(ITEM)) < 4
        """
    "List:\n[ITEMS: items(2)]"
    return ITEMS
    '''


def test_query_defined_in_a_query_body_keeps_its_escapes() -> None:
    """The inner docstring is read from the outer query's text, so its ``\\n`` stays an escape (read
    as a value, it would be a line break inside a string literal: a syntax error)."""
    items = defines_a_query()
    assert items.count("-") >= 2 and items.endswith("\n")


# -- 8. an async query called from a query's code runs to its value ----------------------------------


@querylm.query(model="random")
async def async_helper():
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    return X.upper()
    """


@querylm.query(model="random")
def calls_async():
    """lmql
    v = async_helper()
    "Got {v}: [Y]" where len(TOKENS(Y)) < 2
    return v
    """


def test_async_query_called_from_query_code() -> None:
    import asyncio

    v = calls_async()
    assert isinstance(v, str) and v == v.upper()
    assert v == asyncio.run(async_helper())  # outside a query it is still a coroutine


# -- code before the decoder keyword (LMQL's test_scoping.py::test_q) ---------------------------------


def test_code_before_the_decoder_defines_the_query_globals() -> None:
    src = (
        'a = 12\ndef f(): return a + 1\n\nargmax\n    "Q: {a} {f()} [X]"\n'
        "    return X, 'a' in locals(), 'a' in globals()\nfrom\n    \"random\"\nwhere\n    len(TOKENS(X)) < 3"
    )
    r = querylm.run(src)
    assert r.prompt.startswith("Q: 12 13 ") and r.return_value[1:] == (False, True)


@pytest.mark.parametrize(
    "src,error,message,line,col",
    [
        ('x = 1 / 0\nargmax\n    "Q: [X]"', querylm.QueryRuntimeError, "ZeroDivisionError", 1, 1),
        ('y = 2\n"hi"\nargmax\n    "Q: [X]"', querylm.QuerySyntaxError, "a prompt before the decoder", 2, 1),
        ('y = (\nargmax\n    "Q: [X]"', querylm.QuerySyntaxError, "was never closed", 1, 5),
    ],
)
def test_code_before_the_decoder_errors_keep_positions(src, error, message, line, col) -> None:
    with pytest.raises(error, match=message) as err:
        querylm.run(src, model="random")
    pos = err.value.position
    assert pos is not None and (pos.line, pos.col) == (line, col)

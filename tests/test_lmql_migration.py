"""LMQL-style programs, migrated by ``import querylm.lmql as lmql``: each runs on the random model and
its behaviour (not the random text) is checked."""

from __future__ import annotations

import asyncio

import pytest

import querylm.lmql as lmql

RANDOM = lmql.model("random", seed=123)


@lmql.query(model=RANDOM)
def greet(name: str):
    """lmql
    "Hello {name}! [X]" where len(TOKENS(X)) < 4
    return X
    """


@lmql.query
def dateformat():
    """lmql
    "(respond in DD/MM/YYYY) [ANSWER]" where len(TOKENS(ANSWER)) == 4
    return ANSWER.strip()
    """


@lmql.query(model=RANDOM)
def multi_nested():
    """lmql
    "Q: When was Obama born? [A1: dateformat]\n"
    "Q: When was Dua Lipa born? [A2: dateformat]\n"
    "Out of these, who was born last?[LAST]" where len(TOKENS(LAST)) == 2
    return [A1, A2, LAST]
    """


@lmql.query
def items_list(n: int):
    """lmql
    for i in range(n):
        "-[ITEM]\n" where STOPS_AT(ITEM, "\n") and len(TOKENS(ITEM)) == 3
    """


@lmql.query(model=RANDOM)
def packing():
    """lmql
    "A list of things to pack:\n[ITEMS: items_list(3)]"
    return ITEMS
    """


@lmql.query(model=RANDOM)
def escaping():
    """lmql
    "Literal [[brackets]] and {{braces}}: [X]" where len(TOKENS(X)) < 3
    return context.prompt
    """


@lmql.query(model=RANDOM)
def typed_int():
    """lmql
    "Count: [N: int]"
    return N + 1
    """


@lmql.query(model=RANDOM)
def stops_side_condition():
    """lmql
    "Story: [S]" where STOPS_AT(S, "e") and len(TOKENS(S)) > 5
    return S
    """


@lmql.query(model=RANDOM)
async def async_query():
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    return X
    """


class Bot:
    def __init__(self) -> None:
        self.name = "bot"

    @lmql.query
    def think(self):
        """lmql
        "{self.name} thinks: [T]" where len(TOKENS(T)) < 3
        return T
        """

    @lmql.query(model=RANDOM)
    def answer(self):
        """lmql
        "Q: why? [A: self.think]"
        return self.name + ":" + A
        """


def test_return_value_and_call_time_model() -> None:
    a = greet("Ann")
    assert isinstance(a, str) and a == greet("Ann")  # argmax on one seed is deterministic
    assert greet("Ann", model=lmql.model("random", seed=1)) != a


def test_call_time_decoder_and_n() -> None:
    out = greet("Ann", decoder="sample", n=2)
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(x, str) for x in out)


def test_nested_queries_unwind() -> None:
    a1, a2, last = multi_nested()
    assert all(isinstance(v, str) for v in (a1, a2, last))
    r = multi_nested.run()
    assert "(respond in" not in r.prompt  # the nested prompts are unwound


def test_nested_query_without_return_splices_its_text() -> None:
    items = packing()
    assert items.count("\n") == 3 and items.startswith("-")


def test_escaping_and_context() -> None:
    assert escaping().startswith("Literal [brackets] and {braces}: ")


def test_typed_hole() -> None:
    assert isinstance(typed_int(), int)


def test_side_conditioned_stop() -> None:
    s = stops_side_condition()
    assert s.endswith("e") or "e" not in s


def test_async_query() -> None:
    assert isinstance(asyncio.run(async_query()), str)


def test_methods() -> None:
    assert Bot().answer().startswith("bot:")


def test_run_sync_marker_and_indent() -> None:
    src = 'lmql\n    "Q: [X]" where len(TOKENS(X)) < 3\n    return X'
    assert isinstance(lmql.run_sync(src, model=RANDOM), str)
    assert lmql.run_sync('"Q {a}: [X]" where len(TOKENS(X)) < 3', a=1, model=RANDOM).prompt.startswith(
        "Q 1: "
    )
    assert asyncio.run(lmql.run('"Q: [X]" where len(TOKENS(X)) < 3', model=RANDOM)).variables["X"]


def test_query_string_and_F_positional() -> None:
    q = lmql.query('"Q {a}: [X]" where len(TOKENS(X)) < 3', model=RANDOM)
    assert asyncio.run(q(a=2)).prompt.startswith("Q 2: ")  # LMQL's query strings are async
    f = lmql.F("Summarize {text}: [S]", "len(TOKENS(S)) < 4", model=RANDOM)
    assert f("abc") == f(text="abc")
    with pytest.raises(TypeError):
        f("a", "b")


def test_generate_and_score() -> None:
    text = lmql.generate_sync("Hello", max_tokens=3, model=RANDOM)
    assert isinstance(text, str) and text
    s = lmql.score_sync("Hello", [" world", " there"], model=RANDOM)
    assert s.seqs == [" world", " there"] and all(v < 0 for v in s.logprobs())
    assert s.argmax() == s.seqs[int(s.logprobs().argmax())]
    assert asyncio.run(lmql.generate("Hi [x]", max_tokens=2, model=RANDOM))


def test_default_model() -> None:
    lmql.set_default_model(RANDOM)
    try:
        assert lmql.get_default_model() is RANDOM
        assert lmql.run_sync('"Q: [X]" where len(TOKENS(X)) < 2').model == "random"
    finally:
        lmql.set_default_model(None)


def test_from_model_expression() -> None:
    src = 'argmax\n    "Q: [X]"\nfrom\n    lmql.model("random", seed=5)\nwhere\n    len(TOKENS(X)) < 3'
    assert lmql.run_sync(src, lmql=lmql).model == "random"

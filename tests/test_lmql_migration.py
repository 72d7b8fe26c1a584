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


# -- more LMQL-style programs: return values --------------------------------------------------------


@lmql.query(model=RANDOM)
def explicit_none():
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    return None
    """


@lmql.query(model=RANDOM)
def bare_return(early: bool):
    """lmql
    "Q: [X]" where len(TOKENS(X)) < 3
    if early:
        return
    return "late"
    """


@lmql.query
def code_only(a: int, b: int):
    """lmql
    total = a + b
    return total * 2
    """


def test_return_none_bare_return_and_code_only_queries() -> None:
    assert explicit_none() is None
    assert type(bare_return(True)) is lmql.LMQLResult  # a bare return: the run's result
    assert bare_return(False) == "late"
    assert code_only(2, 3) == 10


def test_a_named_decoder_returns_a_list_as_in_lmql() -> None:
    src = 'argmax\n    "Q: [X]"\n    return X\nfrom\n    "random"\nwhere\n    len(TOKENS(X)) < 3'
    q = lmql.query(src)
    out = asyncio.run(q())
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0], str)
    assert lmql.run_sync(src) == out[0]  # lmql.run unwraps a single result


@lmql.query(model=RANDOM)
def three_samples():
    """lmql
    sample(n=3, temperature=1.0)
        "Q: [X]"
        return len(X)
    where
        len(TOKENS(X)) < 4
    """


def test_sampled_returns_are_a_list_of_n() -> None:
    out = three_samples()
    assert len(out) == 3 and all(isinstance(v, int) and v > 0 for v in out)


@lmql.query(model=RANDOM)
def both_holes():
    """lmql
    "A: [A] B: [B: int]" where len(TOKENS(A)) < 3
    return {"a": A, "b": B}
    """


def test_return_a_dict_of_holes() -> None:
    out = both_holes()
    assert set(out) == {"a", "b"} and isinstance(out["a"], str) and isinstance(out["b"], int)


# -- scoping ------------------------------------------------------------------------------------------

PREFIX = "Topic"


def test_enclosing_locals_module_names_and_loop_variables() -> None:
    def helper(x: int) -> int:
        return x * 10

    limit = 3  # noqa: F841 (read by the query)

    @lmql.query(model=RANDOM)
    def q():
        """lmql
        "{PREFIX} {helper(2)}:"
        for i in range(limit):
            " {i}=[X]" where len(TOKENS(X)) < 2
        return context.prompt
        """

    prompt = q()
    assert prompt.startswith("Topic 20:") and all(f" {i}=" in prompt for i in range(3))


def test_a_query_defined_in_a_query_sees_its_locals() -> None:
    @lmql.query(model=RANDOM)
    def outer(word: str):
        """lmql
        @lmql.query
        def inner(w):
            '''lmql
            "Say {w}: [Y]" where len(TOKENS(Y)) < 3
            return w.upper() + "!" + Y
            '''

        "Start [R: inner(word)]"
        return R
        """

    assert outer("hi").startswith("HI!")


# -- nested queries, methods and self -----------------------------------------------------------------


class Tutor:
    def __init__(self, subject: str) -> None:
        self.subject = subject

    @lmql.query
    def hint(self):
        """lmql
        "Hint on {self.subject}: [H]" where len(TOKENS(H)) < 3
        return self.subject + ":" + H
        """

    @lmql.query(model=RANDOM)
    def lesson(self, n: int):
        """lmql
        hints = []
        for i in range(n):
            "Step {i}: [S: self.hint]\n"
            hints.append(S)
        return hints
        """


def test_nested_methods_see_self_in_a_loop() -> None:
    out = Tutor("math").lesson(2)
    assert len(out) == 2 and all(h.startswith("math:") for h in out)


@lmql.query
def pick(options: list):
    """lmql
    "Pick one of {options}: [P]" where P in options
    return P
    """


@lmql.query
def reasoned_pick(options: list):
    """lmql
    "Think. [C: pick(options)]"
    """


def test_nested_arguments_from_variables_and_a_tail_call() -> None:
    @lmql.query(model=RANDOM)
    def q():
        """lmql
        options = ["red", "green", "blue"]
        "Color: [A: pick(options)]\n"
        "Again: [B: reasoned_pick(options[:2])]"
        return A, B, context.prompt
        """

    a, b, prompt = q()
    assert a in ["red", "green", "blue"]
    # reasoned_pick returns nothing: its text stays (LMQL's splice), its callee's prompt is unwound
    assert b.startswith("Think. ") and b.removeprefix("Think. ") in ["red", "green"]
    assert "Pick one" not in prompt


@lmql.query
def digit():
    """lmql
    "A digit: [D: int]" where len(TOKENS(D)) < 3
    return D % 10
    """


def test_nested_query_returning_an_int() -> None:
    @lmql.query(model=RANDOM)
    def q():
        """lmql
        "Sum of [X: digit] and [Y: digit]"
        return X + Y
        """

    assert 0 <= q() <= 18


# -- escaping -----------------------------------------------------------------------------------------


def test_escapes_tabs_and_bracketed_holes() -> None:
    src = '"a\\tb {{x}} [[[X]]]" where X == "hi"\nreturn context.prompt'
    assert lmql.run_sync(src, model=RANDOM) == "a\tb {x} [hi]"


# -- stops with side conditions -----------------------------------------------------------------------


def test_stops_with_side_conditions_through_lmql() -> None:
    assert lmql.run_sync('"Q: [X]" where STOPS_BEFORE(X, "c") and X == "abc"\nreturn X', model=RANDOM) == "ab"
    long = lmql.run_sync(
        '"Q: [X]" where STOPS_AT(X, "e") and len(X) > 8 and len(TOKENS(X)) < 40\nreturn X', model=RANDOM
    )
    # the value ends at the first "e" completing a value of more than 8 characters (or at the budget)
    assert len(long) > 8 and "e" not in long[8:-1]


def test_stop_phrase_lists() -> None:
    x = lmql.run_sync(
        '"Q: [X]" where STOPS_AT(X, ["e", "a"]) and len(TOKENS(X)) < 30\nreturn X', model=RANDOM
    )
    assert x.endswith(("e", "a")) and "e" not in x[:-1] and "a" not in x[:-1]


# -- decorators ---------------------------------------------------------------------------------------


def shout(value: str) -> str:
    return value.upper() + "!"


@lmql.query(model=RANDOM)
def decorated_post():
    """lmql
    "Say: [@shout X]" where len(TOKENS(X)) < 4
    return X, context.prompt
    """


def test_post_decorator_changes_the_value_and_the_prompt() -> None:
    x, prompt = decorated_post()
    assert x.endswith("!") and x == x.upper() and prompt == "Say: " + x


def test_pre_and_streaming_decorators() -> None:
    seen: list[str] = []

    @lmql.decorators.pre
    def fixed(variable):
        return "given" if variable.name == "A" else variable

    @lmql.decorators.streaming
    def watch(text, context):
        seen.append(text)

    @lmql.query(model=RANDOM)
    def q():
        """lmql
        "A: [@fixed A] B: [@watch @fixed B]" where len(TOKENS(B)) < 5
        return A, B
        """

    a, b = q()
    assert a == "given" and seen[0] == "" and seen[-1] == b
    assert all(y.startswith(x) for x, y in zip(seen, seen[1:], strict=False))
    r = q.run()
    assert [h.ended_by for h in r.holes][0] == "decorator"


# -- F, map, score, generate --------------------------------------------------------------------------


def test_F_with_two_holes_and_async() -> None:
    f = lmql.F("Name: [N] Age: [A: int]", "len(TOKENS(N)) < 3", model=RANDOM)
    out = f()
    assert set(out) == {"N", "A"} and isinstance(out["A"], int)
    g = lmql.F("About {x}: [S]", "len(TOKENS(S)) < 3", model=RANDOM, is_async=True)
    assert asyncio.run(g("cats")) == lmql.F("About {x}: [S]", "len(TOKENS(S)) < 3", model=RANDOM)(x="cats")


def test_map_keeps_the_order_of_its_data() -> None:
    import querylm.lmql.algorithms as la

    items = ["a cat", "a dog", "a bird"]
    out = asyncio.run(la.map("About {x}: [S]", items, where="len(TOKENS(S)) < 3", model=RANDOM))
    one = lmql.F("About {x}: [S]", "len(TOKENS(S)) < 3", model=RANDOM)
    assert out == [one(x) for x in items]


def test_scoring_result() -> None:
    s = lmql.score_sync("The sky is", [" blue", " green today"], model=RANDOM)
    t = lmql.tokenizer("random")
    assert [len(x) for x in s.token_scores] == [len(t(v)["input_ids"]) for v in s.seqs]
    prompt_len = len(t("The sky is")["input_ids"])
    assert [len(x) for x in s.full_token_scores] == [prompt_len + len(x) for x in s.token_scores]
    assert s.argmax() == s.seqs[int(s.logprobs().argmax())]
    assert abs(s.logprobs("mean")[1] - s.token_scores[1].mean()) < 1e-6
    llm = lmql.model("random", seed=123)
    assert asyncio.run(llm.score("The sky is", [" blue"])).logprobs()[0] < 0


def test_generate_is_greedy_and_budgeted() -> None:
    llm = lmql.model("random", seed=3)
    one, three = llm.generate_sync("Once", max_tokens=1), llm.generate_sync("Once", max_tokens=3)
    assert three.startswith(one) and three != one
    assert isinstance(asyncio.run(llm.generate("Once", max_tokens=2, temperature=0.7)), str)


# -- syntax and API conventions -----------------------------------------------------------------------


@lmql.query
def one_liner():
    """lmql
    argmax(chunksize=4) "Q: [A] and [B]" from lmql.model("random", seed=7) where len(TOKENS(A)) < 3 and len(TOKENS(B)) < 3
    """


def test_one_line_form_and_output_variables() -> None:
    assert one_liner.output_variables == ["A", "B"]
    (r,) = one_liner()  # the decoder is named: a list
    assert r.model == "random" and set(r.variables) == {"A", "B"}


def test_query_string_input_variables_and_run_positional() -> None:
    q = lmql.query(
        '"{greeting}, {name}! [X]" where len(TOKENS(X)) < 2\nreturn context.prompt',
        input_variables=["name", "greeting"],
        model=RANDOM,
    )
    assert asyncio.run(q("Ann", "Hi")).startswith("Hi, Ann! ")
    src = '"{first} then {second}: [X]" where len(TOKENS(X)) < 2\nreturn context.prompt'
    assert lmql.run_sync(src, "one", "two", model=RANDOM).startswith("one then two: ")


def test_distribution_through_lmql() -> None:
    r = lmql.run_sync('"Mood: [M]"\ndistribution M in [" happy", " sad"]', model=RANDOM)
    probs = dict(r.variables["P(M)"])
    assert set(probs) == {" happy", " sad"} and abs(sum(probs.values()) - 1) < 1e-6
    assert r.variables["M"] == max(probs, key=probs.__getitem__)


def test_main_runs_an_async_query() -> None:
    assert isinstance(lmql.main(async_query), str)


def test_the_from_clause_wins_over_the_default_model() -> None:
    lmql.set_default_model("local:smollm2")  # never loaded: every query here names its model
    try:
        src = 'argmax\n    "Q: [X]"\nfrom\n    lmql.model("random", seed=9)\nwhere\n    len(TOKENS(X)) < 3'
        assert lmql.run_sync(src).model == "random"
    finally:
        lmql.set_default_model(None)


def test_unresolved_inputs_are_type_errors() -> None:
    with pytest.raises(TypeError, match="'s'"):
        lmql.run_sync('"{s} [X]" where len(TOKENS(X)) < 2', model=RANDOM)


def test_aschain_gives_a_langchain_runnable() -> None:
    @lmql.query(model=RANDOM)
    def labelled(text: str):
        """lmql
        "{text} -> [L]" where L in ["yes", "no"]
        """

    chain = labelled.aschain()
    out = chain.invoke({"text": "ok?"})
    assert set(out) == {"L"} and out["L"] in ["yes", "no"] and chain({"text": "ok?"}) == out
    keyed = lmql.query('return {"n": len(s), "s": s}', input_variables=["s"]).aschain(output_keys=["n"])
    assert keyed({"s": "abc"}) == {"n": 3}

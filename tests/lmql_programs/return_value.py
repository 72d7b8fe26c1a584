"""Modelled on LMQL's ``test_return_value.py``: what a query function returns.

Adapted: LMQL asserts the random model's exact text (``"Hi,efullypresent."``); here the spliced text's
shape is checked instead (test_nested_no_return_in_query).
"""

import querylm.lmql as lmql


@lmql.query(model="random", seed=123)
def none_return_value():
    '''lmql
    "Hello, [WORDS]." where len(TOKENS(WORDS)) == 2
    return None
    return "unreachable"
    '''


@lmql.query(model="random", seed=123)
def some_return_value():
    '''lmql
    "Hello, [WORDS]." where len(TOKENS(WORDS)) == 2
    return "Something"
    '''


def test_return_value():
    out = none_return_value()
    assert out is None, f"expected None, got {out!r}"


def test_return_value_sample_2():
    out = none_return_value(decoder="beam", n=2)
    assert isinstance(out, list) and out == [None, None], out


def test_some_return_value():
    assert some_return_value() == "Something"


@lmql.query(model="random", seed=123)
def nested_none():
    '''lmql
    "[INNER: none_return_value]."
    return context.prompt
    '''


def test_nested_none():
    assert nested_none() == "None."


@lmql.query(model="random", seed=123)
def nested_some():
    '''lmql
    "[INNER: some_return_value]."
    return context.prompt
    '''


def test_nested_some():
    assert nested_some() == "Something."


@lmql.query(model="random", seed=123)
def nested_no_return():
    '''lmql
    "Hello,[WORDS]" where len(TOKENS(WORDS)) == 2
    '''


@lmql.query(model="random", seed=123)
def nested_no_return_in_query():
    '''lmql
    "[INNER: nested_no_return]."
    return context.prompt
    '''


def test_nested_no_return_in_query():
    prompt = nested_no_return_in_query()
    # without a return value, the callee's text is spliced in (its prompt and its hole)
    assert prompt.startswith("Hello,") and prompt.endswith(".") and len(prompt) > len("Hello,."), prompt


def test_no_return_in_query():
    assert type(nested_no_return()) is lmql.LMQLResult


def test_no_return_in_query_sample_2():
    out = nested_no_return(decoder="sample", n=2)
    assert len(out) == 2 and all(type(r) is lmql.LMQLResult for r in out), out


@lmql.query
def two_path_return(a: int):
    '''lmql
    if a > 0:
        return None
    else:
        return "Something"

    return "Never"
    '''


def test_two_path_return():
    assert two_path_return(1) is None
    assert two_path_return(-1) == "Something"
    assert two_path_return(0) == "Something"
    # a query without prompts has one result whatever the decoder
    assert two_path_return(0, decoder="sample", n=2) == "Something"

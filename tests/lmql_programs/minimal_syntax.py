"""Modelled on LMQL's ``test_minimal_syntax.py``: the shortest ways to write a query."""

import querylm.lmql as lmql


@lmql.query
def test_hello_full():
    '''lmql
    argmax
        "Say 'this is a test':[RESPONSE]"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(RESPONSE)) < 10
    '''


@lmql.query(decoder="argmax", model=lmql.model("random", seed=123))
def test_hello_minimal():
    '''lmql
    "Say 'this is a test':[RESPONSE]" where len(TOKENS(RESPONSE)) < 10
    '''


test_hello_string_query = lmql.query(
    "'Say \"this is a test\":[RESPONSE]' where len(TOKENS(RESPONSE)) < 10", model=lmql.model("random", seed=123)
)

test_hello_oneline = lmql.F("Say 'this is a test': [RESPONSE]", "len(TOKENS(RESPONSE)) < 10", model="random")


@lmql.query(decoder="argmax", model=lmql.model("random", seed=123))
def test_with_inline_import():
    '''lmql
    import re
    "Say 'this is a test':[RESPONSE]" where len(TOKENS(RESPONSE)) < 10

    assert re.search("Say 'this is a test':", context.prompt) is not None, [context.prompt]
    '''


@lmql.query(decoder="sample", temperature=1.2, model=lmql.model("random", seed=123))
def test_joke():
    '''lmql
    """A list of good dad jokes. A indicates the punchline
    Q: Why did the scarecrow win an award?
    A: He was outstanding in his field.
    Q: What do you call a fake noodle?
    A: An impasta."""
    "Q:[JOKE]\n" where len(JOKE) < 120 and len(TOKENS(JOKE)) < 20 and STOPS_AT(JOKE, "?")
    "A:[PUNCHLINE]" where STOPS_AT(PUNCHLINE, "\n") and len(TOKENS(PUNCHLINE)) < 20 and len(PUNCHLINE) > 1
    assert len(JOKE) < 120 and "?" not in JOKE[:-1], [JOKE]
    assert len(PUNCHLINE) > 1 and "\n" not in PUNCHLINE[:-1], [PUNCHLINE]
    '''

"""Modelled on LMQL's ``test_decorators.py``: variable decorators ``[@f X]``, ``lmql.decorators.pre``
and ``lmql.decorators.streaming``.

Adapted: LMQL asserts its random stream's exact text; here the decorators' inputs are checked against
the value the hole got (the post-decorator sees the value, the stream ends with it and grows by
prefixes).
"""

import querylm.lmql as lmql


class DecoratorLog:
    def __init__(self):
        self.pre_input = None
        self.stream_input = None
        self.post_input = None


log = DecoratorLog()


@lmql.decorators.pre
def pre(variable):
    log.pre_input = variable
    return variable


@lmql.decorators.streaming
def stream(s, context):
    log.stream_input = s


def post(value):
    log.post_input = value
    return value.replace("a", "A")


@lmql.query
def test_decorators():
    '''lmql
    argmax
        "Say 'this is a test':\n[@post @stream @pre RESPONSE]"

        assert log.pre_input.name == "RESPONSE", log.pre_input
        assert isinstance(log.post_input, str) and log.post_input, log.post_input
        assert log.stream_input == log.post_input, (log.stream_input, log.post_input)
        assert RESPONSE == log.post_input.replace("a", "A"), "the post decorator's value is the program's"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(RESPONSE)) < 10
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_inner_decorator():
    '''lmql
    inner_log = DecoratorLog()

    def f(s):
        inner_log.post_input = s
        return 12

    "Say 'this is a test':\n[@f RESPONSE]" where len(TOKENS(RESPONSE)) < 10

    # the program sees the decorator's value, and so does the prompt
    assert RESPONSE == 12, RESPONSE
    assert context.prompt == "Say 'this is a test':\n12", [context.prompt]
    assert isinstance(inner_log.post_input, str) and inner_log.post_input, inner_log.post_input
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_streaming_decorator():
    '''lmql
    inner_log = DecoratorLog()
    inner_log.stream_input = []

    @lmql.decorators.streaming
    def f(s, context):
        inner_log.stream_input += [s]

    "Say 'this is a test':\n[@f RESPONSE]" where len(TOKENS(RESPONSE)) < 10

    seen = inner_log.stream_input
    assert len(seen) >= 2 and seen[-1] == RESPONSE, seen
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:])), "the stream grows by prefixes"
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_pre_decorator():
    '''lmql
    @lmql.decorators.pre
    def f(variable):
        return "Fixed Value"

    "Say 'this is a test':\n[@f RESPONSE]" where len(TOKENS(RESPONSE)) < 10

    assert RESPONSE == "Fixed Value", RESPONSE
    '''

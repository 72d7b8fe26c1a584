"""Modelled on LMQL's ``queryargs/`` programs (run by its ``test_query_args.py``): how a query function
and a query string take their inputs, and the errors for unresolved names.

Adapted: LMQL names ``"chatgpt"`` in queries that return before any prompt (no model call); here
``"random"``, so that no key is looked for. LMQL's error text ("Failed to resolve variable 's'") is
checked as querylm words it: the exception type and the name.
"""

import querylm.lmql as lmql

CONSTANT = 1


class Agent:
    def __init__(self):
        self.memory = ""

    @lmql.query
    async def interact(self, s: str, a=12):
        '''lmql
        argmax
            return s, a, self, CONSTANT
        from
            "random"
        '''


@lmql.query
async def positional_only(s: str):
    '''lmql
    argmax
        return s
    from
        "random"
    '''


@lmql.query
async def default_only(s: str = 'default'):
    '''lmql
    argmax
        return s
    from
        "random"
    '''


@lmql.query
async def positional_and_default(s: str, a: int = 12):
    '''lmql
    argmax
        return s, a
    from
        "random"
    '''


async def test_query_args():
    agent = Agent()
    s, a, ag, captured = (await agent.interact("Hi there", a=8))[0]
    assert (s, a, ag, captured) == ("Hi there", 8, agent, CONSTANT)
    s, a, ag, captured = (await agent.interact("Hi there"))[0]
    assert (s, a, ag, captured) == ("Hi there", 12, agent, CONSTANT)
    assert (await positional_only("Hi there"))[0] == "Hi there"
    assert (await default_only())[0] == "default"
    assert (await default_only(s="Hi there"))[0] == "Hi there"
    assert (await positional_and_default("Hi there"))[0] == ("Hi there", 12)


@lmql.query
async def no_return_chain(s: str = 'default', a: int = 12):
    '''lmql
    argmax
        "This is [R1] and [R2]"
    from
        "random"
    where
        R1 == s and R2 == "8"
    '''


def test_decorated_chain():
    chain = no_return_chain.aschain()
    res = chain({"s": "Hi there", "a": 8})
    assert res["R1"] == "Hi there" and res["R2"] == "8", res


noinput = lmql.query('''lmql
argmax
    return s
from
    "random"
''')

multipos = lmql.query('''lmql
argmax
    return s, a
from
    "random"
''', input_variables=['s', 'a'])


async def test_query_args_with_str():
    try:
        s = (await noinput())[0]
        raise AssertionError(f"expected an error, got {s}")
    except TypeError as e:
        assert "'s'" in str(e), e
    assert (await noinput(s="Hi there"))[0] == "Hi there"
    assert (await multipos("Hi there", 8))[0] == ("Hi there", 8)
    assert (await multipos("Hi there", a=8))[0] == ("Hi there", 8)
    assert (await multipos(s="Hi there", a=8))[0] == ("Hi there", 8)


def test_query_args_with_str_aschain():
    chain = lmql.query('''lmql
    argmax
        return {"result": (s, a)}
    from
        "random"
    ''', input_variables=['s', 'a']).aschain(output_keys=['result'])
    assert chain({"s": "Hi there", "a": 8})["result"] == ("Hi there", 8)


async def test_lmql_run_args():
    query = '''lmql
argmax
    return s
from
    "random"
'''
    try:
        s = await lmql.run(query)
        raise AssertionError(f"expected an error, got {s}")
    except TypeError as e:
        assert "'s'" in str(e), e
    assert (await lmql.run(query, s="Hi there")) == "Hi there"


@lmql.query
async def unresolved_holes(s: str):
    '''lmql
    argmax
        return s
    from
        "random"
    where
        STOPS_AT(ANSWER, "test") and STOPS_AT(OTHER, "test")
    '''


@lmql.query
async def noinput_but_specified():
    '''lmql
    argmax
        return s, CONSTANT
    from
        "random"
    '''


MODEL = "random"


@lmql.query
async def external_model():
    '''lmql
    argmax
        "Hi[SEP]"
    from
        MODEL
    where
        len(TOKENS(SEP)) < 10
    '''


async def test_var_errors():
    try:
        await unresolved_holes("test")
        raise AssertionError("expected an error")
    except TypeError as e:
        assert "ANSWER" in str(e) and "OTHER" in str(e), e
    try:
        await noinput_but_specified()
        raise AssertionError("expected an error")
    except TypeError as e:
        assert "'s'" in str(e), e
    assert (await noinput_but_specified(s="test"))[0] == ("test", CONSTANT)
    await external_model()

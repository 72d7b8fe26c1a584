"""Modelled on LMQL's ``test_noprompt.py``, its random-model programs: a hole with no prompt before it.

Adapted: LMQL asserts its random stream's exact text (test_noprompt, test_noprompt_beam); here the
token budget and the beams' order are checked instead. LMQL's GPT-2 tokenizer is the random model's.
"""

import querylm.lmql as lmql


@lmql.query(model=lmql.model("random", seed=123))
def test_noprompt():
    '''lmql
    "[RESPONSE]" where len(TOKENS(RESPONSE)) < 10
    assert isinstance(RESPONSE, str) and RESPONSE, [RESPONSE]
    assert context.prompt == RESPONSE, "nothing but the value is in the prompt"
    '''


@lmql.query(model=lmql.model("random", seed=123))
async def noprompt_beam():
    '''lmql
    beam(n=2)
    "[RESPONSE]" where len(TOKENS(RESPONSE)) < 10
    '''


async def test_noprompt_beam():
    rs = await noprompt_beam()
    assert len(rs) == 2 and all(type(r) is lmql.LMQLResult for r in rs), rs
    assert rs[0].variables["RESPONSE"] != rs[1].variables["RESPONSE"], "two beams, two values"


@lmql.query(model=lmql.model("random", seed=123))
def test_noprompt_with_constraints():
    '''lmql
    "[RESPONSE]" where RESPONSE in ["YES", "NO"]
    assert RESPONSE in ["YES", "NO"], [RESPONSE]
    '''


@lmql.query
def nested_query():
    '''lmql
    "[RESPONSE]" where RESPONSE in ["YES", "NO"]
    return RESPONSE
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_noprompt_with_nested_query():
    '''lmql
    "[RESPONSE: nested_query]"
    assert RESPONSE in ["YES", "NO"], [RESPONSE]
    '''


@lmql.query
def nested_static(value):
    '''lmql
    if value == 'a': return "YES"
    else: return "NO"
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_noprompt_with_nested_static_query():
    '''lmql
    "[RESPONSE: nested_static('a')]"
    assert RESPONSE == "YES", [RESPONSE]
    '''

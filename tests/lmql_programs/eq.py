"""Modelled on LMQL's ``test_eq.py``: equality and exact-length constraints.

Adapted: LMQL counts tokens with GPT-2's tokenizer (``load_tokenizer("gpt2")``); here with the random
model's own tokenizer (``lmql.tokenizer("random")``), which is the one ``TOKENS`` counts in. The random model's tokens need not be the tokenizer's own
split of their text, so re-encoding a value gives at most its generated count (``<=``, where LMQL's
GPT-2 stream re-encoded exactly); test_double_eq_int counts the generated ids themselves.
"""

import querylm.lmql as lmql

t = lmql.tokenizer("random")


def token_diff(s1, s2):
    return t(s2)["input_ids"][len(t(s1)["input_ids"]):]


def tlen(s):
    return len(t(s)["input_ids"])


async def test_eq_str():
    @lmql.query
    async def q():
        '''lmql
        argmax
            "Q: Hi. A:[OUTPUT]"
        FROM
            lmql.model("random", seed=123)
        WHERE
            OUTPUT == "Hello you"
        '''

    result = await q()
    assert result[0].variables["OUTPUT"] == "Hello you"


async def test_double_eq_str():
    @lmql.query
    async def q():
        '''lmql
        argmax
            "Q: Hi. A:[OUTPUT]"
        FROM
            lmql.model("random", seed=123)
        WHERE
            OUTPUT == "Hello you" or OUTPUT == "Hello There"
        '''

    result = await q()
    assert result[0].variables["OUTPUT"] in ["Hello you", "Hello There"]


async def test_double_eq_int():
    @lmql.query
    async def q():
        '''lmql
        argmax
            "Q: Hi. A:[OUTPUT]"
        FROM
            lmql.model("random", seed=123)
        WHERE
            len(TOKENS(OUTPUT)) == 2
        '''

    result = await q()
    assert len(result[0].holes[0].ids) == 2


async def test_double_eq_charlen():
    @lmql.query
    async def q():
        '''lmql
        argmax
            "Q: Hi. A:[OUTPUT]"
        from
            lmql.model("random", seed=123)
        where
            len(OUTPUT) == 2
        '''

    result = await q()
    assert len(result[0].variables["OUTPUT"]) == 2


@lmql.query
async def test_later_var_token_constrained():
    '''lmql
    argmax(max_len=256)
        "A rhyme:\n"
        "Verse: [RHYME_START]\n"
        for i in range(5):
            "Verse: [RHYME]\n"
            assert 0 < tlen(RHYME) <= 5, "RHYME has " + str(tlen(RHYME)) + " tokens"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(RHYME)) == 5 and len(TOKENS(RHYME_START)) == 5
    '''


@lmql.query
async def test_stops_before_exact_token_len():
    '''lmql
    argmax(max_len=256, openai_chunksize=4)
        "A rhyme named '[NAME]':\n"
        assert not "'" in NAME
        for i in range(5):
            "Verse: [RHYME]\n"
            assert 0 < tlen(RHYME) <= 4, "RHYME has " + str(tlen(RHYME)) + " tokens"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(RHYME)) == 4 and STOPS_BEFORE(NAME, "'")
    '''

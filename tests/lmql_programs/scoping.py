"""Modelled on LMQL's ``test_scoping.py``: which names a query body sees."""

import querylm.lmql as lmql


@lmql.query
async def test_q(actual_input: str = None):
    '''lmql
    a = 12

    def f(): return 12

    class A: pass

    argmax
        "Q: Hi {actual_input} {a}{f}{A}"
        for name in ['A', 'a', 'f']:
            assert locals().get(name) is None and globals().get(name) is not None, f"{name} not global"
        assert "actual_input" in locals().keys(), "the input is not a local"
        assert "actual_input" not in globals().keys(), "the input leaked into globals"
    from
        lmql.model("random", seed=123)
    '''


async def test_decode_clause_scoping():
    await lmql.run('''lmql
    argmax(n=n)
        "Q: Hi {n}. A: [WHO]"
        assert "n" in locals().keys(), "the input n is not in scope"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(WHO)) < 10
    ''', n=1)


async def test_output_vars():
    @lmql.query
    async def q():
        '''lmql
        argmax "Q: Hi {n}. A: [WHO]" from lmql.model("random", seed=123) where len(TOKENS(WHO)) < 10
        '''

    assert q.output_variables == ["WHO"], q.output_variables


async def test_python_capture():
    def f(a):
        return 12 + a

    @lmql.query
    async def q():
        '''lmql
        argmax
            "Q: Hi {f(1)}. A: [WHO]"
            assert context.prompt.startswith("Q: Hi 13")
        from
            lmql.model("random", seed=123)
        where
            len(TOKENS(WHO)) < 10
        '''

    await q()

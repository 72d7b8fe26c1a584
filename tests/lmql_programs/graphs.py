"""Modelled on LMQL's ``test_graphs.py``: queries calling queries from their code, and LMQL's
experimental graph inference (``lmql.infer`` / ``lmql.ainfer``, ``lmql.graphs.solvers``)."""

import querylm.lmql as lmql

m = lmql.model("random", seed=123)


def make_ab():
    @lmql.query(model=m)
    async def a():
        '''lmql
        return 'a'
        '''

    @lmql.query(model=m)
    async def b():
        '''lmql
        return 'b' + a()
        '''

    return a, b


async def test_simple():
    _, b = make_ab()
    r = await b()
    assert r == "ba", r


async def test_ab_graph():
    _, b = make_ab()
    graph = await lmql.ainfer(b, samples=1)
    assert len(graph.nodes) == 2


async def test_simple_branch():
    @lmql.query(model=m)
    async def a():
        '''lmql
        return 'a'
        '''

    @lmql.query(model=m)
    async def b():
        '''lmql
        return 'b'
        '''

    @lmql.query(model=m)
    async def one():
        '''lmql
        r = a() | b()
        return "one of " + r
        '''

    graph = await lmql.ainfer(one, samples=2)
    assert len(graph.nodes) == 3


async def test_simple_branch_3levels():
    _, b = make_ab()

    @lmql.query(model=m)
    async def one():
        '''lmql
        r = b() | b()
        return "one of " + r
        '''

    graph = await lmql.ainfer(one, samples=1)
    assert len(graph.nodes) >= 2


async def test_3levels_assertion_failure():
    @lmql.query(model=m)
    async def failing():
        '''lmql
        assert False
        return 'a'
        '''

    graph = await lmql.ainfer(failing, samples=1)
    assert len(graph.nodes) == 1


def test_error_recovery():
    counter = {"value": 1}  # noqa: F841 (read by the query)

    @lmql.query(model=m)
    async def flaky():
        '''lmql
        try:
            assert counter["value"] > 1
        finally:
            counter["value"] += 1
        return "ok"
        '''

    graph = lmql.infer(flaky, samples=2)
    assert len(graph.nodes) == 1

"""Modelled on LMQL's ``test_f.py``: ``lmql.F`` one-line query functions and ``lmql.algorithms.map``."""

import querylm.lmql as lmql
import querylm.lmql.algorithms as la


def test_f_functions():
    summarize = lmql.F("Summarize: {text}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123))
    assert type(summarize(text="A short text.")) is str


def test_f_positional_args():
    summarize = lmql.F("Summarize: {text}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123))
    assert type(summarize("A short text.")) is str


def test_f_multiple_positional_args():
    two = lmql.F("Summarize: {first}{second}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123))
    one = lmql.F("Summarize: {text}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123))
    r1 = two("A short ", "text.")
    r2 = one("A short text.")
    assert type(r1) is str
    assert r1 == r2, "positional parts give the prompt the whole text gives"


async def test_async_f_functions():
    summarize = lmql.F("Summarize: {text}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123), is_async=True)
    assert type(await summarize(text="A short text.")) is str


async def test_map_async_f_functions():
    data = ["A dog walks into a bar.", "A cat goes for a walk."]
    q = lmql.F("Summarize: {text}: [SUMMARY]", "len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123), is_async=True)
    r = await la.map(q, data)
    assert len(r) == 2 and all(type(x) is str for x in r)

    r = await la.map("Summarize: {text}: [SUMMARY]", data, where="len(TOKENS(SUMMARY)) < 10", model=lmql.model("random", seed=123))
    assert len(r) == 2 and all(type(x) is str for x in r)


def test_run_pos_args():
    source = '''lmql
    "Summarize: {t1}{t2}: [SUMMARY]" where len(TOKENS(SUMMARY)) < 4
    return SUMMARY
    '''
    r1 = lmql.run_sync(source, "A short ", "text.", model=lmql.model("random", seed=123))
    r2 = lmql.run_sync(source, t1="A short ", t2="text.", model=lmql.model("random", seed=123))
    assert r1 == r2, "positional and keyword inputs give the same run"

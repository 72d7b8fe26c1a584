"""Modelled on LMQL's ``test_api.py``, its random-model programs (the others need a hub model or
OpenAI): ``generate``, ``LLM.generate`` and ``score_sync``'s ``ScoringResult``."""

import numpy as np

import querylm.lmql as lmql


def test_generate_sync():
    lmql.set_default_model(lmql.model("random", seed=123))
    result = lmql.generate_sync("Test", max_tokens=10)
    assert type(result) is str and len(result) > 0


async def test_generate():
    lmql.set_default_model(lmql.model("random", seed=123))
    result = await lmql.generate("Test", max_tokens=10)
    assert type(result) is str and len(result) > 0


async def test_llm_generate():
    llm = lmql.model("random", seed=123)
    result = await llm.generate("Test", max_tokens=10)
    assert type(result) is str and len(result) > 0


async def test_llm_multi_generate():
    llm = lmql.model("random", seed=123)
    result = await llm.generate(["Test", "Test"], max_tokens=10, temperature=0.2, n=2)
    assert type(result) is list and len(result) == 2
    assert all(type(r) is str and len(r) > 0 for r in result)


def test_score_sync():
    lmql.set_default_model(lmql.model("random", seed=123))
    result = lmql.score_sync("Test", "Test")
    assert type(result) is lmql.ScoringResult
    assert len(result.seqs) == 1
    assert len(result.token_scores) == 1 and result.token_scores[0].shape == (1,)
    # the prompt's tokens are scored too (its first has no score: one entry per scored token)
    assert len(result.full_token_scores) == 1 and np.array(result.full_token_scores[0]).shape == (2,)
    assert result.logprobs().shape == (1,)


def test_llm_score_two():
    lmql.set_default_model(lmql.model("random", seed=123))
    result = lmql.score_sync("Hello", ["World", "Test"])
    assert type(result) is lmql.ScoringResult
    assert len(result.seqs) == 2
    assert len(result.token_scores) == 2 and result.token_scores[0].shape == (1,)
    assert len(result.full_token_scores) == 2 and np.array(result.full_token_scores[0]).shape == (2,)
    assert result.argmax() in ["World", "Test"]

"""Modelled on LMQL's ``test_stopping.py``, its random-model programs (the others need OpenAI): stop
phrases with side conditions.

Adapted: LMQL's phrases ("exempted", "vendors") are words its own random stream happens to produce;
querylm's random stream differs, so the first two programs stop at common characters and check the
behaviour instead of the text: a phrase inside the token minimum does not end the value (one occurs
before its end), and the value ends at a later phrase.
"""

import querylm.lmql as lmql


@lmql.query
async def test_stop_should_not_postprocess_if_sc_not_satisfied():
    '''lmql
    argmax
        "A good movie review:[REVIEW] "
        assert REVIEW.endswith("e") or REVIEW.endswith(" "), [REVIEW]
        assert "e" in REVIEW[:-1] or " " in REVIEW[:-1], "no early phrase: the side condition is not tested"
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(REVIEW)) > 10 and STOPS_AT(REVIEW, "e") and STOPS_AT(REVIEW, " ")
    '''


@lmql.query
async def test_stop_before_should_not_postprocess_if_sc_not_satisfied():
    '''lmql
    argmax
        "A good movie review:[REVIEW] "
        assert "e" in REVIEW or " " in REVIEW[:-1], "no early phrase: the side condition is not tested"
        assert not REVIEW.endswith("e"), [REVIEW]
    from
        lmql.model("random", seed=123)
    where
        len(TOKENS(REVIEW)) > 10 and STOPS_BEFORE(REVIEW, "e") and STOPS_AT(REVIEW, " ")
    '''


@lmql.query
async def test_stop_overlapping_before():
    '''lmql
    argmax
        """{{
            "name": "Ada Lovelace",
            "born": 1815,
            "fields": [["mathematics", "computing"]],
            # two of her notes
            """
        '"notes":[[\n        "[GEN_STR]' where STOPS_BEFORE(GEN_STR, ',') and STOPS_BEFORE(GEN_STR, '"') and STOPS_BEFORE(GEN_STR, ']') and len(TOKENS(GEN_STR)) < 10 and GEN_STR == 'abc",'
        assert GEN_STR == "abc", [GEN_STR]
    from
        lmql.model("random", seed=123)
    '''

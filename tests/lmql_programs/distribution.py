"""Modelled on LMQL's ``test_distribution.py``: a ``distribution`` clause with no other holes."""

import querylm.lmql as lmql


@lmql.query(model=lmql.model("random", seed=123))
def test_distribution_no_vars():
    '''lmql
    argmax
        "Select something"
        "Choice: [CLS]"
    distribution
        CLS in [" positive", " neutral", " negative"]
    '''

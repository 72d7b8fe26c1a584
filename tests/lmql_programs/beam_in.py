"""Modelled on LMQL's ``test_beam_in.py``: beams over holes constrained to a list."""

import querylm.lmql as lmql


@lmql.query
def test_beam_in():
    '''lmql
    beam(n=4)
        """English to French Translation:
        English: I am going to the store
        French: [word] [word] [word]
        """
        assert word in ["cat", "dog", "rabbit"], [word]
    from
        "random"
    where
        word in ["cat", "dog", "rabbit"]
    '''

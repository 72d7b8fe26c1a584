"""Modelled on LMQL's ``test_escaping.py``, its programs whose result no model choice can change
(no hole, or one fully fixed by its constraint).

Adapted: LMQL names ``"openai/text-ada-001"``; here ``"random"`` (model name only).
"""

import querylm.lmql as lmql


@lmql.query
def test_curly_only():
    '''lmql
    argmax
        "{{ Say }}"
        assert context.prompt == "{ Say }", [context.prompt]
    from
        "random"
    '''


@lmql.query
def test_square_only():
    '''lmql
    argmax
        "[[Say]]"
        assert context.prompt == "[Say]", [context.prompt]
    from
        "random"
    '''


@lmql.query
def test_square_with_var_only():
    '''lmql
    argmax
        "[[[Say]]]"
        assert context.prompt == "[Hello]", [context.prompt]
    from
        "random"
    where
        Say == "Hello"
    '''


@lmql.query
def test_square_in_constraint():
    '''lmql
    argmax
        person = "test"
        "Hello {person}, my name is [NAME]. Nice to meet you!"
        assert NAME == "[", [NAME]
    from
        "random"
    where
        NAME in ["["]
    '''

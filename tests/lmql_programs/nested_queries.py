"""Modelled on LMQL's ``test_nested_queries.py`` (``test_functions.py`` repeats its first five
programs): queries used as the type of a hole.

Adapted: LMQL asserts the random model's exact text for each nested value; here each value's shape
(its constraint, its strip, the number of list items) is checked instead.
"""

import querylm.lmql as lmql


@lmql.query(model=lmql.model("random", seed=123))
def test_cot_fct():
    '''lmql
    @lmql.query
    def step_by_step():
        """lmql
        "A: Let's think step by step. [ANSWER]" where len(TOKENS(ANSWER)) < 4
        return ANSWER.strip()
        """

    "Q: What is 100 days before August 12th, 2020? [ANSWER: step_by_step]"
    assert isinstance(ANSWER, str) and ANSWER == ANSWER.strip(), [ANSWER]
    assert "step by step" not in context.prompt, "the nested prompt is not unwound"
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_no_return():
    '''lmql
    @lmql.query
    def bullet_points(n: int):
        """lmql
        for i in range(n):
            "-[ITEM]\n" where STOPS_AT(ITEM, "\n") and len(TOKENS(ITEM)) == 3
        """

    "Things to pack for a \
    trip:\n[ITEMS: bullet_points(4)]"

    lines = ITEMS.split("\n")
    assert len(lines) == 5 and lines[-1] == "" and all(line.startswith("-") for line in lines[:-1]), [ITEMS]
    '''


@lmql.query
def dateformat():
    '''lmql
    "(answer as DD/MM/YYYY) [ANSWER]" where len(TOKENS(ANSWER)) == 4
    return ANSWER.strip()
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_multi_nested():
    '''lmql
    answers = []
    for person in ["Ada Lovelace", "Alan Turing", "Grace Hopper"]:
        "Q: When was {person} born? [ANSWER: dateformat]\n"
        assert isinstance(ANSWER, str) and ANSWER == ANSWER.strip(), [ANSWER]
        answers.append(ANSWER)
    assert "DD/MM/YYYY" not in context.prompt

    "Who of them was born last?[LAST]" where len(TOKENS(LAST)) == 2
    assert isinstance(LAST, str) and LAST, [LAST]
    '''


@lmql.query
def one_of(choices: list):
    '''lmql
    "Of {choices}, which is \
    the most likely? [ANSWER]" where ANSWER in choices
    return ANSWER
    '''


@lmql.query(model=lmql.model("random", seed=123))
def test_one_of():
    '''lmql
    "Q: What is the capital of Italy? \
    [ANSWER: one_of(['Milan', 'Rome', 'Turin'])]"
    assert ANSWER in ['Milan', 'Rome', 'Turin'], [ANSWER]
    '''


@lmql.query
def cot_one_of(choices: list):
    '''lmql
    "A: Let's think step by step. [ANSWER: one_of(choices)]" where len(TOKENS(ANSWER)) < 4
    return ANSWER.strip()
    '''


@lmql.query
def test_double_tail_call():
    '''lmql
    "The answer is [ANSWER: cot_one_of(['Hello', 'Greetings'])]"
    assert ANSWER in ['Hello', 'Greetings'], [ANSWER]
    '''


class NestedQueryMethods:
    def __init__(self):
        self.a = 12

    @lmql.query
    def chain_of_thought(self):
        '''lmql
        """A. Let's think step by step ({self.a}):
        [REASONING]
        Therefore the answer is[ANSWER]""" where STOPS_AT(ANSWER, ".") and len(TOKENS(ANSWER)) == 10 and len(TOKENS(REASONING)) == 10
        return ANSWER.strip()
        '''

    @lmql.query(model=lmql.model("random", seed=123))
    def question(self):
        '''lmql
        """Q: Why is the sky blue?
        [ANSWER: self.chain_of_thought]"""
        return ANSWER.strip().rstrip(".").capitalize()
        '''


def test_nested_queries():
    r = NestedQueryMethods().question()
    assert isinstance(r, str) and r == r.capitalize() and not r.endswith("."), [r]

"""Value search (decoding/search.py): argmax over a hole's whole value. The value it finds is the one
with the best total log-probability, the same numbers ``querylm.score`` and a forward pass give, and
it always satisfies the hole's constraints."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import querylm
from querylm.backends.models import resolve
from querylm.constraints.lang import Grammar, Term
from querylm.constraints.where import HoleConstraint
from querylm.decoding.choose import Argmax, Sample
from querylm.decoding.hole import end_logit
from querylm.decoding.search import search_value, searchable

PROMPT = "Answer: the code is"
WORDS = ["aa", "ab", "ba", "bb"]


@pytest.fixture(scope="module")
def random_backend():
    return resolve("random")


def fresh(backend, text=PROMPT):
    seq = backend.new_sequence()
    seq.append(backend.encode(text))
    return seq


def test_a_fixed_length_value_is_the_one_querylm_score_ranks_first(random_backend):
    """A value the grammar ends by itself: its score is its tokens' log-probabilities, as querylm.score
    gives them. With a beam as wide as the language the search is exact."""
    hc = HoleConstraint("X", regular=Term("[ab]{2}"))
    out = search_value(random_backend, fresh(random_backend), hc, max_len=512, width=16)
    assert out is not None and out.searched and out.ended_by == "grammar"
    scores = querylm.score(PROMPT, WORDS, model=random_backend)
    totals = [s.total for s in scores]
    found = float(random_backend.score(random_backend.encode(PROMPT), [out.tokens])[0].sum())
    # any tokenization may be searched: the value found is at least as likely as the best by score
    assert found >= max(totals) - 1e-4
    if found <= max(totals) + 1e-4:
        assert out.text == WORDS[int(np.argmax(totals))]


def test_a_value_of_any_length_counts_its_end(random_backend):
    """Where the value may go on, ending it is part of its score (``hole.end_logit``): the value found
    beats every value of the language by its tokens plus its end."""
    hc = HoleConstraint("X", regular=Term("[ab]{1,2}"))
    values = ["a", "b", *WORDS]
    out = search_value(random_backend, fresh(random_backend), hc, max_len=512, width=16)
    assert out is not None and out.text in values
    prefix = random_backend.encode(PROMPT)

    def total(text):
        ids = random_backend.encode(text)
        lp = float(random_backend.score(prefix, [ids])[0].sum())
        if len(text) == 2:  # the grammar ends it
            return lp
        seq = fresh(random_backend)
        seq.append(ids)
        logits = seq.logits()
        log_z = float(np.log(np.exp(logits - logits.max()).sum()) + logits.max())
        from querylm.constraints.matcher import Matcher

        m = Matcher(random_backend.ll_tokenizer, hc.grammars())
        for t in ids:
            m.consume(t)
        return lp + end_logit(random_backend, logits, m.next_tokens()) - log_z

    totals = {v: total(v) for v in values}
    assert totals[out.text] == pytest.approx(max(totals.values()), abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(
    pattern=st.sampled_from(
        [r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r"[A-Z][a-z]+( [A-Z][a-z]+){0,2}", r" ?-?[0-9]+", r"(yes|no)!?"]
    ),
    prompt=st.sampled_from(["Q: what?\nA:", "Date:", "x", "Name: "]),
    seed=st.integers(0, 5),
)
def test_every_searched_value_satisfies_its_constraint(pattern, prompt, seed):
    model = querylm.backends.random.RandomBackend(resolve("random").tokenizer, seed=seed)
    q = f'argmax\n    "{{p}}[X]"\nwhere REGEX(X, r"{pattern}")\n'
    r = querylm.run(q, p=prompt, model=model, chat=False)
    assert r.holes[0].searched
    assert re.fullmatch(pattern, r.variables["X"])


def test_search_beats_token_by_token_on_total_log_probability(random_backend):
    """What the switch buys: token by token, argmax can commit to a first token whose value is worse
    overall. A beam guarantees nothing past its width, but on these seeds the search's value is never
    less likely than the token loop's (the same scores, taken over the values' ids)."""
    q = 'argmax\n    "{p}[X]"\nwhere REGEX(X, r"[a-z]{3}")\n'
    prefix = random_backend.encode(PROMPT)
    for seed in range(6):
        model = querylm.backends.random.RandomBackend(random_backend.tokenizer, seed=seed)
        searched = querylm.run(q, p=PROMPT, model=model, chat=False, heal=False)
        greedy = querylm.run(q, p=PROMPT, model=model, chat=False, heal=False, choices="tokens")
        assert searched.holes[0].searched and not greedy.holes[0].searched
        a = float(model.score(prefix, [searched.holes[0].ids])[0].sum())
        b = float(model.score(prefix, [greedy.holes[0].ids])[0].sum())
        assert a >= b - 1e-4


def test_layout_space_at_a_line_start_is_given_and_written(random_backend):
    """Every value starts with a space and the hole opens a line: the rest of the value is searched
    right after the boundary (scored as "aa", not " aa"), and written with its space."""
    hc = HoleConstraint("X", regular=Term(" [ab]{2}"), line_start=True)
    text = "Q: the code?\n"
    out = search_value(random_backend, fresh(random_backend, text), hc, max_len=512, width=16)
    assert out is not None and out.text.startswith(" ") and out.text[1:] in WORDS
    assert out.tokens == random_backend.encode(out.text)
    totals = [s.total for s in querylm.score(text, WORDS, model=random_backend)]
    assert out.text[1:] == WORDS[int(np.argmax(totals))]
    # under a token budget the space is not taken as given: the budget counts the tokens as written
    hc.max_tokens = 8
    counted = search_value(random_backend, fresh(random_backend, text), hc, max_len=512, width=16)
    assert counted is not None and counted.text.startswith(" ")
    spaced = [" " + w for w in WORDS]
    totals = [s.total for s in querylm.score(text, spaced, model=random_backend)]
    found = float(random_backend.score(random_backend.encode(text), [counted.tokens])[0].sum())
    assert found >= max(totals) - 1e-4


def test_which_holes_are_searched():
    argmax = Argmax()
    assert searchable(HoleConstraint("X", regular=Term("[0-9]+")), argmax)
    assert searchable(HoleConstraint("X", cfgs=[Grammar("lark", "start: /[0-9]+/", "d")]), argmax)
    assert not searchable(HoleConstraint("X", regular=Term("[0-9]+")), Sample(np.random.default_rng(0)))
    assert not searchable(HoleConstraint("X", stops_at=["."]), argmax)  # free text up to a stop
    assert not searchable(HoleConstraint("X", cfgs=[Grammar("json", "{}", "json")]), argmax)
    assert not searchable(HoleConstraint("X", regular=Term("a|b"), choices=["a", "b"]), argmax)


def test_tokens_switch_and_sampling_decode_token_by_token(random_backend):
    q = 'argmax\n    "{p}[X]"\nwhere INT(X)\n'
    assert not querylm.run(q, p=PROMPT, model=random_backend, chat=False, choices="tokens").holes[0].searched
    s = querylm.run(q.replace("argmax", "sample(seed=1)"), p=PROMPT, model=random_backend, chat=False)
    assert not s.holes[0].searched


def test_the_batch_engine_searches_as_run_does(random_backend):
    q = '"{p}[X]" where REGEX(X, r"[0-9]{2}-[a-z]{2}")'
    prompts = ["A:", "Code:", "x y z", "Q: which?\nA:"]
    alone = [querylm.run(q, p=p, model=random_backend, chat=False) for p in prompts]
    mapped = querylm.map(q, [{"p": p} for p in prompts], model=random_backend, chat=False, progress=False)
    assert [r.variables["X"] for r in mapped] == [r.variables["X"] for r in alone]
    assert all(r.holes[0].searched for r in mapped)

"""Whole-value choices (decoding/choices.py): a hole with a few possible values is decided by each
whole value's total log-probability, the same numbers ``querylm.score`` gives."""

import typing

import numpy as np
import pytest
from conftest import tiny_llama
from hypothesis import given, settings
from hypothesis import strategies as st

import querylm

PROMPT = "Review: great phone.\nSentiment:"
VALUES = [" positive", " negative", " neutral", " mixed feelings"]
QUERY = 'argmax\n    "{p}[S]"\nwhere S in OPTIONS\n'


@pytest.mark.parametrize("prompt", [PROMPT, "Q: is it good?\nA:", "x", "Tell me."])
def test_argmax_picks_the_value_querylm_score_ranks_first(prompt):
    model = "random"
    scores = querylm.score(prompt, VALUES, model=model)
    best = VALUES[int(np.argmax([s.total for s in scores]))]
    # heal=False: querylm.score scores after the prompt as tokenized (test_healing.py has the healed case)
    r = querylm.run(QUERY, p=prompt, OPTIONS=VALUES, model=model, chat=False, heal=False)
    assert r.variables["S"] == best
    assert r.holes[-1].ended_by == "choice"


def test_tokens_switch_decodes_token_by_token():
    r = querylm.run(QUERY, p=PROMPT, OPTIONS=VALUES, model="random", chat=False, choices="tokens")
    assert r.holes[-1].ended_by != "choice" and r.variables["S"] in VALUES


def test_literal_types_are_choices_too():
    r = querylm.run(
        'argmax\n    "{p}[S: T]"\n', p=PROMPT, T=typing.Literal["yes", "no"], model="random", chat=False
    )
    scores = querylm.score(PROMPT, ["yes", "no"], model="random")
    assert r.variables["S"] == ["yes", "no"][int(np.argmax([s.total for s in scores]))]


def test_another_conjunct_rules_values_out():
    q = 'argmax\n    "{p}[S]"\nwhere S in OPTIONS and len(S) < 10\n'
    r = querylm.run(q, p=PROMPT, OPTIONS=VALUES, model="random", chat=False)
    assert r.variables["S"] != " mixed feelings" and len(r.variables["S"]) < 10


def test_sampling_draws_by_whole_value_probability_and_is_seeded():
    q = 'sample(n=40, seed=3)\n    "{p}[S]"\nwhere S in OPTIONS\n'
    a = [r.variables["S"] for r in querylm.run(q, p=PROMPT, OPTIONS=VALUES[:2], model="random", chat=False)]
    b = [r.variables["S"] for r in querylm.run(q, p=PROMPT, OPTIONS=VALUES[:2], model="random", chat=False)]
    assert a == b and set(a) <= set(VALUES[:2])
    assert all(
        r_ended == "choice"
        for r_ended in [
            r.holes[-1].ended_by
            for r in querylm.run(q, p=PROMPT, OPTIONS=VALUES[:2], model="random", chat=False)
        ]
    )


def test_bad_choices_option_is_a_query_error():
    with pytest.raises(querylm.QueryError):
        querylm.run(QUERY, p=PROMPT, OPTIONS=VALUES, model="random", choices="whole")


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.text(alphabet="ab x", min_size=1, max_size=6), min_size=1, max_size=5, unique=True),
    st.integers(0, 5),
)
def test_values_satisfy_their_constraints(options, seed):
    q = 'argmax\n    "Pick:[S]"\nwhere S in OPTIONS and not "xx" in S\n'
    allowed = [o for o in options if "xx" not in o]
    if not allowed:
        return
    r = querylm.run(
        q, OPTIONS=options, model="random", decoder=f"sample(seed={seed}, temperature=0.01)", chat=False
    )
    assert r.variables["S"] in allowed


def test_a_local_sequence_scores_values_from_its_own_cache():
    """``Sequence.score`` on a local model feeds the prompt once through the sequence's own KV cache
    (the decoding after the choice goes on from it) and gives ``backend.score``'s numbers."""
    backend = tiny_llama(5)
    prompt = backend.encode(PROMPT)
    conts = [backend.encode(v) for v in VALUES]
    seq = backend.new_sequence()
    seq.append(prompt)
    got = seq.score(backend, conts)
    want = backend.score(prompt, conts)
    assert all(np.allclose(g, w, atol=1e-4) for g, w in zip(got, want, strict=True))
    assert seq.cached == len(prompt) and seq.cache.get_seq_length() == len(prompt)  # nothing appended
    seq.append(conts[1])  # the decoding goes on from the cache: the value's tokens are fed next
    after = seq.logits()
    fresh = backend.new_sequence()
    fresh.append(prompt + conts[1])
    assert np.allclose(after, fresh.logits(), atol=1e-4)

"""Token healing (decoding/heal.py): a hole right after prompt text backs off the prompt's last token,
and the value's first token(s) write that text again. The prompt's text never changes, the value
excludes it; never across a role tag, a previous value or a special token, nor on a hole with a token
budget (it counts the tokens the model writes for the value)."""

import json
import re

import numpy as np
import pytest
from conftest import tiny_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import querylm
from querylm.backends.models import resolve
from querylm.cli import main
from querylm.decoding.heal import backoff, inside, value_pieces

FREE = 'argmax\n    "{p}[S]"\nwhere len(S) < 12\n'


@pytest.fixture(scope="module")
def rnd():
    return resolve("random")


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(5, sharpen=40.0)


def healed_text(backend, prompt: str) -> str:
    """What healing backs off a prompt that is all one chunk of text: its last token's text."""
    return backend.decode(backend.encode(prompt)[-1:])


@pytest.mark.parametrize(
    "prompt",
    ["The answer is ", "Hello wor", "Line one\n", "Review: great.\nSentiment:"],
    ids=["space", "partial-word", "newline", "colon"],
)
def test_the_value_writes_the_prompts_last_token_again(rnd, prompt):
    r = querylm.run(FREE, p=prompt, model=rnd, chat=False)
    hole, value = r.holes[-1], r.variables["S"]
    heal = healed_text(rnd, prompt)
    assert heal and prompt.endswith(heal)
    assert rnd.decode(hole.ids) == heal + value  # the tokens start by writing the healed text
    assert r.prompt == prompt + value  # the prompt's text is as written; the value excludes it
    assert hole.tokens == len(hole.ids) - inside(rnd, heal, hole.ids)  # the value's tokens


@pytest.mark.parametrize("prompt", ["The answer is ", "Hello wor", "Line one\n"])
def test_heal_false_decodes_after_the_prompt_as_tokenized(rnd, prompt):
    r = querylm.run(FREE, p=prompt, model=rnd, chat=False, heal=False)
    hole = r.holes[-1]
    assert rnd.decode(hole.ids) == r.variables["S"] and r.prompt == prompt + r.variables["S"]


def test_healing_changes_what_a_space_before_a_hole_does(rnd):
    """The point of healing: after "is " the value's first token may carry the space itself."""
    healed = querylm.run(FREE, p="The answer is ", model=rnd, chat=False)
    plain = querylm.run(FREE, p="The answer is ", model=rnd, chat=False, heal=False)
    assert healed.holes[-1].ids != plain.holes[-1].ids
    assert rnd.decode(healed.holes[-1].ids[:1]).startswith(" ")


def test_no_heal_after_a_role_tag(rnd):
    q = 'argmax\n    "{:user}Say hi{:assistant}[S]"\nwhere len(S) < 12\n'
    r = querylm.run(q, model=rnd)
    assert rnd.decode(r.holes[-1].ids) == r.variables["S"]


def test_no_heal_after_another_hole(rnd):
    q = 'argmax\n    "Two words: [A][B]"\nwhere len(A) < 8 and len(B) < 8\n'
    r = querylm.run(q, model=rnd, chat=False)
    a, b = r.holes
    assert rnd.decode(a.ids) == healed_text(rnd, "Two words: ") + r.variables["A"]
    assert rnd.decode(b.ids) == r.variables["B"]  # A's value is decided: B starts after it
    assert r.prompt == "Two words: " + r.variables["A"] + r.variables["B"]


def test_no_heal_of_a_special_token_or_of_the_only_token(rnd):
    special = rnd.encode("<|im_end|>", special=True)
    assert len(special) == 1
    text = rnd.encode("Hello ")
    assert backoff(rnd, text + special, before=3) == (text + special, "")
    assert backoff(rnd, text[-1:], before=0) == (text[-1:], "")  # nothing left to condition on
    assert backoff(rnd, text, before=2) == (text[:-1], " ")


def test_tokens_inside_the_healed_text_are_not_budgeted(rnd):
    space, word = rnd.encode(" "), rnd.encode("x")
    assert inside(rnd, " ", space + word) == 1
    assert inside(rnd, " ", rnd.encode(" x")) == 0
    assert inside(rnd, "", space) == 0
    assert value_pieces([" ", "x"], " ") == ["x"] and value_pieces([" x", "y"], " ") == ["x", "y"]


@pytest.mark.parametrize(
    "where", ["len(TOKENS(S)) == 2", "len(TOKENS(S)) < 3", 'len(TOKENS(S)) > 1 and STOPS_AT(S, ".")']
)
def test_a_token_budget_is_not_healed(rnd, where):
    """A budget counts the tokens the model writes for the value: a healed first token is partly the
    prompt's, and the value alone tokenizes otherwise (LMQL's programs re-tokenize it to count)."""
    q = 'argmax(max_len=40)\n    "The answer is [S]"\nwhere ' + where + "\n"
    r = querylm.run(q, model=rnd, chat=False)
    plain = querylm.run(q, model=rnd, chat=False, heal=False)
    hole = r.holes[-1]
    assert rnd.decode(hole.ids) == r.variables["S"] and hole.tokens == len(hole.ids)
    assert hole.ids == plain.holes[-1].ids and r.prompt == "The answer is " + r.variables["S"]


def test_stream_shows_the_prompt_once(rnd):
    seen: list[str] = []
    r = querylm.run(FREE, p="The answer is ", model=rnd, chat=False, stream=seen.append)
    assert "".join(seen) == r.prompt


@pytest.mark.parametrize("decoder", ["argmax", "sample(seed=2)", "sample(n=2, seed=2)", "beam(n=2)"])
def test_every_decoder_heals(tiny, decoder):
    q = 'argmax\n    "Count: one two [S]"\nwhere len(S) < 12\n'
    results = querylm.run_n(q, model=tiny, chat=False, decoder=decoder)
    for r in results:
        assert tiny.decode(r.holes[-1].ids) == " " + r.variables["S"]
        assert r.prompt == "Count: one two " + r.variables["S"]


def test_batched_rows_equal_runs_alone(tiny):
    prompts = ["The answer is ", "Hello wor", "Line one\n", "Pick: ", "x"]
    items = [{"query": FREE, "p": p, "model": tiny, "chat": False} for p in prompts]
    batched = querylm.run_many(items, batch_size=3)
    for item, b in zip(items, batched, strict=True):
        alone = querylm.run(**item)
        assert b.prompt == alone.prompt and b.holes[-1].ids == alone.holes[-1].ids


def test_whole_values_are_scored_with_the_healed_text(rnd):
    """A choice after "Sentiment:" scores ":" + value after the prompt less its ":" token."""
    prompt, values = "Review: great phone.\nSentiment:", [" positive", " negative", " neutral"]
    q = 'argmax\n    "{p}[S]"\nwhere S in OPTIONS\n'
    r = querylm.run(q, p=prompt, OPTIONS=values, model=rnd, chat=False)
    heal = healed_text(rnd, prompt)
    scores = querylm.score(prompt[: -len(heal)], [heal + v for v in values], model=rnd)
    assert r.variables["S"] == values[int(np.argmax([s.total for s in scores]))]
    assert r.prompt == prompt + r.variables["S"]


def test_whole_values_at_a_line_start_are_scored_without_leading_whitespace(rnd):
    """After a newline (or at a message's start) " positive"'s space is layout: "positive" is scored,
    and the value is still the option as written, in the sequence too."""
    prompt, values = "Review: great phone.\n", [" positive", " negative"]
    q = 'argmax\n    "{p}[S]"\nwhere S in OPTIONS\n'
    r = querylm.run(q, p=prompt, OPTIONS=values, model=rnd, chat=False)
    heal = healed_text(rnd, prompt)
    assert r.variables["S"] in values and r.prompt == prompt + r.variables["S"]
    assert r.holes[-1].ids == rnd.encode(heal + r.variables["S"])
    scores = querylm.score(prompt[: -len(heal)], [heal + v.lstrip() for v in values], model=rnd)
    assert r.variables["S"] == values[int(np.argmax([s.total for s in scores]))]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=st.text(alphabet="ab :\n,é", min_size=1, max_size=12),
    kind=st.sampled_from(["INT", "REGEX", "IN", "STOPS"]),
)
def test_healed_values_satisfy_their_constraints(rnd, prompt, kind):
    where = {
        "INT": "INT(S) and len(S) < 6",
        "REGEX": 'REGEX(S, r"[a-z]{1,6}")',
        "IN": 'S in ["yes", " no", "maybe so"]',
        "STOPS": 'STOPS_AT(S, ".") and len(S) < 16',
    }[kind]
    q = 'argmax\n    "{p}[S]"\nwhere ' + where + "\n"
    for choices in ("values", "tokens"):
        r = querylm.run(q, p="Say: " + prompt, model=rnd, chat=False, choices=choices)
        s, text = r.variables["S"], r.holes[-1].text
        assert r.prompt == "Say: " + prompt + text
        if kind == "INT":  # (its text may be "-0": the prompt keeps the text, the value is the int)
            assert isinstance(s, int) and int(text) == s
            continue
        assert text == s
        if kind == "REGEX":
            assert re.fullmatch(r"[a-z]{1,6}", s)
        elif kind == "IN":
            assert s in ["yes", " no", "maybe so"]
        else:
            assert "." not in s[:-1] and len(s) < 16


REVIEWS = [
    "I love this phone!",
    "Best purchase ever.",
    "Terrible, it broke after a day.",
    "It arrived on Tuesday.",
]
GOLD = [" positive", " positive", " negative", " neutral"]


@pytest.mark.model
def test_sentiment_in_lmqls_style_on_the_default_model():
    """Issue 14's case: leading spaces, the chat template (the hole opens the assistant's message)."""
    q = 'argmax\n    "Review: {r}\\nSentiment:[S]"\nwhere S in [" positive", " negative", " neutral"]\n'
    got = [querylm.run(q, r=r).variables["S"] for r in REVIEWS]
    assert sum(g == w for g, w in zip(got, GOLD, strict=True)) >= 3, got


@pytest.mark.parametrize("heal", [True, False])
def test_the_cli_heals_unless_told_not_to(rnd, tmp_path, capsys, heal):
    query = tmp_path / "q.lmql"
    query.write_text('argmax\n    "The answer is [S]"\nwhere len(S) < 12\n', encoding="utf-8")
    args = ["run", str(query), "--model", "random", "--no-chat", "--json"]
    assert main(args if heal else [*args, "--no-heal"]) == 0
    printed = json.loads(capsys.readouterr().out)
    alone = querylm.run(query, model=rnd, chat=False, heal=heal)
    assert printed == {"prompt": alone.prompt, "variables": alone.variables}
    assert printed["prompt"] == "The answer is " + printed["variables"]["S"]

"""The JSON guide (decoding/guide.py): the scan of generated JSON text, and each rule (repetition of
strings and arrays, excluded phrases, digit groups, optional keys by scoring) on the random model,
one that repeats itself, and the default model where the rule is about what a real model writes."""

from __future__ import annotations

import json
from typing import Annotated, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from querylm.backends.models import resolve
from querylm.backends.random import RandomBackend, RandomSequence
from querylm.constraints.matcher import Matcher
from querylm.constraints.schema import compact
from querylm.decoding.choose import Argmax
from querylm.decoding.guide import GuideRules, JsonGuide, grouped_numbers
from querylm.decoding.jsontext import JsonScan
from querylm.tools import Agent, tool, validate

# -- the scan --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "string", "number", "kinds", "state"),
    [
        ('{"a": "x', 7, None, ["object"], "value"),
        ('{"a": "x\\"y', 7, None, ["object"], "value"),
        ('{"a": 12', None, 6, ["object"], "value"),
        ('{"a": [1, 2', None, 10, ["object", "array"], "value"),
        ('{"a": [1, "b"], "c', 17, None, ["object"], "key"),
        ('{"a": true', None, None, ["object"], "value"),
        ('<tool_call>[\n{"a": {}', None, None, ["object"], "after"),
        ('<tool_call>[\n{"a": 1}, ', None, None, [], None),
        ('{"a": "}{[,"', None, None, ["object"], "after"),
    ],
)
def test_the_scan_knows_where_the_text_stands(text, string, number, kinds, state):
    scan = JsonScan(len("<tool_call>[\n") if text.startswith("<") else 0)  # JSON after the tag
    scan.feed(text)
    assert scan.string == string
    assert scan.number == number
    assert [f.kind for f in scan.stack] == kinds
    assert (scan.stack[-1].state if scan.stack else None) == state


def test_the_scan_reports_an_object_closing_or_going_on_after_a_value():
    scan = JsonScan()
    scan.feed('{"a": 1')
    events = scan.copy().feed('{"a": 1, "b": "x"}')
    assert [(e.kind, e.offset) for e in events] == [(",", 7), ("}", 17)]
    assert scan.pos == 7 and scan.number == 6  # the copy was fed, not the scan
    assert JsonScan().feed("{}") == []  # no value ended: nothing to decide


def test_grouped_numbers_are_read_the_way_people_write_them():
    found = grouped_numbers("A $1,250,000 house, 2,500.50 euros, 30 years, 1,2,3 and 12,34")
    assert found.grouped == [("1,250,000", ""), ("2,500", ".50")]
    assert "30" in found.plain and "250" not in found.plain and "1250000" not in found.plain


# -- the guide, step by step --------------------------------------------------------------------------------

BACKEND = resolve("random")
LOOP_WORDS = [BACKEND.encode(w)[0] for w in (" go", " team", " milk", " buy")]


def step_at(schema: dict[str, Any], prompt: str, written: str, rules: GuideRules | None = None):
    """A guide after ``prompt`` with the value's ``written`` text made, and the value's matcher."""
    grammar = json.dumps({"grammars": [{"json_schema": compact(schema, lenient=True)}]})
    matcher = Matcher(BACKEND.ll_tokenizer, [grammar])
    seq = BACKEND.new_sequence()
    seq.append(BACKEND.encode(prompt))
    guide = JsonGuide(rules or GuideRules(), BACKEND, seq)
    tokens = BACKEND.encode(written)
    for t in tokens:
        matcher.consume(t)
    seq.append(tokens)
    return guide, matcher, tokens, seq


def revise(guide, matcher, tokens, piece: str, logits=None) -> list[int]:
    (token,) = BACKEND.encode(piece)
    allowed = matcher.next_tokens()
    logits = np.zeros(BACKEND.vocab_size, dtype=np.float32) if logits is None else logits
    return guide.revise(matcher, tokens, token, logits, allowed, Argmax(), 64)


PRICE = {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}


@pytest.mark.parametrize(
    ("prompt", "written", "rest"),
    [
        ("What is the payment on a $200,000 house?", '{"price": 200', "000"),
        ("It costs $1,250,000 in all.", '{"price": 1', "250000"),
        ("It costs $1,250,000 in all.", '{"price": 1250', "000"),
        ("Pay 2,500.50 euros.", '{"price": 2', "500.50"),
    ],
)
def test_a_number_cut_at_its_digit_group_comma_is_continued(prompt, written, rest):
    guide, matcher, tokens, _ = step_at(PRICE, prompt, written)
    run = revise(guide, matcher, tokens, "}")
    assert BACKEND.decode(run) == rest + "}"
    value = json.loads(written + BACKEND.decode(run))
    assert validate(PRICE, value) == []


@pytest.mark.parametrize(
    ("schema", "prompt", "written"),
    [
        (PRICE, "200 shares of a $200,000 fund", '{"price": 200'),  # 200 is in the prompt as it is
        (PRICE, "A $200,000 house", '{"price": 20'),  # not the leading group
        (PRICE, "A $200,000 house", '{"price": 200.5'),
        (PRICE, "A house for 200 dollars", '{"price": 200'),
        (
            {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5000}}, "required": ["n"]},
            "A $200,000 house",
            '{"n": 200',
        ),  # the grammar refuses 200000: the number stays as the model wrote it
    ],
)
def test_a_number_is_not_continued_where_the_prompt_or_the_grammar_says_otherwise(schema, prompt, written):
    guide, matcher, tokens, _ = step_at(schema, prompt, written)
    assert BACKEND.decode(revise(guide, matcher, tokens, "}")) == "}"


TEXT = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 200}}, "required": ["text"]}


def test_a_string_may_not_come_to_contain_an_excluded_phrase():
    rules = GuideRules(excluded=("</tool_call>",))
    guide, matcher, tokens, _ = step_at(TEXT, "", '{"text": "done </tool_call', rules)
    (close,) = BACKEND.encode(">")
    logits = np.zeros(BACKEND.vocab_size, dtype=np.float32)
    logits[close] = 10.0  # the model wants the tag closed
    run = revise(guide, matcher, tokens, ">", logits)
    assert run != [close] and ">" not in BACKEND.decode(run)
    # without the rule the token stands
    guide, matcher, tokens, _ = step_at(TEXT, "", '{"text": "done </tool_call')
    assert revise(guide, matcher, tokens, ">", logits) == [close]


def test_a_repeating_string_is_closed_where_its_grammar_allows():
    written = '{"text": "go team go team go team'
    guide, matcher, tokens, _ = step_at(TEXT, "", written)
    run = revise(guide, matcher, tokens, " go")
    assert BACKEND.decode(run).startswith('"')
    # a pattern that can't end here keeps the string open: the token stands
    pattern = {"type": "object", "properties": {"t": {"type": "string", "pattern": "^(go team ?)+!$"}}}
    guide, matcher, tokens, _ = step_at(pattern, "", '{"t": "go team go team go team')
    assert BACKEND.decode(revise(guide, matcher, tokens, " go")) == " go"


def test_a_short_or_new_run_is_not_repetition():
    guide, matcher, tokens, _ = step_at(TEXT, "", '{"text": "2025-06-12 to 2025-06-1')
    assert BACKEND.decode(revise(guide, matcher, tokens, "3")) == "3"  # 9 repeated characters
    guide, matcher, tokens, _ = step_at(TEXT, "", '{"text": "the meeting moved to Friday, see you at the')
    assert BACKEND.decode(revise(guide, matcher, tokens, " meeting")) == " meeting"  # two tokens


OPTIONAL = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}


def test_an_object_closes_or_takes_a_key_by_scoring_each_in_full():
    guide, matcher, tokens, seq = step_at(OPTIONAL, "Weather in Oslo, in f, for 3 days.", '{"city": "Oslo')
    run = revise(guide, matcher, tokens, '",')
    options = ['"}', '", "unit":', '", "days":']
    # the scores the guide compares: each option with the text the grammar forces after it
    scored = [BACKEND.encode(o) for o in options]
    for o in scored:
        m = matcher.fork()
        for t in o:
            m.consume(t)
        o.extend(m.forced()[:16])
    assert BACKEND.decode(scored[1]).endswith(': "')  # the enum's value opens with a quote: forced
    totals = [float(s.sum()) for s in seq.score(BACKEND, scored)]
    best = options[int(np.argmax(totals))]
    assert BACKEND.decode(run) == best
    # a required key missing: no choice to make, the token stands
    guide, matcher, tokens, _ = step_at({**OPTIONAL, "required": ["city", "days"]}, "", '{"city": "Oslo')
    assert BACKEND.decode(revise(guide, matcher, tokens, '",')) == '",'
    # an open object takes any key: nothing to score
    guide, matcher, tokens, _ = step_at({**OPTIONAL, "additionalProperties": True}, "", '{"city": "Oslo')
    assert BACKEND.decode(revise(guide, matcher, tokens, '",')) == '",'


# -- the agent on a model that repeats itself --------------------------------------------------------------


class RepeatingSequence(RandomSequence):
    """Random logits pulled to a few words, and strongly to the token that followed the last token the
    last time it came among the last 40: once a word recurs, the model loops."""

    def logits(self) -> np.ndarray:
        out = super().logits()
        out[LOOP_WORDS] += 12.0
        ids = self.ids
        for j in range(len(ids) - 2, max(len(ids) - 40, 0), -1):
            if ids[j] == ids[-1]:
                out[ids[j + 1]] += 30.0
                break
        return out

    def fork(self) -> RepeatingSequence:
        other = RepeatingSequence(self.backend)
        other.ids = list(self.ids)
        return other


class Repeating(RandomBackend):
    def new_sequence(self) -> RepeatingSequence:
        return RepeatingSequence(self)


def repeating(seed: int) -> Repeating:
    base = resolve("random")
    backend = Repeating(base.tokenizer, seed=seed)
    backend.__dict__["byte_tables"] = base.byte_tables
    backend.__dict__["ll_tokenizer"] = base.ll_tokenizer
    return backend


@tool
def note(
    text: Annotated[str, Field(max_length=120)], tags: Annotated[list[str], Field(max_length=12)]
) -> str:
    """Save a note."""
    return "saved"


def run_note(backend: Any, guide: bool) -> dict[str, Any]:
    agent = Agent(backend, [note], tool_choice="required", max_turns=1, guide_values=guide)
    result = agent.run("Note: buy milk, tag it errands.")
    (call,) = result.tool_calls
    assert validate(note.parameters, call.arguments) == []
    return call.arguments


def test_strings_and_arrays_that_repeat_run_to_their_bound_unless_guided():
    runs = [(run_note(repeating(seed), False), run_note(repeating(seed), True)) for seed in range(4)]
    unguided = sum(len(a["text"]) for a, _ in runs) + sum(len(a["tags"]) for a, _ in runs)
    guided = sum(len(b["text"]) for _, b in runs) + sum(len(b["tags"]) for _, b in runs)
    assert unguided > 2 * guided
    assert any(len(a["text"]) == 120 or len(a["tags"]) == 12 for a, _ in runs)  # the bound was reached
    for _, b in runs:
        assert len(b["text"]) < 120 and len(b["tags"]) < 12


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_every_guided_call_is_valid_and_ends_before_its_bound(seed):
    args = run_note(repeating(seed), True)  # validated against the tool's schema there
    assert len(args["text"]) < 120 and len(args["tags"]) < 12
    assert all("</tool_call>" not in s for s in [args["text"], *args["tags"]])


def test_the_agent_takes_the_excluded_phrases_from_its_format():
    rules = Agent(BACKEND, [note]).format.guide_rules()
    assert rules.excluded == ("</tool_call>",) and rules.json_after == "<tool_call>[\n"

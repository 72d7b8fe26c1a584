"""An assistant turn run as a query on the runtime (runtime/turn.py) and the chat it continues
(runtime/chat.py), on a tiny random-weight Llama over SmolLM2's real tokenizer."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import tiny_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from querylm.backends.local import LocalBackend
from querylm.decoding.choose import Argmax, Sample
from querylm.decoding.names import NameScoringChooser
from querylm.errors import QueryCompileError, QueryInputError, UnsupportedError
from querylm.runtime.chat import ChatPrefix, render
from querylm.runtime.turn import TurnDecoder, run_turn, turn_spec


@pytest.fixture(scope="module")
def tiny() -> LocalBackend:
    return tiny_llama(3, sharpen=4.0)


def _chat(backend: LocalBackend) -> tuple[object, str | None]:
    seq = backend.new_sequence()
    return seq, render(backend, seq, [{"role": "user", "content": "Pick one."}])


WORDS = st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4, unique=True)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=WORDS, seed=st.integers(0, 1000))
def test_a_turn_is_a_value_of_its_grammar_in_an_assistant_message(tiny: LocalBackend, words, seed) -> None:
    seq, role = _chat(tiny)
    before = len(seq.ids)
    grammar = "start: " + " | ".join(f'"{w}"' for w in words) + "\n"
    streamed: list[str] = []
    value = run_turn(
        tiny,
        seq,
        role,
        grammar,
        budget=16,
        decoder=TurnDecoder(tiny, turn_spec(None, 1.0, seed)),
        on_token=streamed.append,
    )
    assert value.complete and value.text in words
    assert "".join(streamed) == value.text
    opened = tiny.encode(tiny.chat_transition("user", "assistant"), special=True)
    assert seq.ids[before : before + len(opened)] == opened  # the turn opened the assistant's message
    assert value.tokens == len(seq.ids) - before - len(opened)
    assert tiny.decode(seq.ids[before + len(opened) :]) == value.text


def test_a_budget_that_ends_inside_the_grammar_is_an_incomplete_turn(tiny: LocalBackend) -> None:
    seq, role = _chat(tiny)
    value = run_turn(
        tiny, seq, role, "start: /a{40}/\n", budget=5, decoder=TurnDecoder(tiny, turn_spec(None))
    )
    assert not value.complete
    assert 0 < value.tokens <= 5
    assert re.fullmatch("a*", value.text) and len(value.text) < 40


def test_names_are_scored_in_full(tiny: LocalBackend) -> None:
    """With names, the name after ``{"name": "`` is the one whose tokens (and the closing quote) the
    model scores highest in full, not the one its first token favours."""
    seq, role = _chat(tiny)
    grammar = 'start: "{\\"name\\": \\"" NAME "\\"}"\nNAME: "weather" | "time" | "date"\n'
    names = ("weather", "time", "date")
    start = len(seq.ids) + len(tiny.encode(tiny.chat_transition(role, "assistant"), special=True))
    value = run_turn(
        tiny, seq, role, grammar, budget=32, decoder=TurnDecoder(tiny, turn_spec(None)), names=names
    )
    assert value.complete
    at = next(k for k in range(start, len(seq.ids)) if tiny.decode(seq.ids[start:k]) == '{"name": "')
    scores = {n: float(tiny.score(seq.ids[:at], [tiny.encode(n + '"')])[0].sum()) for n in names}
    assert value.text == '{"name": "' + max(scores, key=scores.__getitem__) + '"}'


SHARED = ("get_weather", "get_time", "get_date")


def test_names_with_a_forced_common_start_are_scored_in_full(tiny: LocalBackend) -> None:
    """Names that share a start (``get_``) have it forced by the grammar, so the first choice comes
    inside the name: the candidates that go on from what is written are scored there, in full."""
    seq, role = _chat(tiny)
    seq.append(tiny.encode(tiny.chat_transition(role, "assistant"), special=True))
    chooser = NameScoringChooser(Argmax(), tiny, seq, SHARED + ("set_alarm",))  # at the turn's start
    seq.append(tiny.encode('{"name": "get_'))  # as the grammar forces it, without asking the chooser
    logits = seq.logits()
    token = chooser.choose(logits, np.arange(logits.shape[-1]))
    rests = {n: tiny.encode(n[len("get_") :] + '"') for n in SHARED}
    scores = {n: float(tiny.score(list(seq.ids), [rests[n]])[0].sum()) for n in SHARED}
    best = max(scores, key=scores.__getitem__)
    assert set(chooser.scores) == set(SHARED)  # set_alarm can't follow "get_": not scored
    assert chooser.scores == pytest.approx(scores, abs=1e-3)
    assert token == rests[best][0]


def test_a_turn_whose_names_share_a_start_writes_the_best_scored_name(tiny: LocalBackend) -> None:
    seq, role = _chat(tiny)
    grammar = 'start: "{\\"name\\": \\"" NAME "\\"}"\nNAME: ' + " | ".join(f'"{n}"' for n in SHARED) + "\n"
    start = len(seq.ids) + len(tiny.encode(tiny.chat_transition(role, "assistant"), special=True))
    decoder = TurnDecoder(tiny, turn_spec(None))
    value = run_turn(tiny, seq, role, grammar, budget=32, decoder=decoder, names=SHARED)
    assert value.complete and value.text.startswith('{"name": "get_')
    # where the first choice came: after the forced tokens, at the first point the names part
    at = next(
        k
        for k in range(start, len(seq.ids))
        if not all(n.startswith(_name_part(tiny, seq.ids[start : k + 1])) for n in SHARED)
    )
    written = _name_part(tiny, seq.ids[start:at])
    goes_on = [n for n in SHARED if n.startswith(written)]
    scores = {
        n: float(tiny.score(seq.ids[:at], [tiny.encode(n[len(written) :] + '"')])[0].sum()) for n in goes_on
    }
    assert value.text == '{"name": "' + max(scores, key=scores.__getitem__) + '"}'


def _name_part(backend: LocalBackend, ids: list[int]) -> str:
    return backend.decode(ids).removeprefix('{"name": "')


def test_chat_prefix_forks_the_cached_system_message(tiny: LocalBackend) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    prefix = ChatPrefix(tiny)
    first, role = prefix.start(messages)
    assert role == "user"
    assert prefix.cached is not None
    cached = prefix.cached[1]
    second, _ = prefix.start([messages[0], {"role": "user", "content": "Bye"}])
    assert prefix.cached[1] is cached  # the same system message: rendered and filled once
    fresh = tiny.new_sequence()
    render(tiny, fresh, messages)
    assert first.ids == fresh.ids
    assert second.ids[: len(cached.ids)] == cached.ids
    prefix.start([{"role": "system", "content": "Another."}])
    assert prefix.cached[1] is not cached


# -- the decoder of an agent's turns ------------------------------------------------------------------


def test_turn_decoders_are_read_as_a_query_decoder_clause() -> None:
    assert turn_spec(None).name == "argmax"
    spec = turn_spec("sample(temperature=0.7, top_p=0.9, seed=1)")
    assert spec.name == "sample" and spec.args == {"temperature": 0.7, "top_p": 0.9, "seed": 1}
    assert turn_spec(None, 0.5, 3).args == {"temperature": 0.5, "seed": 3}  # the short form
    with pytest.raises(UnsupportedError, match="beam keeps several turns"):
        turn_spec("beam(n=2)")
    with pytest.raises(UnsupportedError, match="one sample each"):
        turn_spec("sample(n=2)")
    with pytest.raises(QueryCompileError, match="temperature must be a number >= 0"):
        turn_spec("sample(temperature=-1)")
    with pytest.raises(QueryInputError, match="not both"):
        turn_spec("argmax", 0.7)


def test_an_agent_samples_its_turns_with_the_runtimes_chooser(tiny: LocalBackend) -> None:
    """``decoder="sample(...)"``: the turn is decoded with the runtime's chooser for that clause (the
    same tokens as a turn run with ``prepare.chooser_for``), seeded, and argmax stays the default."""
    grammar = "start: " + " | ".join(f'"{w}"' for w in ("red", "green", "blue", "cyan", "pink")) + "\n"
    spec = turn_spec("sample(temperature=2.0, seed=5)")

    def turn(decoder: TurnDecoder) -> str:
        seq, role = _chat(tiny)
        return run_turn(tiny, seq, role, grammar, budget=8, decoder=decoder).text

    texts = [turn(TurnDecoder(tiny, spec)) for _ in range(2)]
    assert texts[0] == texts[1]  # one seed, one stream
    sampled = {turn(TurnDecoder(tiny, turn_spec(f"sample(temperature=2.0, seed={s})"))) for s in range(12)}
    assert len(sampled) > 1
    greedy = {turn(TurnDecoder(tiny, turn_spec(None))) for _ in range(2)}
    assert len(greedy) == 1
    # the runtime's chooser for the clause: a Sample with the clause's temperature
    chooser = TurnDecoder(tiny, spec).chooser
    assert isinstance(chooser, Sample) and chooser.temperature == 2.0


def test_an_agent_takes_a_decoder_clause(tiny: LocalBackend) -> None:
    from querylm.tools import Agent

    def look(text: str) -> str:
        """Look."""
        return text

    runs = [
        Agent(tiny, [look], decoder="sample(temperature=1.5, seed=2)", max_turns=1, max_turn_tokens=12).run(
            "Hi"
        )
        for _ in range(2)
    ]
    assert runs[0].messages == runs[1].messages
    with pytest.raises(UnsupportedError):
        Agent(tiny, [look], decoder="beam(n=2)")

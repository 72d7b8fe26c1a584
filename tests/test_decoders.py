"""Decoders: beam search against exhaustive enumeration and against transformers' generate(num_beams),
reproducible sampling, and the distribution clause against a direct computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import tiny_llama
from counting import CountingModel

import querylm
from querylm.backends.local import LocalBackend
from querylm.backends.models import resolve


@pytest.fixture(scope="module")
def tiny() -> LocalBackend:
    """A random-weight 2-layer Llama over SmolLM2's real tokenizer: fast, and its choices are arbitrary
    enough that a wrong search order shows."""
    return tiny_llama(1)  # type: ignore[no-any-return]


def logprob(backend: LocalBackend, prefix: list[int], cont: list[int]) -> float:
    """Sum of log P(token) over ``cont`` after ``prefix``, by one plain forward pass (no cache)."""
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([prefix + cont])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return float(sum(lp[len(prefix) - 1 + j, t] for j, t in enumerate(cont)))


def test_constrained_beam_finds_the_best_sequences_of_the_language(tiny: LocalBackend):
    colours = ["red", "green", "blue"]
    sizes = ["small", "large"]
    q = """beam(n=6)
    "Colour: [C]\\n" where C in COLOURS and len(TOKENS(C)) == 1
    "Size: [S]" where S in SIZES and len(TOKENS(S)) == 1
"""
    results = querylm.run(q, model=tiny, chat=False, COLOURS=colours, SIZES=sizes)
    # Exhaustive enumeration: every (colour, size) pair, scored by a plain forward pass.
    scored = []
    for c, s in itertools.product(colours, sizes):
        c_ids, s_ids = tiny.encode(c), tiny.encode(s)
        if len(c_ids) != 1 or len(s_ids) != 1:
            continue
        p1 = tiny.encode("Colour: ")
        total = logprob(tiny, p1, c_ids) + logprob(tiny, p1 + c_ids + tiny.encode("\nSize: "), s_ids)
        scored.append((total, c, s))
    scored.sort(reverse=True)
    got = [(r.variables["C"], r.variables["S"]) for r in results]
    assert got == [(c, s) for _, c, s in scored]
    assert [r.score for r in results] == pytest.approx([t for t, _, _ in scored], abs=1e-3)
    assert all(a.score >= b.score for a, b in itertools.pairwise(results))


def test_beam_over_a_program_with_code_between_holes(tiny: LocalBackend):
    q = """beam(n=3)
    "Pick: [A]\\n" where A in ["yes", "no"] and len(TOKENS(A)) == 1
    if A == "yes":
        "Why: [B]" where B in ["because", "so"] and len(TOKENS(B)) == 1
    else:
        "Count: [N]" where N in ["1", "2"] and len(TOKENS(N)) == 1
    return A
"""
    results = querylm.run(q, model=tiny, chat=False)
    for r in results:  # each beam ran its own branch of the program with its own bound values
        assert r.return_value == r.variables["A"]
        assert ("B" in r.variables) == (r.variables["A"] == "yes")
        assert ("N" in r.variables) == (r.variables["A"] == "no")
    scores = []
    for a, tail, opts in (("yes", "\nWhy: ", ["because", "so"]), ("no", "\nCount: ", ["1", "2"])):
        p = tiny.encode("Pick: ")
        for o in opts:
            scores.append(
                logprob(tiny, p, tiny.encode(a))
                + logprob(tiny, p + tiny.encode(a) + tiny.encode(tail), tiny.encode(o))
            )
    assert [r.score for r in results] == pytest.approx(sorted(scores, reverse=True)[:3], abs=1e-3)


@pytest.mark.model
def test_unconstrained_beam_matches_transformers_generate():
    backend = resolve(None)
    q = 'beam(n=3)\n    "{:user}What is the capital of France?{:assistant}[A]" where len(TOKENS(A)) < 16'
    ours = querylm.run(q, model=backend)[0]
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = backend.tokenizer.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = backend.model.generate(
            **ids,
            num_beams=3,
            max_new_tokens=15,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=False,
        )
    theirs = backend.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours.variables["A"] == theirs


def test_sample_n_seeded_is_reproducible_and_differs_across_seeds():
    q = 'sample(n=4, seed={seed}, temperature=1.0)\n    "Word: [W]" where len(TOKENS(W)) < 4'
    a = [r.variables["W"] for r in querylm.run(q.format(seed=5), model="random")]
    b = [r.variables["W"] for r in querylm.run(q.format(seed=5), model="random")]
    c = [r.variables["W"] for r in querylm.run(q.format(seed=6), model="random")]
    assert a == b and a != c


def test_beam_sample_returns_n_valid_sorted_results():
    rs = querylm.run(
        'beam_sample(n=3, temperature=0.7, seed=2)\n    "x: [X]" where INT(X) and len(TOKENS(X)) < 4',
        model="random",
    )
    assert 1 <= len(rs) <= 3
    assert all(isinstance(r.variables["X"], int) for r in rs)
    assert all(a.score >= b.score for a, b in itertools.pairwise(rs))


def test_distribution_clause_matches_a_direct_computation(tiny: LocalBackend):
    values = ["yes", "no", "maybe later"]
    r = querylm.run(
        'argmax\n    "Answer: [A]"\ndistribution A in VALUES', model=tiny, chat=False, VALUES=values
    )
    probs = dict(r.variables["P(A)"])
    assert sum(probs.values()) == pytest.approx(1.0)
    prefix = tiny.encode("Answer: ")
    direct = np.array([logprob(tiny, prefix, tiny.encode(v)) for v in values])
    expected = np.exp(direct - np.logaddexp.reduce(direct))
    assert [probs[v] for v in values] == pytest.approx(list(expected), abs=1e-4)
    assert r.variables["A"] == values[int(np.argmax(direct))]
    assert dict(r.variables["log P(A)"])["yes"] == pytest.approx(np.log(expected[0]), abs=1e-4)


def test_score_matches_plain_forward_passes(tiny: LocalBackend):
    conts = ["Paris", " Lyon is far", "x"]
    scores = querylm.score("The capital of France is", conts, model=tiny)
    prefix = tiny.encode("The capital of France is")
    for s, c in zip(scores, conts, strict=True):
        assert s.continuation == c and "".join(s.tokens) == c
        assert s.total == pytest.approx(logprob(tiny, prefix, tiny.encode(c)), abs=1e-4)
        assert len(s.logprobs) == len(tiny.encode(c))


def test_best_k_returns_sorted_valid_results(tiny: LocalBackend):
    q = 'best_k(n=3, budget=12)\n    "Word: [W]" where W in ["alpha", "beta", "gamma", "delta"]'
    rs = querylm.run(q, model=tiny, chat=False)
    assert 1 <= len(rs) <= 3
    assert all(r.variables["W"] in ["alpha", "beta", "gamma", "delta"] for r in rs)
    assert all(a.score >= b.score for a, b in itertools.pairwise(rs))
    assert len({r.variables["W"] for r in rs}) == len(rs)


@pytest.mark.model
def test_trace_of_a_real_query_is_recorded_and_drawn(tmp_path):
    import json

    from querylm.cli import main

    out_json, out_png = tmp_path / "t.json", tmp_path / "t.png"
    query = tmp_path / "q.lmql"
    query.write_text('"Q: How many legs does a spider have?\\nA: [N]" where INT(N) and len(TOKENS(N)) < 4\n')
    assert main(["run", str(query), "--trace", str(out_json)]) == 0
    steps = json.loads(out_json.read_text())
    assert steps and all(s["hole"] == "N" for s in steps)
    for s in steps:
        assert 0.0 <= s["prob"] <= 1.0 and 0.0 <= s["masked_mass"] <= 1.0 and s["entropy"] >= 0.0
        assert s["top"] == sorted(s["top"], key=lambda t: -t[1])
    # INT removes the mass of every non-digit token: visible in the trace.
    assert max(s["masked_mass"] for s in steps) > 0.01
    assert main(["run", str(query), "--trace", str(out_png)]) == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 10_000
    # Tracing observes; it never changes the result.
    plain = querylm.run(query)
    traced = querylm.run(query, trace=True)
    assert plain.variables == traced.variables and len(traced.trace) == traced.holes[0].tokens + (
        traced.holes[0].ended_by == "eos"
    )


def counting(backend: LocalBackend) -> tuple[LocalBackend, CountingModel]:
    """A copy of ``backend`` whose forward passes are counted."""
    model = CountingModel(backend.model)
    return LocalBackend("counted", model, backend.tokenizer), model


LITERAL = """argmax
    "Motto: [M]" where M in ["the quick brown fox jumps over the lazy dog", "the end"]
"""


def test_forced_tokens_are_appended_without_a_choice(tiny: LocalBackend):
    """The fixed text of a value is appended without asking for logits: one forward pass for the run,
    and the same value as choosing every token (which a trace does)."""
    fast, fast_model = counting(tiny)
    slow, slow_model = counting(tiny)
    # choices="tokens": the value is decoded token by token (by default a choice of a few values is
    # decided by scoring them whole), so the forced tokens of its text are what is measured
    a = querylm.run(LITERAL, model=fast, chat=False, choices="tokens")
    b = querylm.run(LITERAL, model=slow, chat=False, trace=True)  # a trace asks about every token
    assert a.variables["M"] == b.variables["M"]
    assert a.variables["M"] in ("the quick brown fox jumps over the lazy dog", "the end")
    if a.variables["M"].startswith("the quick"):
        assert len(fast_model.fed) <= 3 < len(slow_model.fed)  # prompt, the choice after "the", the end
    assert len(fast_model.fed) < len(slow_model.fed)


def test_forced_tokens_in_beams_are_scored(tiny: LocalBackend):
    """Beams append forced tokens without a beam step, and their log-probabilities still count: each
    result's score equals a plain forward pass over its prompt and value."""
    q = """beam(n=2)
    "Motto: [M]\\nSo: [S]" where M in ["the quick brown fox jumps over the lazy dog", "the slow brown fox"] and S in ["yes", "no"]
"""
    # heal=False: the scores below are computed over the prompt as tokenized (healing backs off
    # its trailing space and scores the value with it).
    results = querylm.run(q, model=tiny, chat=False, heal=False)
    assert len(results) == 2
    for r in results:
        m_ids, s_ids = (h.ids for h in r.holes)  # the tokenization the beam took
        p1 = tiny.encode("Motto: ")
        p2 = p1 + m_ids + tiny.encode("\nSo: ")
        direct = logprob(tiny, p1, m_ids) + logprob(tiny, p2, s_ids)
        assert r.score == pytest.approx(direct, abs=1e-3)
    assert results[0].score >= results[1].score


@pytest.mark.parametrize(
    "query",
    [
        LITERAL,
        'beam(n=3)\n    "Colour: [C] and [D]" where C in ["red", "green", "blue"] and len(TOKENS(D)) < 4',
        'sample(n=3, seed=4)\n    "Number: [X]" where INT(X) and len(TOKENS(X)) < 5',
    ],
)
def test_launching_forward_passes_early_changes_nothing(tiny: LocalBackend, query: str):
    """On CUDA each forward pass is launched before the next masks are computed (``overlap``); the
    order of work changes, the results must not. Forced on here, on the CPU."""
    plain = querylm.run(query, model=tiny, chat=False)
    early = LocalBackend("tiny-overlap", tiny.model, tiny.tokenizer)
    early.overlap = True
    overlapped = querylm.run(query, model=early, chat=False)
    flat = plain if isinstance(plain, list) else [plain]
    flat2 = overlapped if isinstance(overlapped, list) else [overlapped]
    assert [r.variables for r in flat] == [r.variables for r in flat2]
    assert [r.score for r in flat] == pytest.approx([r.score for r in flat2], abs=1e-4)

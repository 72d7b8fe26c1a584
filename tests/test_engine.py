"""The batch engine: batched runs equal one-at-a-time runs, rows join and leave, errors stay in their
row, the prefix cache reuses and evicts, and every row keeps its constraints."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import tiny_llama
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import querylm
from querylm.backends.local import LocalBackend
from querylm.backends.models import resolve
from querylm.backends.prefix_cache import PrefixCache
from querylm.language.check import compile_source
from querylm.runtime.engine import Engine, prepare_job
from querylm.runtime.run import Job, as_job, iter_many

CLASSIFY = 'argmax\n    "Review: {r}\\nSentiment: [S]"\nwhere S in ["positive", "negative", "neutral"]'
INT_Q = 'argmax\n    "Q: how many legs has a {a}?\\nA: [N]"\nwhere INT(N) and len(TOKENS(N)) < 4'
TEXT = 'argmax\n    "One sentence about {a}: [T]"\nwhere STOPS_AT(T, ".") and len(TOKENS(T)) < 12'
TWO = (
    'argmax\n    "Colour: [C]\\nNow a fruit, please, and be brief about it: [F]"\n'
    'where STOPS_AT(C, "\\n") and len(TOKENS(C)) < 5 and len(TOKENS(F)) < 6'
)
JSON_Q = """from dataclasses import dataclass


@dataclass
class Reading:
    level: int
    ok: bool


argmax
    "Sensor {a} as JSON: [R: Reading]"
    return R
"""
SAMPLE = 'sample(temperature=0.9, seed=7)\n    "Word about {a}: [W]"\nwhere STOPS_AT(W, " ") and len(TOKENS(W)) < 5'


def mixed(model: Any) -> list[dict[str, Any]]:
    """Queries of every kind and length, interleaved."""
    out = []
    for i, a in enumerate(["cat", "spider", "a very long and winding road through the hills", "fish"]):
        out += [
            {"query": CLASSIFY, "r": f"{a} was great" if i % 2 else f"{a} was awful, truly"},
            {"query": INT_Q, "a": a},
            {"query": TEXT, "a": a},
            {"query": TWO},
            {"query": JSON_Q, "a": a},
        ]
    return [{**item, "model": model} for item in out]


def alone(item: dict[str, Any]) -> Any:
    kwargs = dict(item)
    try:
        return querylm.run(kwargs.pop("query"), **kwargs)
    except Exception as err:  # noqa: BLE001 - compared with the batched slot
        return err


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and str(a) == str(b)
    return (a.prompt, a.variables, a.return_value, [h.tokens for h in a.holes]) == (
        b.prompt,
        b.variables,
        b.return_value,
        [h.tokens for h in b.holes],
    )


@pytest.fixture(scope="module")
def tiny() -> LocalBackend:
    """A tiny Llama with one KV head (as grouped-query models have) and sharp logits."""
    return tiny_llama(3, kv_heads=1, sharpen=40.0)  # type: ignore[no-any-return]


def test_batched_argmax_equals_one_at_a_time_on_random() -> None:
    items = mixed("random")
    batched = querylm.run_many(items, batch_size=3)  # 3 rows for 20 queries: rows join as others leave
    assert all(same(a, b) for a, b in zip([alone(i) for i in items], batched, strict=True))
    assert sum(isinstance(r, Exception) for r in batched) < len(items) // 2


def test_batched_equals_one_at_a_time_on_a_real_kv_cache(tiny: LocalBackend) -> None:
    """Ragged rows on one KV cache (slots reused, columns compacted, the prefix cache on): each row's
    tokens are those it gets alone."""
    items = mixed(tiny)
    jobs = [prepare_job(i, as_job(item, {})) for i, item in enumerate(items)]
    engine = Engine(tiny, batch_size=4, prefix_tokens=256, prefix_block=4)
    got: dict[int, Any] = dict(engine.stream(jobs))
    for i, item in enumerate(items):
        assert same(alone(item), got[i]), item
    stats = engine.stats()
    assert stats["mean_rows"] > 2 and stats["max_slots"] <= 4
    assert stats["prefix_cache"]["hit_tokens"] > 0
    assert stats["solo_passes"] < stats["solo"]  # rows that join together share their prefill


def test_seeded_sampling_rows_equal_their_runs_alone(tiny: LocalBackend) -> None:
    items = [{"query": SAMPLE, "a": a, "model": m} for a in ["rain", "snow", "sun"] for m in ("random", tiny)]
    batched = querylm.run_many(items[::2], batch_size=2) + querylm.run_many(items[1::2], batch_size=2)
    expected = [alone(i) for i in items[::2]] + [alone(i) for i in items[1::2]]
    assert all(same(a, b) for a, b in zip(expected, batched, strict=True))


def test_a_failing_row_yields_its_error_and_the_others_go_on() -> None:
    bad_mid = 'argmax\n    "Number: [N]"\n    x = len(N) // 0\nwhere STOPS_AT(N, " ") and len(TOKENS(N)) < 3'
    items = [
        {"query": TEXT, "a": "owls"},
        {"query": bad_mid},
        {"query": "argmax\n    [oops"},  # does not compile
        {"query": CLASSIFY},  # its input `r` is missing
        {"query": INT_Q, "a": "dog"},
    ]
    out = dict(iter_many(items, batch_size=2, model="random"))
    assert isinstance(out[1], querylm.QueryRuntimeError) and "ZeroDivisionError" in str(out[1])
    assert isinstance(out[2], querylm.QueryError) and isinstance(out[3], querylm.QueryInputError)
    assert same(out[0], alone({"query": TEXT, "a": "owls", "model": "random"}))
    assert same(out[4], alone({"query": INT_Q, "a": "dog", "model": "random"}))


def test_rows_that_fail_to_start_leave_the_batch_and_the_good_ones_finish(tiny: LocalBackend) -> None:
    """Many rows failing at their start (an input the program refuses) or before their first hole
    (after a long prompt), through 2 rows, then good ones: every good one finishes as it does alone,
    and no failed row keeps its KV row."""
    plan = compile_source(INT_Q)
    bad_start = [Job(plan, {"bogus": 1}, {"model": tiny}) for _ in range(4)]
    bad_first = [
        {"query": 'argmax\n    "Text: {a}"\n    x = 1 / 0\n    "[N]"', "a": "long " * 40, "model": tiny}
    ] * 4
    good = [{"query": INT_Q, "a": a, "model": tiny} for a in ["ant", "dog", "cat"]]
    items: list[Any] = [*bad_start, *bad_first, *good]
    engine = Engine(tiny, batch_size=2)
    got = dict(engine.stream(prepare_job(i, as_job(item, {})) for i, item in enumerate(items)))
    assert all(isinstance(got[i], TypeError) for i in range(4))
    assert all(isinstance(got[i], querylm.QueryRuntimeError) for i in range(4, 8))
    for i, item in enumerate(good, start=8):
        assert same(alone(item), got[i])
    assert all(s is None for s in engine.ragged.slots)


def test_rows_finish_in_their_own_time_and_new_rows_join() -> None:
    long = 'argmax\n    "Story: [S]"\nwhere len(TOKENS(S)) == 30'
    short = 'argmax\n    "Yes or no: [A]"\nwhere A in ["yes", "no"]'
    items = [{"query": long}] + [{"query": short}] * 6
    order = [i for i, _ in iter_many(items, batch_size=2, model="random")]
    assert order[-1] == 0  # the long row ran while the short ones came and went beside it
    assert sorted(order) == list(range(7))


BEAM = 'beam(n=3)\n    "Colour: [C] and [D]"\nwhere C in ["red", "green", "blue"] and len(TOKENS(D)) < 4'
BEAM_STEPS = 'beam(n=2)\n    "Pick: [X]\\nWhy: [Y]"\nwhere X in ["a", "b", "c"] and STOPS_AT(Y, ".") and len(TOKENS(Y)) < 6'
BEST_K = 'best_k(n=2, budget=8)\n    "Word about {a}: [W]"\nwhere W in ["alpha", "beta", "gamma", "delta"]'
BEAM_SAMPLE = (
    'beam_sample(n=2, temperature=0.8, seed=3)\n    "x {a}: [X]"\nwhere INT(X) and len(TOKENS(X)) < 4'
)


def beside(model: Any) -> list[dict[str, Any]]:
    """Beam jobs of every beam decoder among argmax and sample(n) jobs."""
    items: list[dict[str, Any]] = [
        {"query": BEAM},
        {"query": INT_Q, "a": "ant"},
        {"query": BEST_K, "a": "owls"},
        {"query": SAMPLE, "a": "x", "decoder": "sample(n=2, seed=5)"},
        {"query": BEAM_STEPS},
        {"query": TEXT, "a": "rain"},
        {"query": BEAM_SAMPLE, "a": "y"},
        {"query": CLASSIFY, "r": "the soup was cold"},
    ]
    return [{**item, "model": model} for item in items]


def scores(out: Any) -> list[float]:
    return [r.score for r in (out if isinstance(out, list) else [out])]


def counted(engine: Engine) -> list[tuple[int, int]]:
    """Wraps the engine's forward passes: each records (rows computed, rows the batch holds after it).
    Every row held is a row computed: a beam pruned, finished or left without a child frees its row."""
    passes: list[tuple[int, int]] = []
    inner = engine.ragged.scored_logits

    def scored_logits(rows: Any, positions: Any) -> Any:
        out = inner(rows, positions)
        passes.append((len(rows), sum(s is not None for s in getattr(engine.ragged, "slots", rows))))
        return out

    engine.ragged.scored_logits = scored_logits  # type: ignore[method-assign]
    return passes


@pytest.mark.parametrize("model", ["random", "tiny"])
def test_beam_jobs_join_the_batch_and_equal_their_runs_alone(tiny: LocalBackend, model: str) -> None:
    """beam, beam_sample and best_k jobs are groups of rows of the same batch as argmax and sample(n)
    rows (none runs apart: the engine is given no other path); each job's results, scores included,
    are those it gets alone, and every row the groups held is freed at the end."""
    items = beside(tiny if model == "tiny" else resolve("random"))  # one backend: seeds don't reseed it
    jobs = [prepare_job(i, as_job(item, {})) for i, item in enumerate(items)]
    engine = Engine(jobs[0].backend, batch_size=8)  # type: ignore[arg-type]
    passes = counted(engine)
    got: dict[int, Any] = dict(engine.stream(jobs))
    for i, item in enumerate(items):
        ref = alone(item)
        assert same(ref, got[i]), (item, ref, got[i])
        assert scores(got[i]) == pytest.approx(scores(ref), abs=1e-4)
        assert isinstance(got[i], list) == (i not in (1, 5, 7))
    assert engine.stats()["rows"] == len(items) + 1  # one unit per job, two for the sample(n=2)
    assert max(n for n, _ in passes) > 4  # beams and other rows in one pass
    if model == "tiny":
        assert all(held == n for n, held in passes)
        assert all(s is None for s in engine.ragged.slots)  # type: ignore[attr-defined]


def test_run_many_batches_beams_beside_other_queries() -> None:
    """Through ``run_many``: the same results as each query alone, in order (the seeded jobs, on a
    ``random`` backend of their own seed, run beside the batch through ``run_plan``)."""
    items = beside("random")
    batched = querylm.run_many(items, batch_size=4)
    for item, got in zip(items, batched, strict=True):
        ref = alone(item)
        assert same(ref, got) and scores(ref) == pytest.approx(scores(got), abs=1e-9), item


def test_a_beam_group_joins_while_other_rows_run(tiny: LocalBackend) -> None:
    """A beam group waits for room for its n rows, then joins a batch whose long row is still running:
    it finishes first, with its result alone, in fewer steps than the two jobs one after the other."""
    long = {"query": 'argmax\n    "Story: [S]"\nwhere len(TOKENS(S)) == 30', "model": tiny}
    short = {"query": 'argmax\n    "Yes or no: [A]"\nwhere A in ["yes", "no"]', "model": tiny}
    beam = {"query": BEAM_STEPS, "model": tiny}
    items = [long, short, short, beam]

    def steps(its: list[dict[str, Any]]) -> tuple[list[int], dict[int, Any], int]:
        engine = Engine(tiny, batch_size=3)  # the long row and two short ones: no room for 2 beams
        out = list(engine.stream(prepare_job(i, as_job(it, {})) for i, it in enumerate(its)))
        assert all(s is None for s in engine.ragged.slots)  # type: ignore[attr-defined]
        return [i for i, _ in out], dict(out), engine.stats()["steps"]

    order, got, together = steps(items)
    assert order == [1, 2, 3, 0]  # the beams came and went beside the long row
    assert same(got[3], alone(beam)) and scores(got[3]) == pytest.approx(scores(alone(beam)), abs=1e-4)
    assert same(got[0], alone(long))
    assert together < steps([long])[2] + steps([beam])[2]


TWO_SAMPLED = (
    'sample(temperature=0.9, seed=SEED)\n    "Word about {a}: [W] and [C]"\n'
    'where STOPS_AT(W, " ") and len(TOKENS(W)) < 5 and C in ["red", "green", "blue"]'
)


def test_sample_n_joins_the_batch_as_n_rows_equal_to_run(tiny: LocalBackend) -> None:
    """sample(n) is n rows of the batch, beside argmax rows; each sample equals ``run``'s sample of the
    same index (its own random stream), and the samples come back in order as one list."""
    items: list[dict[str, Any]] = []
    for seed, a, n in [(1, "cat", 3), (2, "dog", 1), (3, "fish", 4), (4, "ant", 2)]:
        q = TWO_SAMPLED.replace("SEED", str(seed))
        items.append({"query": q, "a": a, "decoder": f"sample(n={n}, temperature=0.9, seed={seed})"})
        items.append({"query": INT_Q, "a": a})
    jobs = [prepare_job(i, as_job({**item, "model": tiny}, {})) for i, item in enumerate(items)]
    engine = Engine(tiny, batch_size=5)
    got: dict[int, Any] = dict(engine.stream(jobs))
    for i, item in enumerate(items):
        ref = querylm.run(item.pop("query"), model=tiny, **item)
        assert same(ref, got[i]), (item, ref, got[i])
    assert engine.stats()["rows"] == 3 + 1 + 4 + 2 + 4  # one row per sample, none run alone
    assert engine.stats()["mean_rows"] > 2


def test_a_failed_sample_fails_its_job_and_its_other_rows_leave(tiny: LocalBackend) -> None:
    bad = 'sample(n=3, seed=1)\n    "Word: [W]"\n    {1 / 0}\nwhere len(TOKENS(W)) < 3'
    items = [{"query": bad}, {"query": INT_Q, "a": "ant"}, {"query": bad, "decoder": "sample(n=2, seed=2)"}]
    jobs = [prepare_job(i, as_job({**item, "model": tiny}, {})) for i, item in enumerate(items)]
    engine = Engine(tiny, batch_size=4)
    got = list(engine.stream(jobs))
    assert sorted(i for i, _ in got) == [0, 1, 2]  # one result per job, the failed ones once
    out = dict(got)
    assert isinstance(out[0], Exception) and isinstance(out[2], Exception)
    assert out[1].variables["N"] >= 0
    assert all(s is None for s in engine.ragged.slots)  # every row left the batch


def test_prefix_cache_reuses_blocks_and_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity=8, block=2)
    made: list[tuple[int, int]] = []

    def kv(a: int, z: int) -> str:
        made.append((a, z))
        return f"{a}:{z}"

    cache.insert([1, 2, 3, 4, 5], kv)  # blocks [1,2] [3,4]; 5 is not a whole block
    assert made == [(0, 2), (2, 4)]
    assert cache.lookup([1, 2, 3, 4, 9], limit=4) == ["0:2", "2:4"]
    assert cache.lookup([1, 2, 3, 4], limit=3) == ["0:2"]  # one token is always left to feed
    assert cache.lookup([1, 3], limit=2) == []
    assert cache.cached([1, 2, 3, 4, 9], limit=4) == 4 and cache.cached([1, 2, 3], limit=4) == 2
    cache.insert([1, 2, 7, 7], kv)  # shares [1,2]: only [7,7] is new
    assert made[-1] == (2, 4) and cache.stats.stored_tokens == 6
    cache.lookup([1, 2, 7, 7, 0], limit=4)  # [7,7] is now more recent than [3,4]
    cache.insert([5, 5, 6, 6], kv)  # 10 tokens > 8: the least recently used leaf goes
    assert cache.lookup([1, 2, 3, 4, 0], limit=4) == ["0:2"]
    assert cache.lookup([1, 2, 7, 7, 0], limit=4) == ["0:2", "2:4"]
    assert cache.stats.evicted_tokens == 2 and cache.stats.stored_tokens == 8
    assert 0 < cache.stats.hit_rate < 1


def test_a_shared_prompt_is_computed_once(tiny: LocalBackend) -> None:
    shot = "Examples: the cat sat. the dog ran. the bird flew. the fish swam. " * 3
    q = 'argmax\n    "{shot}Now {a}: [T]"\nwhere STOPS_AT(T, ".") and len(TOKENS(T)) < 6'
    items = [
        {"query": q, "shot": shot, "a": a, "model": tiny} for a in ["owls", "bees", "ants", "yaks", "eels"]
    ]
    runs = {}
    for tokens in (0, 4096):
        engine = Engine(tiny, batch_size=2, prefix_tokens=tokens)
        runs[tokens] = dict(engine.stream([prepare_job(i, as_job(it, {})) for i, it in enumerate(items)]))
        if tokens:
            pc = engine.stats()["prefix_cache"]
            shared = len(tiny.encode(shot))
            assert pc["hit_tokens"] >= 4 * (shared - 16)  # every row after the first reuses it
            assert pc["hit_rate"] > 0.5
    assert all(same(runs[0][i], runs[4096][i]) for i in range(len(items)))


LANGS = {
    "in": ('X in ["red", "green", "blue"]', lambda v: v in ("red", "green", "blue")),
    "int": ("INT(X) and len(TOKENS(X)) < 4", lambda v: isinstance(v, int)),
    "regex": (r'REGEX(X, r"[a-c]{2}-[0-9]")', lambda v: re.fullmatch(r"[a-c]{2}-[0-9]", v) is not None),
    "stop": ('STOPS_AT(X, ".") and len(TOKENS(X)) < 8', lambda v: "." not in v[:-1]),
    "json": (
        'REGEX(X, r"\\{\\"n\\": [0-9]\\}")',
        lambda v: isinstance(json.loads(v)["n"], int),
    ),
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(LANGS)), st.text("abc xyz", max_size=12)), min_size=2, max_size=7
    )
)
def test_every_row_keeps_its_constraint(tiny: LocalBackend, rows: list[tuple[str, str]]) -> None:
    items = [{"query": f'argmax\n    "{{p}}: [X]"\nwhere {LANGS[k][0]}', "p": p or "go"} for k, p in rows]
    for model in ("random", tiny):
        for i, out in iter_many(items, batch_size=3, model=model):
            assert not isinstance(out, Exception), out
            assert LANGS[rows[i][0]][1](out.variables["X"]), (rows[i], out.variables)


DECODERS = ["argmax", "beam(n=2)", "sample(n=2, seed=1)", "best_k(n=2, budget=6)", "beam_sample(n=2, seed=3)"]


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(LANGS)), st.sampled_from(DECODERS), st.text("abc xyz", max_size=8)),
        min_size=2,
        max_size=6,
    )
)
def test_a_mixed_batch_with_beam_jobs_keeps_every_jobs_constraints(rows: list[tuple[str, str, str]]) -> None:
    """argmax, samples and every beam decoder in one batch: each result of each job satisfies the
    job's constraint."""
    items = [
        {"query": f'argmax\n    "{{p}}: [X]"\nwhere {LANGS[k][0]}', "p": p or "go", "decoder": d}
        for k, d, p in rows
    ]
    for i, out in iter_many(items, batch_size=4, model="random"):
        assert not isinstance(out, Exception), (rows[i], out)
        for r in out if isinstance(out, list) else [out]:
            assert LANGS[rows[i][0]][1](r.variables["X"]), (rows[i], r.variables)


def test_ragged_scores_values_from_the_rows_kv(tiny: LocalBackend) -> None:
    """Whole-value choices of several rows in one pass over copies of their KV equal ``Backend.score``
    (the prompt computed again, alone), for values of one and of several tokens."""
    ragged = tiny.ragged(prefix_cache=PrefixCache(64, 4))
    prompts = [
        tiny.encode(t) for t in ("Sentiment of it: ", "A much longer prompt about the weather, then: ")
    ]
    conts = [[tiny.encode(v) for v in ("positive", "very negative indeed", "so-so")], [tiny.encode("no")]]
    rows = [ragged.add() for _ in prompts]
    for r, p in zip(rows, prompts, strict=True):
        r.append(p)
    ragged.logits(rows)
    got = ragged.score(rows, conts)
    assert any(len(c) > 1 for c in conts[0]) and ragged.stats()["score_passes"] == 1
    for p, c, g in zip(prompts, conts, got, strict=True):
        for want, have in zip(tiny.score(p, c), g, strict=True):
            assert have.shape == want.shape and abs(have - want).max() < 1e-4


def test_a_forked_row_copies_its_parents_kv_and_scores_its_forced_tokens(tiny: LocalBackend) -> None:
    """A fork goes on from its parent's KV row inside the batch (a beam's child): its logits, and the
    log-probabilities of tokens appended since its last logits (a beam's forced tokens, short in the
    batch's pass or long in a pass of its own), equal ``Backend.score`` of the whole sequence alone.
    Removing the parent frees its slot and leaves the child intact."""
    for prefix, keep_parent in [(None, False), (PrefixCache(64, 4), True)]:
        ragged = tiny.ragged(prefix_cache=prefix)
        parent, other = ragged.add(), ragged.add()
        parent.append(tiny.encode("A prompt about the weather today, then: "))
        other.append(tiny.encode("Something else entirely: "))
        ragged.logits([parent, other])
        child = parent.fork()
        assert child.slot not in (None, parent.slot) and child.ids == parent.ids
        base = len(parent.ids)
        parent.append(tiny.encode(" sunny and warm"))
        child.append(tiny.encode(" rain" + " and wind" * 12))  # longer than SOLO: computed apart
        rows = [parent, child, other] if keep_parent else [child, other]
        if not keep_parent:
            ragged.remove(parent)
            assert parent.slot is None and sum(s is not None for s in ragged.slots) == 2
        positions = [[] if r is other else list(range(base, len(r.ids))) for r in rows]
        logits, lps = ragged.scored_logits(rows, positions)
        for r, at, got, row_logits in zip(rows, positions, lps, logits, strict=True):
            want = tiny.score(r.ids[: at[0]], [r.ids[at[0] :]])[0] if at else np.zeros(0)
            assert got.shape == want.shape and np.abs(got - want).max(initial=0) < 1e-4
            fresh = tiny.new_sequence()
            fresh.append(list(r.ids))
            assert np.abs(row_logits - fresh.logits()).max() < 1e-3


@dataclass
class Reading:
    level: int
    ok: bool


@pytest.mark.model
def test_batched_argmax_equals_one_at_a_time_on_the_default_model() -> None:
    """Eight mixed queries (whole values of one and several tokens, INT, JSON, free text with a stop) on
    the default model, four rows at once so that rows join as others leave: each row's result is the
    one it gets alone (its logits come from batched passes, its values from ``Ragged.score``)."""
    several = 'argmax\n    "Review: {r}\\nVerdict: [V]"\nwhere V in ["very good", "rather bad", "so-so"]'
    typed = 'argmax\n    "Sensor {a} as JSON: [R: Reading]" where len(TOKENS(R)) <= 24'
    items = [
        {"query": CLASSIFY, "r": "the soup was cold and the waiter rude"},
        {"query": several, "r": "best pizza in years"},
        {"query": INT_Q, "a": "spider"},
        {"query": INT_Q, "a": "dog"},
        {"query": typed, "a": "B7", "Reading": Reading},
        {"query": TEXT, "a": "the sea"},
        {"query": TWO},
        {"query": several, "r": "the train was late again"},
    ]
    batched = querylm.run_many(items, batch_size=4, chat=False)
    for item, got in zip(items, batched, strict=True):
        assert not isinstance(got, Exception), got
        assert same(alone({**item, "chat": False}), got), item

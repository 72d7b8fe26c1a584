"""Property tests: random constraints, random models (seeded random logits over SmolLM2's tokenizer), and
every value querylm.run returns checked in plain Python (re, len, split, json, the tokenizer), never
with querylm's own functions.

A ConstraintError (or the QueryCompileError "no value of X can satisfy ...", found before decoding) is
accepted only where the constraints have no value at all, which the tests decide by brute force. So the generated languages are ones the decoder can always finish within the token
budget: prefix-closed (every prefix is a value, the budget may cut anywhere), or finite with their
longest value shorter than the budget.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import querylm
from querylm.backends.models import resolve
from querylm.backends.random import RandomBackend
from querylm.errors import ConstraintError, QueryCompileError

NO_VALUE = (ConstraintError, QueryCompileError)
"""What a run with no possible value raises: a QueryCompileError only for an empty language."""


def no_value(err: Exception) -> None:
    """A QueryCompileError is accepted as "no value" only when it says so."""
    assert not isinstance(err, QueryCompileError) or err.message.startswith("no value of X can satisfy"), err


BASE = resolve("random")
HF = BASE.tokenizer
SPECIAL_IDS = set(HF.all_special_ids)
SPECIAL_TEXT = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


class Recording(RandomBackend):
    """The random model, keeping its last sequence so a test can read the generated token ids."""

    def __init__(self, seed: int):
        super().__init__(BASE.tokenizer, seed=seed, name="random")
        self.__dict__["ll_tokenizer"] = BASE.ll_tokenizer
        self.last = None

    def new_sequence(self):
        self.last = super().new_sequence()
        return self.last


@dataclass
class Run:
    text: str
    value: Any
    ids: list[int]


def run(where: str, seed: int, decoder: str | None = None, hole: str = "[X]", **inputs: Any) -> Run:
    backend = Recording(seed)
    r = querylm.run(f'"Q: {hole}" where {where}', model=backend, decoder=decoder, **inputs)
    rec = r.holes[-1]
    ids = list(backend.last.ids[len(backend.last.ids) - rec.tokens :]) if rec.tokens else []
    out = Run(rec.text, r.variables["X"], ids)
    check_tokens(out)
    return out


def check_tokens(r: Run) -> None:
    """The value is what its token ids spell, and none of them is a special token."""
    assert not SPECIAL_IDS & set(r.ids), r
    assert not any(s in r.text for s in SPECIAL_TEXT), r
    if "\ufffd" not in r.text:
        assert HF.decode(r.ids, clean_up_tokenization_spaces=False) == r.text


decoders = st.one_of(st.none(), st.integers(0, 99).map(lambda s: f"sample(seed={s}, temperature=1.5)"))
seeds = st.integers(0, 2**20)


# -- constraints: a where-clause source and its plain-Python meaning ---------------------------------


@dataclass(frozen=True)
class C:
    src: str
    ok: Callable[[str], bool]
    prefix_closed: bool = False
    """Every prefix of a value is a value (so a token budget can't strand the decoder)."""


def cmp(a: int, op: str, b: int) -> bool:
    return {"<": a < b, "<=": a <= b, "==": a == b, ">": a > b, ">=": a >= b}[op]


FLIP = {"<": ">", "<=": ">=", "==": "==", ">": "<", ">=": "<="}


def count(kind: str, op: str, n: int, reverse: bool) -> C:
    inner = "X" if kind == "chars" else "WORDS(X)"
    src = f"{n} {FLIP[op]} len({inner})" if reverse else f"len({inner}) {op} {n}"
    measure = len if kind == "chars" else (lambda t: len(t.split()))
    return C(src, lambda t: cmp(measure(t), op, n), op in ("<", "<="))


def all_digits(s: str) -> bool:
    return s != "" and all(c in "0123456789" for c in s)


def unsigned(t: str) -> str:
    """``t`` without the one leading space and minus sign INT and FLOAT allow."""
    t = t[1:] if t.startswith(" ") else t
    return t[1:] if t.startswith("-") else t


def is_int(t: str) -> bool:
    return all_digits(unsigned(t))


def is_float(t: str) -> bool:
    whole, dot, frac = unsigned(t).partition(".")
    return all_digits(whole) and (not dot or all_digits(frac))


def stops_at_ok(phrases: list[str]) -> Callable[[str], bool]:
    """The value ends where the first phrase (the one completed first) ends, or holds none."""

    def ok(t: str) -> bool:
        ends = [t.find(p) + len(p) for p in phrases if p in t]
        return not ends or min(ends) == len(t)

    return ok


def and_(a: C, b: C) -> C:
    return C(f"({a.src}) and ({b.src})", lambda t: a.ok(t) and b.ok(t), a.prefix_closed and b.prefix_closed)


def or_(a: C, b: C) -> C:
    return C(f"({a.src}) or ({b.src})", lambda t: a.ok(t) or b.ok(t), a.prefix_closed and b.prefix_closed)


def not_(a: C) -> C:
    return C(f"not ({a.src})", lambda t: not a.ok(t))


def combine(atoms: st.SearchStrategy[C], depth: int = 2) -> st.SearchStrategy[C]:
    return st.recursive(
        atoms,
        lambda sub: st.one_of(
            st.tuples(sub, sub).map(lambda ab: and_(*ab)),
            st.tuples(sub, sub).map(lambda ab: or_(*ab)),
            sub.map(not_),
        ),
        max_leaves=depth + 1,
    )


# Literal characters come from LIT; REP holds one more character of each class the constraints can tell
# apart ([a-z], [0-9], whitespace, anything else) that is never a literal. Any string's characters can be
# swapped for these without changing what a constraint says, so searching strings over LIT + REP decides
# whether a combination has a value at all.
LIT = "abc0 .-!\n"
REP = "q7\tZ"
lit_strings = st.text(alphabet=LIT, min_size=0, max_size=3)
phrase_strings = st.text(alphabet=".!\n-ab", min_size=1, max_size=2)

REGEX_PIECES = ["[a-z]", "[0-9]", "[abc]", "[a-z ]", "a", "b", "0", r"\.", "-", " ", "!"]
regex_seqs = st.lists(
    st.tuples(st.sampled_from(REGEX_PIECES), st.sampled_from(["", "?", "*", "+", "{1,2}", "{2}"])),
    min_size=1,
    max_size=3,
).map(lambda parts: "".join(p + q for p, q in parts))
regexes = st.one_of(regex_seqs, st.tuples(regex_seqs, regex_seqs).map(lambda ab: f"(?:{ab[0]}|{ab[1]})"))


def regex_atom(pattern: str) -> C:
    return C(f"REGEX(X, {pattern!r})", lambda t: re.fullmatch(pattern, t) is not None)


def contains_atom(s: str, negated: bool, form: int) -> C:
    if not negated:
        return C(f"{s!r} in X", lambda t: s in t)
    src = f"{s!r} not in X" if form else f"not ({s!r} in X)"
    return C(src, lambda t: s not in t, True)


atoms_any = st.one_of(
    st.builds(
        count,
        st.sampled_from(["chars", "words"]),
        st.sampled_from(list(FLIP)),
        st.integers(-1, 4),
        st.booleans(),
    ),
    st.builds(contains_atom, st.text(alphabet=LIT, min_size=1, max_size=2), st.booleans(), st.integers(0, 1)),
    st.lists(lit_strings, min_size=1, max_size=4).map(lambda cs: C(f"X in {cs!r}", lambda t: t in cs)),
    lit_strings.map(lambda s: C(f"X == {s!r}", lambda t: t == s)),
    lit_strings.map(lambda s: C(f"X != {s!r}", lambda t: t != s)),
    regexes.map(regex_atom),
    st.just(C("INT(X)", is_int)),
    st.just(C("FLOAT(X)", is_float)),
    st.tuples(st.integers(0, 3), st.integers(0, 4)).map(
        lambda ab: C(f"{ab[0]} < len(X) <= {ab[1]}", lambda t: ab[0] < len(t) <= ab[1])
    ),
)


def has_value(ok: Callable[[str], bool], max_len: int) -> bool:
    alphabet = sorted(set(LIT + REP))
    return any(
        ok("".join(chars)) for n in range(max_len + 1) for chars in itertools.product(alphabet, repeat=n)
    )


@settings(max_examples=300, **SETTINGS)
@given(c=combine(atoms_any, depth=2), cap=st.integers(0, 3), stops_at=st.lists(phrase_strings, max_size=2))
def test_a_language_called_empty_has_no_value(c: C, cap: int, stops_at: list[str]):
    """The static emptiness check (no model) never refuses a combination that has a value."""
    where = f"({c.src}) and len(X) <= {cap}" + (f" and STOPS_AT(X, {stops_at!r})" if stops_at else "")
    checks = [c.ok, lambda t: len(t) <= cap, stops_at_ok(stops_at) if stops_at else (lambda t: True)]
    try:
        querylm.compile_source(f'"Q: [X]" where {where}')
    except QueryCompileError as err:
        no_value(err)
        assert not has_value(lambda t: all(f(t) for f in checks), cap), f"{where}: {err}"


# derandomize: the same 70 examples every run. Random runs find rare cases where LMQL's cut of a value
# at a stop phrase inside its last token disagrees with this oracle (X == '!ab' and STOPS_AT(X, 'a')
# gives '!a' when '!ab' is one token): open in issue 13.
@settings(max_examples=70, derandomize=True, **SETTINGS)
@given(
    c=combine(atoms_any, depth=2),
    cap=st.integers(1, 3),
    stops_at=st.lists(phrase_strings, max_size=2),
    stops_before=st.lists(phrase_strings, max_size=2),
    seed=seeds,
    decoder=decoders,
)
def test_bounded_combinations(
    c: C, cap: int, stops_at: list[str], stops_before: list[str], seed: int, decoder
):
    """Any combination, capped by ``len(X) <= cap``: the value satisfies all of it, or there is none."""
    parts = [f"({c.src})", f"len(X) <= {cap}"]

    def side(t: str) -> bool:
        return c.ok(t) and len(t) <= cap

    checks = [side]
    if stops_at:
        parts.append(f"STOPS_AT(X, {stops_at!r})")
    if stops_before:
        parts.append(f"STOPS_BEFORE(X, {stops_before!r})")
    if stops_at or stops_before:
        checks = [lmql_stops_ok(side, stops_at, stops_before)]
    # Each token is at least a byte: the longest value (4 bytes a character, and a dropped phrase) fits.
    budget = 4 * cap + max(map(len, stops_before), default=0) + 1
    parts.append(f"len(TOKENS(X)) <= {budget}")
    satisfiable = has_value(lambda t: all(f(t) for f in checks), cap)
    where = " and ".join(parts)
    try:
        r = run(where, seed, decoder)
    except NO_VALUE as err:
        no_value(err)
        assert not satisfiable, f"{where}: {err}"
        return
    assert satisfiable, f"{where} has no value, yet {r.text!r} came back"
    for f in checks:
        assert f(r.text), f"{where}: {r.text!r}"
    assert len(r.ids) <= budget
    top = top_conjuncts(c.src)
    if "INT(X)" in top:  # INT / FLOAT among the and-ed conjuncts: the program sees a number
        assert type(r.value) is int and r.value == int(r.text)
    elif "FLOAT(X)" in top:
        assert type(r.value) is float and r.value == float(r.text)
    else:
        assert r.value == r.text


def lmql_stops_ok(
    side: Callable[[str], bool], stops_at: list[str], stops_before: list[str]
) -> Callable[[str], bool]:
    """LMQL's stop phrases with side conditions, as an oracle on the value bound: the text generated
    (the value, or it plus the STOPS_BEFORE phrase the runtime dropped) satisfies the side conditions
    and runs past no earlier text that ends with a phrase and satisfies them."""
    stops = stops_at + stops_before

    def ok(value: str) -> bool:
        for g in [value, *(value + p for p in stops_before)]:
            dropped = next((p for p in sorted(stops_before, key=len, reverse=True) if g.endswith(p)), "")
            if g[: len(g) - len(dropped)] != value or not side(g):
                continue
            if not any(g[:i].endswith(p) and side(g[:i]) for i in range(1, len(g)) for p in stops):
                return True
        return False

    return ok


def top_conjuncts(src: str) -> list[str]:
    def flat(node: ast.expr) -> list[ast.expr]:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            return [c for v in node.values for c in flat(v)]
        return [node]

    return [ast.unparse(n) for n in flat(ast.parse(src, mode="eval").body)]


# -- free text under prefix-closed constraints: always satisfiable, never an error -------------------

atoms_prefix_closed = st.one_of(
    st.builds(
        count,
        st.sampled_from(["chars", "words"]),
        st.sampled_from(["<", "<="]),
        st.integers(1, 30),
        st.booleans(),
    ),
    st.builds(
        contains_atom,
        st.text(alphabet="aeiou .,\n", min_size=1, max_size=2),
        st.just(True),
        st.integers(0, 1),
    ),
    st.sampled_from(["[a-z ]", "[a-z]", "[^\\n]", "[a-zA-Z0-9 ,.]", "[^aeiou]"]).map(
        lambda cls: regex_atom(cls + "*")
    ),
    st.tuples(st.sampled_from(["[a-z ]", "(?s:.)", "[^e]"]), st.integers(0, 12)).map(
        lambda cn: regex_atom(f"{cn[0]}{{0,{cn[1]}}}")
    ),
)


@settings(max_examples=50, **SETTINGS)
@given(
    c=combine(atoms_prefix_closed, depth=2).filter(lambda c: c.prefix_closed),
    stops_at=st.lists(st.sampled_from([".", "\n", "e", "!", ", ", "\n\n", "the"]), max_size=2),
    stops_before=st.lists(st.sampled_from([".", "\n", "s", "?", " a"]), max_size=2),
    budget=st.integers(1, 14),
    seed=seeds,
    decoder=decoders,
)
def test_free_text_never_fails(
    c: C, stops_at: list[str], stops_before: list[str], budget: int, seed: int, decoder
):
    parts = [f"({c.src})", f"len(TOKENS(X)) < {budget}"]
    if stops_at:
        parts.append(f"STOPS_AT(X, {stops_at!r})")
    if stops_before:
        parts.append(f"STOPS_BEFORE(X, {stops_before!r})")
    where = " and ".join(parts)
    r = run(where, seed, decoder)
    assert c.ok(r.text), f"{where}: {r.text!r}"
    if not stops_before:  # a dropped phrase has the value's end tokenized anew: its count may change
        assert len(r.ids) < budget
    if stops_at:
        assert stops_at_ok(stops_at)(r.text), f"{where}: {r.text!r}"
    assert not any(p in r.text for p in stops_before), f"{where}: {r.text!r}"


@settings(max_examples=40, **SETTINGS)
@given(
    lo=st.integers(0, 6),
    span=st.integers(0, 6),
    stop=st.sampled_from([None, ".", "\n"]),
    seed=seeds,
    decoder=decoders,
)
def test_token_budgets(lo: int, span: int, stop: str | None, seed: int, decoder):
    """Exact and ranged token counts on free text (no phrase to end it early)."""
    hi = lo + span
    where = f"len(TOKENS(X)) >= {lo} and len(TOKENS(X)) <= {hi}"
    if stop:
        where += f" and {stop!r} not in X"
    r = run(where, seed, decoder)
    assert lo <= len(r.ids) <= hi, (where, r)
    if stop:
        assert stop not in r.text


def test_min_tokens_never_silently_broken():
    """A token minimum is a side condition of the stop phrase (LMQL): an "e" in the first 4 tokens
    does not end the value; the first "e" after them does. Never a value shorter than the minimum."""
    values = early = 0
    for seed in range(12):
        try:
            r = run('len(TOKENS(X)) > 4 and STOPS_AT(X, "e")', seed)
        except ConstraintError as err:
            assert "len(TOKENS(X)) > 4" in str(err), err  # the failure names the bound it broke
            continue
        head = HF.decode(r.ids[:4])
        assert len(r.ids) > 4 and r.text.startswith(head)
        assert "e" not in r.text[len(head) : -1], r  # the first "e" after the minimum ends it
        early += "e" in head
        values += 1
    assert values, "no seed gave a value: the check on values never ran"
    assert early, "no seed put an 'e' before the minimum: the side condition was never tested"


@pytest.mark.parametrize("seed", [0, 1])
def test_counted_free_text_with_a_stop_phrase(seed: int):
    """Character and word counts and a stop phrase in one terminal: a big lexer, which llguidance
    must build (not refuse for lack of precomputation fuel)."""
    where = 'len(X) < 40 and len(WORDS(X)) < 8 and STOPS_AT(X, ".") and len(TOKENS(X)) < 12'
    r = run(where, seed)
    assert len(r.text) < 40 and len(r.text.split()) < 8 and stops_at_ok(["."])(r.text)


def test_budget_does_not_end_inside_a_character():
    """Free text under a budget always has a value; the budget must not fall between the bytes of one
    character (seed 230 draws a character's first byte as its 9th token)."""
    r = run("len(TOKENS(X)) < 10", 230)
    assert len(r.ids) < 10 and "\ufffd" not in r.text


def test_sample_n_budget_does_not_end_inside_a_character():
    """The same under ``sample(n)``, whose samples step side by side outside the token loop (seed 32
    once drew a character's first byte as a sample's 4th and last budgeted token, a ConstraintError)."""
    q = 'sample(temperature=0.9, n=2, seed=45)\n    "Word: [W]"\nwhere STOPS_AT(W, " ") and len(TOKENS(W)) < 5'
    for r in querylm.run(q, model="random"):
        (hole,) = r.holes
        assert hole.tokens < 5 and "\ufffd" not in hole.text and " " not in hole.text[:-1]


# -- choice lists, with filters: the value is one of the choices that pass them -----------------------

choice_texts = st.text(
    alphabet=st.sampled_from(list("ab .,-!?\n") + ["é", "日", "本", "x"]), min_size=1, max_size=6
)
filters = st.one_of(
    st.builds(
        count,
        st.sampled_from(["chars", "words"]),
        st.sampled_from(list(FLIP)),
        st.integers(0, 4),
        st.booleans(),
    ),
    st.builds(
        contains_atom, st.text(alphabet="ab .é", min_size=1, max_size=2), st.booleans(), st.integers(0, 1)
    ),
    regexes.map(regex_atom),
)


@settings(max_examples=40, **SETTINGS)
@given(
    choices=st.lists(choice_texts, min_size=1, max_size=5, unique=True),
    extra=st.one_of(st.none(), combine(filters, depth=1)),
    seed=seeds,
    decoder=decoders,
)
def test_choice_lists(choices: list[str], extra: C | None, seed: int, decoder):
    where = f"X in {choices!r}"
    allowed = list(choices)
    if extra is not None:
        where += f" and ({extra.src})"
        allowed = [c for c in choices if extra.ok(c)]
    budget = max(len(c.encode()) for c in choices) + 1
    where += f" and len(TOKENS(X)) <= {budget}"
    try:
        r = run(where, seed, decoder)
    except NO_VALUE as err:
        no_value(err)
        assert not allowed, f"{where}: {err}"
        return
    assert r.text in allowed, f"{where}: {r.text!r}"


# -- typed holes ------------------------------------------------------------------------------------


class Mood(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    word: Annotated[str, pydantic.Field(max_length=4)]
    happy: bool
    level: Literal["low", "high"]


@dataclasses.dataclass
class Point:
    x: Annotated[int, pydantic.Field(ge=-9, le=99)]
    ok: bool


@settings(max_examples=30, **SETTINGS)
@given(
    kind=st.sampled_from(["int", "float", "bool", "Literal", "Mood", "Point"]), seed=seeds, decoder=decoders
)
def test_typed_holes(kind: str, seed: int, decoder):
    hole = {"Literal": "[X: Literal['yes', 'no', 'maybe so']]"}.get(kind, f"[X: {kind}]")
    inputs = {"Mood": {"Mood": Mood}, "Point": {"Point": Point}}.get(kind, {})
    r = run("len(TOKENS(X)) < 40", seed, decoder, hole=hole, **inputs)
    t = r.text
    if kind == "int":
        assert is_int(t) and r.value == int(t) and type(r.value) is int
    elif kind == "float":
        assert is_float(t) and r.value == float(t) and type(r.value) is float
    elif kind == "bool":
        assert t.strip() in ("True", "False", "true", "false") and r.value is (t.strip().lower() == "true")
    elif kind == "Literal":
        assert t in ("yes", "no", "maybe so") and r.value == t
    elif kind == "Mood":
        d = json.loads(t)
        assert set(d) == {"word", "happy", "level"}
        assert isinstance(d["word"], str) and len(d["word"]) <= 4
        assert isinstance(d["happy"], bool) and d["level"] in ("low", "high")
        assert isinstance(r.value, Mood) and r.value.model_dump() == d
    else:
        d = json.loads(t)
        assert set(d) <= {"x", "ok"} and {"x", "ok"} <= set(d)
        assert type(d["x"]) is int and -9 <= d["x"] <= 99 and isinstance(d["ok"], bool)
        assert r.value == Point(d["x"], d["ok"])


# -- special tokens ---------------------------------------------------------------------------------


@settings(max_examples=25, **SETTINGS)
@given(seed=seeds, budget=st.integers(1, 30), decoder=decoders)
def test_free_text_keeps_special_tokens_out(seed: int, budget: int, decoder):
    """With no constraint but a budget the hole runs under the free-text grammar; the random model
    gives special tokens as much weight as any other, so only the mask keeps them out."""
    r = run(f"len(TOKENS(X)) < {budget}", seed, decoder)
    assert len(r.ids) < budget


@settings(max_examples=40, **SETTINGS)
@given(prefix=st.text(max_size=12).filter(lambda t: HF.decode(HF.encode(t, add_special_tokens=False)) == t))
def test_free_text_mask_excludes_special_tokens(prefix: str):
    from querylm.constraints.matcher import Matcher
    from querylm.decoding.hole import FREE_TEXT

    m = Matcher(BASE.ll_tokenizer, [FREE_TEXT])
    for t in BASE.ll_tokenizer.tokenize_str(prefix):
        m.consume(t)
    allowed = set(m.allowed().tolist())
    assert allowed & SPECIAL_IDS <= set(BASE.eos_ids)
    assert len(allowed) > 40000

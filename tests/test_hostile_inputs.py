"""Hostile and unusual source text: what the parser must neither lose nor let escape as a raw exception.

Non-ASCII prompts keep every prompt and hole (ast counts columns in UTF-8 bytes, tokenize in
characters: the two once met unconverted and an inline ``where`` after non-ASCII text dropped its
prompt); odd hole names, ``yield``, NUL bytes and absurd nesting are positioned QueryErrors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from querylm import QueryError, QuerySyntaxError, UnsupportedError, compile_source


def events(src: str) -> list[tuple[str, str]]:
    """The compiled query's fixed text and holes, in order, each hole answered with "v"."""
    plan = compile_source(src)
    compiled = plan.compiled
    gen = compiled.function()
    out: list[tuple[str, str]] = []
    send: Any = None
    while True:
        try:
            event = gen.send(send)
        except StopIteration:
            return out
        send = None
        if event[0] == "text":
            out.append(("text", event[1]))
        elif event[0] == "hole":
            out.append(("hole", compiled.query.holes[event[1]].name))
            send = "v"


NON_ASCII = [
    "Résumé: déjà vu ",
    "日本語の質問: ",
    "🙂 emoji 🎉 ",
    "שלום עולם: ",  # right to left
    "مرحبا: ",
    "e\u0301 combining a\u0308 ",
    "ＸＹ full width ",
    "\u200f\u200e marks ",
]


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_text_before_an_inline_where_keeps_its_prompt(text: str) -> None:
    assert events(f'"{text}[X]" where len(X) < 5') == [("text", text), ("hole", "X")]


@pytest.mark.parametrize("text", NON_ASCII)
def test_non_ascii_prompt_among_several_keeps_every_prompt_and_hole(text: str) -> None:
    src = f'"a [A]\\n"\n"{text}[B]" where len(B) < 5\n"c [C]" where INT(C)'
    assert events(src) == [
        ("text", "a "),
        ("hole", "A"),
        ("text", "\n"),
        ("text", text),
        ("hole", "B"),
        ("text", "c "),
        ("hole", "C"),
    ]


PROMPT_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc"),
    blacklist_characters='[]{}"\\',
)


@settings(max_examples=150, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(PROMPT_CHARS, max_size=12), st.booleans()), min_size=1, max_size=4))
def test_any_unicode_prompts_keep_every_prompt_and_hole(prompts: list[tuple[str, bool]]) -> None:
    """Each prompt is TEXT[Hi], with an inline where or not: the compiled query yields exactly these."""
    lines, expected = [], []
    for i, (text, inline) in enumerate(prompts):
        lines.append(f'"{text}[H{i}]"' + (f" where len(H{i}) < 5" if inline else ""))
        expected += ([("text", text)] if text else []) + [("hole", f"H{i}")]
    assert events("\n".join(lines)) == expected


# Run through compile_source and `querylm check` by test_catalogue.py (class, message, line, column).
BAD = [
    ('"a [None]"', QuerySyntaxError, "'None' is reserved", 1, 4),
    ('"a [True]"', QuerySyntaxError, "'True' is reserved", 1, 4),
    ('"a [False]"', QuerySyntaxError, "'False' is reserved", 1, 4),
    ('"a [if]"', QuerySyntaxError, "'if' is reserved", 1, 4),
    ('"a [__debug__]"', QuerySyntaxError, "'__debug__' is reserved", 1, 4),
    ('"a [X]"\nyield X', UnsupportedError, "'yield' inside a query body", 2, 1),
    ('"a [X]"\nif X:\n    y = yield from X', UnsupportedError, "'yield from'", 3, 9),
    ('"a [X]"\nx = 1\x00', QuerySyntaxError, "a NUL character", 2, 6),
    ('"a\x00 [X]"', QuerySyntaxError, "a NUL character", 1, 3),
    ('if x:\n    "a [X]"\n  y = 1', QuerySyntaxError, "unindent does not match", 3, 3),
    ('"a [X]"\nwhere ' + "not " * 5000 + "INT(X)", QuerySyntaxError, "nests too deeply", 2, 1),
    ('"a [X]"\nwhere ' + "-" * 100_000 + "X == 1", QuerySyntaxError, "nests too deeply", 2, 1),
    ('"a [X]"\nwhere ' + "not " * 300 + "INT(X)", QuerySyntaxError, "nests too deeply", 2, 807),
]


def test_a_full_width_hole_name_is_the_variable_its_where_clause_reads() -> None:
    """Python NFKC-normalises identifiers: [ＸＹ] and len(ＸＹ) both mean XY."""
    assert events('"a [ＸＹ]" where len(ＸＹ) < 3') == [("text", "a "), ("hole", "XY")]


EXAMPLES = sorted(p.read_text(encoding="utf-8") for p in Path(__file__).parent.parent.glob("examples/*.lmql"))


@settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(EXAMPLES),
    st.lists(
        st.tuples(st.sampled_from(["insert", "delete", "swap"]), st.integers(0, 10_000), st.characters()),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_examples_compile_or_raise_a_query_error(
    text: str, edits: list[tuple[str, int, str]]
) -> None:
    """Any edit of a shipped example compiles or is a QueryError: never a raw exception."""
    for op, at, ch in edits:
        i = at % (len(text) + 1)
        if op == "insert":
            text = text[:i] + ch + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    try:
        compile_source(text)
    except QueryError:
        pass

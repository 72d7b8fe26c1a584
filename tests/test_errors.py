"""The bad-query catalogue: every mistake a user can make is a QueryError subclass, placed at the
user's line and column, rendered ``FILE:LINE:COL: message`` + the source line + a caret.

The tables are what a user reads: the class, a key part of the message, the line and the column.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import querylm
from querylm import (
    ModelError,
    QueryCompileError,
    QueryError,
    QueryInputError,
    QueryRuntimeError,
    QuerySyntaxError,
    UnsupportedError,
    compile_source,
)
from querylm.cli import main


def assert_positioned(err: QueryError, line: int, col: int, source: str, filename: str = "<query>"):
    """``err`` is at (line, col) of ``source`` (the user's text) and its str() shows that line with a
    caret under the column."""
    pos = err.position
    assert pos is not None, f"no position: {err}"
    assert (pos.filename, pos.line, pos.col) == (filename, line, col), str(err)
    assert pos.source_line == source.split("\n")[line - 1]
    head, shown, caret = str(err).split("\n")
    assert head == f"{filename}:{line}:{col}: {err.message}"
    assert shown == "    " + pos.source_line.expandtabs(1)
    assert caret == "    " + " " * (col - 1) + "^"


def line_col(text: str, marker: str) -> tuple[int, int]:
    idx = text.index(marker)
    before = text[:idx]
    return before.count("\n") + 1, idx - (before.rfind("\n") + 1) + 1


# -- caught without a model (compile_source, `querylm check`) ---------------------------------------

E = pytest.param
COMPILE_ERRORS = [
    # the query body
    E('"a [X]"\nx = = 1', QuerySyntaxError, "invalid syntax in the query body", 2, 5, id="body-syntax"),
    E('argmax\n    "a [X]"\n    if x\n        "b"', QuerySyntaxError, "expected ':'", 3, 9, id="decoder-body-syntax"),
    E('"a [X]"\n  x = 1', QuerySyntaxError, "unexpected indent", 2, 3, id="indentation"),
    E('"abc [X]\nx = 1', QuerySyntaxError, "unterminated string", 1, 1, id="unterminated-string"),
    E('x = 1\n"""abc [X]\nmore', QuerySyntaxError, "unterminated string", 2, 1, id="unterminated-triple-quoted"),
    E('"a [X]"\nx = (1,\ny = 2', QuerySyntaxError, "'(' was never closed", 2, 5, id="bracket-never-closed"),
    E('"a [X]"\nx = 1)', QuerySyntaxError, "unmatched ')'", 2, 6, id="unmatched-bracket"),
    E("x = 1\ny = 2", QuerySyntaxError, "the query has no prompt", 1, 1, id="no-prompt"),
    E('argmax\n', QuerySyntaxError, "the query has no prompt", 1, 1, id="no-prompt-after-decoder"),
    E('"a [X]"\nawait fetch()', UnsupportedError, "'await' inside a query body", 2, 1, id="await"),
    E('"a [X]"\nfor i in range(2):\n    r = await fetch(i)', UnsupportedError, "'await'", 3, 9, id="await-in-loop"),
    # prompt strings and holes
    E('"a [1,2] b"', QuerySyntaxError, "invalid hole '[1,2]'", 1, 4, id="hole-not-a-name"),
    E('"Q: [ANSWER"', QuerySyntaxError, "unclosed '['", 1, 5, id="unclosed-bracket"),
    E('"a {x b [X]"', QuerySyntaxError, "unclosed '{'", 1, 4, id="unclosed-brace"),
    E('"a {} [X]"', QuerySyntaxError, "empty {} in a prompt", 1, 4, id="empty-braces"),
    E('"{x} } [X]"', QuerySyntaxError, "single '}'", 1, 6, id="single-closing-brace"),
    E('"a {x +} [X]"', QuerySyntaxError, "invalid Python expression in {x +}", 1, 4, id="bad-interpolation"),
    E('"a [X: int(]"', QuerySyntaxError, "invalid type 'int('", 1, 4, id="bad-hole-type"),
    E('"a [X: ]"', QuerySyntaxError, "has ':' but no type", 1, 4, id="hole-type-missing"),
    E('"ok [A]"\n"[[B]] [1x]"', QuerySyntaxError, "invalid hole '[1x]'", 2, 8, id="bad-hole-after-escape"),
    E('f"a {x} [X]"', QuerySyntaxError, "not an f-string", 1, 1, id="f-string"),
    E('"{:bot} hi [X]"', QuerySyntaxError, "unknown role tag '{:bot}'", 1, 2, id="unknown-role"),
    # the decoder clause
    E('greedy\n    "a [X]"', QueryCompileError, "unknown decoder 'greedy'", 1, 1, id="unknown-decoder"),
    E('sample(0.5)\n    "a [X]"', QuerySyntaxError, "must be given by name", 1, 8, id="positional-decoder-arg"),
    E('sample(temp=0.5)\n    "a [X]"', QueryCompileError, "sample has no argument 'temp'", 1, 8, id="unknown-decoder-arg"),
    E('beam(n=2, top_k=3)\n    "a [X]"', QueryCompileError, "beam has no argument 'top_k'", 1, 11, id="unknown-beam-arg"),
    E('argmax "a [X]" where INT(X)\n"b"', QuerySyntaxError, "one-line form (`argmax", 1, 8, id="one-line-form"),
    E('sample(n=2) "a [X]"\n"b [Y]"', QuerySyntaxError, "is the whole query", 1, 13, id="one-line-form-args"),
    # from, where and distribution clauses
    E('"a [X]"\nfrom 3', QuerySyntaxError, "the from clause takes a model", 2, 6, id="from-not-a-model"),
    E('"a [X]"\nwhere INT(X)\nwhere INT(X)', QuerySyntaxError, "a second where clause", 3, 1, id="second-where"),
    E('"a [X]"\nwhere', QuerySyntaxError, "empty where clause", 2, 1, id="empty-where"),
    E('"a [X]"\nwhere X ==', QuerySyntaxError, "unexpected end of the where clause", 2, 11, id="where-ends-early"),
    E('"a [X]"\nwhere STOPS_AT(X, "."', QuerySyntaxError, "'(' was never closed", 2, 15, id="where-never-closed"),
    E('"a [X]"\nwhere X == == 1', QuerySyntaxError, "invalid syntax in the where clause", 2, 12, id="where-syntax"),
    E('"a [X]" where X ==', QuerySyntaxError, "unexpected end of the where constraint", 1, 19, id="inline-ends-early"),
    E('"a [X]" where', QuerySyntaxError, "empty where constraint", 1, 9, id="inline-empty"),
    E('"a [X]"\ndistribution X', QuerySyntaxError, "distribution VAR in [values]", 2, 14, id="bad-distribution"),
    # names in constraints
    E('"Q: [ANSWER]"\nwhere len(ANSWR) < 3', QueryCompileError, "unknown variable 'ANSWR' in the where clause (did you mean ANSWER?)", 2, 11, id="where-near-miss"),
    E('"a [X]"\nwhere len("abc") < 3', QueryCompileError, "this constraint mentions no hole", 2, 7, id="no-hole"),
    E('"a [X]"\n"b [Y]" where len(X) < 3', QueryCompileError, "mentions no hole of its prompt (Y)", 2, 15, id="inline-other-hole"),
    E('"a" where len(X) < 3\n"b [X]"', QueryCompileError, "no [HOLE] for it to constrain", 1, 11, id="inline-without-hole"),
    # constraint forms
    E('"a [X]"\nwhere len(TOKENS(X)) != 3', QueryCompileError, "unsupported comparison '!='", 2, 7, id="tokens-not-equal"),
    E('"a [X]"\nwhere len(X) is 3', QueryCompileError, "unsupported comparison 'is'", 2, 7, id="len-is"),
    E('"a [X]"\nwhere len(TOKENS(X)) < 2.5', QueryCompileError, "compared with an integer, not float", 2, 24, id="tokens-float"),
    E('"a [X]"\nwhere STOPS_AT(X, ".") or INT(X)', QueryCompileError, "STOPS_AT can only be joined", 2, 7, id="stops-at-under-or"),
    E('"a [X]"\nwhere INT(X) or STOPS_BEFORE(X, ".")', QueryCompileError, "STOPS_BEFORE can only be joined", 2, 17, id="stops-before-under-or"),
    E('"a [X]"\nwhere len(TOKENS(X)) < 3 or INT(X)', QueryCompileError, "len(TOKENS(...)) can only be joined", 2, 7, id="tokens-under-or"),
    E('"a [X]"\nwhere not len(TOKENS(X)) < 3', QueryCompileError, "len(TOKENS(...)) can only be joined", 2, 11, id="tokens-under-not"),
    E('"a [X]"\nwhere INT(X, 3)', QueryCompileError, "INT takes 1 argument: INT(X)", 2, 7, id="int-arity"),
    E('"a [X]"\nwhere STOPS_AT(X)', QueryCompileError, "STOPS_AT takes 2 arguments", 2, 7, id="stops-at-arity"),
    E('"a [X]"\nwhere TOKENS(X)', QueryCompileError, "not a constraint on its own", 2, 7, id="tokens-alone"),
    E('"a [X]"\nwhere STOPS_AT(X, 3)', QueryCompileError, "a stop phrase must be a string, not int", 2, 19, id="stop-not-a-string"),
    E('"a [X]"\nwhere STOPS_AT(X, "")', QueryCompileError, "a stop phrase can't be empty", 2, 19, id="stop-empty"),
    E('"a [X]"\nwhere X in "abc"', QueryCompileError, "needs a list of values", 2, 12, id="in-a-string"),
    E('"a [X]"\nwhere REGEX(X, "a(")', QueryCompileError, "invalid regular expression: missing )", 2, 16, id="regex-python"),
    E('"a [X]"\nwhere REGEX(X, r"(a)\\1")', QueryCompileError, "invalid regular expression for the mask engine", 2, 16, id="regex-mask-engine"),
    E('"a [X]"\nwhere GRAMMAR(X, "nope")', QueryCompileError, "unknown grammar 'nope'", 2, 18, id="unknown-grammar"),
    # positions after multi-line text and non-ASCII characters
    E('"[X]"\nwhere len(TOKENS(X)) < 5 and\n      STOPS_AT(X, 3)', QueryCompileError, "must be a string", 3, 19, id="multi-line-where"),
    E('"café [X]" where X in ["é", "ü"] and STOPS_AT(X, 3)', QueryCompileError, "must be a string", 1, 50, id="non-ascii-column"),
    E('if True:\n\t"b [ Y"', QuerySyntaxError, "unclosed '['", 2, 5, id="tab-indent"),
]  # fmt: skip


@pytest.mark.parametrize("src, cls, message, line, col", COMPILE_ERRORS)
def test_compile_error(src: str, cls: type[QueryError], message: str, line: int, col: int) -> None:
    with pytest.raises(QueryError) as info:
        compile_source(src)
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert message in err.message
    assert_positioned(err, line, col, src)
    assert err.__suppress_context__ or err.__context__ is None  # no chained internal traceback


def test_not_on_a_grammar(write_query) -> None:
    write_query('start: "yes" | "no"\n', "yn.lark")
    path = write_query('"Answer: [A]"\nwhere not GRAMMAR(A, "yn.lark")\n')
    with pytest.raises(QueryCompileError, match="'not' can't be applied to a grammar") as info:
        compile_source(path)
    assert_positioned(info.value, 2, 7, path.read_text(), filename=str(path))


def test_an_unknown_grammar_file(write_query) -> None:
    path = write_query('"Answer: [A]"\nwhere GRAMMAR(A, "missing.lark")\n')
    with pytest.raises(QueryCompileError, match="unknown grammar 'missing.lark'") as info:
        compile_source(path)
    assert_positioned(info.value, 2, 18, path.read_text(), filename=str(path))


# -- the function form: positions in this file ------------------------------------------------------


@querylm.query(model="random")
def count_to(n: int):
    """lmql
    "Count to {n}: [X]" where len(TOKENS(X)) < 3
    return X
    """


@querylm.query(model="random")
def divides():
    """lmql
    "A: [X]" where len(TOKENS(X)) < 3
    ratio = len(X) / 0
    return ratio
    """


@querylm.query
def bad_body():
    """lmql
    "A [X]"
    x = = 2
    """


@querylm.query
def bad_where():
    """lmql
    "A\n[RESULT]" where len(TOKENS(RESULTS)) < 3
    """


@querylm.query
def awaits():
    """lmql
    "A [X]"
    await fetch()
    """


THIS_FILE = Path(__file__).read_text()

FUNCTION_ERRORS = [
    E(bad_body, QuerySyntaxError, "invalid syntax in the query body", '= 2\n    """', id="docstring-syntax"),
    E(
        bad_where,
        QueryCompileError,
        "unknown variable 'RESULTS' in the where clause (did you mean RESULT?)",
        "RESULTS)",
        id="docstring-near-miss",
    ),
    E(
        awaits,
        UnsupportedError,
        "'await' inside a query body",
        'await fetch()\n    """',
        id="docstring-await",
    ),
]


@pytest.mark.parametrize("fn, cls, message, marker", FUNCTION_ERRORS)
def test_function_form_error(
    fn: querylm.QueryFunction, cls: type[QueryError], message: str, marker: str
) -> None:
    with pytest.raises(cls) as info:
        fn()
    assert message in info.value.message
    line, col = line_col(THIS_FILE, marker)
    assert_positioned(info.value, line, col, THIS_FILE, filename=__file__)


def test_wrong_input_type_for_a_typed_parameter() -> None:
    with pytest.raises(QueryInputError, match=r"input 'n' must be int, got 'abc'") as info:
        count_to("abc")
    line, col = line_col(THIS_FILE, 'n: int):\n    """lmql\n    "Count to')
    assert_positioned(info.value, line, col, THIS_FILE, filename=__file__)


def test_wrong_arguments_for_a_query_function() -> None:
    with pytest.raises(QueryInputError, match=r"count_to\(\): too many positional arguments"):
        count_to(1, 2)


def test_runtime_error_in_a_function_query() -> None:
    with pytest.raises(QueryRuntimeError, match="ZeroDivisionError: division by zero") as info:
        divides()
    line, col = line_col(THIS_FILE, "ratio = len(X) / 0")
    assert_positioned(info.value, line, col, THIS_FILE, filename=__file__)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


# -- caught when the query runs (model="random": no real model) -------------------------------------


def test_unknown_model_is_placed_at_the_from_clause() -> None:
    src = '"a [X]"\nfrom "no-such-model"\nwhere len(TOKENS(X)) < 3'
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as info:
        querylm.run(src)
    assert_positioned(info.value, 2, 6, src)


def test_unknown_model_argument_has_no_query_position() -> None:
    with pytest.raises(ModelError, match="unknown model 'no-such-model'") as info:
        querylm.run('"a [X]"\nfrom "random"', model="no-such-model")
    assert info.value.position is None


MISSING_INPUTS = [
    E('"Hello {name}! [X]"', "name", 1, 8, id="in-an-interpolation"),
    E('"a\\n{name} [X]"', "name", 1, 5, id="after-an-escape"),
    E('"a [X]"\nprint(limit)', "limit", 2, 7, id="in-code"),
    E('"a [X]"\nwhere X in OPTIONS', "OPTIONS", 2, 12, id="in-the-where-clause"),
]


@pytest.mark.parametrize("src, name, line, col", MISSING_INPUTS)
def test_missing_input(src: str, name: str, line: int, col: int) -> None:
    with pytest.raises(QueryInputError, match=f"missing input '{name}': pass it as {name}=...") as info:
        querylm.run(src, model="random")
    assert_positioned(info.value, line, col, src)


def test_unknown_input() -> None:
    # An input the query never reads has no place in the query: the message lists what it reads.
    with pytest.raises(QueryInputError, match=r"unknown input 'bogus' \(the query reads: n\)") as info:
        querylm.run('"{n} [X]" where len(TOKENS(X)) < 3', model="random", n=1, bogus=2)
    assert info.value.position is None


UNSATISFIABLE = [
    E('"a [X]" where X in []', "X in []", 1, 15, id="empty-choice"),
    E(
        '"a [X]" where len(X) < 3 and len(X) > 5',
        "len(X) < 3 and len(X) > 5",
        1,
        30,
        id="contradictory-lengths",
    ),
    E('"N: [X]" where INT(X) and X in [" abc"]', "INT(X) and X in [' abc']", 1, 27, id="int-and-choice"),
    E('"N: [X: int]" where X in ["a", "b"]', "the type int and X in ['a', 'b']", 1, 21, id="type-and-choice"),
    E(
        '"N: [X]" where GRAMMAR(X, "json") and len(X) < 2 and REGEX(X, "[{].*")',
        "GRAMMAR(X, 'json'), len(X) < 2 and REGEX(X, '[{].*')",
        1,
        54,
        id="grammar-across-matchers",
    ),
]
"""Constraints no value satisfies: found before decoding, naming every conjunct of the conflict (and
only those), at the last of them."""


@pytest.mark.parametrize("src, constraint, line, col", UNSATISFIABLE)
def test_unsatisfiable_constraints_are_found_before_decoding(
    src: str, constraint: str, line: int, col: int
) -> None:
    with pytest.raises(QueryCompileError) as info:
        querylm.compile_source(src)
    assert info.value.message == f"no value of X can satisfy {constraint}" + (
        " together" if " and " in constraint else ""
    )
    assert_positioned(info.value, line, col, src)


SATISFIABLE = [
    '"N: [X]" where INT(X) and X in [" 12", "abc"]',
    '"N: [X]" where GRAMMAR(X, "json") and REGEX(X, "[a-z]+")',  # true, false, null
    '"N: [X]" where len(X) < 3 and STOPS_AT(X, ".") and X in ["abcd", "ab"]',
    '"N: [X]" where len(X) == 0',
    '"N: [X]" where not (X in ["a"]) and len(X) == 1',
    # LMQL's side conditions: the stop phrase waits until X == "a\nb" holds, so "a\nb" is a value
    '"N: [X]" where STOPS_AT(X, "\\n") and X == "a\\nb"',
]


@pytest.mark.parametrize("src", SATISFIABLE)
def test_a_satisfiable_combination_is_not_refused(src: str) -> None:
    querylm.compile_source(src)


def test_an_empty_language_from_an_input_is_refused_before_the_model_runs() -> None:
    src = '"a [X]" where X in OPTIONS'
    querylm.compile_source(src)  # unknown when checking
    with pytest.raises(QueryCompileError, match=r"no value of X can satisfy X in OPTIONS") as info:
        querylm.run(src, model="random", OPTIONS=[])
    assert_positioned(info.value, 1, 15, src)


RUNTIME_ERRORS = [
    E('"a [X]" where len(TOKENS(X)) < 3\ny = 1\nz = y / 0', "ZeroDivisionError", 3, 1, id="in-code"),
    E('"a {1 / 0} [X]" where len(TOKENS(X)) < 3', "ZeroDivisionError", 1, 4, id="in-an-interpolation"),
    E('"a [X]" where len(TOKENS(X)) < 3\nif True:\n    int(X + "z")', "ValueError", 3, 5, id="in-a-block"),
    E('"a [X]" where len(TOKENS(X)) < 3\n"{X.nope}"', "AttributeError", 2, 2, id="attribute"),
]


@pytest.mark.parametrize("src, kind, line, col", RUNTIME_ERRORS)
def test_runtime_error_in_query_code(src: str, kind: str, line: int, col: int) -> None:
    with pytest.raises(QueryRuntimeError, match=f"^<query>:{line}:{col}: {kind}: ") as info:
        querylm.run(src, model="random")
    assert_positioned(info.value, line, col, src)


# -- the CLI: exit 2 and a positioned message for query errors, 1 for anything else ----------------


def test_cli_check_ok(write_query, capsys) -> None:
    path = write_query('"Q: {q}\\nA: [ANSWER]" where STOPS_AT(ANSWER, ".")\n')
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok") and "ANSWER" in out and "inputs: q" in out


CLI_CHECK_ERRORS = [
    E('"a [X]"\nwhere STOPS_AT(X, 3)\n', "a stop phrase must be a string", 2, 19, id="constraint"),
    E('argmax\n    "a [X]"\n    x = = 1\n', "invalid syntax in the query body", 3, 9, id="syntax"),
    E('"Q: [ANSWER]"\nwhere len(ANSWR) < 3\n', "did you mean ANSWER?", 2, 11, id="near-miss"),
]


@pytest.mark.parametrize("text, message, line, col", CLI_CHECK_ERRORS)
def test_cli_check_query_error(write_query, capsys, text: str, message: str, line: int, col: int) -> None:
    path = write_query(text)
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert err[0].startswith(f"{path}:{line}:{col}: ") and message in err[0]
    assert err[1] == "    " + text.split("\n")[line - 1]
    assert err[2] == "    " + " " * (col - 1) + "^"


def test_cli_run_runtime_error_names_the_file(write_query, capsys) -> None:
    path = write_query('"a [X]" where len(TOKENS(X)) < 3\nvalue = int("x" + X)\n')
    assert main(["run", str(path), "--model", "random"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:2:1: ValueError: ")


def test_cli_run_missing_input(write_query, capsys) -> None:
    path = write_query('"Hello {name}! [X]" where len(TOKENS(X)) < 3\n')
    assert main(["run", str(path), "--model", "random"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:1:8: missing input 'name'")
    assert main(["run", str(path), "--model", "random", "--input", "name=Ada", "--json"]) == 0


def test_cli_unreadable_query_file_is_a_query_error(tmp_path, capsys) -> None:
    # Decision: a query file that can't be read is the user's mistake about the query (the same
    # QueryInputError as querylm.run("missing.lmql")), so exit 2 with one line naming the file; exit 1
    # is kept for failures that are not about the query.
    missing = tmp_path / "missing.lmql"
    assert main(["check", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"can't read query file {missing}: No such file or directory"
    binary = tmp_path / "binary.lmql"
    binary.write_bytes(b'"a [X]" \xff\xfe\n')
    assert main(["check", str(binary)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_cli_other_failures_exit_1(write_query, capsys, monkeypatch) -> None:
    path = write_query('"a [X]"\n')

    def broken(_query: object) -> None:
        raise RuntimeError("disk on fire")

    # where the CLI's check finds it (the module, not the name querylm re-exports)
    monkeypatch.setattr(importlib.import_module("querylm.language.check"), "compile_source", broken)
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err.strip() == "querylm: error: RuntimeError: disk on fire"

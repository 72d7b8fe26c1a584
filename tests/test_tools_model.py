"""Tool calls on the embedded default model (SmolLM2-135M-Instruct, CPU): generated calls are valid,
the agent loop runs end to end, and the examples run and keep their constraints."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import querylm
from querylm.backends.models import resolve
from querylm.tools import ToolCall, ToolRegistry, validate
from querylm.tools.agent import ToolFormat

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent


def load(relpath: str) -> Any:
    path = ROOT / relpath
    name = "qlm_" + path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def model():
    return resolve(None)


def test_generated_calls_on_the_default_model_are_valid(model):
    """20 calls in one conversation (one cache), alternating the full union and narrowed views."""
    bench = load("benchmarks/tool_calls.py")
    tools = ToolRegistry(bench.TOOLS)
    views = [
        tools.calls(),
        tools.only("calculate", "convert_units", "set_timer").calls(),
        tools.only("send_email").calls(),
    ]
    q = """
"{:system}{system}"
for i, question in enumerate(questions):
    "{:user}{question}{:assistant}[CALL: views[i % len(views)]]"
"""
    questions = [t[0] for t in bench.TASKS[:20]]
    system = ToolFormat().system_prompt(tools, "")
    r = querylm.run(q, model=model, system=system, questions=questions, views=views, max_len=8192)
    assert len(r.holes) == len(questions) == 20
    for i, hole in enumerate(r.holes):
        call = hole.value
        assert isinstance(call, ToolCall) and json.loads(hole.text) == call.to_json()
        assert call.name in views[i % len(views)].names
        assert validate(tools[call.name].parameters, call.arguments) == []
        assert tools.dispatch(call).ok


def test_calculator_agent_end_to_end(model, capsys):
    calc = load("examples/agent_calculator.py")
    result = calc.main("What is 37 times 43?", model=model)
    out = capsys.readouterr().out
    assert result.stopped_by == "final" and result.turns == 2 and result.output
    first = result.tool_results[0]
    assert first.ok and first.name in ("calculate", "convert_units")
    tool = calc.calculate if first.name == "calculate" else calc.convert_units
    assert first.value == tool(**tool.bind(first.call.arguments))  # the runtime ran exactly this call
    assert f"-> {first.name}: {first.content}" in out  # the example streamed it
    assert [m["role"] for m in result.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_notes_agent_answers_from_the_notes(model, capsys):
    notes = load("examples/agent_notes.py")
    result = notes.main("When is my dentist appointment?", model=model)
    assert result.stopped_by == "final" and result.output
    first = result.tool_results[0]
    assert first.name == "search_notes" and first.ok  # tool_choice forced the search
    lines = {ln.strip() for p in notes.NOTES.glob("*.md") for ln in p.read_text().splitlines()}
    assert first.value and all(hit["line"] in lines for hit in first.value)
    assert not result.output.startswith("<tool")


def test_reading_list_labels_and_files_each_article(model, capsys):
    rl = load("examples/reading_list.py")
    for shelf in rl.SHELF.values():
        shelf.clear()
    rows = rl.main(model=model)
    assert len(rows) == len(rl.ARTICLES)
    for article, (label, filed) in zip(rl.ARTICLES, rows, strict=True):
        assert label in rl.LABELS
        assert filed.ok, filed.content
        args = filed.call.arguments
        assert args["label"] == label and args["title"] == article.title  # fixed by the query
        assert re.fullmatch(rl.SENTENCE, args["summary"]) and len(args["summary"]) <= 160
        assert article.title in rl.SHELF[label]

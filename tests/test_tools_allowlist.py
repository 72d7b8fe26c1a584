"""A restricted agent never runs a tool outside its allowlist, in any turn: the grammar can't generate
such a call (local and grammar-server turns) and dispatch refuses one a server sends anyway. A reset
tool_choice lifts only the obligation to call, never the restriction."""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("openai")

from hosted_fakes import FakeServer  # noqa: E402

from querylm.backends.hub import byte_tokenizer  # noqa: E402
from querylm.backends.models import resolve  # noqa: E402
from querylm.backends.openai import OpenAIBackend  # noqa: E402
from querylm.tools import Agent, Tool, ToolRegistry, tool  # noqa: E402

RAN: dict[str, int] = {}


def counted(name: str, read_only: bool) -> Tool:
    def fn(text: str) -> str:
        RAN[name] = RAN.get(name, 0) + 1
        return f"{name} done"

    fn.__name__ = name
    fn.__doc__ = f"The {name} tool."
    return tool(fn, read_only=read_only)


def registry() -> ToolRegistry:
    return ToolRegistry(
        [counted("look", True), counted("peek", True), counted("wipe", False)], max_string_length=8
    )


@pytest.fixture(autouse=True)
def _reset_counts():
    RAN.clear()


CHOICES: list[tuple[Any, set[str]]] = [
    (["look"], {"look"}),
    (["look", "peek"], {"look", "peek"}),
    ("look", {"look"}),
    ({"mode": "required", "tools": ["peek"]}, {"peek"}),
    ("none", set()),
]


@pytest.mark.parametrize(("choice", "allowed"), CHOICES)
@pytest.mark.parametrize("reset", [True, False])
def test_random_model_never_runs_a_disallowed_tool(choice: Any, allowed: set[str], reset: bool) -> None:
    called: set[str] = set()
    later_turn_calls = 0
    for seed in range(10):
        agent = Agent(
            resolve("random", seed=seed),
            registry(),
            tool_choice=choice,
            reset_tool_choice=reset,
            max_turns=5,
            max_tool_calls=8,
            max_turn_tokens=60,
            answer_last_turn=False if allowed else None,  # "none" leaves no call to make
            temperature=1.0,
            seed=seed,
        )
        for ev in agent.stream("Go."):
            if ev.type == "tool_arguments_complete":
                called.add(ev.call.name)
                later_turn_calls += ev.turn > 1
    assert called <= allowed
    assert set(RAN) <= allowed, RAN
    assert RAN.get("wipe", 0) == 0
    if allowed and isinstance(choice, (str, dict)) and not reset:
        assert later_turn_calls > 0  # a forced call goes on being forced: the later turns were exercised


def test_required_still_allows_every_tool_after_the_reset() -> None:
    """'required' over all tools: after the first turn calls are optional, the set is still all tools."""
    agent = Agent(resolve("random", seed=0), registry(), tool_choice="required", max_turn_tokens=60)
    r = agent.run("Go.")
    assert r.tool_results and r.tool_results[0].call is not None


def test_registry_view_refuses_a_call_outside_it() -> None:
    view = registry().only("look")
    r = view.dispatch({"name": "wipe", "arguments": {"text": "all"}})
    assert not r.ok and r.error == "unknown_tool" and "not available here" in r.message
    assert RAN == {}
    assert json.loads(r.content)["error"] == "unknown_tool"


def calls_reply(name: str, id: str) -> dict[str, Any]:
    call = {"id": id, "type": "function", "function": {"name": name, "arguments": json.dumps({"text": "x"})}}
    return {
        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "tool_calls",
    }


@pytest.mark.parametrize("choice", [["look"], "look", {"mode": "required", "tools": ["look"]}])
def test_hosted_server_ignoring_the_choice_in_later_turns_runs_nothing_disallowed(choice: Any) -> None:
    """A server that ignores tool_choice (it may: only the grammar or OpenAI's own check hold it) asks
    for the disallowed tool in every turn after the first: dispatch refuses each, and the requests
    after the first turn still carry the restriction."""
    srv = FakeServer("openai")
    srv.replies = [calls_reply("look", "c1"), calls_reply("wipe", "c2"), calls_reply("wipe", "c3"), "done"]
    backend = OpenAIBackend(
        "test-model", base_url="http://fake/v1", api_key="sk-x", http_client=srv.client(),
        flavour="openai", endpoint="chat", tokenizer=byte_tokenizer(), backoff=0.001,
    )  # fmt: skip
    r = Agent(backend, registry(), tool_choice=choice, max_turns=5).run("Go.")
    assert RAN == {"look": 1}
    assert [(x.call.id, x.error) for x in r.tool_results] == [
        ("c1", None), ("c2", "unknown_tool"), ("c3", "unknown_tool"),
    ]  # fmt: skip
    sent = [c.body["tool_choice"] for c in srv.completions]
    assert all(s != "auto" for s in sent), sent
    assert sent[1]["type"] == "allowed_tools" and sent[1]["allowed_tools"]["mode"] == "auto"
    assert [t["function"]["name"] for t in sent[1]["allowed_tools"]["tools"]] == ["look"]

"""The agent on hosted models. OpenAI's native tools against an in-process fake at the HTTP transport
(the request shapes, and calls the server gets wrong becoming error results the model reads); grammar
servers against the fake (the GBNF sent, answers that break it, the JSON Schema fallback) and end to
end against llama.cpp's real server on loopback (tool_choice enforced by the grammar)."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

pytest.importorskip("openai")

from hosted_fakes import FakeServer  # noqa: E402

import querylm  # noqa: E402
from querylm.backends.hub import byte_tokenizer  # noqa: E402
from querylm.backends.openai import OpenAIBackend  # noqa: E402
from querylm.constraints import automata as A
from querylm.constraints import gbnf as G  # noqa: E402
from querylm.errors import ModelError, UnsupportedError  # noqa: E402
from querylm.tools import Agent, Tool, ToolRegistry, validate  # noqa: E402
from querylm.tools.agent import Choice, ToolFormat, resolve_choice  # noqa: E402
from querylm.tools.agent.hosted import calls_schema, openai_tool_choice, server_grammar  # noqa: E402

KEY = "sk-test-Zq8v3K1mN0pL9rT2"


@querylm.tool
def calculate(a: float, op: Literal["+", "-", "*", "/"], b: float) -> float:
    """Calculate a op b.

    Args:
        a: The first number.
        op: The operator.
        b: The second number.
    """
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


@querylm.tool
def lookup(word: str, limit: int = 3) -> list[str]:
    """Look a word up in the dictionary.

    Args:
        word: The word.
        limit: How many senses.
    """
    return [f"{word} ({i + 1})" for i in range(limit)]


def tools() -> ToolRegistry:
    return ToolRegistry([calculate, lookup])


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def hosted(srv: FakeServer, tok: Any, **kw: Any) -> OpenAIBackend:
    kw.setdefault("flavour", srv.flavour)
    kw.setdefault("endpoint", "chat")
    kw.setdefault("tokenizer", tok)
    kw.setdefault("backoff", 0.001)
    return OpenAIBackend("test-model", base_url="http://fake/v1", api_key=KEY, http_client=srv.client(), **kw)


def tool_call(name: Any, arguments: Any, id: str) -> dict[str, Any]:
    fn: dict[str, Any] = {"arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}
    if name is not None:
        fn["name"] = name
    return {"id": id, "type": "function", "function": fn}


def calls_reply(*calls: dict[str, Any], finish: str = "tool_calls") -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": None, "tool_calls": list(calls)},
        "finish_reason": finish,
    }


def chat_bodies(srv: FakeServer) -> list[dict[str, Any]]:
    return [r.body for r in srv.requests if r.path.endswith("/chat/completions")]


# -- OpenAI: native tools -------------------------------------------------------------------------------


def test_openai_request_shape_and_tool_messages(tok) -> None:
    srv = FakeServer("openai")
    srv.replies = [
        calls_reply(tool_call("calculate", {"a": 37, "op": "*", "b": 43}, "call_A")),
        "37 times 43 is 1591.",
    ]
    agent = Agent(hosted(srv, tok), tools(), "Be brief.", tool_choice="required", parallel_tool_calls=2)
    r = agent.run("What is 37 times 43?")
    assert r.stopped_by == "final" and r.output == "37 times 43 is 1591." and r.turns == 2
    (res,) = r.tool_results
    assert res.ok and res.value == 1591 and res.call.id == "call_A"

    first, second = chat_bodies(srv)
    # native tools, strict where the schema allows it (lookup's optional limit becomes nullable)
    assert [t["function"]["name"] for t in first["tools"]] == ["calculate", "lookup"]
    assert all(t["type"] == "function" and t["function"]["strict"] is True for t in first["tools"])
    limit = first["tools"][1]["function"]["parameters"]["properties"]["limit"]
    assert {"type": "null"} in limit["anyOf"]
    assert first["tool_choice"] == "required" and first["parallel_tool_calls"] is True
    assert first["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 37 times 43?"},
    ]
    # the turn is sized to two calls of the longest tool (no max_turn_tokens given)
    budget = agent.turn_budget(resolve_choice("required", agent.registry), 2)
    assert budget > 160 and first["max_completion_tokens"] == budget and first["temperature"] == 0.0
    # the forced choice holds for the first turn only
    assert second["tool_choice"] == "auto"
    assistant, tool_msg = second["messages"][2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["id"] == "call_A"
    assert assistant["tool_calls"][0]["function"]["name"] == "calculate"
    assert tool_msg == {"role": "tool", "tool_call_id": "call_A", "content": "1591.0"}

    assert r.usage is not None and r.usage.requests == 2 and len(r.usage.holes) == 2
    assert r.usage.holes[0].mechanisms[0] == "tools"
    assert r.tokens == 6  # the fake reports 3 completion tokens per answer
    assert [m["role"] for m in r.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_openai_gets_wire_names_and_the_conversation_keeps_the_tools_own(tok) -> None:
    """OpenAI allows only [A-Za-z0-9_-]{1,64} in a function's name: a dotted or unicode tool name goes
    as its wire name (tools, tool_choice, the assistant's earlier calls) and comes back as itself."""
    reg = ToolRegistry([Tool(calculate.fn, name="math.calc"), Tool(lookup.fn, name="辞書")])
    calc, dic = reg.wire_name("math.calc"), reg.wire_name("辞書")
    srv = FakeServer("openai")
    srv.replies = [calls_reply(tool_call(calc, {"a": 2, "op": "+", "b": 3}, "call_A")), "It is 5."]
    events = list(Agent(hosted(srv, tok), reg, tool_choice="math.calc").stream("2 + 3?"))
    r = events[-1].result
    assert r.output == "It is 5." and [(x.name, x.value) for x in r.tool_results] == [("math.calc", 5)]
    assert [e.name for e in events if e.type == "tool_call_started"] == ["math.calc"]
    assert r.messages[1]["tool_calls"][0]["function"]["name"] == "math.calc"
    first, second = chat_bodies(srv)
    assert [t["function"]["name"] for t in first["tools"]] == [calc, dic]
    assert first["tool_choice"] == {"type": "function", "function": {"name": calc}}
    assert second["messages"][1]["tool_calls"][0]["function"]["name"] == calc
    assert second["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": calc}}]},
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("lookup", {"type": "function", "function": {"name": "lookup"}}),
        (
            {"type": "function", "function": {"name": "lookup"}},
            {"type": "function", "function": {"name": "lookup"}},
        ),
        (
            ["lookup"],
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "lookup"}}],
                },
            },
        ),
        ({"mode": "required", "tools": ["lookup"]}, {"type": "function", "function": {"name": "lookup"}}),
        ({"mode": "required", "tools": ["calculate", "lookup"]}, "required"),
    ],
)
def test_openai_tool_choice_is_passed_through(tok, choice: Any, sent: Any) -> None:
    srv = FakeServer("openai", default="Done.")
    r = Agent(hosted(srv, tok), tools(), tool_choice=choice).run("Hi")
    assert r.output == "Done."
    (body,) = chat_bodies(srv)
    assert body["tool_choice"] == sent
    assert len(body["tools"]) == 2  # a subset goes as allowed_tools: the tool list itself is unchanged
    if choice == "none":
        assert "parallel_tool_calls" not in body  # no call can be made
    else:
        assert body["parallel_tool_calls"] is False  # parallel_tool_calls=1, the default


def test_openai_invalid_calls_become_error_results(tok) -> None:
    srv = FakeServer("openai")
    srv.replies = [
        calls_reply(
            tool_call("calculate", '{"a": 1, "op": "*", ', "c_json"),  # arguments that do not parse
            tool_call("weather", {"city": "Paris"}, "c_name"),  # no such tool
            tool_call("calculate", {"a": "one", "op": "x", "b": 2}, "c_schema"),  # breaks the schema
            tool_call(None, {}, "c_noname"),  # no name at all
            tool_call("calculate", {"a": 2, "op": "+", "b": 2}, "c_ok"),
        ),
        "Sorry, some of that failed.",
    ]
    ran: list[Any] = []
    agent = Agent(hosted(srv, tok), tools(), parallel_tool_calls=8, approve=lambda c, t: ran.append(c.id))
    r = agent.run("Do things.")
    assert r.stopped_by == "final" and r.output == "Sorry, some of that failed."
    by_id = {res.call.id: res for res in r.tool_results}
    assert set(by_id) == {"c_json", "c_name", "c_schema", "c_noname", "c_ok"}
    assert by_id["c_json"].error == "invalid_json"
    assert by_id["c_name"].error == "unknown_tool"
    assert by_id["c_schema"].error == "invalid_arguments"
    assert {i.path for i in by_id["c_schema"].issues} == {"$.a", "$.op"}
    assert by_id["c_noname"].error == "invalid_call"
    assert by_id["c_ok"].ok and by_id["c_ok"].value == 4
    assert ran == ["c_ok"]  # only the valid call reached the approval hook and ran
    # every call the server made is answered by a tool message with its id, errors included
    second = chat_bodies(srv)[1]
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["c_json", "c_name", "c_schema", "c_noname", "c_ok"]
    assert json.loads(tool_msgs[2]["content"])["error"] == "invalid_arguments"
    assert [c["id"] for c in second["messages"][-len(tool_msgs) - 1]["tool_calls"]] == list(by_id)


def test_openai_calls_outside_tool_choice_and_over_the_limit_are_refused(tok) -> None:
    srv = FakeServer("openai")
    srv.replies = [
        calls_reply(
            tool_call("calculate", {"a": 1, "op": "+", "b": 1}, "c1"),  # not allowed by tool_choice
            tool_call("lookup", {"word": "x"}, "c2"),
            tool_call("lookup", {"word": "y"}, "c3"),  # over parallel_tool_calls
        ),
        "ok",
    ]
    r = Agent(hosted(srv, tok), tools(), tool_choice="lookup", parallel_tool_calls=2).run("x")
    errors = [(res.call.id, res.error) for res in r.tool_results]
    assert errors == [("c1", "unknown_tool"), ("c2", None), ("c3", "denied")]
    assert "not available here" in r.tool_results[0].message


def test_openai_truncated_call_is_never_run(tok) -> None:
    srv = FakeServer("openai")
    srv.replies = [calls_reply(tool_call("lookup", '{"word": "abc', "c1"), finish="length")]
    events = list(Agent(hosted(srv, tok), tools(), tool_choice="required").stream("x"))
    final = events[-1].result
    assert final.stopped_by == "truncated" and final.tool_results[0].error == "truncated"
    assert [e.type for e in events][-2:] == ["error", "final"]
    assert not any(e.type == "tool_result" for e in events)


def test_openai_event_stream(tok) -> None:
    srv = FakeServer("openai")
    srv.replies = [calls_reply(tool_call("lookup", {"word": "cat", "limit": None}, "c1")), "Cats."]
    events = list(Agent(hosted(srv, tok), tools()).stream("What is a cat?"))
    kinds = [e.type for e in events]
    assert kinds == [
        "tool_call_started", "tool_arguments_complete", "tool_result", "turn_end", "token", "turn_end", "final",
    ]  # fmt: skip
    assert events[1].call.arguments == {"word": "cat"}  # strict's null for an omitted optional: dropped
    assert events[2].result.value == ["cat (1)", "cat (2)", "cat (3)"]


def test_openai_needs_the_chat_endpoint(tok) -> None:
    srv = FakeServer("openai")
    with pytest.raises(ModelError, match="chat (endpoint|template)"):
        Agent(hosted(srv, tok, endpoint="completions"), tools()).run("x")


# -- grammar servers, against the fake ----------------------------------------------------------------


def test_server_grammar_is_gbnf_of_the_turn() -> None:
    fmt = ToolFormat()
    reg = tools()
    g = server_grammar(reg, Choice(True, ("calculate", "lookup")), fmt, 2)
    G.check_gbnf(g)
    assert g.startswith("root ::= calls | text\n")
    assert G.gbnf_literal(fmt.call_open) in g and G.gbnf_literal(fmt.call_close) in g
    assert "call ( sep call )?" in g  # at most two calls
    only_calls = server_grammar(reg, Choice(False, ("lookup",)), fmt, 1)
    assert only_calls.startswith("root ::= calls\n") and "text ::=" not in only_calls
    assert '"calculate"' not in only_calls.replace("\\x22", '"')
    only_text = server_grammar(reg, Choice(True, ()), fmt, 1)
    assert only_text.startswith("root ::= text\n") and "call ::=" not in only_text


def test_grammar_server_request_and_local_validation(tok) -> None:
    srv = FakeServer("llamacpp")
    call = '<tool_call>[\n{"name": "calculate", "arguments": {"a": 2, "op": "*", "b": 21}}\n]</tool_call>'
    srv.replies = [call, "It is 42."]
    r = Agent(hosted(srv, tok), tools(), tool_choice="calculate").run("2 times 21?")
    assert r.output == "It is 42." and r.tool_results[0].ok and r.tool_results[0].value == 42
    first, second = chat_bodies(srv)
    G.check_gbnf(first["grammar"])
    assert first["grammar"].startswith("root ::= calls\n")  # the named tool: a call is required
    assert second["grammar"].startswith("root ::= calls | text\n")
    calc_only = Agent(hosted(srv, tok), tools(), tool_choice="calculate")
    assert "tools" not in first
    assert first["max_tokens"] == calc_only.turn_budget(resolve_choice("calculate", calc_only.registry), 1)
    # the conversation in the ToolFormat: tools in the system prompt, the result as a user message
    assert "<tools>" in first["messages"][0]["content"]
    assert second["messages"][2] == {"role": "assistant", "content": call}
    assert second["messages"][3]["role"] == "user" and "42" in second["messages"][3]["content"]
    assert r.usage.requests == 2 and r.usage.holes[0].mechanisms == ["grammar", "max_tokens"]


def test_grammar_servers_get_the_real_tool_names_in_the_grammar(tok) -> None:
    """A grammar server writes the call as text under our grammar: its names are the tools' own."""
    reg = ToolRegistry([Tool(calculate.fn, name="math.calc"), Tool(lookup.fn, name="辞書")])
    srv = FakeServer("llamacpp")
    call = '<tool_call>[\n{"name": "辞書", "arguments": {"word": "犬", "limit": 1}}\n]</tool_call>'
    srv.replies = [call, "A dog."]
    r = Agent(hosted(srv, tok), reg, tool_choice="required").run("犬?")
    assert r.output == "A dog." and [(x.name, x.value) for x in r.tool_results] == [("辞書", ["犬 (1)"])]
    first, _ = chat_bodies(srv)
    G.check_gbnf(first["grammar"])
    assert G.gbnf_literal('"math.calc"') in first["grammar"]


CALL = '<tool_call>[\n{"name": "calculate", "arguments": {"a": 2, "op": "*", "b": 21}}\n]</tool_call>'


def test_grammar_server_answer_cut_by_max_tokens_is_continued(tok) -> None:
    """A turn is a hole of the hosted hole decoder queries use: an answer the server cut (finish
    "length") is continued from its valid prefix, not reported as a truncated call."""
    srv = FakeServer("vllm")
    # the rest of the call after what the request's assistant message already holds (the decoder
    # writes the forced part, '...ate", "arguments": {"a": ', itself)
    srv.replies = [
        (CALL[:30], "length"),
        lambda body: CALL[len(body["messages"][-1]["content"]) :],
        "It is 42.",
    ]
    r = Agent(hosted(srv, tok), tools(), tool_choice="calculate").run("2 times 21?")
    assert r.output == "It is 42." and r.stopped_by == "final" and r.turns == 2
    (res,) = r.tool_results
    assert res.ok and res.value == 42
    first, cont, _ = chat_bodies(srv)
    assert cont["continue_final_message"] is True  # vLLM continues the partly written assistant message
    sent = cont["messages"][-1]
    assert (
        sent["role"] == "assistant"
        and sent["content"].startswith(CALL[:30])
        and CALL.startswith(sent["content"])
    )
    assert cont["messages"][:-1] == first["messages"]
    assert r.usage.requests == 3 and r.usage.holes[0].continued == 1 and r.usage.holes[0].requests == 2
    assert r.usage.holes[0].name == "turn 1" and r.usage.holes[1].requests == 1


def test_grammar_server_answers_that_break_the_grammar_are_repaired(tok) -> None:
    """The server ignored the grammar: the answer is cut to its valid prefix and, where the chat API
    can't continue it (llama.cpp's chat endpoint without the server's tokenizer here), asked again
    (sampled: the same request at temperature 0 would give the same answer). Nothing invalid runs."""
    srv = FakeServer("llamacpp")
    srv.replies = ['<tool_call>[{"name": "weather", "arguments": {"city": "Paris"}}]</tool_call>', "Fine."]
    r = Agent(hosted(srv, tok), tools()).run("Weather in Paris?")
    assert r.output == "Fine." and r.turns == 1 and r.tool_results == []
    first, again = chat_bodies(srv)
    assert again["messages"] == first["messages"] and again["temperature"] > 0
    assert r.usage.holes[0].continued == 1 and r.usage.holes[0].ended_by == "eos"


def test_grammar_server_answers_that_stay_invalid_go_back_as_errors(tok) -> None:
    """When the decoder's requests are spent without a valid answer, the model reads why and the run
    goes on (never an invalid call run, never a crash)."""
    srv = FakeServer("llamacpp")
    srv.replies = ["<tool_response>42</tool_response>", "Fine."]
    r = Agent(hosted(srv, tok, max_requests=1), tools(), max_turns=3).run("Weather in Paris?")
    assert r.output == "Fine." and r.turns == 2
    assert [res.error for res in r.tool_results] == ["invalid_call"]
    assert "broke the turn's grammar" in chat_bodies(srv)[1]["messages"][-1]["content"]


def test_grammar_server_truncated_call(tok) -> None:
    """A call that can't fit the turn's budget is truncated, never run: the budget (in the local
    tokenizer's tokens, bytes here) caps what is taken of the answer."""
    srv = FakeServer("vllm")
    srv.replies = [
        ('<tool_call>[\n{"name": "lookup", "arguments": {"word": "abcdefghijklmnopqrstuvwxyz', "length")
    ]
    r = Agent(hosted(srv, tok), tools(), tool_choice="required", max_turn_tokens=40).run("x")
    assert r.stopped_by == "truncated" and r.tool_results[0].error == "truncated"
    (body,) = chat_bodies(srv)
    G.check_gbnf(body["structured_outputs"]["grammar"])
    assert body["max_tokens"] == 40


def test_sglang_takes_ebnf(tok) -> None:
    srv = FakeServer("sglang", default="Hello.")
    r = Agent(hosted(srv, tok), tools()).run("hi")
    assert r.output == "Hello."
    (body,) = chat_bodies(srv)
    assert body["ebnf"].startswith("root ::= calls | text")


def test_json_schema_fallback_on_ollama(tok) -> None:
    srv = FakeServer("ollama")
    srv.replies = [
        json.dumps({"tool_calls": [{"name": "lookup", "arguments": {"word": "dog", "limit": 1}}]}),
        json.dumps({"answer": "A dog is an animal."}),
    ]
    r = Agent(hosted(srv, tok), tools()).run("What is a dog?")
    assert r.output == "A dog is an animal." and r.tool_results[0].value == ["dog (1)"]
    first, _ = chat_bodies(srv)
    schema = first["response_format"]["json_schema"]["schema"]
    assert schema == calls_schema(tools(), Choice(True, ("calculate", "lookup")), 1)
    assert validate(schema, {"answer": "x"}) == []
    assert validate(schema, {"tool_calls": [{"name": "lookup", "arguments": {"word": "a"}}]}) == []
    assert validate(schema, {"tool_calls": [{"name": "nope", "arguments": {}}]}) != []
    assert r.usage.holes[0].mechanisms == ["json_schema", "max_tokens"]


def test_json_schema_fallback_when_the_grammar_has_no_gbnf(tok, monkeypatch: pytest.MonkeyPatch) -> None:
    def untranslatable(schema: dict) -> str:
        raise A.NotTranslatable("test")

    monkeypatch.setattr(G, "json_gbnf", untranslatable)
    srv = FakeServer("llamacpp", default=json.dumps({"answer": "hi"}))
    r = Agent(hosted(srv, tok), tools()).run("x")
    assert r.output == "hi"
    (body,) = chat_bodies(srv)
    assert "grammar" not in body and body["response_format"]["type"] == "json_object"


def test_no_way_to_constrain_is_a_clear_error(tok) -> None:
    srv = FakeServer("llamacpp")
    b = hosted(srv, tok, mechanisms=("max_tokens",))
    with pytest.raises(UnsupportedError, match="can't be constrained on this server"):
        Agent(b, tools()).run("x")


def test_openai_tool_choice_mapping() -> None:
    reg = tools()
    assert openai_tool_choice(Choice(True, ()), reg) == "none"
    assert openai_tool_choice(Choice(False, ("calculate", "lookup")), reg) == "required"

    def echo(x: str) -> str:
        """Echo x."""
        return x

    reg.register(echo)
    assert openai_tool_choice(Choice(False, ("calculate", "lookup")), reg) == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": n}} for n in ("calculate", "lookup")],
        },
    }


# -- llama.cpp's real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(server: Any) -> OpenAIBackend:
    return OpenAIBackend("smollm2", base_url=server.base_url, flavour="llamacpp", endpoint="chat")


def calc_tools() -> ToolRegistry:
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "agent_calculator.py"
    if "qlm_agent_calculator" not in sys.modules:
        spec = importlib.util.spec_from_file_location("qlm_agent_calculator", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["qlm_agent_calculator"] = module
        spec.loader.exec_module(module)
    calc = sys.modules["qlm_agent_calculator"]
    return ToolRegistry([calc.calculate, calc.convert_units])


def test_llamacpp_calculator_agent_end_to_end(llama: OpenAIBackend) -> None:
    reg = calc_tools()
    agent = Agent(llama, reg, tool_choice="required", max_turns=3)
    r = agent.run("What is 37 times 43?")
    assert r.stopped_by == "final" and r.output and not r.output.lstrip().startswith("<")
    assert r.tool_results and r.turns == len(r.tool_results) + 1
    for res in r.tool_results:  # every call the server generated parses and validates
        assert res.call is not None and res.call.name in reg.names
        assert validate(reg[res.call.name].parameters, res.call.arguments) == []
        assert res.ok, res.content
    assert (
        r.usage is not None and r.usage.requests - r.usage.retries == r.turns
    )  # (a timeout under load retries)
    assert all(h.mechanisms[0] == "grammar" for h in r.usage.holes)
    assert r.usage.completion_tokens == r.tokens > 0


def test_llamacpp_named_and_none_choices(llama: OpenAIBackend) -> None:
    reg = calc_tools()
    r = Agent(llama, reg, tool_choice="convert_units", max_turns=2).run("How many pounds is 12 kg?")
    first = r.tool_results[0]
    assert first.name == "convert_units" and first.error in (None, "exception")  # kg to km: it raises
    assert validate(reg["convert_units"].parameters, first.call.arguments) == []
    assert r.turns == 2 and r.stopped_by == "final"
    r = Agent(llama, reg, tool_choice="none", max_turn_tokens=40).run("What is 2 plus 2?")
    assert r.tool_results == [] and r.turns == 1 and r.output
    assert not r.output.startswith("<")


def test_the_agents_decoder_clause_goes_into_every_request(tok) -> None:
    """``decoder="sample(...)"``: on a hosted model the clause's temperature, top_p and seed are the
    requests' (the hosted hole decoder's sampling, as for a query's holes); argmax is temperature 0."""
    srv = FakeServer("llamacpp", default="Hi.")
    Agent(hosted(srv, tok), tools(), decoder="sample(temperature=0.7, top_p=0.9, seed=3)").run("x")
    srv_native = FakeServer("openai", default="Hi.")
    Agent(hosted(srv_native, tok), tools(), decoder="sample(temperature=0.7, top_p=0.9, seed=3)").run("x")
    for body in (chat_bodies(srv)[0], chat_bodies(srv_native)[0]):
        assert (body["temperature"], body["top_p"], body["seed"]) == (0.7, 0.9, 3)
    srv = FakeServer("llamacpp", default="Hi.")
    Agent(hosted(srv, tok), tools()).run("x")
    assert chat_bodies(srv)[0]["temperature"] == 0.0 and "seed" not in chat_bodies(srv)[0]

"""Tool calls generated under the tools' union grammar on the random model: call holes in queries,
narrowed views, budgets, the property that every generated call is valid (10^3 generations over
hypothesis-made tool sets), and the agent loop's constraints (tool_choice, budgets, approval, events)."""

# ruff: noqa: UP045  (Optional[...] is spelled out on purpose: it is what the schema tests cover)

from __future__ import annotations

import asyncio
import datetime
import enum
import inspect
import json
import math
import time
from typing import Annotated, Any, Literal, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

import querylm
from querylm.backends.models import resolve
from querylm.constraints.lang import Grammar, to_grammar
from querylm.constraints.matcher import accepts
from querylm.tools import Agent, Tool, ToolCall, ToolRegistry, ToolResult, tool, validate
from querylm.tools.agent import ToolFormat, resolve_choice, turn_grammar
from querylm.tools.tool import ToolError

_TABLES: list[Any] = []


def rnd(seed: int = 0):
    backend = resolve("random", seed=seed)
    # Each seed is a new backend object; share the vocabulary tables the first one built (~0.1 s each).
    if not _TABLES:
        _TABLES.append(backend.byte_tables)
    backend.__dict__["byte_tables"] = _TABLES[0]
    return backend


@tool(read_only=True)
def search(query: str, k: Annotated[int, Field(ge=1, le=5)] = 3) -> list[str]:
    """Search the notes."""
    return [f"{query}-{i}" for i in range(k)]


@tool(read_only=True)
def read(path: Literal["a.md", "b.md", "c.md"]) -> str:
    """Read one note."""
    return f"contents of {path}"


WRITES: list[Any] = []


@tool
def write(path: str, text: str) -> str:
    """Write a note."""
    WRITES.append((path, text))
    return "ok"


def registry(**kw: Any) -> ToolRegistry:
    return ToolRegistry([search, read, write], max_string_length=kw.pop("max_string_length", 12), **kw)


# -- call holes in queries ---------------------------------------------------------------------------------


def test_call_hole_dispatches_and_binds_the_result():
    tools = registry()
    r = querylm.run(
        '"Call: [CALL: tools]\\nResult: {CALL}\\n"\nreturn CALL',
        model=rnd(1),
        tools=tools,
    )
    res = r.return_value
    assert isinstance(res, ToolResult) and res.ok, res.content
    call = json.loads(r.holes[0].text)
    assert call == {"name": res.name, "arguments": res.call.arguments}
    assert r.prompt.endswith(f"Result: {res.content}\n")
    assert r.holes[0].constraint == "CALL: call of search | read | write"


def test_calls_view_binds_the_parsed_call_without_running_it():
    WRITES.clear()
    tools = registry()
    for seed in range(6):
        r = querylm.run('"[CALL: tools.calls()]"', model=rnd(seed), tools=tools)
        call = r.variables["CALL"]
        assert isinstance(call, ToolCall) and call.name in ("search", "read", "write")
    assert WRITES == []


def test_narrowed_hole_can_only_name_allowed_tools():
    tools = registry()
    names = set()
    for seed in range(12):
        r = querylm.run('"Untrusted text... [CALL: tools.read_only().calls()]"', model=rnd(seed), tools=tools)
        names.add(r.variables["CALL"].name)
    assert names <= {"search", "read"} and names
    # and the grammar itself refuses the other name, whatever the model would prefer
    tok = rnd().ll_tokenizer
    ro = to_grammar(Grammar("json", json.dumps(tools.read_only().call_schema()), "ro"), [], [])
    everything = to_grammar(Grammar("json", json.dumps(tools.call_schema()), "all"), [], [])
    write_call = '{"name": "write", "arguments": {"path": "x", "text": "y"}}'
    read_call = '{"name": "read", "arguments": {"path": "a.md"}}'
    assert accepts(tok, everything, write_call) and not accepts(tok, ro, write_call)
    assert accepts(tok, ro, read_call)
    assert not accepts(tok, ro, '{"name": "read", "arguments": {"path": "d.md"}}')
    assert not accepts(tok, ro, '{"name": "read", "arguments": {"path": "a.md", "x": 1}}')
    assert not accepts(tok, ro, '{"name": "read",\n "arguments": {"path": "a.md"}}')  # compact only


def test_call_budget_ends_in_a_constraint_error_and_runs_nothing():
    WRITES.clear()
    tools = registry()
    with pytest.raises(querylm.ConstraintError, match="could not be completed within its budget"):
        querylm.run("\"[CALL: tools.only('write')]\" where len(TOKENS(CALL)) < 8", model=rnd(2), tools=tools)
    assert WRITES == []


def test_code_after_the_hole_sees_the_result():
    tools = registry()
    q = """
"Look something up: [CALL: tools.only('search')]\\n"
if CALL.ok:
    "Found {len(CALL.value)} results: {CALL}\\n"
return CALL.value
"""
    r = querylm.run(q, model=rnd(4), tools=tools)
    assert isinstance(r.return_value, list) and 1 <= len(r.return_value) <= 5
    assert f"Found {len(r.return_value)} results" in r.prompt


# -- the property: every generated call parses, names an allowed tool, validates ----------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: int
    y: int = 0
    label: Optional[str] = None


BASE_TYPES = st.sampled_from(
    [
        int,
        float,
        bool,
        str,
        Color,
        Point,
        Annotated[int, Field(ge=-2, le=9)],
        Annotated[str, Field(min_length=2)],
    ]
)
LITERALS = st.lists(st.sampled_from(["a", "b c", "ü", "x-y", "1"]), min_size=1, max_size=3, unique=True).map(
    lambda vs: Literal[tuple(vs)]  # type: ignore[misc]
)


def _wrap(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(inner.map(lambda t: list[t]), inner.map(lambda t: Optional[t]))  # type: ignore[valid-type]


ANNOTATIONS = st.recursive(st.one_of(BASE_TYPES, LITERALS), _wrap, max_leaves=3)


@st.composite
def signature_tools(draw: st.DrawFn, name: str) -> Tool:
    """A tool whose schema comes from a generated signature (the pydantic path)."""
    params = []
    for i in range(draw(st.integers(0, 3))):
        ann = draw(ANNOTATIONS)
        optional = draw(st.booleans())
        default = None if optional else inspect.Parameter.empty
        params.append(
            inspect.Parameter(
                f"p{i}",
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Optional[ann] if optional else ann,
            )
        )

    def fn(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return tool(name=name)(fn)


LEAF_SCHEMAS = st.sampled_from(
    [
        {"type": "integer", "minimum": -3, "maximum": 7},
        {"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 6},
        {"type": "number", "minimum": 0, "maximum": 2.5},
        {"type": "string", "pattern": "^[a-z]{2,5}$"},
        {"type": "string", "minLength": 3, "maxLength": 6},
        {"type": "string", "format": "date"},
        {"type": "string", "format": "uuid"},
        {"enum": [1, "a", None, True]},
        {"const": "k"},
        {"type": "boolean"},
        {"type": "null"},
        {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
    ]
)


def _json_wrap(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    arrays = st.builds(
        lambda items, lo: {"type": "array", "items": items, "minItems": lo, "maxItems": lo + 2},
        inner,
        st.integers(0, 2),
    )
    objects = st.dictionaries(st.sampled_from(["a", "b", "c d", "é"]), inner, min_size=1, max_size=3).flatmap(
        lambda props: st.builds(
            lambda req: {"type": "object", "properties": props, "required": sorted(req)},
            st.sets(st.sampled_from(sorted(props))),
        )
    )
    return st.one_of(arrays, objects)


@st.composite
def schema_tools(draw: st.DrawFn, name: str) -> Tool:
    """A tool with a generated explicit schema (keywords pydantic never emits)."""
    props = draw(
        st.dictionaries(
            st.sampled_from(["q", "r", "s"]), st.recursive(LEAF_SCHEMAS, _json_wrap, max_leaves=4), max_size=3
        )
    )
    required = draw(st.sets(st.sampled_from(sorted(props)))) if props else set()
    schema = {
        "type": "object",
        "properties": props,
        "required": sorted(required),
        "additionalProperties": False,
    }
    return Tool(lambda **kw: kw, name=name, schema=schema)


@st.composite
def registries(draw: st.DrawFn) -> tuple[ToolRegistry, list[ToolRegistry], int]:
    n = draw(st.integers(1, 4))
    tools = [draw(st.one_of(signature_tools(f"t{i}"), schema_tools(f"t{i}"))) for i in range(n)]
    reg = ToolRegistry(tools, max_string_length=8, max_items=3)
    subsets = [draw(st.sets(st.sampled_from(reg.names), min_size=1)) for _ in range(2)]
    views = [reg.calls()] + [reg.only(*sorted(s)).calls() for s in subsets]
    return reg, views, draw(st.integers(0, 2**16))


CALLS_PER_EXAMPLE = 10
EXAMPLES = 100  # 10^3 generations in all


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(registries())
def test_every_generated_call_is_valid(case):
    reg, views, seed = case
    q = 'for i in range(N):\n    "[CALL: views[i % len(views)]]\\n"'
    r = querylm.run(q, model=rnd(seed), views=views, N=CALLS_PER_EXAMPLE, max_len=1 << 20)
    assert len(r.holes) == CALLS_PER_EXAMPLE
    for i, hole in enumerate(r.holes):
        parsed = json.loads(hole.text)  # it parses
        call = hole.value
        assert isinstance(call, ToolCall) and parsed == call.to_json()
        assert call.name in views[i % len(views)].names  # names an allowed tool
        assert validate(reg[call.name].parameters, call.arguments) == []  # valid under its full schema
        result = reg.dispatch(call)
        assert result.ok, result.content  # and the function accepts it


# -- the agent loop on the random model ----------------------------------------------------------------------


def test_turn_grammar_enforces_tool_choice():
    reg = registry()
    fmt = ToolFormat()
    tok = rnd().ll_tokenizer

    def ok(choice: Any, text: str, max_calls: int = 2) -> bool:
        lark = turn_grammar(reg, resolve_choice(choice, reg), fmt, max_calls)
        return accepts(tok, to_grammar(Grammar("lark", lark, "t"), [], []), text)

    call = fmt.calls_text([ToolCall("read", {"path": "a.md"})])
    two = fmt.calls_text([ToolCall("read", {"path": "a.md"}), ToolCall("search", {"query": "x"})])
    three = fmt.calls_text([ToolCall("read", {"path": "a.md"})] * 3)
    assert ok("auto", call) and ok("auto", "It is 4.") and ok("auto", two) and not ok("auto", three)
    assert ok("required", call) and not ok("required", "It is 4.")
    assert ok("none", "It is 4.") and not ok("none", call)
    assert ok("read", call) and not ok("search", call) and not ok("read", two)
    assert ok(["read", "search"], two) and not ok(["search"], two) and ok(["search"], "text")
    assert ok({"mode": "required", "tools": ["read"]}, call) and not ok(
        {"mode": "required", "tools": ["read"]}, "x"
    )
    assert not ok("auto", "<tool_call>[oops") and not ok("auto", "<tool_response>\n4\n</tool_response>")
    assert not ok("auto", "<tool_response") and not ok("auto", " \n<user_response>4") and ok("auto", "4 <")
    assert not ok("auto", '<tool_call>[\n{"name": "read", "arguments": {"path": "z.md"}}\n]</tool_call>')
    with pytest.raises(ToolError, match=r"unknown tool 'delete' \(known: search, read, write\)"):
        resolve_choice("delete", reg)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"tool_choice": "delete"}, r"unknown tool 'delete' \(known: search, read, write\)"),
        ({"tool_choice": ["read", "rm", "mv"]}, r"unknown tools 'rm', 'mv' \(known: search, read, write\)"),
        ({"tool_choice": {"mode": "required", "tools": ["rm"]}}, r"unknown tool 'rm' \(known"),
        ({"tool_choice": {"type": "function", "function": {"name": "rm"}}}, r"unknown tool 'rm' \(known"),
        ({"tool_choice": {"mode": "sometimes"}}, r'a dict is \{"mode"'),
        ({"tool_choice": 3}, "unknown tool_choice 3"),
        ({"tool_choice": "none", "answer_last_turn": False, "max_turns": 1}, "allows none"),
        ({"tool_choice": [], "answer_last_turn": False}, "allows none"),
        ({"tool_choice": "required", "answer_last_turn": True, "max_turns": 1}, "answer in text"),
        ({"tool_choice": "required", "max_tool_calls": 0}, "max_tool_calls=0 allows none"),
        ({"tool_choice": {"mode": "required", "tools": []}}, "requires a call but allows no tool"),
        ({"max_turns": 0}, "max_turns must be a whole number >= 1"),
        ({"parallel_tool_calls": 0}, "parallel_tool_calls must be"),
        ({"max_tool_calls": -1}, "max_tool_calls must be a whole number >= 0"),
        ({"max_turn_tokens": 0}, "max_turn_tokens must be"),
        ({"max_tokens": 2.5}, "max_tokens must be"),
    ],
)
def test_agent_settings_that_contradict_each_other_are_tool_errors(settings, match):
    with pytest.raises(ToolError, match=match):
        Agent(rnd(), registry(), **settings)


def test_a_required_call_with_no_tools_and_a_runs_unknown_choice_are_tool_errors():
    with pytest.raises(
        ToolError, match=r"tool_choice='required' requires a call but allows no tool \(registered: none"
    ):
        Agent(rnd(), [], tool_choice="required")
    agent = Agent(rnd(), registry(), answer_last_turn=False)
    with pytest.raises(ToolError, match="unknown tool 'rm'"):
        agent.run("x", tool_choice="rm")
    with pytest.raises(ToolError, match="allows none"):
        agent.run("x", tool_choice="none")
    assert Agent(rnd(), [], max_turn_tokens=8).run("Hi").stopped_by in ("final", "truncated")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("choice", "first_turn_tools"),
    [
        ("required", {"search", "read", "write"}),
        ("read", {"read"}),
        ({"mode": "required", "tools": ["search", "read"]}, {"search", "read"}),
    ],
)
def test_agent_forced_choices_on_random(seed, choice, first_turn_tools):
    agent = Agent(
        rnd(seed), registry(), tool_choice=choice, max_turns=3, max_turn_tokens=80, parallel_tool_calls=2
    )
    events = list(agent.stream("Do something."))
    result = events[-1].result
    first = [e for e in events if e.type == "tool_arguments_complete" and e.turn == 1]
    assert result.stopped_by in ("final", "truncated")
    if result.stopped_by == "final":
        assert 1 <= len(first) <= 2 and {e.call.name for e in first} <= first_turn_tools
        assert all(r.ok for r in result.tool_results), [r.content for r in result.tool_results]
    else:  # a call that did not fit the turn budget: reported, never run
        assert result.tool_results[-1].error == "truncated" and events[-2].type == "error"


class Place(BaseModel):
    city: str
    country: str = "NL"


@pytest.mark.parametrize("seed", range(3))
def test_agent_calls_tools_with_real_world_names_on_random(seed):
    """Dotted, slashed and unicode names are the grammar's names as they are (a model argument's $defs
    renamed by wire name, which a JSON pointer can hold), streamed and dispatched as themselves (seeds
    0-2 call all three tools between them)."""

    def visit(place: Place) -> str:
        """Visit a place."""
        return place.city

    def factorial(n: Annotated[int, Field(ge=0, le=9)]) -> int:
        """n!"""
        return math.factorial(n)

    reg = ToolRegistry([Tool(visit, name="trips/visit"), Tool(factorial, name="math.factorial")])
    reg.register(Tool(lambda text: text[::-1], name="文字@rev", schema=SCHEMA_TEXT))
    agent = Agent(rnd(seed), reg, tool_choice="required", max_turns=1, parallel_tool_calls=2)
    events = list(agent.stream("Go."))
    result = events[-1].result
    started = [e.name for e in events if e.type == "tool_call_started"]
    assert result.tool_results and started == [r.name for r in result.tool_results]
    assert set(started) <= set(reg.names)
    assert all(r.ok for r in result.tool_results), [r.content for r in result.tool_results]


SCHEMA_TEXT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


class TreeNode(BaseModel):
    label: str
    children: list[TreeNode] = []


def test_generated_dates_exist():
    """llguidance's `date` format admits any February 29; the generation schema adds the calendar, so a
    generated call never fails jsonschema's date check."""

    @tool
    def plan(day: datetime.date, at: datetime.datetime) -> str:
        """Plan something."""
        return "ok"

    grammar = to_grammar(Grammar("json", json.dumps(ToolRegistry([plan]).call_schema()), "call"), [], [])
    tok = rnd().ll_tokenizer
    call = '{{"name": "plan", "arguments": {{"day": "{}", "at": "{}T10:00:00Z"}}}}'
    assert accepts(tok, grammar, call.format("2024-02-29", "2000-02-29"))
    for bad in [("4650-02-29", "2024-01-01"), ("2024-01-01", "1900-02-29"), ("0000-01-01", "2024-01-01")]:
        assert not accepts(tok, grammar, call.format(*bad)), bad


def test_call_token_bound_follows_the_schema_bounds():
    @tool
    def book(
        city: Annotated[str, Field(max_length=10)],
        day: Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")],
        seats: Annotated[int, Field(ge=1, le=9)],
        mode: Literal["bus", "train"] = "bus",
    ) -> str:
        """Book a trip."""
        return "ok"

    @tool
    def tree(root: TreeNode) -> str:
        """Store a tree."""
        return "ok"

    reg = ToolRegistry([book, tree], max_string_length=12)
    wrap = len('{"name": "book", "arguments": }') + 4  # separators
    city, day, seats, mode = 4 * 10 + 2, 4 * 10 + 2, 24, len('"train"')
    keys = sum(len(f'"{k}": ') + 2 for k in ("city", "day", "seats", "mode")) + 2
    assert reg.call_token_bound(["book"]) == pytest.approx(wrap + keys + city + day + seats + mode, abs=8)
    # The longest call text really fits: every string at its bound, in 4-byte characters.
    longest = {"city": "😀" * 10, "day": "2025-01-01", "seats": 9, "mode": "train"}
    text = json.dumps({"name": "book", "arguments": longest}, ensure_ascii=False)
    assert len(text.encode()) <= reg.call_token_bound(["book"])
    assert reg.call_token_bound(["tree"]) is None  # recursive: no bound


@pytest.mark.parametrize("seed", range(6))
def test_agent_sizes_the_turn_so_calls_always_fit(seed):
    """With no max_turn_tokens, a turn gets the tokens its longest call can take: on random logits
    (which ramble to every string's bound) a call is never truncated, and always valid."""
    agent = Agent(rnd(seed), registry(), tool_choice="required", max_turns=1, answer_last_turn=False)
    result = agent.run("Do something.")
    assert result.tool_results and all(r.error != "truncated" for r in result.tool_results)
    assert all(r.ok for r in result.tool_results), [r.content for r in result.tool_results]


@pytest.mark.parametrize("seed", range(3))
def test_agent_none_never_calls(seed):
    agent = Agent(rnd(seed), registry(), tool_choice="none", max_turn_tokens=20)
    result = agent.run("Hi")
    assert result.tool_results == [] and result.stopped_by == "final" and result.turns == 1
    assert result.output and result.tokens == 20
    assert result.messages[-1] == {"role": "assistant", "content": result.output}


def test_agent_event_stream_order():
    agent = Agent(rnd(1), registry(), tool_choice="read", max_turns=2, max_turn_tokens=60)
    events = list(agent.stream("Read a."))
    kinds = [e.type for e in events if e.type != "token"]
    assert kinds == [
        "tool_call_started",
        "tool_arguments_complete",
        "tool_result",
        "turn_end",
        "turn_end",
        "final",
    ]
    tokens = "".join(e.text for e in events if e.type == "token" and e.turn == 1)
    assert tokens.startswith('<tool_call>[\n{"name": "read", "arguments": ')
    started = next(e for e in events if e.type == "tool_call_started")
    assert started.name == "read"
    res = next(e for e in events if e.type == "tool_result").result
    assert res.ok and res.content.startswith("contents of ")
    final = events[-1].result
    assert final.turns == 2 and final.output == events[-2].text.strip()
    assert [m["role"] for m in final.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert final.messages[2]["tool_calls"][0]["function"]["name"] == "read"


def test_agent_budgets_end_the_run():
    # max_tool_calls: once spent, the next turn must answer
    agent = Agent(
        rnd(3),
        registry(),
        tool_choice="read",
        reset_tool_choice=False,
        max_tool_calls=1,
        max_turns=4,
        max_turn_tokens=60,
    )
    r = agent.run("x")
    assert len(r.tool_results) == 1 and r.stopped_by == "final" and r.turns == 2
    # max_turns with a forced call every turn and no answer turn: ends by max_turns
    agent = Agent(
        rnd(3),
        registry(),
        tool_choice="read",
        reset_tool_choice=False,
        answer_last_turn=False,
        max_turns=2,
        max_turn_tokens=60,
    )
    r = agent.run("x")
    assert r.stopped_by == "max_turns" and r.turns == 2 and len(r.tool_results) == 2 and r.output == ""
    # max_tokens: the run's token budget
    agent = Agent(rnd(3), registry(), tool_choice="read", max_tokens=30, max_turn_tokens=60)
    r = agent.run("x")
    assert r.stopped_by in ("max_tokens", "truncated") and r.tokens <= 30
    assert all(res.error == "truncated" for res in r.tool_results)


def test_agent_truncated_call_is_never_run():
    WRITES.clear()
    agent = Agent(rnd(0), registry(), tool_choice="write", max_turn_tokens=12)
    events = list(agent.stream("Write."))
    result = events[-1].result
    assert result.stopped_by == "truncated" and WRITES == []
    assert result.tool_results[0].error == "truncated" and "not run" in events[-2].text


def test_agent_approval_hook_and_errors_fed_back():
    WRITES.clear()
    asked = []

    def approve(call: ToolCall, t: Tool) -> bool | str:
        asked.append(call.name)
        return t.read_only or "writes need a human"

    agent = Agent(rnd(5), registry(), tool_choice="write", approve=approve, max_turns=2, max_turn_tokens=80)
    r = agent.run("Write a note.")
    assert asked == ["write"] and WRITES == []
    denied = r.tool_results[0]
    assert denied.error == "denied" and denied.message == "writes need a human"
    tool_msg = next(m for m in r.messages if m["role"] == "tool")
    assert json.loads(tool_msg["content"]) == {"error": "denied", "message": "writes need a human"}


def test_agent_parallel_calls_run_concurrently():
    @tool
    async def slow(n: int) -> int:
        await asyncio.sleep(0.3)
        return n

    reg = ToolRegistry([slow])
    for seed in range(20):
        agent = Agent(
            rnd(seed),
            reg,
            tool_choice="required",
            parallel_tool_calls=3,
            max_turns=1,
            answer_last_turn=False,
            max_turn_tokens=60,
        )
        events = []
        start = time.perf_counter()
        for e in agent.stream("go"):
            events.append((e.type, time.perf_counter() - start))
        results = [t for k, t in events if k == "tool_result"]
        if len(results) >= 2:
            assert len(results) <= 3
            assert max(results) - min(results) < 0.1  # finished together: ran at the same time
            return
    pytest.fail("no seed made parallel calls")


def test_agent_continues_a_conversation_and_runs_in_an_event_loop():
    loops = []

    @tool(read_only=True)
    async def where() -> str:
        loops.append(asyncio.get_running_loop())
        return "here"

    agent = Agent(rnd(2), ToolRegistry([where]), tool_choice="required", max_turn_tokens=30, max_turns=2)

    async def main():
        first = await agent.arun("Where?")
        second = await agent.arun("And now?", history=first.messages)
        return asyncio.get_running_loop(), first, second

    loop, first, second = asyncio.run(main())
    assert loops and all(lp is loop for lp in loops)  # async tools run on the caller's loop
    assert second.messages[: len(first.messages)] == first.messages
    assert [m["role"] for m in second.messages[len(first.messages) :]][0] == "user"


def test_an_object_without_properties_accepts_any_object():
    """``{"type": "object"}`` is any object (issue 14): generated open, exported non-strict; an object
    that names its properties stays closed."""

    schema = {
        "type": "object",
        "properties": {
            "options": {"type": "object"},
            "point": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
        "required": ["options", "point"],
    }
    configure = tool(lambda options, point: "ok", name="configure", description="Configure.", schema=schema)
    reg = ToolRegistry([configure])
    grammar = to_grammar(Grammar("json", json.dumps(reg.call_schema()), "call"), [], [])
    tok = rnd().ll_tokenizer
    call = '{{"name": "configure", "arguments": {{"options": {}, "point": {}}}}}'
    assert accepts(tok, grammar, call.format('{"depth": 3, "mode": "fast"}', '{"x": 1}'))
    assert accepts(tok, grammar, call.format("{}", "{}"))
    assert not accepts(tok, grammar, call.format("{}", '{"x": 1, "y": 2}'))
    assert reg.dispatch({"name": "configure", "arguments": {"options": {"depth": 3}, "point": {"x": 1}}}).ok
    assert configure.to_openai()["function"]["strict"] is False


@pytest.mark.parametrize("choice", ["required", "read"])
def test_a_required_call_with_one_turn_is_made_not_dropped(choice):
    """tool_choice that forces a call with max_turns=1: the turn calls (issue 14: the default
    answer_last_turn used to turn it into a text answer); asking for both is an error."""
    for seed in range(3):
        result = Agent(rnd(seed), registry(), tool_choice=choice, max_turns=1).run("Read a.md")
        assert len(result.tool_results) >= 1 and result.turns == 1 and result.output == ""
        assert choice == "required" or {r.call.name for r in result.tool_results if r.call} == {"read"}
    with pytest.raises(ToolError, match="answer_last_turn"):
        Agent(rnd(), registry(), tool_choice=choice, max_turns=1, answer_last_turn=True)
    with pytest.raises(ToolError, match="answer_last_turn"):
        Agent(rnd(), registry(), max_turns=1, answer_last_turn=True).run("x", tool_choice=choice)

"""Tools without a model: schemas from signatures, jsonschema validation, dispatch and its structured
errors, the OpenAI export and its strict projection, LangChain round trips."""

# ruff: noqa: UP045  (Optional[...] is spelled out on purpose: it is what the schema tests cover)

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import threading
import time
from typing import Annotated, Any, Literal, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

import querylm
from querylm.tools import Tool, ToolCall, ToolError, ToolRegistry, ToolResult, tool
from querylm.tools.openai import strict_call_arguments, strict_projection
from querylm.tools.tool import NAME_RE, WIRE_NAME_RE, parse_docstring, wire_name

# -- schema generation: a table of signatures and the schemas they must give -----------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    zip: str | None = None


class Person(BaseModel):
    name: str
    address: Address
    tags: list[str] = []


def f_defaults(a: int, b: str = "x", c: float = 1.5, d: bool = False): ...
def f_optional(a: Optional[int] = None, b: Optional[str] = "hi", c: int | None = None): ...
def f_optional_required(a: Optional[int]): ...
def f_literal(mode: Literal["fast", "slow"], n: Literal[1, 2, 3] = 1): ...
def f_enum(color: Color, other: Color = Color.GREEN): ...
def f_nested(person: Person, people: list[Person] = []): ...  # noqa: B006
def f_lists(xs: list[int], grid: list[list[float]], names: tuple[str, str] = ("a", "b")): ...
def f_dict(counts: dict[str, int]): ...
def f_kwargs(a: int, **rest: str): ...
def f_annotated(n: Annotated[int, Field(ge=1, le=10, description="how many")] = 3): ...
def f_date(day: datetime.date): ...
def f_untyped(x, y=2): ...


SCHEMA_TABLE: list[tuple[Any, dict[str, Any], list[str]]] = [
    (
        f_defaults,
        {
            "a": {"type": "integer"},
            "b": {"type": "string", "default": "x"},
            "c": {"type": "number", "default": 1.5},
            "d": {"type": "boolean", "default": False},
        },
        ["a"],
    ),
    (
        f_optional,
        {
            "a": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": "hi"},
            "c": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        },
        [],
    ),
    (f_optional_required, {"a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}, ["a"]),
    (
        f_literal,
        {
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "n": {"type": "integer", "enum": [1, 2, 3], "default": 1},
        },
        ["mode"],
    ),
    (
        f_enum,
        {"color": {"$ref": "#/$defs/Color"}, "other": {"$ref": "#/$defs/Color", "default": "green"}},
        ["color"],
    ),
    (
        f_nested,
        {
            "person": {"$ref": "#/$defs/Person"},
            "people": {"type": "array", "items": {"$ref": "#/$defs/Person"}, "default": []},
        },
        ["person"],
    ),
    (
        f_lists,
        {
            "xs": {"type": "array", "items": {"type": "integer"}},
            "grid": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "names": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
                "default": ["a", "b"],
            },
        },
        ["xs", "grid"],
    ),
    (f_dict, {"counts": {"type": "object", "additionalProperties": {"type": "integer"}}}, ["counts"]),
    (
        f_annotated,
        {"n": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3, "description": "how many"}},
        [],
    ),
    (f_date, {"day": {"type": "string", "format": "date"}}, ["day"]),
    (f_untyped, {"x": {}, "y": {"default": 2}}, ["x"]),
]


@pytest.mark.parametrize(("fn", "props", "required"), SCHEMA_TABLE, ids=[r[0].__name__ for r in SCHEMA_TABLE])
def test_schema_from_signature(fn, props, required):
    t = tool(fn)
    schema = t.parameters
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["properties"] == props
    assert sorted(schema.get("required", [])) == sorted(required)
    assert "title" not in json.dumps(schema["properties"]).replace('"title": "Title"', "")


def test_schema_defs_for_enums_and_nested_models():
    s = tool(f_nested).parameters
    assert s["$defs"]["Person"]["required"] == ["name", "address"]
    assert s["$defs"]["Person"]["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert s["$defs"]["Address"]["properties"]["zip"]["default"] is None
    assert tool(f_enum).parameters["$defs"]["Color"] == {"type": "string", "enum": ["red", "green"]}


def test_closed_objects_unless_kwargs():
    assert tool(f_defaults).parameters["additionalProperties"] is False
    assert tool(f_kwargs).parameters["additionalProperties"] == {"type": "string"}


def test_property_named_title_is_not_mistaken_for_a_keyword():
    def f(title: str, default: int = 0): ...

    s = tool(f).parameters
    assert set(s["properties"]) == {"title", "default"}


DOCSTRINGS = [
    (
        "google",
        """Find notes.

        Longer text.

        Args:
            query (str): What to look for,
                over several lines.
            k: How many.

        Returns:
            The notes.
        """,
    ),
    (
        "numpy",
        """Find notes.

        Longer text.

        Parameters
        ----------
        query : str
            What to look for,
            over several lines.
        k : int
            How many.

        Returns
        -------
        list
        """,
    ),
    (
        "sphinx",
        """Find notes.

        Longer text.

        :param query: What to look for,
            over several lines.
        :param int k: How many.
        :returns: The notes.
        """,
    ),
]


@pytest.mark.parametrize(("style", "doc"), DOCSTRINGS, ids=[d[0] for d in DOCSTRINGS])
def test_docstring_descriptions(style, doc):
    summary, params = parse_docstring(doc)
    assert summary == "Find notes.\n\nLonger text."
    assert params == {"query": "What to look for, over several lines.", "k": "How many."}

    def search(query: str, k: int = 3) -> list[str]:
        return []

    search.__doc__ = doc
    t = tool(search)
    assert t.description == "Find notes.\n\nLonger text."
    assert t.parameters["properties"]["query"]["description"] == "What to look for, over several lines."
    assert t.parameters["properties"]["k"] == {"type": "integer", "default": 3, "description": "How many."}


def test_tool_options_and_identity():
    @tool(name="find", description="Look up.", timeout=2, read_only=True)
    def search(q: str) -> str:
        """Ignored description."""
        return q * 2

    assert (search.name, search.description, search.timeout, search.read_only) == (
        "find",
        "Look up.",
        2,
        True,
    )
    assert search("ab") == "abab"  # the Tool still calls like the function
    assert search.__wrapped__.__name__ == "search"
    assert search.to_json() == {"name": "find", "description": "Look up.", "parameters": search.parameters}


def test_explicit_schema_passes_json_values_unchanged():
    seen = {}

    @tool(schema={"type": "object", "properties": {"when": {"type": "string"}}, "required": ["when"]})
    def at(**kw: Any) -> None:
        seen.update(kw)

    assert ToolRegistry([at]).dispatch({"name": "at", "arguments": {"when": "now"}}).ok
    assert seen == {"when": "now"}


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: tool(name="v")(lambda *xs: None), "can't be passed by a JSON call"),
        (lambda: tool(name="bad name!")(lambda: None), "must be 1 to 256 letters"),
        (lambda: tool(name="")(lambda: None), "must be 1 to 256 letters"),
        (lambda: tool(name="a" * 257)(lambda: None), "must be 1 to 256 letters"),
        (lambda: tool(name="read\n")(lambda: None), "must be 1 to 256 letters"),
        (lambda: tool(name='say"hi"')(lambda: None), "must be 1 to 256 letters"),
        (
            lambda: tool(name="s", schema={"type": "object", "properties": {"a": {"type": "nope"}}})(
                lambda: None
            ),
            "invalid JSON Schema",
        ),
        (lambda: tool(name="s", schema={"type": "string"})(lambda: None), "must be an object schema"),
        (lambda: ToolRegistry([tool(f_defaults), Tool(f_defaults)]), "already registered"),
        (lambda: ToolRegistry([tool(f_defaults)]).only("nope"), "unknown tool"),
        (lambda: ToolRegistry([42]), "can't register"),
    ],
)
def test_definition_errors_raise_tool_error(make, match):
    with pytest.raises(ToolError, match=match):
        make()
    assert issubclass(ToolError, querylm.QueryError)


# -- real-world tool names and the names hosted servers get ---------------------------------------------


REAL_NAMES = ["math.factorial", "files/read", "user@svc", "計算", "ns:tool+v2", "a" * 256, "get_weather"]


def named(name: str) -> Tool:
    @tool(name=name)
    def f(n: int) -> int:
        """Add one."""
        return n + 1

    return f


def test_real_world_tool_names_are_accepted_and_sent_by_wire_name():
    reg = ToolRegistry([named(n) for n in REAL_NAMES])
    assert reg.names == REAL_NAMES
    wires = [reg.wire_name(n) for n in REAL_NAMES]
    assert all(WIRE_NAME_RE.fullmatch(w) for w in wires) and len(set(wires)) == len(wires)
    assert reg.wire_name("get_weather") == "get_weather"  # a name OpenAI allows goes unchanged
    assert wires[0].startswith("math_factorial_") and wires[1].startswith("files_read_")
    assert [reg.real_name(w) for w in wires] == REAL_NAMES
    assert [t["function"]["name"] for t in reg.to_openai()] == wires
    # a server's call names the wire name; it is read back as the tool's own and runs it
    call = reg.parse_openai({"id": "c1", "function": {"name": wires[0], "arguments": '{"n": 4}'}})
    assert isinstance(call, ToolCall) and call.name == "math.factorial"
    assert reg.dispatch(call).value == 5
    bad = reg.parse_openai({"id": "c2", "function": {"name": wires[1], "arguments": "{"}})
    assert isinstance(bad, ToolResult) and bad.call is not None and bad.call.name == "files/read"
    # the local grammar uses the names as they are, and its $defs stay JSON-pointer safe
    schema = reg.call_schema()
    assert [b["properties"]["name"]["const"] for b in schema["anyOf"]] == REAL_NAMES


def test_a_name_equal_to_another_tools_wire_name_is_refused():
    with pytest.raises(ToolError, match="would be sent to hosted servers as 'files_read_"):
        ToolRegistry([named(wire_name("files/read")), named("files/read")])


@given(st.sets(st.from_regex(NAME_RE, fullmatch=True), min_size=1, max_size=6))
def test_wire_names_are_allowed_deterministic_and_distinct(names):
    wires = {n: wire_name(n) for n in names}
    assert all(WIRE_NAME_RE.fullmatch(w) for w in wires.values())
    assert len(set(wires.values())) == len(names)
    assert all(wire_name(n) == w for n, w in wires.items())
    assert all(w == n for n, w in wires.items() if WIRE_NAME_RE.fullmatch(n))


def test_async_tools_are_detected_and_awaited():
    @tool
    async def slow_add(a: int, b: int) -> int:
        await asyncio.sleep(0.01)
        return a + b

    assert slow_add.is_async
    r = ToolRegistry([slow_add]).dispatch({"name": "slow_add", "arguments": {"a": 2, "b": 3}})
    assert r.ok and r.value == 5 and r.content == "5"


def test_arguments_are_converted_to_annotated_types():
    got = {}

    @tool
    def place(person: Person, color: Color = Color.RED, day: Optional[datetime.date] = None) -> str:
        got.update(person=person, color=color, day=day)
        return "ok"

    r = ToolRegistry([place]).dispatch(
        {
            "name": "place",
            "arguments": {"person": {"name": "A", "address": {"street": "S"}}, "day": "2024-02-29"},
        }
    )
    assert r.ok, r.content
    assert isinstance(got["person"], Person) and got["person"].address.street == "S"
    assert got["color"] is Color.RED and got["day"] == datetime.date(2024, 2, 29)


# -- validation: every error, with its JSON path -----------------------------------------------------------


@tool
def order(
    items: list[Annotated[dict[str, int], Field(min_length=1)]],
    person: Person,
    mode: Literal["fast", "slow"] = "fast",
    count: Annotated[int, Field(ge=1)] = 1,
    day: datetime.date | None = None,
) -> str:
    """Order things."""
    return "ok"


def test_validation_reports_all_errors_with_paths():
    tools = ToolRegistry([order])
    r = tools.dispatch(
        {
            "name": "order",
            "arguments": {
                "items": [{"a": 1}, {"b": "two"}, {}],
                "person": {"address": {"street": 5}},
                "mode": "medium",
                "count": 0,
                "day": "2024-13-45",
                "extra": True,
            },
        }
    )
    assert not r.ok and r.error == "invalid_arguments"
    got = {(i.path, i.keyword) for i in r.issues}
    assert got == {
        ("$", "additionalProperties"),
        ("$.items[1].b", "type"),
        ("$.items[2]", "minProperties"),
        ("$.person", "required"),
        ("$.person.address.street", "type"),
        ("$.mode", "enum"),
        ("$.count", "minimum"),
        ("$.day", "format"),
    }
    body = json.loads(r.content)
    assert body["error"] == "invalid_arguments" and len(body["errors"]) == len(r.issues) == 8
    assert all(set(e) == {"path", "message", "keyword"} for e in body["errors"])


def test_validation_runs_before_the_function():
    calls = []

    @tool
    def f(n: int) -> int:
        calls.append(n)
        return n

    r = ToolRegistry([f]).dispatch({"name": "f", "arguments": {"n": "3"}})  # pydantic would coerce "3"
    assert r.error == "invalid_arguments" and calls == []


# -- dispatch: structured errors, never a crash ------------------------------------------------------------


@tool
def echo(text: str) -> str:
    """Say it back."""
    return text


@tool
def boom(n: int) -> int:
    raise RuntimeError(f"exploded at {n}")


@tool(timeout=0.2)
def hang(n: int = 0) -> int:
    time.sleep(3)
    return n


@tool(timeout=0.2)
async def ahang(n: int = 0) -> int:
    await asyncio.sleep(3)
    return n


REG = ToolRegistry([echo, boom, hang, ahang])


@pytest.mark.parametrize(
    ("call", "kind", "fragment"),
    [
        (
            {"name": "nope", "arguments": {}},
            "unknown_tool",
            "'nope' does not exist (available: echo, boom, hang, ahang)",
        ),
        ('{"name": "echo", "arguments": {"text": "hi"', "invalid_json", "not valid JSON"),
        ({"name": "echo", "arguments": '{"text": '}, "invalid_json", "arguments are not valid JSON"),
        ({"arguments": {}}, "invalid_call", '{"name": ..., "arguments": {...}}'),
        ([1, 2], "invalid_call", "a call is an object"),
        ({"name": "echo", "arguments": [1]}, "invalid_call", "must be a JSON object"),
        ({"name": "echo", "arguments": {}}, "invalid_arguments", "'text' is a required property"),
        ({"name": "boom", "arguments": {"n": 7}}, "exception", "boom raised RuntimeError: exploded at 7"),
        ({"name": "hang", "arguments": {}}, "timeout", "hang did not finish within 0.2 s"),
        ({"name": "ahang", "arguments": {}}, "timeout", "ahang did not finish within 0.2 s"),
    ],
)
def test_dispatch_errors_are_results(call, kind, fragment):
    start = time.perf_counter()
    r = REG.dispatch(call)
    assert time.perf_counter() - start < 2  # a hanging tool is abandoned at its timeout
    assert isinstance(r, ToolResult) and not r.ok and r.error == kind
    assert fragment in r.message
    body = json.loads(r.content)
    assert body["error"] == kind and fragment in body["message"]


def test_dispatch_accepts_openai_tool_call_entries_and_json_strings():
    r = REG.dispatch(
        {"id": "call_9", "type": "function", "function": {"name": "echo", "arguments": '{"text": "x"}'}}
    )
    assert r.ok and r.value == "x" and r.call.id == "call_9"
    r = REG.dispatch('{"name": "echo", "arguments": {"text": "y"}}')
    assert r.ok and r.to_message() == {"role": "tool", "tool_call_id": r.call.id, "content": "y"}


@pytest.mark.parametrize(
    ("detail", "keys"),
    [
        ("full", {"error", "message", "traceback"}),
        ("errors", {"error", "message"}),
        ("brief", {"error", "message"}),
        ("kind", {"error"}),
    ],
)
def test_error_detail_levels(detail, keys):
    reg = ToolRegistry([boom, echo], error_detail=detail)
    body = json.loads(reg.dispatch({"name": "boom", "arguments": {"n": 1}}).content)
    assert set(body) == keys
    if detail == "full":
        assert "RuntimeError: exploded at 1" in body["traceback"]
    many = json.loads(reg.dispatch({"name": "echo", "arguments": {"text": 1, "x": 2}}).content)
    assert ("errors" in many) == (detail in ("full", "errors"))


def test_error_detail_callable():
    reg = ToolRegistry([boom], error_detail=lambda r: f"ERR {r.error}")
    assert reg.dispatch({"name": "boom", "arguments": {"n": 1}}).content == "ERR exception"


def test_value_text_renders_models_and_json():
    @tool
    def who() -> Person:
        return Person(name="A", address=Address(street="S"))

    @tool
    def nums() -> dict[str, Any]:
        return {"a": [1, 2], "ü": None}

    reg = ToolRegistry([who, nums])
    assert json.loads(reg.dispatch({"name": "who", "arguments": {}}).content)["address"]["street"] == "S"
    assert reg.dispatch({"name": "nums", "arguments": {}}).content == '{"a": [1, 2], "ü": null}'


def test_parallel_dispatch_is_concurrent_and_capped():
    active = 0
    peak = 0
    lock = threading.Lock()

    @tool
    def work(i: int) -> int:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.15)
        with lock:
            active -= 1
        return i * 10

    reg = ToolRegistry([work], max_concurrency=3)
    start = time.perf_counter()
    results = reg.dispatch_many({"name": "work", "arguments": {"i": i}} for i in range(6))
    elapsed = time.perf_counter() - start
    assert [r.value for r in results] == [0, 10, 20, 30, 40, 50]
    assert peak == 3 and elapsed < 0.15 * 6 * 0.8


@pytest.mark.parametrize(
    ("verdict", "ok", "message"),
    [
        (True, True, ""),
        (None, True, ""),
        (False, False, "the call was not approved"),
        ("no writes after reading a web page", False, "no writes after reading a web page"),
    ],
)
def test_approval_hook(verdict, ok, message):
    seen = []

    async def approve(call: ToolCall, t: Tool):
        seen.append((call.name, call.arguments, t.name))
        return verdict

    r = REG.dispatch({"name": "echo", "arguments": {"text": "q"}}, approve=approve)
    assert r.ok is ok and seen == [("echo", {"text": "q"}, "echo")]
    if not ok:
        assert r.error == "denied" and r.message == message


def test_approval_hook_is_not_called_for_invalid_calls_and_its_errors_deny():
    seen = []
    r = REG.dispatch({"name": "echo", "arguments": {}}, approve=lambda c, t: seen.append(c))
    assert r.error == "invalid_arguments" and seen == []

    def broken(call, t):
        raise KeyError("x")

    r = REG.dispatch({"name": "echo", "arguments": {"text": "a"}}, approve=broken)
    assert r.error == "denied" and "KeyError" in r.message


def test_dispatch_from_inside_a_running_event_loop():
    async def main():
        return REG.dispatch({"name": "echo", "arguments": {"text": "in loop"}})

    assert asyncio.run(main()).value == "in loop"


def test_views_narrow_without_copying():
    @tool(read_only=True)
    def read(path: str) -> str:
        return path

    @tool
    def write(path: str, text: str) -> None: ...

    reg = ToolRegistry([read, write, echo])
    ro = reg.read_only()
    assert ro.names == ["read"] and reg.only("write", "echo").names == ["write", "echo"]
    assert reg.exclude("echo").names == ["read", "write"]
    r = ro.dispatch({"name": "write", "arguments": {"path": "a", "text": "b"}})
    assert r.error == "unknown_tool" and "'write' is not available here (available: read)" in r.message
    with pytest.raises(ToolError):
        ro.register(echo)
    assert "write" in reg and "write" not in ro and len(ro) == 1


def test_call_schema_is_the_union_with_hoisted_defs_and_bounds():
    reg = ToolRegistry([tool(f_nested), tool(f_enum), echo], max_string_length=40, max_items=5)
    s = reg.call_schema()
    Draft202012Validator.check_schema(s)
    assert [b["properties"]["name"]["const"] for b in s["anyOf"]] == ["f_nested", "f_enum", "echo"]
    assert set(s["$defs"]) == {"f_nested__Person", "f_nested__Address", "f_enum__Color"}
    assert s["x-guidance"]["whitespace_flexible"] is False
    person = s["$defs"]["f_nested__Person"]
    assert person["additionalProperties"] is False and person["properties"]["name"]["maxLength"] == 40
    assert s["anyOf"][0]["properties"]["arguments"]["properties"]["people"]["maxItems"] == 5
    v = Draft202012Validator(s)
    good = {"name": "f_enum", "arguments": {"color": "red"}}
    assert v.is_valid(good) and not v.is_valid({"name": "f_enum", "arguments": {"color": "blue"}})
    assert not v.is_valid({"name": "echo", "arguments": {"color": "red"}})
    assert reg.only("echo").call_schema()["properties"]["name"] == {"const": "echo"}


# -- the OpenAI export -------------------------------------------------------------------------------------


def test_openai_export_strict_projection():
    reg = ToolRegistry([tool(f_optional), tool(f_nested), tool(f_enum), tool(f_dict)])
    exported = {t["function"]["name"]: t for t in reg.to_openai()}
    opt = exported["f_optional"]["function"]
    assert opt["strict"] is True
    assert opt["parameters"]["required"] == ["a", "b", "c"]
    assert "default" not in json.dumps(opt["parameters"])
    nested = exported["f_nested"]["function"]["parameters"]
    assert nested["$defs"]["Person"]["required"] == ["name", "address", "tags"]
    assert nested["$defs"]["Person"]["additionalProperties"] is False
    assert nested["$defs"]["Person"]["properties"]["tags"]["anyOf"][1] == {"type": "null"}
    assert exported["f_dict"]["function"]["strict"] is False  # an open dict can't be strict
    assert exported["f_dict"]["function"]["parameters"] == tool(f_dict).parameters
    for t in exported.values():
        assert t["type"] == "function"
        Draft202012Validator.check_schema(t["function"]["parameters"])
    with pytest.raises(ToolError, match="can't be exported strict"):
        tool(f_dict).to_openai(strict=True)
    loose = tool(f_optional).to_openai(strict=False)["function"]
    assert loose["strict"] is False and loose["parameters"] == tool(f_optional).parameters


def test_strict_nulls_mean_not_given():
    got = {}

    @tool
    def book(person: Person, nights: int = 1, note: Optional[str] = "none") -> str:
        got.update(person=person, nights=nights, note=note)
        return "ok"

    params = book.parameters
    strict = strict_projection(params)
    sent = {
        "person": {"name": "A", "address": {"street": "S", "zip": None}, "tags": None},
        "nights": None,
        "note": None,
    }
    assert Draft202012Validator(strict).is_valid(sent)
    fixed = strict_call_arguments(params, sent)
    assert fixed == {"person": {"name": "A", "address": {"street": "S", "zip": None}}, "note": None}
    reg = ToolRegistry([book])
    call = reg.parse_openai({"id": "c1", "function": {"name": "book", "arguments": json.dumps(sent)}})
    r = reg.dispatch(call)
    assert r.ok, r.content
    assert got["nights"] == 1 and got["note"] is None and got["person"].tags == []


@pytest.mark.parametrize("keyword", ["allOf", "not", "patternProperties", "if"])
def test_shape_keywords_are_not_strict(keyword):
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", keyword: {} if keyword != "allOf" else [{}]}},
    }
    t = Tool(lambda **kw: None, name="t", schema=schema)
    assert t.to_openai()["function"]["strict"] is False


# -- LangChain interop -------------------------------------------------------------------------------------

lc_tools = pytest.importorskip("langchain_core.tools")
lc_messages = pytest.importorskip("langchain_core.messages")


def test_langchain_tool_in_is_validated_and_invoked_with_a_tool_call():
    invoked = []

    @lc_tools.tool
    def multiply(a: int, b: int = 2) -> int:
        """Multiply two integers."""
        invoked.append((a, b))
        return a * b

    reg = ToolRegistry([multiply])
    t = reg["multiply"]
    assert t.description == "Multiply two integers."
    assert t.parameters["properties"] == {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}}
    assert reg.dispatch({"name": "multiply", "arguments": {"a": 3}}).content == "6"
    r = reg.dispatch({"name": "multiply", "arguments": {"a": "3"}})  # LangChain's pydantic would coerce
    assert r.error == "invalid_arguments" and invoked == [(3, 2)]


def test_langchain_dict_schema_tool_is_validated_even_though_langchain_does_not():
    st = lc_tools.StructuredTool.from_function(
        func=lambda **kw: f"got {kw['x']}",
        name="echo_int",
        description="Echo an integer.",
        args_schema={"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    )
    assert st.invoke({"x": "not an int"}) == "got not an int"  # LangChain passes it through
    reg = ToolRegistry([st])
    r = reg.dispatch({"name": "echo_int", "arguments": {"x": "not an int"}})
    assert r.error == "invalid_arguments" and r.issues[0].path == "$.x"
    assert reg.dispatch({"name": "echo_int", "arguments": {"x": 4}}).value == "got 4"


def test_langchain_base_tool_subclass_and_its_errors():
    class Lookup(lc_tools.BaseTool):
        name: str = "lookup"
        description: str = "Look a word up."
        handle_tool_error: bool = True

        def _run(self, word: str) -> str:
            if word == "bad":
                raise lc_tools.ToolException("no such word")
            return word.upper()

    reg = ToolRegistry([Lookup()], error_detail="brief")
    assert reg.dispatch({"name": "lookup", "arguments": {"word": "hi"}}).value == "HI"
    r = reg.dispatch({"name": "lookup", "arguments": {"word": "bad"}})
    assert r.error == "exception" and "no such word" in r.message


def test_querylm_tool_out_to_langchain_and_back():
    @tool
    def convert(value: float, unit: Literal["km", "mi"] = "km") -> float:
        """Convert a distance.

        Args:
            value: The distance.
            unit: Its unit.
        """
        return value * (1.609 if unit == "mi" else 1.0)

    st = ToolRegistry([convert], timeout=None).to_langchain()[0]
    assert isinstance(st, lc_tools.StructuredTool)
    assert st.name == "convert" and st.description.startswith("Convert a distance.")
    assert (
        st.tool_call_schema == convert.parameters
        or st.tool_call_schema["properties"] == convert.parameters["properties"]
    )
    assert st.invoke({"value": 2, "unit": "mi"}) == pytest.approx(3.218)
    msg = asyncio.run(st.ainvoke({"name": "convert", "args": {"value": 1}, "id": "c1", "type": "tool_call"}))
    assert isinstance(msg, lc_messages.ToolMessage) and msg.content == "1.0" and msg.tool_call_id == "c1"
    bad = asyncio.run(
        st.ainvoke({"name": "convert", "args": {"value": "x"}, "id": "c2", "type": "tool_call"})
    )
    assert bad.status == "error" and json.loads(bad.content)["errors"][0]["path"] == "$.value"
    back = ToolRegistry([st])
    assert back["convert"].parameters["properties"] == convert.parameters["properties"]
    assert back.dispatch({"name": "convert", "arguments": {"value": 10, "unit": "mi"}}).value == "16.09"
    assert len(ToolRegistry([convert]).to_langchain()) == 1

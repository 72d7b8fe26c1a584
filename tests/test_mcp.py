"""MCP in and out, against real server processes: tests/mcp_test_server.py (written with the mcp SDK,
over stdio and streamable HTTP) as the server querylm's registry calls, and ``querylm mcp serve`` as the
server the SDK's own client calls."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp
import pytest

import querylm
from querylm.cli import main as cli
from querylm.tools import ToolError, ToolRegistry, validate
from querylm.tools.mcp import mcp_tools, result_value
from querylm.tools.mcp_server import collect, load_target

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, str(ROOT / "tests" / "mcp_test_server.py")]


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (and been reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def tools() -> Iterator[ToolRegistry]:
    """One server process for the tests that leave it running."""
    with ToolRegistry.from_mcp(SERVER, timeout=10) as registry:
        yield registry


# -- MCP in: listing --------------------------------------------------------------------------------


def test_the_servers_tools_are_registered_as_it_lists_them(tools: ToolRegistry) -> None:
    assert set(tools.names) == {"add", "lookup", "fail", "hang", "die", "calls", "pid"}
    add = tools["add"]
    assert add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]
    assert {k: v["type"] for k, v in add.parameters["properties"].items()} == {"a": "integer", "b": "integer"}
    assert tools["lookup"].read_only and not add.read_only  # the server's readOnlyHint
    assert [t.name for t in tools.read_only()] == ["lookup"]


def test_calls_of_mcp_tools_are_generated_under_the_union_grammar(tools: ToolRegistry) -> None:
    """On the random model (any token the mask allows), the call is schema-valid by construction,
    is sent, and the server's answer is the hole's value."""
    view = tools.only("add", "lookup")
    branches = view.call_schema()["anyOf"]
    assert [b["properties"]["name"]["const"] for b in branches] == ["add", "lookup"]
    for i, v in enumerate([tools.only("add"), tools.only("lookup"), view, view]):
        # sampled, and the random model's logits depend on the prompt: a different call each time
        r = querylm.run('"Call {i}: [CALL: v]"', model="random", decoder="sample", v=v, i=i)
        result = r.variables["CALL"]
        assert result.ok, result.content
        call = result.call
        assert call.name in v.names
        assert validate(tools[call.name].parameters, call.arguments) == []
        if call.name == "add":
            assert result.value == str(call.arguments["a"] + call.arguments["b"])
        else:
            assert result.value in ("France", "Italy", "Peru", "unknown")


# -- MCP in: dispatch -------------------------------------------------------------------------------


def test_sync_and_async_dispatch_reach_the_server(tools: ToolRegistry) -> None:
    r = tools.dispatch({"name": "add", "arguments": {"a": 20, "b": 22}})
    assert r.ok and r.value == "42" and r.content == "42"
    assert tools.dispatch({"name": "lookup", "arguments": {"city": "Lima"}}).value == "Peru"

    async def many() -> list[Any]:
        return await tools.adispatch_many([{"name": "add", "arguments": {"a": i, "b": i}} for i in range(6)])

    assert [r.value for r in asyncio.run(many())] == [str(2 * i) for i in range(6)]


def test_an_error_the_server_reports_is_an_error_result(tools: ToolRegistry) -> None:
    r = tools.dispatch({"name": "fail", "arguments": {"reason": "no such shelf"}})
    assert not r.ok and r.error == "exception"
    assert "MCPToolError" in r.message and "refused: no such shelf" in r.message
    assert '"error": "exception"' in r.content


def test_schema_invalid_arguments_are_refused_before_they_are_sent(tools: ToolRegistry) -> None:
    before = tools.dispatch({"name": "calls", "arguments": {}}).value.count("add")
    r = tools.dispatch({"name": "add", "arguments": {"a": "two", "c": 1}})
    assert not r.ok and r.error == "invalid_arguments"
    assert {i.path for i in r.issues} == {"$", "$.a"}  # b missing, c not allowed, a not an integer
    after = tools.dispatch({"name": "calls", "arguments": {}}).value.count("add")
    assert after == before  # the server never saw it


def test_a_call_that_hangs_times_out_and_the_server_still_answers() -> None:
    with ToolRegistry.from_mcp(SERVER, timeout=1.0) as registry:
        start = time.perf_counter()
        r = registry.dispatch({"name": "hang", "arguments": {"seconds": 60}})
        assert not r.ok and r.error == "timeout" and "1 s" in r.message
        assert time.perf_counter() - start < 5
        assert registry.dispatch({"name": "add", "arguments": {"a": 1, "b": 2}}).value == "3"


def test_a_server_that_dies_mid_call_gives_error_results_not_a_crash() -> None:
    registry = ToolRegistry.from_mcp(SERVER, timeout=10)
    try:
        pid = int(registry.dispatch({"name": "pid", "arguments": {}}).value)
        r = registry.dispatch({"name": "die", "arguments": {}})
        assert not r.ok and r.error == "exception" and "MCPConnectionError" in r.message
        assert gone(pid)
        again = registry.dispatch({"name": "add", "arguments": {"a": 1, "b": 2}})
        assert not again.ok and again.error == "exception"
    finally:
        registry.close()


def test_closing_the_registry_ends_the_server_process() -> None:
    with ToolRegistry.from_mcp(SERVER) as registry:
        pid = int(registry.dispatch({"name": "pid", "arguments": {}}).value)
        assert not gone(pid, within=0.2)
    assert gone(pid)
    r = registry.dispatch({"name": "add", "arguments": {"a": 1, "b": 2}})
    assert not r.ok and "not connected" in r.message
    registry.close()  # again: nothing to do


def test_a_registry_left_open_is_closed_at_exit() -> None:
    script = (
        "import sys; from querylm.tools import ToolRegistry; "
        f"r = ToolRegistry.from_mcp({SERVER!r}); "
        "print(r.dispatch({'name': 'pid', 'arguments': {}}).value)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert gone(int(out.stdout.strip()))


def test_include_and_prefix_choose_and_rename_tools() -> None:
    with ToolRegistry(timeout=10) as registry:
        registry.register(lambda x: x, name="add")
        with pytest.raises(ToolError, match="already registered"):
            registry.add_mcp(SERVER)
        added = registry.add_mcp(SERVER, include=["add", "lookup"], prefix="srv_")
        assert [t.name for t in added] == ["srv_add", "srv_lookup"]
        assert registry.names == ["add", "srv_add", "srv_lookup"]
        assert registry.dispatch({"name": "srv_add", "arguments": {"a": 2, "b": 2}}).value == "4"
        with pytest.raises(ToolError, match="no tool 'nope'"):
            registry.add_mcp(SERVER, include=["nope"])


def test_a_server_that_cant_start_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="can't connect to the MCP server"):
        ToolRegistry.from_mcp(["/nonexistent/mcp-server"], connect_timeout=10)
    with pytest.raises(ToolError, match="can't connect to the MCP server"):
        ToolRegistry.from_mcp([sys.executable, "-c", "import sys; sys.exit(1)"], connect_timeout=10)


def test_a_server_that_never_answers_times_out_and_its_process_is_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    silent = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
    with pytest.raises(ToolError, match="no answer within 1 s"):
        ToolRegistry.from_mcp([sys.executable, "-c", silent, str(pidfile)], connect_timeout=1)
    assert gone(int(pidfile.read_text()))


def test_what_a_call_returns_is_read_from_its_content_blocks() -> None:
    t = mcp.types
    text = t.TextContent(type="text", text="two lines\nof text")
    image = t.ImageContent(type="image", data="aGVsbG8=", mime_type="image/png")
    doc = t.EmbeddedResource(type="resource", resource=t.TextResourceContents(uri="file:///a.md", text="# A"))
    result = t.CallToolResult(content=[text, image, doc])
    assert result_value(result) == "two lines\nof text\n[image image/png, 8 base64 characters]\n# A"
    assert result_value(t.CallToolResult(content=[], structured_content={"n": 1})) == {"n": 1}


def test_mcp_tools_keep_their_names_and_a_name_querylm_cant_take_is_a_clear_error() -> None:
    class Listed:  # what a session holds after listing: the SDK's Tool objects
        target = "fake-server"
        tools = [
            mcp.types.Tool(name="notes.search", input_schema={"type": "object"}),
            mcp.types.Tool(name="notes search", input_schema={"type": "object"}),
        ]

    with pytest.raises(ToolError, match="fake-server: tool name 'notes search' must be .*include="):
        mcp_tools(Listed())  # type: ignore[arg-type]
    (dotted,) = mcp_tools(Listed(), include=["notes.search"])  # type: ignore[arg-type]
    assert dotted.name == "notes.search" and dotted.wire_name.startswith("notes_search_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP on a free loopback port (uvicorn, through the SDK)."""
    port = free_port()
    proc = subprocess.Popen([*SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None, "the HTTP server exited"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def test_streamable_http_server() -> None:
    with http_server() as url, ToolRegistry.from_mcp(url, timeout=10) as registry:
        assert "add" in registry.names and registry["lookup"].read_only
        assert registry.dispatch({"name": "add", "arguments": {"a": 5, "b": 6}}).value == "11"
        r = registry.dispatch({"name": "fail", "arguments": {"reason": "http"}})
        assert not r.ok and "refused: http" in r.message


# -- MCP out: querylm mcp serve -----------------------------------------------------------------------


def serve_params(target: str) -> Any:
    # python -m from the repository root: this checkout's querylm is the one served
    args = ["-m", "querylm.cli", "mcp", "serve", target]
    return mcp.StdioServerParameters(command=sys.executable, args=args, cwd=str(ROOT))


def test_querylm_mcp_serve_answers_the_sdks_client(tmp_path: Path) -> None:
    errlog = tmp_path / "server.err"

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with errlog.open("w") as err:
            transport = mcp.stdio_client(serve_params("tests/mcp_serve_target.py"), errlog=err)
            async with mcp.Client(transport) as client:
                out["tools"] = {t.name: t for t in (await client.list_tools()).tools}
                out["count"] = await client.call_tool("word_count", {"text": "one two three"})
                out["divide"] = await client.call_tool("divide", {"a": 1, "b": 0})
                out["invalid"] = await client.call_tool("divide", {"a": "x"})
                out["query"] = [
                    await client.call_tool("pick_number", {"topic": "cats", "most": 7}) for _ in range(3)
                ]
        return out

    out = asyncio.run(session())
    listed = out["tools"]
    assert set(listed) == {"word_count", "divide", "pick_number"}
    wc = listed["word_count"]
    assert wc.description == "Count the words in a text."
    assert wc.input_schema["properties"]["text"] == {"type": "string", "description": "The text to count."}
    assert wc.annotations.read_only_hint and listed["divide"].annotations is None
    pick = listed["pick_number"].input_schema  # from the @query function's signature
    assert pick["required"] == ["topic"] and pick["properties"]["most"] == {"default": 99, "type": "integer"}

    count = out["count"]
    assert not count.is_error and count.content[0].text == "3"
    assert out["divide"].is_error and "ZeroDivisionError" in out["divide"].content[0].text
    assert out["invalid"].is_error and '"invalid_arguments"' in out["invalid"].content[0].text
    for r in out["query"]:  # the query ran on the random model, under its where clause
        assert not r.is_error, r.content[0].text
        assert 0 <= int(r.content[0].text) < 7
    assert "counting" in errlog.read_text()  # the tool's print went to stderr, not into the protocol


def test_serve_targets_resolve_or_fail_clearly() -> None:
    module = load_target("tests/mcp_serve_target.py")
    assert collect(module).names == ["word_count", "divide", "pick_number"]
    assert collect(load_target("tests/mcp_serve_target.py:tools")).names == ["word_count", "divide"]
    assert collect(load_target("tests/mcp_serve_target.py:pick_number")).names == ["pick_number"]
    assert collect(load_target("querylm.tools.validate:validate")).names == ["validate"]  # a plain function
    picked = collect(module).dispatch({"name": "pick_number", "arguments": {"topic": "owls", "most": 3}})
    assert picked.ok and 0 <= picked.value < 3  # the @query function as a tool, in process
    with pytest.raises(ToolError, match="no such file"):
        load_target("tests/missing.py")
    with pytest.raises(ToolError, match="has no attribute 'nope'"):
        load_target("tests/mcp_serve_target.py:nope")
    with pytest.raises(ToolError, match="no tools to serve"):
        collect(load_target("json"))
    assert cli(["mcp", "serve", "tests/missing.py"]) == 2


# -- on the default model -----------------------------------------------------------------------------


@pytest.mark.model
def test_an_agent_on_the_default_model_calls_the_mcp_servers_tools(tools: ToolRegistry) -> None:
    agent = querylm.Agent(
        tools=tools.only("lookup", "add"),
        instructions="Use the tools to answer.",
        tool_choice="lookup",  # deterministic: the first turn calls lookup
        max_turns=2,
    )
    result = agent.run("Which country is the city of Rome in?")
    first = result.tool_results[0]
    assert first.ok and first.name == "lookup", first.content
    assert validate(tools["lookup"].parameters, first.call.arguments) == []
    assert first.value in ("France", "Italy", "Peru", "unknown")
    assert result.messages[3]["role"] in ("user", "tool") and first.content in result.messages[3]["content"]
    assert result.stopped_by == "final" and result.output  # it answered after reading the result


@pytest.mark.model
def test_the_agent_mcp_example_answers_from_the_notes(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / "agent_mcp.py"
    spec = importlib.util.spec_from_file_location("qlm_agent_mcp", path)
    assert spec and spec.loader
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main("When is my dentist appointment?")
    out = capsys.readouterr().out
    assert "[MCP tools: search_notes, read_note]" in out
    assert result.stopped_by == "final" and result.output and not result.output.startswith("<tool")
    first = result.tool_results[0]
    assert first.name == "search_notes" and first.ok  # tool_choice forced the search, through the server
    notes = {p.stem: p.read_text().splitlines() for p in example.NOTES.glob("*.md")}
    for hit in first.value.splitlines():  # every line the server found is a line of that note
        name, _, line = hit.partition(": ")
        assert line in notes[name]

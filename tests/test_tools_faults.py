"""Dispatch faults a tool or a call can cause come back as structured error results of the right kind,
never as an escaping exception or a hang (small timeouts keep this fast)."""

from __future__ import annotations

import json
import time
from typing import Any

from querylm.tools import ToolRegistry, tool
from querylm.tools.registry import MAX_ERROR_TEXT


def one(fn: Any, **kw: Any) -> ToolRegistry:
    return ToolRegistry([tool(fn)], **kw)


def test_deeply_nested_json_is_invalid_json_not_a_recursion_error() -> None:
    reg = one(lambda_tool())
    deep = '{"name": "echo", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = reg.dispatch(deep)
    assert not r.ok and r.error == "invalid_json" and "nested too deeply" in r.message
    r = reg.dispatch({"name": "echo", "arguments": '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"})
    assert not r.ok and r.error == "invalid_json" and r.call is not None


def lambda_tool() -> Any:
    def echo(text: str) -> str:
        """Echo."""
        return text

    return echo


def test_stop_iteration_is_an_exception_not_a_timeout() -> None:
    def stop(text: str) -> str:
        """Stops."""
        raise StopIteration("out")

    for timeout in (2.0, None):
        t0 = time.perf_counter()
        r = one(stop, timeout=timeout).dispatch({"name": "stop", "arguments": {"text": "x"}})
        assert r.error == "exception" and "StopIteration" in r.message
        assert time.perf_counter() - t0 < 1.5


def test_system_exit_from_a_sync_or_async_tool_is_an_exception() -> None:
    def quit_now(text: str) -> str:
        """Quits."""
        raise SystemExit(3)

    async def aquit(text: str) -> str:
        """Quits."""
        raise SystemExit(4)

    reg = ToolRegistry([tool(quit_now), tool(aquit)], timeout=2)
    for name in ("quit_now", "aquit"):
        r = reg.dispatch({"name": name, "arguments": {"text": "x"}})
        assert not r.ok and r.error == "exception" and "SystemExit" in r.message


class Hostile(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class HostileValue:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_exceptions_and_values_whose_str_raises() -> None:
    def bad_exc(text: str) -> str:
        """Raises a hostile exception."""
        raise Hostile()

    def bad_value(text: str) -> Any:
        """Returns a hostile value."""
        return HostileValue()

    reg = ToolRegistry([tool(bad_exc), tool(bad_value)], timeout=2, error_detail="full")
    r = reg.dispatch({"name": "bad_exc", "arguments": {"text": "x"}})
    assert r.error == "exception" and "Hostile" in r.message and "str() raised" in r.message
    r = reg.dispatch({"name": "bad_value", "arguments": {"text": "x"}})
    assert not r.ok and r.error == "exception" and "can't be written as text" in r.message


def test_a_failing_error_detail_hook_falls_back_to_the_default_text() -> None:
    def hook(result: Any) -> str:
        raise ValueError("hook broke")

    r = one(lambda_tool(), error_detail=hook).dispatch({"name": "echo", "arguments": {"text": 3}})
    assert not r.ok and r.error == "invalid_arguments" and "error_detail raised ValueError" in r.message
    assert json.loads(r.content)["error"] == "invalid_arguments"


def test_async_tools_still_run_and_return() -> None:
    async def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    r = one(add).dispatch({"name": "add", "arguments": {"a": 2, "b": 3}})
    assert r.ok and r.value == 5 and r.content == "5"


def test_a_huge_bad_argument_sends_back_a_bounded_error() -> None:
    reg = one(lambda_tool())
    huge = "x" * 10_000_000
    r = reg.dispatch({"name": "echo", "arguments": {"text": [huge]}})
    assert not r.ok and r.error == "invalid_arguments"
    assert len(r.content) < 4 * MAX_ERROR_TEXT
    assert "truncated, " in r.content
    r = reg.dispatch('{"name": "echo", "arguments": ' + huge)
    assert r.error == "invalid_json" and len(r.content) < 4 * MAX_ERROR_TEXT


def _blocking_tool() -> Any:
    @tool(timeout=0.5)
    async def block(text: str) -> str:
        """Blocks the event loop, as a careless async tool does."""
        time.sleep(2)
        return text

    return block


def test_an_async_tool_that_blocks_the_loop_times_out_under_sync_dispatch() -> None:
    """Sync dispatch runs the coroutine on a loop of its own in a thread: the timeout holds."""
    reg = ToolRegistry([_blocking_tool()])
    t0 = time.perf_counter()
    r = reg.dispatch({"name": "block", "arguments": {"text": "x"}})
    assert time.perf_counter() - t0 < 1.5
    assert not r.ok and r.error == "timeout" and "within 0.5 s" in r.message


def test_an_async_tool_that_blocks_the_callers_loop_is_reported_as_a_timeout() -> None:
    """On the caller's loop nothing can preempt it: the call returns late, and says it timed out
    (the value is not handed back as if the timeout had held)."""
    import asyncio

    reg = ToolRegistry([_blocking_tool()])
    r = asyncio.run(reg.adispatch({"name": "block", "arguments": {"text": "x"}}))
    assert not r.ok and r.error == "timeout" and "blocked the event loop" in r.message
    assert r.value is None


def test_a_cooperative_async_tool_within_its_timeout_is_not_reported() -> None:
    import asyncio

    @tool(timeout=1.0)
    async def nap(text: str) -> str:
        """Sleeps politely."""
        await asyncio.sleep(0.05)
        return text

    reg = ToolRegistry([nap])
    assert reg.dispatch({"name": "nap", "arguments": {"text": "x"}}).value == "x"
    assert asyncio.run(reg.adispatch({"name": "nap", "arguments": {"text": "y"}})).value == "y"

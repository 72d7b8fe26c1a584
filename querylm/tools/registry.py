"""ToolRegistry: the tools a model may call, their union grammar, and dispatch of a call to a ToolResult.

Dispatch never raises for anything a model can get wrong or a tool can do: an unknown name, JSON that
does not parse, arguments that break the schema (every error, with its JSON path), a tool that raises or
hangs past its timeout, a call the approval hook refuses: each comes back as a ToolResult whose
``content`` is a structured error the model can read and act on.

In a query, ``[CALL: tools]`` is a hole generated under the union grammar of the registry's tools
(``anyOf`` over tools of ``{"name": <const>, "arguments": <its schema>}``), so the call is valid by
construction; the hole binds the ToolResult of dispatching it. ``tools.only("search")`` and
``tools.read_only()`` narrow the union for one hole, ``tools.calls()`` binds the parsed ToolCall without
running it (the code that follows dispatches it, or not).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import importlib
import inspect
import json
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from ..constraints.schema import bound_node, compact
from .calls import ToolCall, new_call_id
from .langchain import from_langchain, to_langchain
from .openai import strict_call_arguments
from .tool import Tool, ToolError, tool, walk_schema
from .validate import SchemaIssue

ErrorKind = Literal[
    "unknown_tool", "invalid_call", "invalid_json", "invalid_arguments", "exception", "timeout",
    "denied", "truncated",
]  # fmt: skip
ErrorDetail = Literal["full", "errors", "brief", "kind"]
"""How much of an error the model reads: ``full`` (messages, every schema error, the traceback's tail),
``errors`` (messages and every schema error: the default), ``brief`` (one line), ``kind`` (just the kind)."""

Approve = Callable[["ToolCall", Tool], "bool | str | None | Awaitable[bool | str | None]"]
"""Called with a valid call before its tool runs: True/None runs it, False or a reason (str) refuses it."""


MAX_ERROR_TEXT = 2000
"""The most characters of one error message (and of each schema error) the model reads: a 10 MB bad
argument must not send megabytes back (``…(truncated, N chars)`` says how much there was)."""


def bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how long it was."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"…(truncated, {len(text)} chars)"


def safe_str(obj: Any) -> str:
    """``str(obj)``, or a description when that raises: a tool's exception or value may be hostile."""
    try:
        return str(obj)
    except BaseException:  # noqa: BLE001 - whatever __str__ raises, dispatch must not
        return f"<{type(obj).__name__} whose str() raised>"


class _Raised(Exception):
    """Carries what a tool raised out of its thread or coroutine, BaseExceptions (SystemExit,
    StopIteration) included: those can't cross a Future or a coroutine boundary as themselves."""

    def __init__(self, err: BaseException):
        super().__init__()
        self.err = err


@dataclass
class ToolResult:
    """What a call came to: ``ok`` with the tool's ``value``, or an ``error`` of a known kind."""

    call: ToolCall | None
    """The call as parsed (None when it could not be: bad JSON, no name)."""
    ok: bool
    value: Any = None
    error: ErrorKind | None = None
    message: str = ""
    issues: list[SchemaIssue] = field(default_factory=list)
    """Every schema violation, each with its JSON path (``invalid_arguments``)."""
    elapsed: float = 0.0
    content: str = ""
    """The text the model reads: the value as text, or the structured error as JSON."""
    raw: Any = None
    """What was dispatched, when it could not be parsed into a call."""

    @property
    def name(self) -> str | None:
        return self.call.name if self.call else None

    def __str__(self) -> str:
        return self.content

    def to_message(self) -> dict[str, Any]:
        """An OpenAI-style ``tool`` message."""
        return {"role": "tool", "tool_call_id": self.call.id if self.call else "", "content": self.content}


def value_text(value: Any) -> str:
    """A tool's return value as the model reads it: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return str.__str__(value)
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
    # RecursionError (a self-referencing or too deeply nested value) and anything a default=str
    # conversion raises are left to the caller, which reports them as the tool's fault.


def error_text(result: ToolResult, detail: ErrorDetail, trace: str = "") -> str:
    body: dict[str, Any] = {"error": result.error}
    if detail != "kind":
        body["message"] = result.message
    if detail in ("errors", "full") and result.issues:
        body["errors"] = [i.to_json() for i in result.issues]
    if detail == "full" and trace:
        body["traceback"] = trace
    return json.dumps(body, ensure_ascii=False)


class ToolRegistry:
    """The tools a model may call. Iterating gives the tools allowed here (a view may narrow them)."""

    def __init__(
        self,
        tools: Iterable[Any] = (),
        *,
        timeout: float | None = 30.0,
        error_detail: ErrorDetail | Callable[[ToolResult], str] = "errors",
        max_concurrency: int = 8,
        max_string_length: int = 256,
        max_items: int = 32,
    ):
        """``timeout``: seconds per call for tools without their own (None: none). ``error_detail``: how
        much of an error the model reads (or a function making the text). ``max_concurrency``: parallel
        calls at once. ``max_string_length`` / ``max_items``: bounds added, where a schema has none, to
        the grammar calls are generated under, so a small model can't write one string forever (the
        validated schema is not changed)."""
        self._tools: dict[str, Tool] = {}
        self._real: dict[str, str] = {}  # wire name -> name (wire_name)
        self._sessions: list[Any] = []  # open MCP connections (tools/mcp.py), closed by close()
        self._allowed: frozenset[str] | None = None
        self._bind: Literal["result", "call"] = "result"
        self._fixed: dict[str, Any] = {}
        self.timeout = timeout
        self.error_detail = error_detail
        self.max_concurrency = max_concurrency
        self.max_string_length = max_string_length
        self.max_items = max_items
        for t in tools:
            self.register(t)

    # -- registering and looking up ---------------------------------------------------------------------

    def register(self, obj: Any, **options: Any) -> Tool:
        """Add a Tool, a function (made a Tool with ``options`` as in ``@tool``), a LangChain tool, or
        anything with an ``as_tool(**options)`` method (a ``@query`` function)."""
        if self._allowed is not None:
            raise ToolError("register tools on the registry itself, not on a narrowed view")
        if _is_langchain_tool(obj):
            t = from_langchain(obj, **options)
        elif isinstance(obj, Tool):
            t = obj
        elif callable(getattr(obj, "as_tool", None)):  # a @query function, say
            t = obj.as_tool(**options)
            if not isinstance(t, Tool):  # a LangChain Runnable's as_tool makes a LangChain tool
                raise ToolError(
                    f"can't register {obj!r}: its as_tool() made a {type(t).__name__}, not a Tool"
                )
        elif callable(obj):
            t = tool(obj, **options)
        else:
            raise ToolError(f"can't register {obj!r}: expected a Tool, a function or a LangChain tool")
        if t.name in self._tools and self._tools[t.name] is not t:
            raise ToolError(f"a tool named {t.name!r} is already registered")
        taken = self._real.get(t.wire_name, t.name)
        if taken != t.name:
            raise ToolError(
                f"tool {t.name!r} would be sent to hosted servers as {t.wire_name!r}, the name {taken!r} "
                "is already sent as: rename one of them"
            )
        self._tools[t.name] = t
        self._real[t.wire_name] = t.name
        return t

    @classmethod
    def from_mcp(cls, *servers: Any, **options: Any) -> ToolRegistry:
        """A registry of the tools of MCP servers (each a url, a command line or argv list, or
        ``StdioServerParameters``; ``options`` as in ``add_mcp``). Close it (or use ``with``) to end
        the connections."""
        registry = cls()
        try:
            for server in servers:
                registry.add_mcp(server, **options)
        except BaseException:
            registry.close()
            raise
        return registry

    def add_mcp(self, server: Any, **options: Any) -> list[Tool]:
        """Connect to an MCP server and register its tools. ``options``: ``include`` (only these),
        ``prefix`` (before each name), ``timeout`` (seconds per call, else the registry's), ``env``,
        ``cwd``, ``connect_timeout``, ``errlog``: see ``mcp.connect``."""
        from .mcp import connect

        if self._allowed is not None:
            raise ToolError("register tools on the registry itself, not on a narrowed view")
        session, tools = connect(server, taken=set(self._tools), **options)
        self._sessions.append(session)
        for t in tools:
            self.register(t)
        return tools

    def close(self) -> None:
        """Close the MCP connections (their tools then answer with an error result)."""
        while self._sessions:
            self._sessions.pop().close()

    def __enter__(self) -> ToolRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tool(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """``@registry.tool`` / ``@registry.tool(timeout=2)``: define and register in one go."""
        if fn is not None:
            return self.register(fn, **options)
        return lambda f: self.register(f, **options)

    @property
    def names(self) -> list[str]:
        return [n for n in self._tools if self._allowed is None or n in self._allowed]

    def __iter__(self) -> Iterator[Tool]:
        return (self._tools[n] for n in self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name) if name in self else None

    def __getitem__(self, name: str) -> Tool:
        t = self.get(name)
        if t is None:
            raise KeyError(name)
        return t

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names})"

    def wire_name(self, name: str) -> str:
        """The name a hosted server is sent for tool ``name`` (OpenAI allows only ``[A-Za-z0-9_-]``, 64
        at most: ``tool.wire_name``); local grammars use the name as it is."""
        return self._tools[name].wire_name if name in self._tools else name

    def real_name(self, wire: str) -> str:
        """The tool a server's call of ``wire`` means (``wire_name`` undone); a name no tool is sent as
        stays as it is, so dispatch reports it as unknown."""
        return self._real.get(wire, wire)

    # -- views ------------------------------------------------------------------------------------------

    def _view(
        self, allowed: Iterable[str] | None = None, bind: Literal["result", "call"] | None = None
    ) -> ToolRegistry:
        view = object.__new__(ToolRegistry)
        view.__dict__.update(self.__dict__)
        if allowed is not None:
            view._allowed = frozenset(allowed)
        if bind is not None:
            view._bind = bind
        return view

    def only(self, *names: str) -> ToolRegistry:
        """A view offering only ``names`` (the model physically can't emit another name)."""
        unknown = [n for n in names if n not in self]
        if unknown:
            raise ToolError(f"unknown tool {unknown[0]!r} (registered: {', '.join(self.names) or 'none'})")
        return self._view(names)

    def exclude(self, *names: str) -> ToolRegistry:
        return self._view([n for n in self.names if n not in names])

    def read_only(self) -> ToolRegistry:
        """A view of the tools marked ``read_only`` (what to offer after reading untrusted text)."""
        return self._view([t.name for t in self if t.read_only])

    def calls(self) -> ToolRegistry:
        """A view whose query holes bind the parsed ToolCall instead of running it."""
        return self._view(bind="call")

    def fix(self, **arguments: Any) -> ToolRegistry:
        """A view whose generated calls have these argument values (for the tools that take them): the
        model writes only the rest. ``[FILED: shelf.fix(label=LABEL)]`` files under the label an earlier
        hole chose. The values are still validated against each tool's schema when the call runs."""
        for key, value in arguments.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                raise ToolError(
                    f"fix({key}=...): the value must be JSON, not {type(value).__name__}"
                ) from None
        view = self._view()
        view._fixed = {**self._fixed, **arguments}
        return view

    # -- export -----------------------------------------------------------------------------------------

    def to_openai(self, *, strict: bool | None = None) -> list[dict[str, Any]]:
        """OpenAI's ``tools`` list (strict where each schema allows it; see openai.py)."""
        return [t.to_openai(strict=strict) for t in self]

    def to_langchain(self) -> list[Any]:
        """Each tool as a LangChain StructuredTool dispatched through a registry of its own (see
        langchain.py): validated, structured errors, no timeout but the tool's."""
        return [to_langchain(t, ToolRegistry([t], timeout=None)) for t in self]

    def to_json(self) -> list[dict[str, Any]]:
        """The tool list as shown to a model: name, description, parameters."""
        return [t.to_json() for t in self]

    def call_schema(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The JSON Schema of one call of the allowed tools (or of ``names``): the union of
        ``{"name": <const>, "arguments": <schema>}``, each tool's ``$defs`` hoisted and renamed, strings
        and arrays bounded, objects closed, whitespace compact. What the mask engine generates under."""
        chosen = list(names) if names is not None else self.names
        if not chosen:
            raise ToolError("no tool is allowed here: a call can't be generated")
        defs: dict[str, Any] = {}
        branches = []
        for n in chosen:
            t = self[n]
            args = self._generation_schema(t, defs)
            branches.append(
                {
                    "type": "object",
                    "properties": {"name": {"const": n}, "arguments": args},
                    "required": ["name", "arguments"],
                    "additionalProperties": False,
                }
            )
        schema: dict[str, Any] = branches[0] if len(branches) == 1 else {"anyOf": branches}
        if defs:
            schema = {**schema, "$defs": defs}
        return compact(schema, lenient=True)

    def call_token_bound(self, names: Iterable[str] | None = None) -> int | None:
        """The most tokens one call of ``names`` can take under ``call_schema`` (a token is at least one
        byte, so its longest JSON text in bytes), or None when the schema leaves it unbounded (recursive
        definitions). Numbers count as at most ``NUMBER_BYTES``: JSON Schema has no bound on digits."""
        schema = self.call_schema(names)
        defs = schema.get("$defs", {})
        return _json_bytes(schema, defs, set())

    def _generation_schema(self, t: Tool, defs: dict[str, Any]) -> dict[str, Any]:
        prefix = f"{t.wire_name}__"  # a JSON pointer-safe name ("files/read" is not)

        def bound(s: dict[str, Any]) -> dict[str, Any]:
            ref = s.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                s["$ref"] = "#/$defs/" + prefix + ref.removeprefix("#/$defs/")
            return bound_node(s, self.max_string_length, self.max_items)

        schema = walk_schema(t.parameters, bound)
        for k, v in schema.pop("$defs", {}).items():
            defs[prefix + k] = v
        props = schema.get("properties", {})
        fixed = {k: v for k, v in self._fixed.items() if k in props}
        if fixed:
            # Fixed arguments first, so the model reads them before writing the rest.
            schema["properties"] = {
                **{k: {"const": v} for k, v in fixed.items()},
                **{k: p for k, p in props.items() if k not in fixed},
            }
            schema["required"] = [*fixed, *[r for r in schema.get("required", []) if r not in fixed]]
        return schema

    # -- the query hole ---------------------------------------------------------------------------------

    def __querylm_hole__(self) -> Any:
        from ..constraints.lang import Grammar
        from ..constraints.types import TypedHole

        label = "call of " + " | ".join(self.names)
        schema = self.call_schema()
        if self._bind == "call":
            return TypedHole(Grammar("json", json.dumps(schema), label), self._parse_generated, label)
        return TypedHole(Grammar("json", json.dumps(schema), label), self.dispatch, label)

    def _parse_generated(self, text: str) -> ToolCall:
        call = self.parse_call(text)
        if isinstance(call, ToolResult):  # impossible under the grammar; the hole's converter reports it
            raise ValueError(call.message)
        return call

    # -- dispatch ---------------------------------------------------------------------------------------

    def parse_call(self, obj: Any) -> ToolCall | ToolResult:
        """A ToolCall from a ToolCall, a ``{"name", "arguments"}`` dict (arguments may be a JSON string,
        as OpenAI sends them), an OpenAI ``tool_calls`` entry, or JSON text; else an error ToolResult."""
        if isinstance(obj, ToolCall):
            return obj
        raw = obj
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except (ValueError, RecursionError) as err:
                return self.error_result(
                    None, "invalid_json", f"the call is not valid JSON: {json_fault(err)}", raw=raw
                )
        if isinstance(obj, dict) and isinstance(obj.get("function"), dict):  # OpenAI's tool_calls entry
            obj = {**obj["function"], "id": obj.get("id")}
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return self.error_result(
                None, "invalid_call", 'a call is an object {"name": ..., "arguments": {...}}', raw=raw
            )
        args = obj.get("arguments", obj.get("args", {}))
        if isinstance(args, (str, bytes)):
            try:
                args = json.loads(args) if args.strip() else {}
            except (ValueError, RecursionError) as err:
                call = ToolCall(obj["name"], {}, obj.get("id") or new_call_id())
                why = json_fault(err)
                return self.error_result(
                    call, "invalid_json", f"the arguments are not valid JSON: {why}", raw=raw
                )
        if args is None:
            args = {}
        call = ToolCall(obj["name"], args, obj.get("id") or new_call_id())
        if not isinstance(args, dict):
            return self.error_result(call, "invalid_call", "the arguments must be a JSON object", raw=raw)
        return call

    def parse_openai(self, tool_call: Any) -> ToolCall | ToolResult:
        """A call a server sent for a tool exported with ``to_openai``: its wire name read back as the
        tool's own (``real_name``), and, where the tool went strict, nulls standing for omitted
        optional arguments (openai.py, rule 2) dropped, so defaults apply."""
        call = self.parse_call(tool_call)
        named = call if isinstance(call, ToolCall) else call.call
        if named is not None:
            named.name = self.real_name(named.name)
        if isinstance(call, ToolCall) and call.name in self:
            call.arguments = strict_call_arguments(self[call.name].parameters, call.arguments)
        return call

    def dispatch(self, call: Any, *, approve: Approve | None = None) -> ToolResult:
        """Run one call and return its ToolResult (never raises for the call's or the tool's faults)."""
        return run_sync(lambda: self.adispatch(call, approve=approve))

    async def adispatch(self, call: Any, *, approve: Approve | None = None) -> ToolResult:
        parsed = self.parse_call(call)
        if isinstance(parsed, ToolResult):
            return parsed
        t = self.get(parsed.name)
        if t is None:
            avail = ", ".join(self.names) or "none"
            why = "is not available here" if parsed.name in self._tools else "does not exist"
            return self.error_result(
                parsed, "unknown_tool", f"tool {parsed.name!r} {why} (available: {avail})"
            )
        try:
            issues = t.validate(parsed.arguments)
        except RecursionError:
            return self.error_result(
                parsed, "invalid_arguments", f"the arguments of {t.name} are nested too deeply"
            )
        if issues:
            n = len(issues)
            msg = f"{n} argument error{'s' * (n > 1)} for {t.name}: " + "; ".join(map(str, issues))
            return self.error_result(parsed, "invalid_arguments", msg, issues=issues)
        if approve is not None:
            denied = await _approval(approve, parsed, t)
            if denied is not None:
                return self.error_result(parsed, "denied", denied)
        start = time.perf_counter()
        timeout = t.timeout if t.timeout is not None else self.timeout
        try:
            try:
                kwargs = t.bind(parsed.arguments)
            except Exception as err:  # pydantic's conversion refused what jsonschema accepted
                return self.error_result(parsed, "invalid_arguments", f"{t.name}: {safe_str(err)}")
            value = await asyncio.wait_for(_invoke(t, kwargs), timeout)
            elapsed = time.perf_counter() - start
            if timeout is not None and elapsed > timeout:  # the loop was blocked: wait_for could not fire
                return self.error_result(
                    parsed, "timeout", f"{t.name} did not finish within {timeout:g} s: it blocked the "
                    f"event loop for {elapsed:.1f} s (an async tool must not call blocking functions; "
                    "use asyncio.sleep or asyncio.to_thread)", elapsed=elapsed,
                )  # fmt: skip
        except _Raised as raised:
            exc = raised.err
            return self.error_result(
                parsed, "exception", f"{t.name} raised {type(exc).__name__}: {safe_str(exc)}",
                elapsed=time.perf_counter() - start, trace=_trace(exc),
            )  # fmt: skip
        except (asyncio.TimeoutError, TimeoutError):
            return self.error_result(
                parsed,
                "timeout",
                f"{t.name} did not finish within {timeout:g} s",
                elapsed=time.perf_counter() - start,
            )
        try:
            content = value_text(value)
        except Exception as err:  # a hostile value: a __str__ or model_dump_json that raises, a cycle
            return self.error_result(
                parsed, "exception", f"the result of {t.name} can't be written as text: "
                f"{type(err).__name__}: {safe_str(err)}", elapsed=time.perf_counter() - start, trace=_trace(err),
            )  # fmt: skip
        return ToolResult(parsed, True, value, elapsed=time.perf_counter() - start, content=content)

    async def adispatch_many(
        self, calls: Iterable[Any], *, approve: Approve | None = None, max_concurrency: int | None = None
    ) -> list[ToolResult]:
        """Run calls concurrently, at most ``max_concurrency`` at once; results in the calls' order."""
        sem = asyncio.Semaphore(max(1, max_concurrency or self.max_concurrency))

        async def one(c: Any) -> ToolResult:
            async with sem:
                return await self.adispatch(c, approve=approve)

        return list(await asyncio.gather(*(one(c) for c in calls)))

    def dispatch_many(self, calls: Iterable[Any], **kwargs: Any) -> list[ToolResult]:
        calls = list(calls)
        return run_sync(lambda: self.adispatch_many(calls, **kwargs))

    def error_result(
        self,
        call: ToolCall | None,
        kind: ErrorKind,
        message: str,
        *,
        issues: list[SchemaIssue] | None = None,
        raw: Any = None,
        elapsed: float = 0.0,
        trace: str = "",
    ) -> ToolResult:
        """A failed call as the structured error result the model reads (messages and issues bounded),
        logged; public for the agent's drivers, which report malformed calls the same way."""
        short = [SchemaIssue(i.path, bounded(i.message, 500), i.keyword) for i in issues or []]
        r = ToolResult(call, False, None, kind, bounded(message), short, elapsed, raw=raw)
        if callable(self.error_detail):
            try:
                text = self.error_detail(r)
                r.content = bounded(text if isinstance(text, str) else safe_str(text), 4 * MAX_ERROR_TEXT)
                return r
            except Exception as err:  # a failing hook must not lose the result: the default text
                r.message = bounded(
                    f"{r.message} (error_detail raised {type(err).__name__}: {safe_str(err)})"
                )
                trace = ""
        r.content = error_text(
            r, "errors" if callable(self.error_detail) else self.error_detail, bounded(trace)
        )
        return r

    def truncated(self, text: str, budget: int) -> ToolResult:
        """The result of a call whose generation ran out of budget: never a half call."""
        return self.error_result(
            None, "truncated", f"the call did not fit in {budget} tokens and was not run", raw=text
        )


NUMBER_BYTES = 24
"""What a generated number is assumed to take at most (a float64 needs up to 24 characters)."""


def _pattern_width(pattern: Any) -> int | None:
    """The most characters a match of ``pattern`` can have, None if unbounded or unknown. Python's
    own regex parser computes it (JSON Schema patterns are ECMA regexes; those it can't read count as
    unbounded)."""
    if not isinstance(pattern, str):
        return None
    try:
        parser = importlib.import_module("re._parser" if sys.version_info >= (3, 11) else "sre_parse")
        widest = parser.parse(pattern).getwidth()[1]
    except Exception:  # not a Python regex: no bound from it
        return None
    return None if widest >= parser.MAXREPEAT else int(widest)


def _json_bytes(s: Any, defs: dict[str, Any], seen: set[str]) -> int | None:
    """The longest compact JSON text ``s`` allows, in bytes; None if unbounded."""
    if not isinstance(s, dict):
        return None if s is True or s is None else 0  # `true` allows anything; `false` nothing
    ref = s.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix("#/$defs/")
        if name in seen or name not in defs:
            return None  # recursive (or unknown): no bound
        return _json_bytes(defs[name], defs, seen | {name})
    if "const" in s:
        return len(json.dumps(s["const"]).encode())
    if "enum" in s:
        return max((len(json.dumps(v).encode()) for v in s["enum"]), default=0)
    alts = s.get("anyOf") or s.get("oneOf")
    if alts:
        branches = [_json_bytes(a, defs, seen) for a in alts]
        return None if any(x is None for x in branches) else max(branches)  # type: ignore[type-var]
    types = s.get("type")
    types = types if isinstance(types, list) else [types] if types else []
    sizes: list[int | None] = []
    for t in types:
        if t == "string":
            # A character is at most 4 bytes (UTF-8), or 2 as an escape such as \n; quotes around.
            widest = _pattern_width(s.get("pattern"))
            n = s.get("maxLength")
            n = widest if n is None else n if widest is None else min(int(n), widest)
            sizes.append(None if n is None else 4 * int(n) + 2)
        elif t in ("integer", "number"):
            sizes.append(NUMBER_BYTES)
        elif t in ("boolean", "null"):
            sizes.append(5)
        elif t == "array":
            item = _json_bytes(s.get("items", True), defs, seen)
            n = s.get("maxItems")
            sizes.append(None if item is None or n is None else 2 + int(n) * (item + 2))
        elif t == "object":
            if s.get("additionalProperties", True) is not False:
                sizes.append(None)
                continue
            total = 2
            for key, sub in s.get("properties", {}).items():
                value = _json_bytes(sub, defs, seen)
                if value is None:
                    total = -1
                    break
                total += len(json.dumps(key).encode()) + 2 + value + 2  # "key": value,
            sizes.append(None if total < 0 else total)
        else:
            sizes.append(None)
    if not sizes or any(x is None for x in sizes):
        return None
    return max(sizes)  # type: ignore[type-var]


def json_fault(err: BaseException) -> str:
    """Why ``json.loads`` refused a text, in words for the model: a RecursionError (JSON nested
    thousands deep) is refused as such, never raised on."""
    return "it is nested too deeply" if isinstance(err, RecursionError) else safe_str(err)


def _trace(err: BaseException) -> str:
    """The last lines of ``err``'s traceback (for ``error_detail="full"``), never raising."""
    try:
        return "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    except BaseException:  # noqa: BLE001 - an exception whose str() raises
        return ""


async def _approval(approve: Approve, call: ToolCall, t: Tool) -> str | None:
    """None if approved, else the reason it was not."""
    try:
        verdict = approve(call, t)
        if inspect.isawaitable(verdict):
            verdict = await verdict
    except Exception as err:
        return f"the approval hook raised {type(err).__name__}: {err}"
    if verdict is None or verdict is True:
        return None
    if isinstance(verdict, str):
        return verdict
    return "the call was not approved" if not verdict else None


_OWN_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("querylm_own_loop", default=False)
"""True inside ``run_sync``: the loop dispatching is querylm's own, not a caller's."""


async def _invoke(t: Tool, kwargs: dict[str, Any]) -> Any:
    """Run the tool: a sync one in a daemon thread; an async one on the caller's loop when the caller
    awaits (``adispatch``, ``Agent.arun``: a tool may share that loop's locks and clients), and on a
    fresh loop of its own in a daemon thread when the dispatch is synchronous (``dispatch``,
    ``Agent.run``). An async tool that blocks (``time.sleep``) then can't hold up the timeout: it is
    abandoned in its thread like a hung sync tool. On the caller's loop nothing can preempt it, so
    ``adispatch`` reports a call that returns past its timeout as a timeout, after the fact. Whatever
    the tool raises comes back as ``_Raised`` (SystemExit would otherwise end the loop, StopIteration
    can't cross a coroutine)."""
    if t.is_async and not _OWN_LOOP.get():
        return await _awaited(t.fn(**kwargs))
    fn = (lambda **kw: asyncio.run(_await(lambda: t.fn(**kw)))) if t.is_async else t.fn
    value = await _in_daemon_thread(fn, kwargs, t.name)
    if inspect.isawaitable(value):  # a sync function that returned a coroutine
        value = await _awaited(value)
    return value


async def _awaited(value: Any) -> Any:
    try:
        return await value
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException as err:  # noqa: BLE001 - reported as the tool's exception
        raise _Raised(err) from None


def _in_daemon_thread(fn: Callable[..., Any], kwargs: dict[str, Any], name: str) -> asyncio.Future[Any]:
    """Run a sync tool in its own daemon thread: a tool that hangs past its timeout is abandoned there
    and can't hold up the event loop, a thread pool, or the interpreter's exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(value: Any, err: BaseException | None) -> None:
        if fut.done():
            return
        if err is not None:
            fut.set_exception(_Raised(err))
        else:
            fut.set_result(value)

    def target() -> None:
        try:
            value, err = ctx.run(fn, **kwargs), None
        except BaseException as e:  # delivered to the awaiting task
            value, err = None, e
        try:
            loop.call_soon_threadsafe(settle, value, err)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=target, daemon=True, name=f"querylm-tool-{name}").start()
    return fut


def run_sync(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine to completion from sync code, also when an event loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(make))
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(lambda: asyncio.run(_await(make))).result()


async def _await(make: Callable[[], Awaitable[Any]]) -> Any:
    _OWN_LOOP.set(True)  # in this task's own context: the caller's is untouched
    return await make()


def _is_langchain_tool(obj: Any) -> bool:
    if "langchain_core" not in sys.modules:
        return False
    from langchain_core.tools import BaseTool

    return isinstance(obj, BaseTool)

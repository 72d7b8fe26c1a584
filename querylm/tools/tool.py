"""``@tool``: a Python function (sync or async) as a Tool a model can call.

The arguments' JSON Schema (Draft 2020-12) comes from the signature through pydantic's TypeAdapter, so
defaults and ``Optional`` stay optional and ``Literal``, enums, nested models and lists get the schema
pydantic users know; per-argument docs come from the docstring (Google, NumPy or Sphinx style). The same
schema is what the grammar generates from, what jsonschema validates against, and what is exported to
OpenAI and LangChain: one source of truth per tool.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any

from ..errors import QueryError
from .openai import NotStrict, openai_tool
from .validate import InvalidSchema, SchemaIssue, check_schema, validate

NAME_RE = re.compile(r"[\w.:/@+-]{1,256}")
"""What a tool may be called (whole names): letters and digits of any script and ``_ . : / @ + -``, 1
to 256 characters, as real tool sets name them (``math.factorial``, ``files/read``, ``user@svc``).
Local grammars use the name as it is; a backend with a narrower rule gets ``wire_name``."""

WIRE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""OpenAI's rule for function names: what hosted servers are sent (``wire_name``)."""

_WIRE_HASH = 8
"""Hex digits of the name's hash a mapped wire name ends with."""


def wire_name(name: str) -> str:
    """``name`` as OpenAI's rule (``WIRE_NAME_RE``) allows it: unchanged where it already does; else
    each run of other characters becomes ``_``, cut to leave room, and ``_`` plus a hash of the whole
    name is added. Deterministic (a server's call maps back by the same function), and two names map to
    one only if their hashes collide or a tool is literally called like another's mapped form, which
    ``ToolRegistry.register`` refuses."""
    if WIRE_NAME_RE.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_WIRE_HASH]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[: 64 - _WIRE_HASH - 1]
    return f"{stem or 'tool'}_{digest}"


class ToolError(QueryError):
    """A tool can't be defined or registered: a bad name or schema, a signature JSON can't call, a
    duplicate name. (Errors *while calling* a tool never raise: they are ToolResults.)"""


class Tool:
    """A callable with a name, a description and a JSON Schema for its (keyword) arguments.

    Calling the Tool calls the function unchanged; ``registry.dispatch`` is the checked path models use.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        schema: dict[str, Any] | None = None,
        timeout: float | None = None,
        read_only: bool = False,
        convert_arguments: bool | None = None,
    ):
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not NAME_RE.fullmatch(self.name):
            raise ToolError(
                f"tool name {self.name!r} must be 1 to 256 letters, digits or _ . : / @ + - "
                f"(the pattern {NAME_RE.pattern})"
            )
        summary, param_docs = parse_docstring(inspect.getdoc(fn) or "")
        self.description = description if description is not None else summary
        self.timeout = timeout
        self.read_only = read_only
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - a callable object with an async __call__
        )
        self._adapters: dict[str, Any] | None = None
        if schema is not None:
            self.parameters = dict(schema)
            convert = bool(convert_arguments)
        else:
            self.parameters = schema_from_signature(fn, param_docs)
            convert = convert_arguments is not False
        try:
            check_schema(self.parameters)
        except InvalidSchema as err:
            raise ToolError(f"tool {self.name!r}: {err}") from None
        if self.parameters.get("type") != "object":
            raise ToolError(f"tool {self.name!r}: the arguments schema must be an object schema")
        if convert:
            self._adapters = _adapters(fn)
        functools_wraps(self, fn)

    # -- calling -------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def validate(self, arguments: Any) -> list[SchemaIssue]:
        """Every schema violation of ``arguments`` (empty: valid)."""
        return validate(self.parameters, arguments)

    def bind(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments the function gets: JSON values converted to the annotated Python types
        (a nested model becomes the model, an enum value the member) once they have validated."""
        if self._adapters is None:
            return dict(arguments)
        out = {}
        for key, value in arguments.items():
            adapter = self._adapters.get(key)
            out[key] = adapter.validate_python(value) if adapter is not None else value
        return out

    # -- export --------------------------------------------------------------------------------------

    def to_openai(self, *, strict: bool | None = None) -> dict[str, Any]:
        """This tool as an entry of OpenAI's ``tools`` list (see ``openai.py`` for the strict projection),
        named by its ``wire_name``. LangChain: ``ToolRegistry([tool]).to_langchain()``."""
        try:
            return openai_tool(self.wire_name, self.description, self.parameters, strict=strict)
        except NotStrict as err:
            raise ToolError(f"tool {self.name!r} can't be exported strict: its schema {err}") from None

    @property
    def wire_name(self) -> str:
        """The name hosted servers are sent (OpenAI's rule; ``wire_name``)."""
        return wire_name(self.name)

    def to_json(self) -> dict[str, Any]:
        """The tool as listed to a model: name, description, parameters."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, parameters={json.dumps(self.parameters)[:80]}...)"


def functools_wraps(tool: Tool, fn: Callable[..., Any]) -> None:
    """Keep the function's identity on the Tool so it still documents and pickles-by-name like it."""
    for attr in ("__module__", "__qualname__", "__doc__"):
        try:
            setattr(tool, attr, getattr(fn, attr))
        except AttributeError:
            pass
    tool.__wrapped__ = fn  # type: ignore[attr-defined]


@typing.overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@typing.overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    timeout: float | None = None,
    read_only: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    timeout: float | None = None,
    read_only: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a Tool of a function: ``@tool`` or ``@tool(name=, description=, schema=, timeout=, read_only=)``.

    ``schema`` replaces the generated arguments schema (the function then gets the JSON values as they
    are). ``timeout`` (seconds) bounds each call; ``read_only`` marks tools safe to offer after the model
    has read untrusted text (``registry.read_only()``)."""

    def make(f: Callable[..., Any]) -> Tool:
        return Tool(
            f, name=name, description=description, schema=schema, timeout=timeout, read_only=read_only
        )

    return make(fn) if fn is not None else make


# -- the schema from a signature -------------------------------------------------------------------------


def schema_from_signature(fn: Callable[..., Any], param_docs: dict[str, str] | None = None) -> dict[str, Any]:
    """The arguments' JSON Schema: pydantic's, without its generated titles, with the docstring's
    per-argument descriptions, ``additionalProperties: false`` unless the function takes ``**kwargs``."""
    from pydantic import TypeAdapter

    sig = _signature(fn)
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise ToolError(f"{_fname(fn)}: *{p.name} can't be passed by a JSON call: give schema= instead")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolError(f"{_fname(fn)}: positional-only {p.name!r} can't be passed by name")
    try:
        schema = TypeAdapter(_keyword_view(fn, sig)).json_schema()
    except Exception as err:  # pydantic raises several kinds for types it can't describe
        raise ToolError(f"{_fname(fn)}: no JSON Schema for its arguments: {err}") from None
    schema = strip_titles(schema)
    props = schema.setdefault("properties", {})
    for key, doc in (param_docs or {}).items():
        if key in props and "description" not in props[key]:
            props[key] = {**props[key], "description": doc}
    schema.setdefault("additionalProperties", False)
    schema["type"] = "object"
    return schema


def _signature(fn: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise ToolError(f"{_fname(fn)}: can't read its signature: {err}") from None


def _keyword_view(fn: Callable[..., Any], sig: inspect.Signature) -> Callable[..., Any]:
    """A stand-in with only keyword-only parameters (pydantic can't describe a mix of kinds), the same
    annotations and defaults, so ``TypeAdapter`` describes exactly what a JSON call can pass."""
    hints = _hints(fn)
    params = []
    for p in sig.parameters.values():
        kind = inspect.Parameter.VAR_KEYWORD if p.kind is p.VAR_KEYWORD else inspect.Parameter.KEYWORD_ONLY
        ann = hints.get(p.name, p.annotation)
        params.append(p.replace(kind=kind, annotation=Any if ann is inspect.Parameter.empty else ann))

    def view(**kwargs: Any) -> None: ...

    view.__signature__ = sig.replace(parameters=params, return_annotation=None)  # type: ignore[attr-defined]
    view.__annotations__ = {p.name: p.annotation for p in params}
    view.__module__ = getattr(fn, "__module__", __name__)
    return view


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(target, "__annotations__", {}))


def _adapters(fn: Callable[..., Any]) -> dict[str, Any]:
    from pydantic import TypeAdapter

    hints = _hints(fn)
    out: dict[str, Any] = {}
    for p in _signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            continue
        ann = hints.get(p.name, p.annotation)
        if ann is not inspect.Parameter.empty and ann is not Any:
            out[p.name] = TypeAdapter(ann)
    return out


def _fname(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def walk_schema(schema: Any, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``fn`` to every (sub)schema object, bottom-up, knowing which keys hold schemas (so a
    property that happens to be called "title" or "default" is never mistaken for a keyword)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: walk_schema(v, fn) for k, v in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [walk_schema(v, fn) for v in out[key]]
    for key in _SUBSCHEMA_ONE:
        if isinstance(out.get(key), dict):
            out[key] = walk_schema(out[key], fn)
    return fn(out)


def strip_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic titles every property ("title": "Query" for ``query``): tokens in every prompt that
    tell the model nothing."""

    def drop(s: dict[str, Any]) -> dict[str, Any]:
        s.pop("title", None)
        return s

    return walk_schema(schema, drop)


# -- docstrings --------------------------------------------------------------------------------------------

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|"
    r"Examples?|Notes?|See Also|Attributes)\s*:?\s*$",
    re.IGNORECASE,
)
_PARAM_SECTIONS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_SPHINX = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {argument: its doc}) from a Google-, NumPy- or Sphinx-style docstring."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        m_sphinx = _SPHINX.match(stripped)
        if m_sphinx:
            current = m_sphinx.group(1)
            params[current] = m_sphinx.group(2).strip()
            section = "sphinx"
            i += 1
            continue
        if stripped.startswith(":") and section in (None, "sphinx"):  # :returns:, :raises: ...
            section, current = "other", None
            i += 1
            continue
        m = _SECTION.match(stripped)
        underline = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if m and (stripped.endswith(":") or underline):
            section = m.group(1).lower()
            current, base_indent = None, None
            i += 2 if underline else 1
            continue
        if section in _PARAM_SECTIONS:
            indent = len(line) - len(line.lstrip())
            entry = _param_entry(stripped)
            if stripped and (base_indent is None or indent <= base_indent) and entry:
                base_indent = indent if base_indent is None else base_indent
                current, params[entry[0]] = entry
            elif stripped and current:
                params[current] = (params[current] + " " + stripped).strip()
            elif not stripped:
                current = None
            i += 1
            continue
        if section == "sphinx" and current and stripped and line.startswith((" ", "\t")):
            params[current] = (params[current] + " " + stripped).strip()
        elif section is None:
            summary.append(line)
        i += 1
    return "\n".join(summary).strip(), {k: v for k, v in params.items() if v}


def _param_entry(line: str) -> tuple[str, str] | None:
    """``name (type): doc`` / ``name: doc`` (Google) or ``name : type`` (NumPy, doc on the next lines)."""
    numpy = re.match(r"^\**(\w+)\s+:(\s.*)?$", line) or re.match(r"^\**(\w+)$", line)
    if numpy:
        return numpy.group(1), ""
    google = re.match(r"^\**(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
    if google:
        return google.group(1), google.group(2).strip()
    return None

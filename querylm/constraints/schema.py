"""JSON Schema shaped for generation, one way for every caller (typed holes, tool calls, hosted servers).

A schema as users and pydantic write it lets a small model run on without end: flexible whitespace
(newlines forever), open objects (keys a type doesn't name, which pydantic then drops), unbounded
strings and arrays (a call cut by its token budget). So what the mask engine generates under is the
schema closed, bounded and compact; a server gets the same schema less the mask engine's own
``x-guidance`` key, and OpenAI's strict mode only where the schema already meets its rules.
"""

from __future__ import annotations

from typing import Any

from . import regex

COMPACT_JSON = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Compact separators in generated JSON: flexible whitespace lets a small model emit newlines forever."""

GUIDANCE = "x-guidance"
"""llguidance's key for its JSON options: not JSON Schema, so servers don't get it."""


def closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object schema that lists its properties
    and says nothing about others (pydantic's default, ``extra="ignore"``, says nothing)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not", "contains"):
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    for key in ("anyOf", "allOf", "oneOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return regex.exact_dates(out)


def closed_object(props: dict[str, Any]) -> dict[str, Any]:
    """An object of exactly ``props``: every one required, no other."""
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def bound_node(s: dict[str, Any], max_string_length: int, max_items: int) -> dict[str, Any]:
    """One schema node (not its children) closed and bounded for generation: objects closed, strings
    and arrays given a most length where they have none, and what only documents a value dropped."""
    types = s.get("type")
    types = types if isinstance(types, list) else [types]
    if "properties" in s:  # closed: a key it does not name is one a model may add without end
        s.setdefault("additionalProperties", False)  # (an object naming none stays open: any object)
    if "string" in types and not ({"maxLength", "enum", "const"} & set(s)):
        floor = 64 if "format" in s else 0  # a date-time needs 20 characters, a UUID 36
        s["maxLength"] = max(max_string_length, s.get("minLength", 0), floor)
    if "array" in types and "maxItems" not in s:
        s["maxItems"] = max(max_items, s.get("minItems", 0))
    for key in ("default", "description", "examples"):
        s.pop(key, None)
    return regex.exact_dates(s)


def compact(schema: dict[str, Any], **options: Any) -> dict[str, Any]:
    """``schema`` generated with compact whitespace (and llguidance's other JSON ``options``)."""
    return {**schema, GUIDANCE: {**COMPACT_JSON, **options}}


def for_server(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as a server takes it: without the mask engine's options."""
    return {k: v for k, v in schema.items() if k != GUIDANCE}


def strict_ok(schema: Any) -> bool:
    """Whether OpenAI's strict mode takes ``schema``: every object closed with all its properties
    required."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(
                props
            ):
                return False
        return all(strict_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(strict_ok(v) for v in schema)
    return True

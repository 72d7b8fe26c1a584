"""Tools as OpenAI ``tools`` entries, with ``strict: true`` where the schema allows it.

OpenAI's strict mode accepts a subset of JSON Schema. The projection we send (local validation against
the tool's full schema runs on every call either way, so nothing the server can't enforce is lost):

1. every object gets ``additionalProperties: false`` (an object whose extra properties are allowed or
   typed, such as ``dict[str, int]`` or ``{"type": "object"}`` with no properties, can't be strict: the
   tool is exported with ``strict: false``);
2. every property becomes required; one that was optional and does not accept null is made nullable,
   and a null sent for it means "not given" (``strict_call_arguments`` drops it, so the default applies);
3. ``oneOf`` becomes ``anyOf`` (the local validator still checks that exactly one branch matches);
4. keywords strict mode rejects but that only narrow a value (``default``, ``minLength``, ``maxLength``,
   ``uniqueItems``, ``examples``, formats outside OpenAI's list) are dropped from what is sent;
5. keywords that change a schema's shape (``allOf``, ``not``, ``if``/``then``/``else``,
   ``patternProperties``, ``dependentSchemas``, ``propertyNames``, ``contains``, ...) make the tool
   non-strict: it is sent unchanged with ``strict: false``.

This is schema work only: it imports nothing of the tools package, and ``Tool.to_openai`` /
``ToolRegistry.to_openai`` call it.
"""

from __future__ import annotations

import copy
from typing import Any

SHAPE_KEYWORDS = {
    "allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "patternProperties",
    "unevaluatedProperties", "propertyNames", "minProperties", "maxProperties", "unevaluatedItems",
    "contains", "minContains", "maxContains",
}  # fmt: skip
DROPPED_KEYWORDS = {"default", "minLength", "maxLength", "uniqueItems", "examples", "$schema", "deprecated"}
OPENAI_FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}


class NotStrict(Exception):
    """The schema uses a construct strict mode can't express."""


def strict_projection(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as strict mode accepts it (rules in the module docstring); NotStrict if it can't be."""
    return _project(copy.deepcopy(schema))


def _project(s: Any) -> Any:
    if not isinstance(s, dict):
        return s
    bad = SHAPE_KEYWORDS & set(s)
    if bad:
        raise NotStrict(f"uses {sorted(bad)[0]}")
    out = {k: v for k, v in s.items() if k not in DROPPED_KEYWORDS}
    if "format" in out and out["format"] not in OPENAI_FORMATS:
        del out["format"]
    if "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    for key in ("anyOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [_project(v) for v in out[key]]
    if isinstance(out.get("items"), dict):
        out["items"] = _project(out["items"])
    if isinstance(out.get("$defs"), dict):
        out["$defs"] = {k: _project(v) for k, v in out["$defs"].items()}
    is_object = out.get("type") == "object" or "properties" in out
    if is_object:
        # An object that names no property and says nothing of others is any object (JSON Schema's
        # default); one that names its properties is closed, as querylm generates it.
        extra = out.get("additionalProperties", True if "properties" not in out else False)
        if extra is not False:
            raise NotStrict("allows additional properties")
        props = out.get("properties", {})
        required = set(out.get("required", []))
        new_props = {}
        for name, sub in props.items():
            p = _project(sub)
            if name not in required and not _allows_null(p):
                desc = p.pop("description", None) if isinstance(p, dict) else None
                p = {"anyOf": [p, {"type": "null"}], **({"description": desc} if desc else {})}
            new_props[name] = p
        out["properties"] = new_props
        out["required"] = list(props)
        out["additionalProperties"] = False
        out.setdefault("type", "object")
    return out


def _allows_null(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    t = s.get("type")
    if t == "null" or (isinstance(t, list) and "null" in t):
        return True
    return any(_allows_null(b) for b in s.get("anyOf", []))


def openai_tool(
    name: str, description: str, parameters: dict[str, Any], *, strict: bool | None = None
) -> dict[str, Any]:
    """``{"type": "function", "function": {name, description, parameters, strict}}``. ``strict=None``:
    strict when the schema allows it; True: strict or NotStrict; False: the schema as it is."""
    fn: dict[str, Any] = {"name": name, "description": description}
    if strict is False:
        return {"type": "function", "function": {**fn, "parameters": parameters, "strict": False}}
    try:
        params = strict_projection(parameters)
    except NotStrict:
        if strict:
            raise
        return {"type": "function", "function": {**fn, "parameters": parameters, "strict": False}}
    return {"type": "function", "function": {**fn, "parameters": params, "strict": True}}


def strict_call_arguments(schema: dict[str, Any], arguments: Any) -> Any:
    """Undo rule 2 on arguments a strict server sent: a null for a property the original schema made
    optional and does not let be null is dropped (so the function's default applies). Follows
    ``properties``, ``items`` and ``$ref`` into ``$defs``."""
    defs = schema.get("$defs", {})

    def resolve(s: Any) -> Any:
        while isinstance(s, dict) and isinstance(s.get("$ref"), str) and s["$ref"].startswith("#/$defs/"):
            s = defs.get(s["$ref"].removeprefix("#/$defs/"), {})
        return s

    def fix(s: Any, value: Any) -> Any:
        s = resolve(s)
        if not isinstance(s, dict):
            return value
        if isinstance(value, dict) and isinstance(s.get("properties"), dict):
            required = set(s.get("required", []))
            out = {}
            for k, v in value.items():
                sub = s["properties"].get(k)
                if v is None and k not in required and sub is not None and not _allows_null(resolve(sub)):
                    continue
                out[k] = fix(sub, v) if sub is not None else v
            return out
        if isinstance(value, list) and isinstance(s.get("items"), dict):
            return [fix(s["items"], v) for v in value]
        return value

    return fix(schema, arguments)

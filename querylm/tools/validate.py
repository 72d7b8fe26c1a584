"""Argument validation with ``jsonschema`` (Draft 2020-12, formats checked), every error reported.

The mask engine makes calls valid by construction on grammar backends; this validator is what makes the
same promise everywhere else (hosted servers, LangChain tools, a call written by hand) and the safety net
on grammar backends. It reports all errors, each with its JSON path, so a model can fix them in one go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


@dataclass(frozen=True)
class SchemaIssue:
    """One way the arguments break the schema."""

    path: str
    """JSON path of the offending value, ``$`` for the arguments object itself (``$.items[2].qty``)."""
    message: str
    keyword: str
    """The failing schema keyword (``type``, ``required``, ``maximum``, ``format``...)."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message, "keyword": self.keyword}


class InvalidSchema(ValueError):
    """A tool's schema is not a valid Draft 2020-12 schema (raised when the tool is defined)."""


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Draft202012Validator:
    schema = json.loads(schema_text)
    check_schema(schema)  # once per schema: checking against the metaschema costs more than validating
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A cached validator for ``schema`` (checked to be a valid schema first)."""
    return _validator(json.dumps(schema, sort_keys=True))


def check_schema(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        where = "/".join(str(p) for p in err.path) or "(root)"
        raise InvalidSchema(f"invalid JSON Schema at {where}: {err.message}") from None


def validate(schema: dict[str, Any], instance: Any) -> list[SchemaIssue]:
    """Every error of ``instance`` under ``schema``, in document order; empty when it is valid."""
    errors = sorted(validator(schema).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [_issue(e) for e in errors]


def _issue(err: Any) -> SchemaIssue:
    # anyOf/oneOf failures carry one context error per branch; the branch that got furthest (deeper,
    # or past its type check) is the useful one to show ("$.day: '2024-13-45' is not a 'date'" rather
    # than "... is not valid under any of the given schemas").
    if err.context:
        best = max(err.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        if len(best.absolute_path) > len(err.absolute_path) or best.validator != "type":
            return _issue(best)
    return SchemaIssue(err.json_path, err.message, str(err.validator))

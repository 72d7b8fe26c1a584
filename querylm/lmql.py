"""LMQL's Python API over querylm's: ``import querylm.lmql as lmql`` migrates a program.

A thin layer of names and call conventions, no second implementation: every query still goes through
querylm's parse → compile → run. What differs from LMQL is listed in the README ("Migrating from
LMQL"); the random model's token stream is the expected difference.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends.base import Backend
from .backends.models import resolve
from .language.check import compile_source
from .query import F as _F
from .query import QueryFunction, defining_scope, returned_value
from .runtime.nested import in_nested_mode
from .runtime.result import QueryResult
from .runtime.run import run as _run
from .runtime.score import score as _score

LMQLResult = QueryResult
"""LMQL's result type: ``prompt``, ``variables`` (and querylm's ``holes``, ``messages``...)."""

_default_model: str | Backend | None = None
CALL_OPTIONS = ("model", "decoder", "n")
"""Keywords a query function takes at call time, as in LMQL, unless it has parameters of that name."""


def set_default_model(model: str | Backend | None) -> None:
    """The model of every query with neither a ``from`` clause nor a ``model=``."""
    global _default_model
    _default_model = model


def get_default_model() -> str | Backend | None:
    return _default_model


def model(name: str, **options: Any) -> Backend:
    """``lmql.model("random", seed=1)``, ``lmql.model("local:smollm2")``: a querylm backend. LMQL's
    ``local:`` prefix and HF ids go to querylm's resolver; ``seed=`` seeds the random model."""
    seed = int(options.pop("seed", 0) or 0)
    return resolve(name, seed=seed, device=options.pop("device", None), dtype=options.pop("dtype", None))


def _decoder(decoder: str | None, n: int | None) -> str | None:
    """``decoder="sample", n=2`` as querylm's decoder text ``sample(n=2)``."""
    if n is None:
        return decoder
    name = decoder or "argmax"
    if "(" in name:
        return name.rstrip(")") + f", n={n})"
    return f"{name}(n={n})"


def run_sync(source: str, *args: Any, **kwargs: Any) -> Any:
    """Run a query string (or ``.lmql`` path) with its inputs as keywords: LMQL's ``lmql.run_sync``.
    A string that starts with the ``lmql`` marker or is indented is read as LMQL reads it."""
    if args:
        raise TypeError("lmql.run_sync takes the query's inputs as keywords")
    options = {k: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs}
    options.setdefault("model", _default_model)
    src = _strip_marker(source) if isinstance(source, str) else source
    result = _run(
        src,
        model=options.get("model"),
        decoder=_decoder(options.get("decoder"), options.get("n")),
        **kwargs,
    )
    return returned_value(result)


async def run(source: str, *args: Any, **kwargs: Any) -> Any:
    """LMQL's ``lmql.run`` (a coroutine)."""
    return await asyncio.to_thread(run_sync, source, *args, **kwargs)


def run_file(path: str | Path, **kwargs: Any) -> Any:
    return (
        run_sync(str(Path(path)), **kwargs)
        if str(path).endswith(".lmql")
        else run_sync(Path(path).read_text(encoding="utf-8"), **kwargs)
    )


def _strip_marker(source: str) -> str:
    """``lmql.run('lmql\\n  "Q: [X]"')``: LMQL drops a leading ``lmql`` marker line."""
    stripped = source.lstrip()
    if stripped.startswith("lmql") and (len(stripped) == 4 or stripped[4] in " \t\r\n"):
        return " " * (len(source) - len(stripped) + 4) + stripped[4:]
    return source


class LMQLQueryFunction(QueryFunction):
    """A ``@lmql.query`` function: called with its arguments, plus LMQL's call-time ``model=``,
    ``decoder=`` and ``n=`` (where it has no parameter of that name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_nested_mode():
            return super().__call__(*args, **kwargs)
        params = self.signature.parameters
        options = {k: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs and k not in params}
        if not options and self.model is None and _default_model is None:
            return super().__call__(*args, **kwargs)
        call = _with_options(self, options)
        if self.is_async:
            return call.acall(*args, **kwargs)
        return returned_value(call.run(*args, **kwargs))

    async def aresult(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.__call__, *args, **kwargs)


def _with_options(fn: LMQLQueryFunction, options: dict[str, Any]) -> LMQLQueryFunction:
    import copy

    call = copy.copy(fn)
    call.model = options.get("model", fn.model if fn.model is not None else _default_model)
    call.decoder = _decoder(options.get("decoder", fn.decoder), options.get("n"))
    return call


def query(fn: Callable[..., Any] | str | None = None, **options: Any) -> Any:
    """``@lmql.query``, ``@lmql.query(model=lmql.model("random", seed=1))``, or ``lmql.query("...")``
    for a query string (a function of the names it reads, as keywords)."""
    if isinstance(fn, str):
        source = _strip_marker(fn)
        compile_source(source)  # errors now, as LMQL reports them
        return lambda **inputs: run_sync(source, **{**options, **inputs})
    scope = defining_scope(sys._getframe(1))

    def make(f: Callable[..., Any]) -> LMQLQueryFunction:
        model_opt = options.pop("model", None)
        decoder_opt = options.pop("decoder", None)
        return LMQLQueryFunction(f, model=model_opt, decoder=decoder_opt, scope=scope, **options)

    return make if fn is None else make(fn)


class F(_F):
    """``lmql.F("Summarize {text}: [SUMMARY]", "STOPS_AT(SUMMARY, '.')")``: inputs by name, or by
    position in the order the template first reads them."""

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        if args:
            names = list(dict.fromkeys(re.findall(r"\{\s*([A-Za-z_]\w*)", self.source)))
            names = [n for n in names if n in self.plan.compiled.inputs and n not in inputs]
            if len(args) > len(names):
                raise TypeError(f"F takes {len(names)} positional inputs ({', '.join(names)})")
            inputs.update(zip(names, args, strict=False))
        if self.model is None and _default_model is not None:
            self.model = _default_model  # type: ignore[assignment]
        return super().__call__(**inputs)


def generate_sync(prompt: str, max_tokens: int = 32, model: str | Backend | None = None, **kw: Any) -> str:
    """LMQL's ``lmql.generate_sync``: the model's continuation of ``prompt`` (raw text)."""
    src = repr(prompt.replace("[", "[[").replace("]", "]]").replace("{", "{{").replace("}", "}}") + "[OUT]")
    result = _run(
        f"{src} where len(TOKENS(OUT)) <= {int(max_tokens)}",
        model=model if model is not None else _default_model,
        chat=False,
        **kw,
    )
    assert isinstance(result, QueryResult)
    return str(result.variables["OUT"])


async def generate(prompt: str, max_tokens: int = 32, model: str | Backend | None = None, **kw: Any) -> str:
    return await asyncio.to_thread(generate_sync, prompt, max_tokens, model, **kw)


def score_sync(prompt: str, values: list[str], model: str | Backend | None = None) -> list[float]:
    """LMQL's ``lmql.score_sync``: the total log-probability of each value after ``prompt``."""
    return [s.total for s in _score(prompt, values, model=model if model is not None else _default_model)]


async def score(prompt: str, values: list[str], model: str | Backend | None = None) -> list[float]:
    return await asyncio.to_thread(score_sync, prompt, values, model)


def main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a query function synchronously, awaiting an async one."""
    out = fn(*args, **kwargs)
    return asyncio.run(_awaited(out)) if inspect.isawaitable(out) else out


async def _awaited(value: Any) -> Any:
    return await value


__all__ = [
    "F",
    "LMQLResult",
    "generate",
    "generate_sync",
    "get_default_model",
    "main",
    "model",
    "query",
    "run",
    "run_file",
    "run_sync",
    "score",
    "score_sync",
    "set_default_model",
]

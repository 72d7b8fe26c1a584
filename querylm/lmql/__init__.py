"""LMQL's Python API over querylm's: ``import querylm.lmql as lmql`` migrates a program.

A thin layer of names and call conventions, no second implementation: every query still goes through
querylm's parse → compile → run. What differs from LMQL is listed in the README ("Migrating from
LMQL"); the random model's token stream is the expected difference.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import hub
from ..backends.base import Backend
from ..backends.models import resolve
from ..language.check import Plan, bind_inputs, compile_source
from ..language.ir import DECODER_ARGS, Query
from ..language.source import docstring_source, parse_source
from ..query import F as _F
from ..query import QueryFunction, defining_scope, returned_value
from ..runtime.nested import in_nested_mode, in_query_code
from ..runtime.result import QueryResult
from ..runtime.run import run_plan
from ..runtime.score import score as _score
from . import algorithms, decorators

LMQLResult = QueryResult
"""LMQL's result type: ``prompt``, ``variables`` (and querylm's ``holes``, ``messages``...)."""

_default_model: Any = None
CALL_OPTIONS = ("model", "decoder", "n")
"""Keywords a query function takes at call time, as in LMQL, unless it has parameters of that name."""
DECODER_OPTIONS = frozenset().union(*DECODER_ARGS.values()) - {"n"}
"""``@lmql.query(decoder="sample", temperature=0.8)``: keywords that are the decoder's arguments."""

Model = Any
"""A model as LMQL programs pass it: an id string, an ``LLM`` (``lmql.model(...)``) or a Backend."""


class LLM:
    """LMQL's ``lmql.LLM`` (what ``lmql.model(...)`` returns): a model usable in ``from``, ``model=``,
    and on its own with ``generate`` / ``score``. It wraps a querylm backend, which querylm's runtime
    takes from it (``__querylm_backend__``)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def __querylm_backend__(self) -> Backend:
        return self.backend

    def __repr__(self) -> str:
        return f"lmql.LLM({self.backend.name!r})"

    def generate_sync(self, prompt: str | list[str], max_tokens: int = 32, **kw: Any) -> str | list[str]:
        if isinstance(prompt, list):
            n = kw.pop("n", len(prompt))
            if n != len(prompt):
                raise TypeError(f"LLM.generate: n={n} with {len(prompt)} prompts (one continuation each)")
            return [generate_sync(p, max_tokens, model=self, **kw) for p in prompt]
        return generate_sync(prompt, max_tokens, model=self, **kw)

    async def generate(self, prompt: str | list[str], max_tokens: int = 32, **kw: Any) -> str | list[str]:
        return await asyncio.to_thread(self.generate_sync, prompt, max_tokens, **kw)

    def score_sync(self, prompt: str, values: str | list[str]) -> ScoringResult:
        return score_sync(prompt, values, model=self)

    async def score(self, prompt: str, values: str | list[str]) -> ScoringResult:
        return await asyncio.to_thread(self.score_sync, prompt, values)


def _backend(model: Model) -> str | Backend | None:
    """The model as querylm's API takes it (an id or a Backend)."""
    return model.backend if isinstance(model, LLM) else model


def set_default_model(model: Model) -> None:
    """The model of every query with neither a ``from`` clause nor a ``model=``."""
    global _default_model
    _default_model = model


def get_default_model() -> Model:
    return _default_model


def model(name: str, **options: Any) -> LLM:
    """``lmql.model("random", seed=1)``, ``lmql.model("local:smollm2")``: LMQL's ``local:`` prefix and
    HF ids go to querylm's resolver; ``seed=`` seeds the random model."""
    seed = int(options.pop("seed", 0) or 0)
    options.pop("silent", None)  # LMQL's switch for its loading messages (querylm logs instead)
    device, dtype = options.pop("device", None), options.pop("dtype", None)
    if options:
        raise TypeError(f"lmql.model: unsupported options {', '.join(sorted(options))}")
    return LLM(resolve(name, seed=seed, device=device, dtype=dtype))


def tokenizer(name: str) -> Any:
    """LMQL's ``lmql.tokenizer(name)``: a Hugging Face tokenizer (``t(text)["input_ids"]``);
    ``"random"`` is the random model's (the one its ``TOKENS`` count in)."""
    if name == "random" or name.startswith("random:"):
        return resolve(name).tokenizer
    return hub.model_tokenizer(name)


def _decoder(decoder: str | None, n: int | None, args: dict[str, Any] | None = None) -> str | None:
    """``decoder="sample", n=2, temperature=0.8`` as querylm's decoder text ``sample(n=2, temperature=0.8)``."""
    extra = {**(args or {}), **({"n": n} if n is not None else {})}
    if not extra:
        return decoder
    name = decoder or "argmax"
    written = ", ".join(f"{k}={v!r}" for k, v in extra.items())
    if "(" in name:
        inner = name[name.index("(") + 1 : name.rindex(")")].strip()
        return f"{name[: name.index('(')]}({inner + ', ' if inner else ''}{written})"
    return f"{name}({written})"


def _model_for(plan: Plan, given: Model) -> str | Backend | None:
    """The model a call runs on: the one given, else the query's ``from``, else the default model."""
    query = plan.compiled.query
    if given is not None:
        return _backend(given)
    if query.model is not None or query.model_expr is not None:
        return None  # the query's own from clause
    return _backend(_default_model)


def _value(plan: Plan, result: QueryResult | list[QueryResult]) -> Any:
    """What an LMQL query call returns: the ``return`` value, else the result; a list of them when the
    query names its decoder (``argmax`` ... included, as LMQL's own tests expect) or n > 1, except that a
    query that decoded no hole has its one value whatever the decoder."""
    value = returned_value(result)
    if isinstance(result, list):
        if result and all(not r.holes for r in result):
            return value[0]
        return value
    explicit = plan.compiled.query.decoder.position is not None
    return [value] if explicit else value


def _lmql_name(plan: Plan, inputs: dict[str, Any]) -> dict[str, Any]:
    """LMQL's compiled queries always see the ``lmql`` module (``from lmql.model(...)`` in a string)."""
    if "lmql" in plan.compiled.inputs and "lmql" not in inputs:
        inputs["lmql"] = sys.modules[__name__]
    return inputs


def _call_options(plan: Plan, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take LMQL's call-time ``model=``, ``decoder=``, ``n=`` out of ``kwargs``, unless the query reads
    a name of that name (``argmax(n=n)``: then it is an input)."""
    return {k: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs and k not in plan.compiled.inputs}


def _positional(plan: Plan, source: str, args: tuple[Any, ...], inputs: dict[str, Any]) -> dict[str, Any]:
    """Positional inputs of a query string, in the order the query first reads them (as LMQL binds them)."""
    if not args:
        return inputs
    names = [n for n in plan.compiled.inputs if n not in inputs and n != "lmql"]
    names.sort(key=lambda n: m.start() if (m := re.search(rf"\b{re.escape(n)}\b", source)) else len(source))
    if len(args) > len(names):
        raise TypeError(
            f"the query takes {len(names)} positional inputs ({', '.join(names)}), got {len(args)}"
        )
    return {**inputs, **dict(zip(names, args, strict=False))}


def run_sync(source: str, *args: Any, **kwargs: Any) -> Any:
    """Run a query string (or ``.lmql`` path) with its inputs: LMQL's ``lmql.run_sync``. A string that
    starts with the ``lmql`` marker or is indented is read as LMQL reads it; positional inputs bind in
    the order the query first reads them. As in LMQL, a run of one result returns it, not a list."""
    src = _strip_marker(source) if isinstance(source, str) else source
    plan = compile_source(src)
    options = _call_options(plan, kwargs)
    inputs = _lmql_name(plan, _positional(plan, str(src), args, kwargs))

    result = run_plan(
        plan,
        bind_inputs(plan.compiled, inputs),
        model=_model_for(plan, options.get("model")),
        decoder=_decoder(options.get("decoder"), options.get("n")),
    )
    value = _value(plan, result)
    return value[0] if isinstance(value, list) and len(value) == 1 else value


async def run(source: str, *args: Any, **kwargs: Any) -> Any:
    """LMQL's ``lmql.run`` (a coroutine)."""
    return await asyncio.to_thread(run_sync, source, *args, **kwargs)


def run_file(path: str | Path, *args: Any, **kwargs: Any) -> Any:
    return run_sync(Path(path).read_text(encoding="utf-8"), *args, **kwargs)


def _strip_marker(source: str) -> str:
    """``lmql.run('lmql\\n  "Q: [X]"')``: LMQL drops a leading ``lmql`` marker line."""
    stripped = source.lstrip()
    if stripped.startswith("lmql") and (len(stripped) == 4 or stripped[4] in " \t\r\n"):
        return " " * (len(source) - len(stripped) + 4) + stripped[4:]
    return source


class LMQLQueryFunction(QueryFunction):
    """A ``@lmql.query`` function: called with its arguments, plus LMQL's call-time ``model=``,
    ``decoder=`` and ``n=`` (where it has no parameter of that name); it returns what LMQL returns
    (see ``_value``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if in_nested_mode():
            return super().__call__(*args, **kwargs)
        params = self.signature.parameters
        options = {k: kwargs.pop(k) for k in CALL_OPTIONS if k in kwargs and k not in params}
        call = _with_options(self, options)
        if self.is_async and not in_query_code().get():
            return asyncio.to_thread(call.value, *args, **kwargs)
        return call.value(*args, **kwargs)

    def value(self, *args: Any, **kwargs: Any) -> Any:
        result = self.run(*args, **kwargs)
        return returned_value(result) if in_query_code().get() else _value(self.plan(), result)

    @property
    def output_variables(self) -> list[str]:
        """The names of the query's holes, in order (LMQL's ``output_variables``): read from its parse,
        so a query whose names resolve only when called still has them."""
        return _hole_names(parse_source(docstring_source(self.fn)))

    def aschain(self, output_keys: list[str] | None = None) -> Any:
        return _chain(lambda inputs: self.value(**inputs), output_keys)


def _hole_names(q: Query) -> list[str]:
    return list(dict.fromkeys(h.name for h in q.holes))


def _with_options(fn: LMQLQueryFunction, options: dict[str, Any]) -> LMQLQueryFunction:
    call = copy.copy(fn)
    call.model = _model_for(fn.plan(), options.get("model", fn.model))  # type: ignore[assignment]
    call.decoder = _decoder(options.get("decoder", fn.decoder), options.get("n"))
    return call


def _split_options(options: dict[str, Any]) -> dict[str, Any]:
    """``@lmql.query(model="random", seed=1, decoder="sample", temperature=0.8)`` as querylm's
    ``model=`` (an LLM when seeded), ``decoder=`` text and run options."""
    seed = options.pop("seed", None)
    chosen = options.pop("model", None)
    if seed is not None:
        if not isinstance(chosen, str):
            raise TypeError("@lmql.query(seed=...) seeds a model named by its id: model='random', seed=...")
        chosen = model(chosen, seed=seed)
    args = {k: options.pop(k) for k in list(options) if k in DECODER_OPTIONS}
    decoder = _decoder(options.pop("decoder", None), options.pop("n", None), args)
    return {"model": _backend(chosen), "decoder": decoder, **options}


def query(fn: Callable[..., Any] | str | None = None, **options: Any) -> Any:
    """``@lmql.query``, ``@lmql.query(model=lmql.model("random", seed=1))``, ``@lmql.query(model="random",
    seed=1, decoder="sample", temperature=0.8)``, or ``lmql.query("...")`` for a query string."""
    if isinstance(fn, str):
        return QueryString(fn, **options)
    scope = defining_scope(sys._getframe(1))
    split = _split_options(options)

    def make(f: Callable[..., Any]) -> LMQLQueryFunction:
        return LMQLQueryFunction(f, scope=scope, **split)

    return make if fn is None else make(fn)


class QueryString:
    """``lmql.query("...", input_variables=["a", "b"])``: a query string as an async query function
    (LMQL's), taking its inputs as keywords, or by position in the order ``input_variables`` gives."""

    def __init__(self, source: str, input_variables: list[str] | None = None, **options: Any):
        self.source = _strip_marker(source)
        self.plan = compile_source(self.source)  # errors now, as LMQL reports them
        self.input_variables = list(input_variables or [])
        self.options = options

    async def __call__(self, *args: Any, **inputs: Any) -> Any:
        if len(args) > len(self.input_variables):
            raise TypeError(f"the query takes {len(self.input_variables)} positional inputs, got {len(args)}")
        inputs.update(zip(self.input_variables, args, strict=False))
        return await asyncio.to_thread(self.value, **inputs)

    def value(self, **inputs: Any) -> Any:
        options = _call_options(self.plan, inputs)
        split = _split_options({**self.options, **options})
        result = run_plan(
            self.plan,
            bind_inputs(self.plan.compiled, _lmql_name(self.plan, inputs)),
            model=_model_for(self.plan, split.pop("model")),
            **split,
        )
        return _value(self.plan, result)

    @property
    def output_variables(self) -> list[str]:
        return _hole_names(self.plan.compiled.query)

    def aschain(self, output_keys: list[str] | None = None) -> Any:
        return _chain(lambda inputs: self.value(**inputs), output_keys)


def _chain(call: Callable[[dict[str, Any]], Any], output_keys: list[str] | None) -> Any:
    """LMQL's ``aschain``: the query as a LangChain runnable (langchain-core), taking a dict of inputs
    (``chain({...})`` as LMQL's chains are called, or ``invoke``) and giving a dict: the dict the query
    returns (its ``output_keys``), else the query's variables."""
    from langchain_core.runnables import RunnableLambda

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        value = call(dict(inputs))
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        out = value.variables if isinstance(value, QueryResult) else value
        if not isinstance(out, dict):
            raise TypeError(f"a chain's query returns a dict or nothing, not {type(out).__name__}")
        return {k: out[k] for k in output_keys} if output_keys else dict(out)

    class QueryChain(RunnableLambda):  # type: ignore[type-arg]
        def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
            return self.invoke(inputs)

    return QueryChain(run)


class F(_F):
    """``lmql.F("Summarize {text}: [SUMMARY]", "STOPS_AT(SUMMARY, '.')")``: inputs by name, or by
    position in the order the template first reads them; ``is_async=True`` for a coroutine."""

    def __init__(
        self,
        template: str,
        constraints: str | None = None,
        *,
        model: Model = None,
        decoder: str | None = None,
        is_async: bool = False,
    ):
        super().__init__(template, constraints, model=None, decoder=decoder)
        self.given_model = model
        self.is_async = is_async

    def __call__(self, *args: Any, **inputs: Any) -> Any:
        if self.is_async:
            return asyncio.to_thread(self.value, *args, **inputs)
        return self.value(*args, **inputs)

    def value(self, *args: Any, **inputs: Any) -> Any:
        if args:
            names = list(dict.fromkeys(re.findall(r"\{\s*([A-Za-z_]\w*)", self.source)))
            names = [n for n in names if n in self.plan.compiled.inputs and n not in inputs]
            if len(args) > len(names):
                raise TypeError(f"F takes {len(names)} positional inputs ({', '.join(names)})")
            inputs.update(zip(names, args, strict=False))
        call = copy.copy(self)
        call.model = _model_for(self.plan, self.given_model)  # type: ignore[assignment]
        return _F.__call__(call, **inputs)


def generate_sync(prompt: str, max_tokens: int = 32, model: Model = None, **kw: Any) -> str:
    """LMQL's ``lmql.generate_sync``: the model's continuation of ``prompt`` (raw text, at most
    ``max_tokens`` tokens); ``temperature=`` samples."""
    temperature = kw.pop("temperature", None)
    if kw:
        raise TypeError(f"generate: unsupported options {', '.join(sorted(kw))}")
    src = repr(prompt.replace("[", "[[").replace("]", "]]").replace("{", "{{").replace("}", "}}") + "[OUT]")
    plan = compile_source(f"{src} where len(TOKENS(OUT)) <= {int(max_tokens)}")
    chosen = _backend(model if model is not None else _default_model)
    decoder = f"sample(temperature={float(temperature)!r})" if temperature else None
    result = run_plan(plan, {}, model=chosen, decoder=decoder, chat=False)
    assert isinstance(result, QueryResult)
    return str(result.variables["OUT"])


async def generate(prompt: str, max_tokens: int = 32, model: Model = None, **kw: Any) -> str:
    return await asyncio.to_thread(generate_sync, prompt, max_tokens, model, **kw)


@dataclass
class ScoringResult:
    """LMQL's ``ScoringResult``: per value, the log-probabilities of its tokens after the prompt
    (``token_scores``) and of the prompt's tokens before them (``full_token_scores``)."""

    prompt: str
    seqs: list[str]
    token_scores: list[np.ndarray]
    full_token_scores: list[np.ndarray]

    def logprobs(self, agg: str = "sum") -> np.ndarray:
        """Each value's score: its tokens' total (``"sum"``) or mean (``"mean"``) log-probability."""
        if agg not in ("sum", "mean"):
            raise ValueError(f"agg must be 'sum' or 'mean', not {agg!r}")
        return np.array([float(s.sum() if agg == "sum" else s.mean()) for s in self.token_scores])

    def argmax(self, agg: str = "sum") -> str:
        return self.seqs[int(np.argmax(self.logprobs(agg)))]


def score_sync(prompt: str, values: str | list[str], model: Model = None) -> ScoringResult:
    """LMQL's ``lmql.score_sync``: how likely each value is after ``prompt`` (one or a list)."""
    chosen = _backend(model if model is not None else _default_model)
    seqs = [values] if isinstance(values, str) else list(values)
    scores = [np.array(s.logprobs, dtype=np.float32) for s in _score(prompt, seqs, model=chosen)]
    (prompt_scores,) = _score("", [prompt], model=chosen)
    head = np.array(prompt_scores.logprobs, dtype=np.float32)
    return ScoringResult(prompt, seqs, scores, [np.concatenate([head, s]) for s in scores])


async def score(prompt: str, values: str | list[str], model: Model = None) -> ScoringResult:
    return await asyncio.to_thread(score_sync, prompt, values, model)


def main(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a query function synchronously, awaiting an async one."""
    out = fn(*args, **kwargs)
    return asyncio.run(_awaited(out)) if inspect.isawaitable(out) else out


async def _awaited(value: Any) -> Any:
    return await value


__all__ = [
    "LLM",
    "F",
    "LMQLResult",
    "ScoringResult",
    "algorithms",
    "decorators",
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
    "tokenizer",
]

"""Hosted models through the official ``openai`` SDK: OpenAI and OpenAI-compatible servers (vLLM, SGLang,
llama.cpp, Ollama).

A hosted API returns whole texts, not next-token logits, so this backend brings its own hole decoder
(``make_decode``): each hole is one request carrying the strongest constraint the server honours (a
grammar, a JSON Schema, ``logit_bias`` over a small choice set, ``stop`` phrases, ``max_tokens``), and the
answer is always validated with the same llguidance matcher the local backend masks with. An invalid
answer is cut to its longest valid prefix and continued (a bounded number of requests); a value that
still can't be made valid is a ConstraintError, never returned.

Which server it is (its "flavour") is declared or probed, never guessed: the parameters that carry
constraints differ between servers and an unknown one is silently ignored by most of them.

Model ids: ``openai/<model>`` with options as a query string, e.g.
``openai/smollm2?base_url=http://127.0.0.1:8080/v1&flavour=llamacpp&endpoint=completions``;
``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and ``QUERYLM_OPENAI_FLAVOUR`` are read when an option is absent.
"""

from __future__ import annotations

import email.utils
import functools
import importlib.util
import json
import logging
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..constraints import automata, gbnf
from ..constraints.lang import Grammar
from ..constraints.matcher import PrefixMatcher
from ..decoding.hole import FREE_TEXT, HoleOutput
from ..errors import BackendError, ConstraintError, ModelError, QueryError, UnsupportedError
from .base import Backend, Batch, Sequence
from .hub import load_tokenizer

log = logging.getLogger("querylm.openai")

FLAVOURS = ("openai", "vllm", "sglang", "llamacpp", "ollama")
MECHANISMS = ("grammar", "json_schema", "choice", "logit_bias", "stop", "max_tokens")
"""Every server-side mechanism; ``mechanisms=`` restricts a backend to some of them (``()``: none, every
constraint is then validated locally only)."""

_OPTION_TYPES: dict[str, Callable[[str], Any]] = {
    "timeout": float,
    "max_retries": int,
    "max_requests": int,
    "chunk_tokens": int,
    "backoff": float,
    "max_backoff": float,
    "deadline": lambda s: None if s.lower() in ("", "none") else float(s),
    "logprobs": lambda s: s.lower() in ("1", "true", "yes"),
    "mechanisms": lambda s: tuple(m for m in s.split(",") if m),
}
TAIL = 8
"""Characters a server grammar lets a model write past a value that could go on, to say that it ends
(see ``constraints.gbnf.dfa_gbnf``); cut off locally."""
_KEY_PATTERN = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_\-]{6,}")


class ScrubbedError(Exception):
    """Stands in an exception chain for a foreign exception (the SDK's, httpx's, the server's) whose
    attributes may hold the key (a request's headers, a response body): its type name and scrubbed text."""


def scrub_exception(err: BaseException, scrub: Callable[[str], str]) -> BaseException:
    """``err`` with the key gone from every text it and its chain carry: querylm's errors have their
    message and args scrubbed in place, foreign exceptions under it are replaced by ScrubbedErrors.
    (A foreign ``err`` itself keeps its type, with scrubbed args.)"""
    seen: dict[int, BaseException] = {}

    def clean(e: BaseException | None, top: bool) -> BaseException | None:
        if e is None:
            return None
        if id(e) in seen:
            return seen[id(e)]
        if top or isinstance(e, QueryError):
            out = e
            out.args = tuple(scrub(a) if isinstance(a, str) else a for a in e.args)
            if isinstance(e, QueryError):
                e.message = scrub(e.message)
        else:
            out = ScrubbedError(scrub(f"{type(e).__module__}.{type(e).__qualname__}: {e}"))
            out.__traceback__ = e.__traceback__
        seen[id(e)] = out
        notes = getattr(e, "__notes__", None)
        if notes:
            out.__notes__ = [scrub(str(n)) for n in notes]  # type: ignore[attr-defined]
        out.__cause__ = clean(e.__cause__, False)
        out.__context__ = clean(e.__context__, False)
        out.__suppress_context__ = e.__suppress_context__
        return out

    clean(err, True)
    return err


def _scrubbing(method: Callable[..., Any]) -> Callable[..., Any]:
    """The scrubbing boundary: whatever leaves ``method`` (of a backend, or of an object with a
    ``backend``) has the API key scrubbed from its message, args and exception chain."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException as err:
            backend = self if isinstance(self, OpenAIBackend) else self.backend
            scrub_exception(err, backend._scrub)
            raise

    return wrapper


def load(model_id: str) -> OpenAIBackend:
    """``openai/<model>[?option=value&...]`` → a backend (options as for OpenAIBackend)."""
    rest = model_id.removeprefix("openai/")
    model, _, query = rest.partition("?")
    if not model:
        raise ModelError("openai/<model>: the model name is missing (e.g. openai/gpt-4o-mini)")
    options: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key in ("api_key",):
            raise ModelError("pass the API key in OPENAI_API_KEY, not in the model id (ids end up in logs)")
        if key not in OpenAIBackend.OPTIONS:
            raise ModelError(
                f"openai/{model}: unknown option '{key}' (known: {', '.join(OpenAIBackend.OPTIONS)})"
            )
        try:
            options[key] = _OPTION_TYPES.get(key, str)(value)
        except ValueError:
            raise ModelError(f"openai/{model}: option {key}={value!r} is not valid") from None
    return OpenAIBackend(model, **options)


# -- tokenizers ---------------------------------------------------------------------------------------


_LL_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


# -- usage --------------------------------------------------------------------------------------------


@dataclass
class HoleUsage:
    """What one hole cost and how it was enforced."""

    name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    mechanisms: list[str] = field(default_factory=list)
    """The server-side mechanisms used (e.g. ``grammar``, ``logit_bias``, ``stop``, ``max_tokens``)."""
    server: list[str] = field(default_factory=list)
    """The constraints the server was given to enforce (the local matcher validates every answer all
    the same)."""
    local: list[str] = field(default_factory=list)
    """The constraints only the local matcher enforced (answers cut to their valid prefix and
    continued), and Python predicates."""
    continued: int = 0
    """Requests after the first: continuing a cut or invalid answer, or starting over."""
    ended_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Usage:
    """What a run (or, as ``OpenAIBackend.total``, a backend's life: counts only) cost."""

    requests: int = 0
    """Requests sent (retries included)."""
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    """Prompt tokens the server reports as served from its cache (None: it reports none)."""
    holes: list[HoleUsage] = field(default_factory=list)
    ends_at: float | None = field(default=None, repr=False, compare=False)
    """The run's deadline on the monotonic clock (set at its first request; None: not started, or no
    deadline)."""

    def add_response(self, usage: Any, hole: HoleUsage) -> None:
        if usage is None:
            return
        p = int(getattr(usage, "prompt_tokens", 0) or 0)
        c = int(getattr(usage, "completion_tokens", 0) or 0)
        self.prompt_tokens += p
        self.completion_tokens += c
        hole.prompt_tokens += p
        hole.completion_tokens += c
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
        if cached is not None:
            self.cached_tokens = (self.cached_tokens or 0) + int(cached)
            hole.cached_tokens = (hole.cached_tokens or 0) + int(cached)

    def merge(self, other: Usage) -> None:
        self.requests += other.requests
        self.retries += other.retries
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        if other.cached_tokens is not None:
            self.cached_tokens = (self.cached_tokens or 0) + other.cached_tokens
        self.holes.extend(other.holes)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "holes": [h.to_json() for h in self.holes],
        }


# -- the backend --------------------------------------------------------------------------------------


class HostedSequence(Sequence):
    """Only the token ids: the server holds the model."""

    def logits(self) -> np.ndarray:
        raise UnsupportedError("a hosted model gives no next-token logits: use argmax or sample decoders")

    def truncate(self, n: int) -> None:
        del self.ids[n:]

    def fork(self) -> HostedSequence:
        other = HostedSequence()
        other.ids = list(self.ids)
        return other


@dataclass
class _Answer:
    text: str
    finish: str | None
    usage: Any
    request_id: str | None
    logprobs: list[tuple[str, float]] | None = None
    stop_phrase: str | None = None
    tool_calls: list[Any] = field(default_factory=list)
    """A chat answer's ``message.tool_calls`` as the SDK parsed them (the agent's native tool path)."""


class _Malformed(Exception):
    pass


class _Retryable(Exception):
    def __init__(self, what: str, status: int | None, request_id: str | None, delay: float | None):
        super().__init__(what)
        self.what, self.status, self.request_id, self.delay = what, status, request_id, delay


@dataclass
class _HoleLang:
    """A hole's language in the forms servers take, computed once per hole."""

    dfa: automata.Automaton | None = None
    """The whole mask language as a DFA (regular holes, stop phrases folded in)."""
    json_schema: dict | None = None
    whole_grammar: str | None = None
    """GBNF for whole values only (JSON Schema, Lark grammars): no form for the rest of a cut value."""
    exact: bool = False
    """True when the server-side form is the whole mask language (else it is a superset, or absent)."""


class OpenAIBackend(Backend):
    """A model behind an OpenAI-style HTTP API. See the module docstring."""

    supports_beams = False
    OPTIONS = (  # the options a model id may carry (the rest: api_key, default_headers, http_client)
        "base_url",
        "organization",
        "project",
        "timeout",
        "max_retries",
        "flavour",
        "endpoint",
        "tokenizer",
        "mechanisms",
        "max_requests",
        "chunk_tokens",
        "backoff",
        "max_backoff",
        "deadline",
        "logprobs",
    )

    @_scrubbing
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        default_headers: dict[str, str] | None = None,
        flavour: str | None = None,
        endpoint: str = "auto",
        tokenizer: Any = None,
        mechanisms: Iterable[str] | None = None,
        max_requests: int = 4,
        chunk_tokens: int = 256,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        deadline: float | None = 600.0,
        logprobs: bool = False,
        http_client: Any = None,
    ):
        try:
            import openai
        except ImportError:
            raise ModelError("hosted models need the openai SDK: pip install 'querylm[openai]'") from None
        self.model = model
        self.name = f"openai/{model}"
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        official = urllib.parse.urlparse(self.base_url).hostname == "api.openai.com"
        if not key:
            if official:
                raise ModelError(f"{self.name}: set OPENAI_API_KEY (or pass api_key=) to use OpenAI's API")
            key = "no-key"  # local servers take any key; the SDK insists on one
        self._secrets = [key]
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_requests = int(max_requests)
        self.chunk_tokens = int(chunk_tokens)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.deadline = None if deadline is None else float(deadline)
        """Seconds one run (a query's sample, an agent's run) may spend on requests and backoff waits in
        all, from its first request: whatever the server does (Retry-After, a slow drip of bytes), the
        run then fails with a BackendError. None: no overall limit (``timeout`` still bounds a request)."""
        if self.deadline is not None and not self.deadline > 0:
            raise ModelError(f"{self.name}: deadline must be a positive number of seconds or None")
        self.want_logprobs = bool(logprobs)
        self.mechanisms = frozenset(MECHANISMS if mechanisms is None else mechanisms)
        unknown = self.mechanisms - set(MECHANISMS)
        if unknown:
            raise ModelError(f"unknown mechanisms {sorted(unknown)} (known: {', '.join(MECHANISMS)})")
        self.client = openai.OpenAI(
            api_key=key,
            base_url=self.base_url,
            organization=organization,
            project=project,
            timeout=self.timeout,
            max_retries=0,  # retries are ours: counted, with jitter, Retry-After, and the hole in the error
            default_headers=default_headers,
            http_client=http_client,
        )
        self._lock = threading.Lock()
        self._local = threading.local()
        self._cancel = threading.Event()
        self.total = Usage()
        """Every request this backend has made, across runs."""
        self._token_ids: dict[str, list[int] | None] = {}
        flavour = flavour or os.environ.get("QUERYLM_OPENAI_FLAVOUR") or None
        if flavour is not None and flavour not in FLAVOURS:
            raise ModelError(f"unknown flavour '{flavour}' (known: {', '.join(FLAVOURS)})")
        self.served: list[str] = []
        self.flavour = flavour or ("openai" if official else self._probe())
        if endpoint not in ("auto", "chat", "completions"):
            raise ModelError(f"endpoint must be 'chat', 'completions' or 'auto', not {endpoint!r}")
        self.endpoint = self._endpoint(endpoint)
        self.tokenizer, self.tokenizer_source = self._tokenizer(tokenizer)
        self.generation_eos = None
        self.same_tokenizer = self.tokenizer_source != "bytes" and (
            self._verify_tokenizer()
            # OpenAI has no tokenize endpoint: its models' tiktoken encodings are what it uses
            or (self.flavour == "openai" and self.tokenizer_source.startswith("tiktoken:"))
        )
        """True when the local tokenizer is the server's (checked on a probe text): token ids may then
        be sent (logit_bias) and token budgets mean the same on both sides."""

    # -- identity, probing --------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.model!r}, base_url={self.base_url!r}, flavour={self.flavour!r}, endpoint={self.endpoint!r})"

    @property
    def root_url(self) -> str:
        """The server's root (``base_url`` less a trailing ``/v1``): llama.cpp and Ollama serve their
        own endpoints there."""
        return re.sub(r"/v1$", "", self.base_url)

    def _raw(self, method: str, url: str, body: Any = None) -> Any:
        """One plain HTTP call through the SDK's client (its headers and timeout); None on any failure."""
        try:
            if method == "GET":
                return self.client.with_options(max_retries=0, timeout=min(self.timeout, 10.0)).get(
                    url, cast_to=object
                )
            return self.client.with_options(max_retries=0, timeout=min(self.timeout, 10.0)).post(
                url, body=body, cast_to=object
            )
        except Exception as err:  # noqa: BLE001 - a probe: any failure means "not this"
            log.debug("probe %s %s: %s", method, url, self._scrub(str(err)))
            return None

    def _models(self) -> tuple[Any, set[str]]:
        """GET /models: the answer, and who owns the models (servers name themselves there)."""
        models = self._raw("GET", "/models")
        owners = set()
        self.served = []
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            for m in models["data"]:
                if isinstance(m, dict):
                    owners.add(str(m.get("owned_by", "")))
                    self.served.append(str(m.get("id", "")))
        return models, owners

    def _probe(self) -> str:
        """Which server this is, by endpoints only that kind of server has; a ModelError when none
        answers (the constraint parameters of one server are silently ignored by another)."""
        models, owners = self._models()
        if "vllm" in owners:
            return "vllm"
        if "sglang" in owners:
            return "sglang"
        version = self._raw("GET", f"{self.root_url}/api/version")
        if isinstance(version, dict) and "version" in version:
            return "ollama"
        tok = self._raw("POST", f"{self.root_url}/extras/tokenize", {"input": "probe"})
        if isinstance(tok, dict) and isinstance(tok.get("tokens"), list):
            return "llamacpp"
        tok = self._raw("POST", f"{self.root_url}/tokenize", {"content": "probe"})
        if isinstance(tok, dict) and isinstance(tok.get("tokens"), list):
            return "llamacpp" if "llamacpp" in owners or not owners else "vllm"
        if models is None:
            raise ModelError(
                f"{self.name}: no OpenAI-compatible server answers at {self.base_url} (GET /models failed)"
            )
        raise ModelError(
            f"{self.name}: can't tell which kind of server {self.base_url} is (owned_by {sorted(owners)}): "
            f"pass flavour= one of {', '.join(FLAVOURS)}"
        )

    def _endpoint(self, endpoint: str) -> str:
        if endpoint != "auto":
            return endpoint
        if self.flavour == "openai":
            legacy = re.search(r"instruct|davinci|babbage|^text-", self.model)
            return "completions" if legacy else "chat"
        return "chat"

    def _tokenizer(self, spec: Any) -> tuple[Any, str]:
        if spec is not None and not isinstance(spec, str):
            return spec, "given"
        if isinstance(spec, str):
            try:
                return load_tokenizer(spec), spec
            except Exception as err:  # noqa: BLE001
                raise ModelError(f"{self.name}: can't load tokenizer {spec!r}: {err}") from None
        # The served model may be a file on this machine (llama.cpp on loopback): its own tokenizer.
        if self.flavour == "llamacpp":
            if not self.served:
                self._models()
            for served in self.served:
                if served.endswith(".gguf") and os.path.isfile(served):
                    try:
                        return load_tokenizer(served), served
                    except Exception as err:  # noqa: BLE001
                        log.info("can't load the tokenizer of %s: %s", served, err)
        if self.flavour == "openai" and importlib.util.find_spec("tiktoken") is not None:
            try:
                return load_tokenizer(f"tiktoken:{self.model}"), f"tiktoken:{self.model}"
            except Exception as err:  # noqa: BLE001 - offline, or a model tiktoken doesn't know
                log.info("%s: no tiktoken encoding (%s)", self.name, self._scrub(str(err)))
        log.info("%s: no local tokenizer; validating byte by byte (len(TOKENS(X)) counts bytes)", self.name)
        return load_tokenizer("bytes"), "bytes"

    def _server_tokenize(self, text: str) -> list[int] | None:
        """The server's own token ids for ``text`` (llama.cpp's /extras/tokenize or /tokenize, vLLM's
        /tokenize); None where the server has no such endpoint."""
        if text in self._token_ids:
            return self._token_ids[text]
        ids = None
        if self.flavour == "llamacpp":
            r = self._raw("POST", f"{self.root_url}/extras/tokenize", {"input": text, "model": self.model})
            if not (isinstance(r, dict) and isinstance(r.get("tokens"), list)):
                r = self._raw("POST", f"{self.root_url}/tokenize", {"content": text, "add_special": False})
            if isinstance(r, dict) and isinstance(r.get("tokens"), list):
                ids = [int(t) for t in r["tokens"]]
        elif self.flavour == "vllm":
            r = self._raw(
                "POST",
                f"{self.root_url}/tokenize",
                {"model": self.model, "prompt": text, "add_special_tokens": False},
            )
            if isinstance(r, dict) and isinstance(r.get("tokens"), list):
                ids = [int(t) for t in r["tokens"]]
        self._token_ids[text] = ids
        return ids

    def _verify_tokenizer(self) -> bool:
        probe = 'Probe: 1234 héllo,\n  wörld! {"k": [1, 2]}'
        server = self._server_tokenize(probe)
        if server is None:
            return False
        # llama.cpp's tokenize may add BOS: compare the tails
        local = self.encode(probe)
        same = server[-len(local) :] == local if local else False
        if not same:
            log.warning(
                "%s: the local tokenizer (%s) differs from the server's", self.name, self.tokenizer_source
            )
        return same

    # -- the Backend interface ----------------------------------------------------------------------

    @property  # type: ignore[override]
    def ll_tokenizer(self) -> Any:
        """The mask engine's vocabulary, built once per tokenizer object (~1 s at 49k tokens)."""
        key = id(self.tokenizer)
        cached = _LL_TOKENIZERS.get(key)
        if cached is None or cached[0] is not self.tokenizer:
            cached = (self.tokenizer, Backend.ll_tokenizer.func(self))  # type: ignore[attr-defined]
            _LL_TOKENIZERS[key] = cached
        return cached[1]

    @property
    def has_chat_template(self) -> bool:
        if self.endpoint == "chat":
            return True  # the server applies the template: the runtime only tracks messages
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_transition(self, prev: str | None, role: str) -> str:
        if self.endpoint == "chat":
            return ""
        return super().chat_transition(prev, role)

    def new_sequence(self) -> HostedSequence:
        return HostedSequence()

    def new_batch(self, rows: int, prefix: list[int]) -> Batch:
        raise UnsupportedError(
            f"{self.name}: beam decoders need next-token logits, which a hosted API does not give"
        )

    def score(self, prefix: list[int], continuations: list[list[int]]) -> list[np.ndarray]:
        raise UnsupportedError(
            f"{self.name}: scoring (distribution clauses) needs prompt log-probabilities, which a hosted API "
            "does not give reliably"
        )

    def cancel(self) -> None:
        """Stop the runs in progress: the next request (or backoff wait) raises BackendError. A request
        already sent finishes (bounded by ``timeout``)."""
        self._cancel.set()

    @property
    def last_usage(self) -> Usage | None:
        """The usage of the last run this thread made."""
        return getattr(self._local, "usage", None)

    def make_decode(self, spec: Any, index: int) -> HostedDecode:
        self._cancel.clear()
        decode = HostedDecode(self, spec, index)
        self._local.usage = decode.usage
        return decode

    # -- requests -----------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in getattr(self, "_secrets", ()):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return _KEY_PATTERN.sub(lambda m: m.group(1) + "-***", text)

    @_scrubbing
    def _send(self, kind: str, params: dict[str, Any], usage: Usage, hole: HoleUsage, where: str) -> _Answer:
        """One completion, retried with exponential backoff and jitter on 408/409/429/5xx, connection
        errors, timeouts and malformed answers (honouring Retry-After up to ``max_backoff``); a
        BackendError naming the hole when retries are exhausted, the error can't be retried, or the
        run's ``deadline`` passes (it bounds every request's whole answer and every wait)."""
        import openai

        create = self.client.chat.completions if kind == "chat" else self.client.completions
        if usage.ends_at is None and self.deadline is not None:
            usage.ends_at = time.monotonic() + self.deadline
        attempt = 0
        while True:
            if self._cancel.is_set():
                raise BackendError(f"{self.name}: cancelled while filling {where}")
            left = self._left(usage, where)
            per_request = min(self.timeout, left)
            usage.requests += 1
            hole.requests += 1
            with self._lock:
                self.total.requests += 1
            request_id = None
            try:
                with create.with_streaming_response.create(**params, timeout=per_request) as raw:
                    request_id = raw.headers.get("x-request-id")
                    body = _read_within(raw, time.monotonic() + per_request)
                answer = self._answer(kind, _parse(kind, body), request_id)
                usage.add_response(answer.usage, hole)
                with self._lock:
                    self.total.add_response(answer.usage, HoleUsage(hole.name))
                return answer
            except openai.APIStatusError as err:
                status = err.status_code
                rid = err.request_id or request_id
                message = self._error_message(err)
                retry = status in (408, 409, 429) or status >= 500
                failure = _Retryable(f"HTTP {status}: {message}", status, rid, _retry_after(err.response))
                if not retry:
                    raise BackendError(self._failure(failure, where, attempt + 1)) from None
            except (openai.APITimeoutError, _TooSlow):
                failure = _Retryable(f"no whole answer within {per_request:g} s", None, request_id, None)
            except openai.APIConnectionError as err:
                cause = err.__cause__
                detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
                failure = _Retryable(f"connection failed ({self._scrub(detail)})", None, request_id, None)
            except _Malformed as err:
                failure = _Retryable(f"malformed response: {err}", None, request_id, None)
            if attempt >= self.max_retries:
                raise BackendError(self._failure(failure, where, attempt + 1)) from None
            delay = failure.delay
            if delay is None:
                delay = self.backoff * 2**attempt * random.uniform(0.5, 1.0)
            delay = min(delay, self.max_backoff)
            if usage.ends_at is not None and time.monotonic() + delay >= usage.ends_at:
                raise BackendError(
                    self._failure(failure, where, attempt + 1)
                    + f"; the run's deadline of {self.deadline:g} s leaves no time to retry"
                ) from None
            log.info("%s: %s; retrying in %.2f s (%s)", self.name, failure.what, delay, where)
            attempt += 1
            usage.retries += 1
            with self._lock:
                self.total.retries += 1
            if self._cancel.wait(delay):
                raise BackendError(f"{self.name}: cancelled while filling {where}")

    def _left(self, usage: Usage, where: str) -> float:
        """Seconds left before the run's deadline; a BackendError once it has passed."""
        if usage.ends_at is None:
            return math.inf
        left = usage.ends_at - time.monotonic()
        if left <= 0:
            raise BackendError(
                f"{self.name} at {self.base_url}: the run's deadline of {self.deadline:g} s passed "
                f"while filling {where}"
            )
        return left

    def _failure(self, f: _Retryable, where: str, attempts: int) -> str:
        parts = [f"{self.name} at {self.base_url}: {f.what}"]
        if f.request_id:
            parts.append(f"request id {f.request_id}")
        parts.append(f"while filling {where}")
        parts.append(f"after {attempts} attempt{'s' * (attempts > 1)}")
        return self._scrub("; ".join(parts))

    def _error_message(self, err: Any) -> str:
        body = getattr(err, "body", None)
        msg = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            msg = inner.get("message") if isinstance(inner, dict) else inner
            msg = msg or body.get("detail")
        text = str(msg if msg is not None else getattr(err, "message", "") or "")
        return self._scrub(text.strip().splitlines()[0][:300] if text.strip() else "(no message)")

    def _answer(self, kind: str, parsed: Any, request_id: str | None) -> _Answer:
        choices = getattr(parsed, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _Malformed("no choices")
        choice = choices[0]
        finish = getattr(choice, "finish_reason", None)
        logprobs = None
        calls: list[Any] = []
        if kind == "chat":
            message = getattr(choice, "message", None)
            if message is None:
                raise _Malformed("no message")
            text = getattr(message, "content", None)
            calls = getattr(message, "tool_calls", None) or []
            if text is None and calls:  # a custom tool call (GPT-5 grammars)
                custom = getattr(calls[0], "custom", None)
                text = getattr(custom, "input", None)
        else:
            text = getattr(choice, "text", None)
        logprobs = _token_logprobs(getattr(choice, "logprobs", None))
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise _Malformed("the text is not a string")
        if finish not in (
            None,
            "stop",
            "length",
            "eos",
            "tool_calls",
            "function_call",
            "content_filter",
            "abort",
        ):
            log.debug("unusual finish_reason %r", finish)
        extra = getattr(choice, "model_extra", None) or {}
        phrase = extra.get("matched_stop") if self.flavour == "sglang" else extra.get("stop_reason")
        return _Answer(
            text,
            finish,
            getattr(parsed, "usage", None),
            request_id,
            logprobs,
            phrase if isinstance(phrase, str) else None,
            list(calls),
        )

    # -- per-hole planning --------------------------------------------------------------------------

    def hole_lang(self, hc: Any) -> _HoleLang:
        lang = _HoleLang()
        if not hc.cfgs:
            if hc.regular is None and not hc.stops_at and not hc.stops_before:
                lang.exact = True  # free text
                return lang
            try:
                lang.dfa = automata.hole_dfa(hc.regular, tuple(hc.stops_at), tuple(hc.stops_before))
                lang.exact = True
            except automata.NotTranslatable as err:
                log.info("%s: no server grammar for %s (%s)", self.name, hc.hole, err)
            return lang
        if len(hc.cfgs) == 1 and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].kind == "json":
            schema = json.loads(hc.cfgs[0].text)
            lang.json_schema = {k: v for k, v in schema.items() if k != "x-guidance"}
            try:
                lang.whole_grammar = gbnf.json_gbnf(schema)
                gbnf.check_gbnf(lang.whole_grammar)
            except (automata.NotTranslatable, ValueError) as err:
                log.info("%s: no GBNF for the JSON Schema of %s (%s)", self.name, hc.hole, err)
                lang.whole_grammar = None
            lang.exact = hc.regular is None and not hc.stops_at and not hc.stops_before
        elif len(hc.cfgs) == 1 and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].kind == "lark":
            try:
                lang.whole_grammar = gbnf.lark_gbnf(hc.cfgs[0].text, tail=TAIL)
                gbnf.check_gbnf(lang.whole_grammar)
            except (automata.NotTranslatable, ValueError) as err:
                log.info("%s: no GBNF for the grammar of %s (%s)", self.name, hc.hole, err)
                lang.whole_grammar = None
            lang.exact = lang.whole_grammar is not None and hc.regular is None
        return lang


def _token_logprobs(lp: Any) -> list[tuple[str, float]] | None:
    """The answer's (token, log-probability) pairs from either shape a server may send, on either
    endpoint: ``content[]`` (chat, and llama.cpp's native server on completions; items as objects or
    plain dicts) or the legacy ``tokens``/``token_logprobs`` lists."""
    if lp is None:
        return None
    if isinstance(lp, dict):
        content, tokens, values = lp.get("content"), lp.get("tokens"), lp.get("token_logprobs")
    else:
        content = getattr(lp, "content", None)
        if content is None:
            content = (getattr(lp, "model_extra", None) or {}).get("content")
        tokens, values = getattr(lp, "tokens", None), getattr(lp, "token_logprobs", None)
    pairs: list[tuple[str, float]] = []
    if isinstance(content, list) and content:
        for item in content:
            token = item.get("token") if isinstance(item, dict) else getattr(item, "token", None)
            value = item.get("logprob") if isinstance(item, dict) else getattr(item, "logprob", None)
            if isinstance(token, str) and isinstance(value, (int, float)):
                pairs.append((token, float(value)))
    elif isinstance(tokens, list) and isinstance(values, list):
        pairs = [(t, float(p)) for t, p in zip(tokens, values, strict=False) if p is not None]
    return pairs or None


class _TooSlow(Exception):
    """An answer still arriving at its request's time limit (a server that drips bytes)."""


def _read_within(raw: Any, ends_at: float) -> bytes:
    """A response's body, read in chunks against the wall clock: the HTTP client's timeout bounds
    each read only, which a server sending a byte at a time never reaches."""
    http = _sdk_http()
    body = bytearray()
    try:
        for chunk in raw.iter_bytes():
            body += chunk
            if time.monotonic() > ends_at:
                raise _TooSlow
    except http.TimeoutException:
        raise _TooSlow from None
    except http.HTTPError as err:
        raise _Malformed(f"the body broke off ({type(err).__name__})") from None
    return bytes(body)


def _sdk_http() -> Any:
    """The HTTP library the openai SDK is built on (``httpx``, or ``httpx2`` in recent releases): its
    exceptions are what a body read through the SDK raises."""
    import openai._base_client as base

    return getattr(base, "httpx2", None) or getattr(base, "httpx")  # noqa: B009 (older SDKs)


def _parse(kind: str, body: bytes) -> Any:
    """A completion's JSON body as the SDK's (leniently built) response object."""
    from openai.types import Completion
    from openai.types.chat import ChatCompletion

    try:
        data = json.loads(body)
    except ValueError:
        raise _Malformed("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _Malformed("the body is not a JSON object")
    return (ChatCompletion if kind == "chat" else Completion).construct(**data)


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


# -- the hole decoder ---------------------------------------------------------------------------------


class HostedDecode:
    """Fills the holes of one run (one sample) through the API; ``usage`` is what the run cost."""

    def __init__(self, backend: OpenAIBackend, spec: Any, index: int):
        self.backend = backend
        self.usage = Usage()
        args = dict(getattr(spec, "args", {}) or {})
        self.sampling: dict[str, Any] = {}
        if getattr(spec, "name", "argmax") == "argmax":
            self.sampling["temperature"] = 0.0
        else:
            self.sampling["temperature"] = float(args.get("temperature", 1.0))
            if args.get("top_p") is not None:
                self.sampling["top_p"] = float(args["top_p"])
            if args.get("top_k") is not None:
                self.sampling["top_k"] = int(args["top_k"])
        if args.get("seed") is not None:
            self.sampling["seed"] = int(args["seed"]) + index

    @_scrubbing
    def __call__(self, ex: Any, pending: Any) -> HoleOutput:
        return _fill(self.backend, self, ex, pending)


def _fill(b: OpenAIBackend, run: HostedDecode, ex: Any, pending: Any) -> HoleOutput:
    """One hole: request, validate, cut to the valid prefix, continue (or start over where the API
    can't continue a partly written answer), until the value is complete."""
    hc = pending.hc
    pos = pending.hole.position
    where = f"{hc.hole} ({pos.filename}:{pos.line})" if pos is not None else hc.hole
    hole = HoleUsage(hc.hole)
    run.usage.holes.append(hole)
    lang = b.hole_lang(hc)
    grammars = hc.grammars() or [FREE_TEXT]
    v = PrefixMatcher(b.ll_tokenizer, grammars, b.encode, b.eos_ids)
    budget = hc.max_tokens  # in the local tokenizer's tokens, as the runtime re-checks len(TOKENS(X))
    kind = b.endpoint
    can_continue = kind == "completions" or _can_prefill(b)
    hole.local = list(hc.labels)
    repairs = 0
    asked = 0
    last = ""
    ended_by = ""
    emitted = 0

    def emit() -> None:
        nonlocal emitted
        if can_continue and len(v.text) > emitted:
            ex.emit(v.text[emitted:])
            emitted = len(v.text)

    def give_up(why: str) -> ConstraintError:
        return ConstraintError(
            f"{b.name} gave no valid value for {hc.hole} in {hole.requests} request"
            f"{'s' * (hole.requests != 1)} ({why}; valid so far {v.text!r}, last answer {last!r}): "
            f"{hc.description}",
            pos,
        )

    while True:
        if not v.can_continue():
            if v.accepting():
                ended_by = "grammar"
                break
            raise ConstraintError(
                f"the constraints on {hc.hole} can't be met from {v.text!r}: {hc.description}", pos
            )
        if budget is not None and len(v.ids) >= budget:
            if v.accepting():
                ended_by = "budget"
                break
            raise ConstraintError(
                f"{hc.hole} could not be completed within its budget of {budget} tokens (so far {v.text!r}): "
                f"{hc.description}",
                pos,
            )
        if b.same_tokenizer and len(ex.seq.ids) + len(v.ids) >= ex.max_len:
            if v.accepting() and len(v.ids) >= hc.min_tokens:
                ended_by = "max_len"
                break
            raise ConstraintError(
                f"{hc.hole} reached max_len={ex.max_len} tokens before its value was complete: {hc.description}",
                pos,
            )
        if v.text or (can_continue and lang.whole_grammar is None and lang.json_schema is None):
            # e.g. the rest of the only choice left: no request needed. (Not the opening of a JSON
            # value: the server's JSON grammar applies to whole values only.)
            forced = v.forced()
            if forced and v.feed(forced):
                emit()
                continue
        if v.text and not can_continue:
            # this API can't continue a partly written answer: ask again from the start
            repairs += 1
            v = PrefixMatcher(b.ll_tokenizer, grammars, b.encode, b.eos_ids)
        if repairs > b.max_requests:
            raise give_up(f"{repairs} answers were invalid or incomplete")
        params, mech, exact = _request(b, run, ex, pending, lang, v, kind, budget, repairs)
        for m in mech:
            if m not in hole.mechanisms:
                hole.mechanisms.append(m)
        if asked == 0 and exact:
            python = [c.text for c in hc.checks if not c.masked]  # predicates only Python can decide
            hole.server = [label for label in hc.labels if label not in python]
            hole.local = python
        if asked:
            hole.continued += 1
        asked += 1
        answer = b._send("chat" if "messages" in params else "completions", params, run.usage, hole, where)
        text = last = answer.text
        if answer.stop_phrase and answer.stop_phrase in (*hc.stops_at, *hc.stops_before):
            if not text.endswith(answer.stop_phrase):
                text += answer.stop_phrase  # SGLang reports the phrase it stopped at and drops it
        before = len(v.text)
        got = v.feed(text, None if budget is None else budget - len(v.ids))
        emit()
        if b.want_logprobs and answer.logprobs:
            ex.score += _logprob_of_prefix(answer.logprobs, len(got))
        if len(got) < len(text):
            # the answer breaks the constraints after ``got``: where the value may end, the model wanted
            # something the value can't hold, which is the end (as the local decoder reads it)
            if v.accepting() and len(v.ids) >= hc.min_tokens:
                ended_by = "grammar"
                break
            # the model went on past a point where the value was complete (a grammar's tail, "2 + 3"
            # then " = 5"): it ended the value there
            if v.retreat(before, hc.min_tokens):
                ended_by = "grammar"
                break
            repairs += 1
            log.info(
                "%s: %s: answer cut to its valid part %r (the server said %r)", b.name, hc.hole, got, text
            )
            continue
        if answer.finish == "length":
            if len(v.text) == before:
                repairs += 1
            if not can_continue and v.accepting() and len(v.ids) >= hc.min_tokens:
                ended_by = "budget"
                break
            continue
        # the server ended the value (end of text, or a stop phrase it dropped)
        if v.accepting() and len(v.ids) >= hc.min_tokens:
            ended_by = "stop" if answer.stop_phrase or "stop" in mech else "eos"
            break
        repairs += 1
    hole.ended_by = ended_by
    if not can_continue:
        ex.emit(v.text)
    ex.seq.append(v.ids)
    return HoleOutput(list(v.ids), v.text, ended_by)


def _has_grammar(mech: list[str]) -> bool:
    return any(m in ("grammar", "json_schema", "choice") for m in mech)


def _logprob_of_prefix(logprobs: list[tuple[str, float]], length: int) -> float:
    total = 0.0
    pos = 0
    for token, lp in logprobs:
        if pos >= length:
            break
        total += lp
        pos += len(token)
    return total


def _can_prefill(b: OpenAIBackend) -> bool:
    """Whether a chat request can continue a partly written assistant message."""
    if b.endpoint != "chat":
        return True
    return b.flavour in ("vllm", "sglang", "ollama") or (b.flavour == "llamacpp" and _template_fallback(b))


def _template_fallback(b: OpenAIBackend) -> bool:
    """llama.cpp's chat endpoint closes a trailing assistant message; with the server's own tokenizer
    and chat template here, such a request goes to /completions with the template rendered locally."""
    return b.same_tokenizer and bool(getattr(b.tokenizer, "chat_template", None))


def _prompt_text(b: OpenAIBackend, ex: Any, pending: Any) -> str:
    ids = list(ex.seq.ids[: pending.start])
    tok = b.tokenizer
    if len(ids) == 1 and ids[0] in (tok.bos_token_id, *b.eos_ids):
        return ""  # the runtime's start-of-text marker for an empty prompt: the server adds its own
    return b.decode(ids)


def _messages(b: OpenAIBackend, ex: Any, pending: Any, so_far: str) -> tuple[list[dict[str, str]], bool]:
    """The chat messages for a request, and whether the last one is an assistant message to continue."""
    messages = [dict(m) for m in ex.messages]
    if not messages:
        text = "".join(ex.prompt)
        return [{"role": "user", "content": text}] + (
            [{"role": "assistant", "content": so_far}] if so_far else []
        ), bool(so_far)
    last = messages[-1]
    if last["role"] != "assistant" and not _template_fallback(b):
        raise UnsupportedError(
            f"{pending.hc.hole} is in a {last['role']} message: a chat endpoint only generates assistant "
            "messages (use endpoint='completions' with a tokenizer that has the chat template)",
            pending.hole.position,
        )
    last["content"] += so_far
    if not last["content"] and last["role"] == "assistant":
        messages.pop()
        return messages, False
    return messages, True


def _request(
    b: OpenAIBackend,
    run: HostedDecode,
    ex: Any,
    pending: Any,
    lang: _HoleLang,
    v: PrefixMatcher,
    kind: str,
    budget: int | None,
    repairs: int = 0,
) -> tuple[dict[str, Any], list[str], bool]:
    """The parameters of the next request for this hole, the mechanisms they use, and whether the server
    enforces the hole's whole constraint with them."""
    hc = pending.hc
    params: dict[str, Any] = {"model": b.model}
    extra: dict[str, Any] = {}
    mech: list[str] = []
    exact = False
    so_far = v.text
    if kind == "chat":
        messages, prefill = _messages(b, ex, pending, so_far)
        if prefill:
            if b.flavour in ("vllm", "sglang"):
                extra["continue_final_message"] = True
                extra["add_generation_prompt"] = False
            elif b.flavour == "llamacpp":
                if not _template_fallback(b):
                    raise UnsupportedError(
                        f"{b.name}: llama.cpp's chat endpoint can't continue the assistant message that "
                        f"{hc.hole} is in, and the server's tokenizer isn't available here to render the "
                        "template (pass tokenizer=, or use endpoint='completions')",
                        pending.hole.position,
                    )
                kind = "completions"
                params["prompt"] = b.tokenizer.apply_chat_template(
                    messages, tokenize=False, continue_final_message=True
                )
            elif b.flavour == "openai":
                raise UnsupportedError(
                    f"OpenAI's chat API can't continue a partly written assistant message ({hc.hole} follows "
                    f"text in the assistant's turn): put that text in the user's message, or use a completions model",
                    pending.hole.position,
                )
        if kind == "chat":
            params["messages"] = messages
    else:
        params["prompt"] = _prompt_text(b, ex, pending) + so_far
    params.update(run.sampling)
    if repairs >= 2:
        # the same request at temperature 0 gives the same answer: sample another one
        params["temperature"] = max(float(params.get("temperature", 0.0)), 0.7)
        params["seed"] = int(params.get("seed", 0)) + 1000 * repairs
    if "top_k" in params:
        extra["top_k"] = params.pop("top_k")
    endpoint_chat = "messages" in params

    # max_tokens: the budget left, else a chunk (continued if the value goes on), never past max_len
    # a JSON value is constrained whole or not at all: room for all of it in one answer
    limit = b.chunk_tokens if lang.json_schema is None else 4 * b.chunk_tokens
    if budget is not None:
        limit = min(limit, max(1, budget - len(v.ids)))
    if b.same_tokenizer:
        limit = min(limit, max(1, ex.max_len - len(ex.seq.ids) - len(v.ids)))
    state = None
    if lang.dfa is not None:
        state = lang.dfa.walk(so_far)
        longest = automata.longest_bytes(lang.dfa, state) if state is not None else None
        if longest is not None:
            limit = min(limit, max(1, longest + 4 * TAIL))

    grammar = None
    if lang.dfa is not None and state is not None:
        try:
            grammar = gbnf.dfa_gbnf(lang.dfa, state, tail=TAIL)
            gbnf.check_gbnf(grammar)
        except (automata.NotTranslatable, ValueError) as err:
            log.info("%s: no grammar for %s from %r: %s", b.name, hc.hole, so_far, err)
            grammar = None
    elif lang.whole_grammar is not None and not so_far:
        grammar = lang.whole_grammar
    choices = (
        automata.finite_strings(lang.dfa, state, limit=50) if lang.dfa is not None and state is not None else None
    )
    if choices is not None:
        choices = [c for c in choices if c]

    f = b.flavour
    allowed = b.mechanisms
    if "grammar" in allowed and grammar is not None and f in ("llamacpp", "vllm", "sglang"):
        if f == "vllm" and choices and not so_far and "choice" in allowed:
            extra["structured_outputs"] = {"choice": choices}
            mech.append("choice")
        elif f == "vllm":
            extra["structured_outputs"] = {"grammar": grammar}
            mech.append("grammar")
        elif f == "sglang":
            extra["ebnf"] = grammar
            mech.append("grammar")
        else:
            extra["grammar"] = grammar
            mech.append("grammar")
        exact = lang.exact and (lang.dfa is not None or not so_far)
    elif (
        "json_schema" in allowed
        and lang.json_schema is not None
        and not so_far
        and _json_ok(b, endpoint_chat)
    ):
        schema = lang.json_schema
        if f == "vllm":
            extra["structured_outputs"] = {"json": schema}
        elif f == "sglang" and not endpoint_chat:
            extra["json_schema"] = json.dumps(schema)
        elif f == "llamacpp":
            params["response_format"] = {"type": "json_object", "schema": schema}
        elif f in ("ollama", "sglang"):
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(hc.hole), "schema": schema},
            }
        else:
            strict = _strict_ok(schema)
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(hc.hole), "schema": schema, "strict": strict},
            }
        mech.append("json_schema")
    elif (
        f == "openai"
        and endpoint_chat
        and "grammar" in allowed
        and re.match(r"gpt-5", b.model)
        and not so_far
        and hc.grammars()
    ):
        # GPT-5 custom tools take a Lark grammar (llguidance's dialect)
        lark = (
            json.loads(hc.grammars()[0])["grammars"][0].get("lark_grammar")
            if len(hc.grammars()) == 1
            else None
        )
        if lark:
            params["tools"] = [
                {
                    "type": "custom",
                    "name": "value",
                    "description": f"the value of {hc.hole}",
                    "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": lark}},
                }
            ]
            params["tool_choice"] = {"type": "custom", "custom": {"name": "value"}}
            mech.append("grammar")
            exact = len(json.loads(hc.grammars()[0])["grammars"]) == 1
    if not mech and choices and "logit_bias" in allowed and f in ("openai", "vllm", "llamacpp"):
        bias, longest_tokens = _choice_bias(b, choices)
        if bias:
            params["logit_bias"] = bias
            limit = min(limit, longest_tokens)
            mech.append("logit_bias")
    if not _has_grammar(mech) and "stop" in allowed:
        stops: list[str] = []
        if f == "vllm" or f == "sglang":
            stops = hc.stops_at + hc.stops_before  # the matched phrase is reported back
            if f == "vllm" and stops:
                extra["include_stop_str_in_output"] = True
        elif hc.stops_before and not hc.stops_at:
            stops = list(hc.stops_before)  # the value ends before the phrase whichever it was
        if f == "openai" and len(stops) > 4:
            stops = []  # OpenAI takes at most 4: validate locally instead of truncating the list
        if stops:
            params["stop"] = stops
            mech.append("stop")
            if not mech[:-1] and lang.exact and hc.regular is None and not hc.cfgs:
                exact = True
    if "max_tokens" in allowed or budget is not None:
        if f == "openai" and endpoint_chat:
            params["max_completion_tokens"] = limit
        else:
            params["max_tokens"] = limit
        mech.append("max_tokens")
    if f == "vllm" and hc.min_tokens > len(v.ids):
        extra["min_tokens"] = hc.min_tokens - len(v.ids)
    if b.want_logprobs:
        if endpoint_chat:
            params["logprobs"] = True
        else:
            params["logprobs"] = 1
    if extra:
        params["extra_body"] = extra
    return params, mech, exact


def _json_ok(b: OpenAIBackend, chat: bool) -> bool:
    if b.flavour in ("vllm", "sglang"):
        return True
    return chat  # llama.cpp, Ollama and OpenAI take response_format on chat only


def _schema_name(hole: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", hole)[:64] or "value"


def _strict_ok(schema: Any) -> bool:
    """OpenAI's strict mode needs every object closed with all its properties required."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(
                props
            ):
                return False
        return all(_strict_ok(v) for v in schema.values())
    if isinstance(schema, list):
        return all(_strict_ok(v) for v in schema)
    return True


def _choice_bias(b: OpenAIBackend, choices: list[str]) -> tuple[dict[str, int], int]:
    """logit_bias (+100) for the server tokens of a small set of choices: at most 300 entries."""
    ids: set[int] = set()
    longest = 1
    for c in choices:
        toks = b.encode(c) if b.same_tokenizer else b._server_tokenize(c)
        if toks is None:
            return {}, 0
        if (
            not b.same_tokenizer
            and b.flavour == "llamacpp"
            and toks
            and toks[0] == getattr(b.tokenizer, "bos_token_id", -1)
        ):
            toks = toks[1:]
        ids.update(toks)
        longest = max(longest, len(toks))
    if len(ids) > 300:
        return {}, 0
    return {str(i): 100 for i in sorted(ids)}, longest


# -- running many queries -----------------------------------------------------------------------------


__all__ = [
    "OpenAIBackend",
    "HostedDecode",
    "Usage",
    "HoleUsage",
    "load",
    "FLAVOURS",
    "MECHANISMS",
]

"""The openai SDK's client as the hosted backend uses it: one request at a time, retried with backoff
and jitter (Retry-After honoured), bounded by a per-request timeout and by the run's deadline (which
also bounds a server that drips its answer a byte at a time), cancellable, counted (``Usage``), and with
the API key scrubbed from every text that leaves it.

What the server is (its parameters for constraints) is servers.py's business; what to ask for a hole is
the hosted decoder's (``querylm.decoding.hosted``).
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import BackendError, ModelError, QueryError

log = logging.getLogger("querylm.openai")

KEY_PATTERN = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_\-]{6,}")
"""API keys by their look, scrubbed even when they are not this client's own."""


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


def scrubbing(method: Callable[..., Any]) -> Callable[..., Any]:
    """The scrubbing boundary: whatever leaves ``method`` (of a HostedClient, or of an object with one as
    its ``client``) has the API key scrubbed from its message, args and exception chain."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BaseException as err:
            client = self if isinstance(self, HostedClient) else getattr(self, "client", None)
            if isinstance(client, HostedClient):
                scrub_exception(err, client.scrub)
            raise

    return wrapper


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
    shared: int = 0
    """Answers this hole took from another sample's request (``sample(n)``: one request, ``n`` choices),
    which ``requests`` and the token counts leave out: that request is billed where it was made."""
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

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "holes": [h.to_json() for h in self.holes],
        }


@dataclass
class Answer:
    """One completion as querylm reads it, from either endpoint and any server."""

    text: str
    finish: str | None
    usage: Any
    request_id: str | None
    logprobs: list[tuple[str, float]] | None = None
    stop_phrase: str | None = None
    tool_calls: list[Any] = field(default_factory=list)
    """A chat answer's ``message.tool_calls`` as the SDK parsed them (the agent's native tool path)."""
    choice: Any = None
    """The choice as the SDK parsed it (scoring reads its ``prompt_logprobs`` or ``top_logprobs``)."""


class _Malformed(Exception):
    pass


class _Retryable(Exception):
    def __init__(self, what: str, status: int | None, request_id: str | None, delay: float | None):
        super().__init__(what)
        self.what, self.status, self.request_id, self.delay = what, status, request_id, delay


class HostedClient:
    """The SDK client of one backend, with querylm's retries, deadline, cancelling and key scrubbing."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        api_key: str,
        organization: str | None,
        project: str | None,
        timeout: float,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        deadline: float | None,
        default_headers: dict[str, str] | None,
        http_client: Any,
    ):
        import openai

        self.name = name
        self.base_url = base_url
        self._secrets = [api_key]
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.deadline = None if deadline is None else float(deadline)
        """Seconds one run (a query's sample, an agent's run) may spend on requests and backoff waits in
        all, from its first request: whatever the server does (Retry-After, a slow drip of bytes), the
        run then fails with a BackendError. None: no overall limit (``timeout`` still bounds a request)."""
        if self.deadline is not None and not self.deadline > 0:
            raise ModelError(f"{name}: deadline must be a positive number of seconds or None")
        self.sdk = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            timeout=self.timeout,
            max_retries=0,  # retries are ours: counted, with jitter, Retry-After, and the hole in the error
            default_headers=default_headers,
            http_client=http_client,
        )
        self.stop_phrase_field = "stop_reason"
        """Where the server's answer names the stop phrase that ended it (set by the server's class)."""
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self.total = Usage()
        """Every request this client has made, across runs."""

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return KEY_PATTERN.sub(lambda m: m.group(1) + "-***", text)

    def raw(self, method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
        """One plain HTTP call through the SDK's client (its headers; ``timeout``, at most the
        client's); None on any failure."""
        sdk = self.sdk.with_options(max_retries=0, timeout=min(self.timeout, timeout))
        try:
            if method == "GET":
                return sdk.get(url, cast_to=object)
            return sdk.post(url, body=body, cast_to=object)
        except Exception as err:  # noqa: BLE001 - a probe: any failure means "not this"
            log.debug("probe %s %s: %s", method, url, self.scrub(str(err)))
            return None

    def send(self, kind: str, params: dict[str, Any], usage: Usage, hole: HoleUsage, where: str) -> Answer:
        """One completion (``send_many``'s first choice)."""
        return self.send_many(kind, params, usage, hole, where)[0]

    @scrubbing
    def send_many(
        self, kind: str, params: dict[str, Any], usage: Usage, hole: HoleUsage, where: str
    ) -> list[Answer]:
        """One request's choices (``n`` of them where ``params`` asks for several; a server may give
        fewer), by their index, retried with exponential backoff and jitter on 408/409/429/5xx, connection
        errors, timeouts and malformed answers (honouring Retry-After up to ``max_backoff``); a
        BackendError naming the hole when retries are exhausted, the error can't be retried, or the
        run's ``deadline`` passes (it bounds every request's whole answer and every wait)."""
        import openai

        create = self.sdk.chat.completions if kind == "chat" else self.sdk.completions
        if usage.ends_at is None and self.deadline is not None:
            usage.ends_at = time.monotonic() + self.deadline
        attempt = 0
        while True:
            if self.cancelled.is_set():
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
                answers = self._answers(kind, _parse(kind, body), request_id)
                usage.add_response(answers[0].usage, hole)
                with self._lock:
                    self.total.add_response(answers[0].usage, HoleUsage(hole.name))
                return answers
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
                failure = _Retryable(f"connection failed ({self.scrub(detail)})", None, request_id, None)
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
            if self.cancelled.wait(delay):
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
        return self.scrub("; ".join(parts))

    def _error_message(self, err: Any) -> str:
        body = getattr(err, "body", None)
        msg = None
        if isinstance(body, dict):
            inner = body.get("error", body)
            msg = inner.get("message") if isinstance(inner, dict) else inner
            msg = msg or body.get("detail")
        text = str(msg if msg is not None else getattr(err, "message", "") or "")
        return self.scrub(text.strip().splitlines()[0][:300] if text.strip() else "(no message)")

    def _answers(self, kind: str, parsed: Any, request_id: str | None) -> list[Answer]:
        choices = getattr(parsed, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _Malformed("no choices")
        order = sorted(range(len(choices)), key=lambda i: _index(choices[i], i))
        return [self._answer(kind, parsed, choices[i], request_id) for i in order]

    def _answer(self, kind: str, parsed: Any, choice: Any, request_id: str | None) -> Answer:
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
        phrase = extra.get(self.stop_phrase_field)
        return Answer(
            text,
            finish,
            getattr(parsed, "usage", None),
            request_id,
            logprobs,
            phrase if isinstance(phrase, str) else None,
            list(calls),
            choice,
        )


def _index(choice: Any, default: int) -> int:
    index = getattr(choice, "index", None)
    return index if isinstance(index, int) else default


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
        pairs = _pairs(content)
    elif isinstance(tokens, list) and isinstance(values, list):
        pairs = [(t, float(p)) for t, p in zip(tokens, values, strict=False) if p is not None]
    return pairs or None


def top_logprobs(lp: Any) -> dict[str, float]:
    """The first answer token's alternatives (token → logprob) from either shape: chat's
    ``content[0].top_logprobs`` list or the completions endpoint's ``top_logprobs[0]`` map."""
    if lp is None:
        return {}
    content, legacy = _field(lp, "content"), _field(lp, "top_logprobs")
    if isinstance(content, list) and content:
        return dict(reversed(_pairs(_field(content[0], "top_logprobs") or [])))  # the first of a token wins
    if isinstance(legacy, list) and legacy and isinstance(legacy[0], dict):
        return {str(t): float(v) for t, v in legacy[0].items() if isinstance(v, (int, float))}
    return {}


def _pairs(items: list[Any]) -> list[tuple[str, float]]:
    """The (token, logprob) of each item of a ``content``-shaped list (objects or plain dicts)."""
    pairs = []
    for item in items:
        token, value = _field(item, "token"), _field(item, "logprob")
        if isinstance(token, str) and isinstance(value, (int, float)):
            pairs.append((token, float(value)))
    return pairs


def _field(obj: Any, name: str) -> Any:
    """A response field, whether the SDK parsed it into an object or left it a plain dict."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


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
    except RecursionError:
        raise _Malformed("the body is JSON nested too deeply") from None
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

"""Hosted models through the official ``openai`` SDK: OpenAI and OpenAI-compatible servers (vLLM, SGLang,
llama.cpp, Ollama).

A hosted API returns whole texts, not next-token logits, so a hosted model has its own hole decoder
(``querylm.decoding.hosted``, which the runtime picks for this backend): each hole is one request carrying the strongest constraint the server honours (a
grammar, a JSON Schema, ``logit_bias`` over a small choice set, ``stop`` phrases, ``max_tokens``), and the
answer is always validated with the same llguidance matcher the local backend masks with. An invalid
answer is cut to its longest valid prefix and continued (a bounded number of requests); a value that
still can't be made valid is a ConstraintError, never returned.

Which server it is (its "flavour", a class in ``hosted/servers.py``) is declared or probed, never
guessed: the parameters that carry constraints differ between servers and an unknown one is silently
ignored by most of them. Requests, retries, the deadline and key scrubbing are ``hosted/client.py``'s.

Model ids: ``openai/<model>`` with options as a query string, e.g.
``openai/smollm2?base_url=http://127.0.0.1:8080/v1&flavour=llamacpp&endpoint=completions``;
``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and ``QUERYLM_OPENAI_FLAVOUR`` are read when an option is absent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import ModelError, UnsupportedError
from .base import Backend, Sequence
from .hosted.client import HoleUsage, HostedClient, Usage, scrubbing, top_logprobs
from .hosted.servers import FLAVOURS, probe, served_models, server
from .hub import load_tokenizer

log = logging.getLogger("querylm.openai")

MECHANISMS = ("llguidance", "grammar", "json_schema", "choice", "logit_bias", "stop", "max_tokens")
"""Every server-side mechanism; ``mechanisms=`` restricts a backend to some of them (``()``: none, every
constraint is then validated locally only). ``llguidance``: the hole's own llguidance grammar, sent as
it is to a server built with llguidance (probed); ``grammar``: a translation (GBNF, or a regex)."""

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
_LL_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


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


class HostedSequence(Sequence):
    """Only the token ids: the server holds the model."""

    def score(
        self, backend: Backend, continuations: list[list[int]], messages: list[dict[str, str]] | None = None
    ) -> list[np.ndarray]:
        if isinstance(backend, OpenAIBackend):
            return backend.score(list(self.ids), continuations, messages)
        return backend.score(list(self.ids), continuations)

    def logits(self) -> np.ndarray:
        raise UnsupportedError("a hosted model gives no next-token logits: use argmax or sample decoders")

    def truncate(self, n: int) -> None:
        del self.ids[n:]

    def fork(self) -> HostedSequence:
        other = HostedSequence()
        other.ids = list(self.ids)
        return other


class OpenAIBackend(Backend):
    """A model behind an OpenAI-style HTTP API. See the module docstring."""

    supports_beams = False
    heals = False
    """No token healing: the server tokenizes the prompt (text or messages) itself, so the prompt can't
    end one token early, and its tokens need not be the ones the local tokenizer made."""
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

    @scrubbing
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
        if importlib.util.find_spec("openai") is None:
            raise ModelError("hosted models need the openai SDK: pip install 'querylm[openai]'")
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
        self.max_requests = int(max_requests)
        self.chunk_tokens = int(chunk_tokens)
        self.client = HostedClient(
            self.name,
            base_url=self.base_url,
            api_key=key,
            organization=organization,
            project=project,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            deadline=deadline,
            default_headers=default_headers,
            http_client=http_client,
        )
        self.want_logprobs = bool(logprobs)
        self.mechanisms = frozenset(MECHANISMS if mechanisms is None else mechanisms)
        unknown = self.mechanisms - set(MECHANISMS)
        if unknown:
            raise ModelError(f"unknown mechanisms {sorted(unknown)} (known: {', '.join(MECHANISMS)})")
        self._local = threading.local()
        self.total = self.client.total
        """Every request this backend has made, across runs."""
        self._token_ids: dict[str, list[int] | None] = {}
        flavour = flavour or os.environ.get("QUERYLM_OPENAI_FLAVOUR") or None
        if flavour is not None and flavour not in FLAVOURS:
            raise ModelError(f"unknown flavour '{flavour}' (known: {', '.join(FLAVOURS)})")
        self.served: list[str] = []
        if flavour is None and not official:
            flavour, self.served = probe(self.client)
        self.flavour: str = flavour or "openai"
        self.server = server(self.flavour)
        """What this server takes (its class in servers.py)."""
        self.client.stop_phrase_field = self.server.stop_phrase_field
        self.llguidance = "llguidance" in self.mechanisms and self.server.llguidance(self.client, model)
        """The server enforces llguidance's Lark grammars (probed once per server URL): each hole's
        own grammar goes to it as written, GBNF translations only where it has none."""
        if endpoint not in ("auto", "chat", "completions"):
            raise ModelError(f"endpoint must be 'chat', 'completions' or 'auto', not {endpoint!r}")
        self.endpoint = endpoint if endpoint != "auto" else self.server.default_endpoint(model)
        self.tokenizer, self.tokenizer_source = self._tokenizer(tokenizer)
        self.generation_eos = None
        self.same_tokenizer = self.tokenizer_source != "bytes" and (
            self._verify_tokenizer()
            # OpenAI has no tokenize endpoint: its models' tiktoken encodings are what it uses
            or (self.server.tiktoken and self.tokenizer_source.startswith("tiktoken:"))
        )
        """True when the local tokenizer is the server's (checked on a probe text): token ids may then
        be sent (logit_bias) and token budgets mean the same on both sides."""

    # -- identity, tokenizers ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.model!r}, base_url={self.base_url!r}, flavour={self.flavour!r}, endpoint={self.endpoint!r})"

    def _tokenizer(self, spec: Any) -> tuple[Any, str]:
        if spec is not None and not isinstance(spec, str):
            return spec, "given"
        if isinstance(spec, str):
            try:
                return load_tokenizer(spec), spec
            except Exception as err:  # noqa: BLE001
                raise ModelError(f"{self.name}: can't load tokenizer {spec!r}: {err}") from None
        # The served model may be a file on this machine (llama.cpp on loopback): its own tokenizer.
        if self.server.local_files:
            if not self.served:
                self.served = served_models(self.client)[2]
            for served in self.served:
                if served.endswith(".gguf") and os.path.isfile(served):
                    try:
                        return load_tokenizer(served), served
                    except Exception as err:  # noqa: BLE001
                        log.info("can't load the tokenizer of %s: %s", served, err)
        if self.server.tiktoken and importlib.util.find_spec("tiktoken") is not None:
            try:
                return load_tokenizer(f"tiktoken:{self.model}"), f"tiktoken:{self.model}"
            except Exception as err:  # noqa: BLE001 - offline, or a model tiktoken doesn't know
                log.info("%s: no tiktoken encoding (%s)", self.name, self.client.scrub(str(err)))
        log.info("%s: no local tokenizer; validating byte by byte (len(TOKENS(X)) counts bytes)", self.name)
        return load_tokenizer("bytes"), "bytes"

    def server_tokenize(self, text: str) -> list[int] | None:
        """The server's own token ids for ``text`` (None where it has no tokenize endpoint), once per text."""
        if text not in self._token_ids:
            self._token_ids[text] = self.server.tokenize(self.client, self.model, text)
        return self._token_ids[text]

    def _verify_tokenizer(self) -> bool:
        probe = 'Probe: 1234 héllo,\n  wörld! {"k": [1, 2]}'
        server = self.server_tokenize(probe)
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

    @scrubbing
    def score(
        self,
        prefix: list[int],
        continuations: list[list[int]],
        messages: list[dict[str, str]] | None = None,
    ) -> list[np.ndarray]:
        """Each continuation's token log-probabilities after ``prefix`` (``messages``: the chat so far,
        for a chat endpoint), as the server's class says it can (``Server.scoring``):

        - llama.cpp built with llguidance: one request per continuation, its token ids forced by a
          grammar of token ids (``<[id]>``) and each forced token's log-probability read from
          ``logprobs`` (which llama.cpp takes before the grammar applies);
        - vLLM: one request for all of them (a list of prompts, prefix + continuation, with
          ``prompt_logprobs``): the prompt's own log-probabilities at the continuation's positions;
        - OpenAI: one request whose first answer token comes with its 20 most likely alternatives
          (``top_logprobs``): each continuation's first token must be among them and differ from the
          others', so that it decides the choice; its other tokens, which that choice forces, count 0.
          OpenAI reports no log-probability of a text it did not write.

        An UnsupportedError where the server can't (saying why), and where ids don't mean the same
        on both sides (a tokenizer here that is not the server's)."""
        how = self.server.scoring
        if how == "forced" and not self.llguidance:
            how = ""
        if not how or not self.same_tokenizer:
            why = (
                "gives no reliable prompt log-probabilities"
                if not how
                else "does not tokenize as the tokenizer here does (its token ids would mean other tokens)"
            )
            raise UnsupportedError(
                f"{self.name}: scoring (distribution clauses, querylm.score) needs a server that reports "
                "log-probabilities of given tokens (llama.cpp built with llguidance, vLLM, OpenAI's "
                f"top_logprobs) and its own tokenizer here; this {self.flavour} server {why}"
            )
        usage = Usage()
        if how == "prompt_logprobs":
            return self._prompt_logprobs(prefix, continuations, usage)
        if how == "top_logprobs":
            return self._first_token_logprobs(prefix, continuations, messages, usage)
        out = []
        for cont in continuations:
            grammar = "%llguidance {}\nstart: " + " ".join(f"<[{t}]>" for t in cont) + "\n"
            params = {
                "model": self.model,
                "prompt": list(prefix),
                "max_tokens": len(cont),
                "temperature": 0.0,
                "logprobs": 1,
                "extra_body": {"grammar": grammar},
            }
            answer = self.client.send("completions", params, usage, HoleUsage("score"), "a score")
            lps = [lp for _, lp in answer.logprobs or []]
            if len(lps) != len(cont):
                raise ModelError(
                    f"{self.name}: the server scored {len(lps)} of a continuation's {len(cont)} tokens"
                )
            out.append(np.array(lps, dtype=np.float64))
        return out

    def _prompt_logprobs(
        self, prefix: list[int], continuations: list[list[int]], usage: Usage
    ) -> list[np.ndarray]:
        """vLLM: ``prompt_logprobs`` of each prompt prefix + continuation, one request for all. Each
        choice's ``prompt_logprobs`` has one entry per prompt token (None for the first, which follows
        nothing), a map from token id to ``{"logprob", "rank", "decoded_token"}`` that always holds the
        prompt's own token."""
        if not prefix:
            raise UnsupportedError(f"{self.name}: scoring needs a prompt (the first token follows nothing)")
        params = {
            "model": self.model,
            "prompt": [list(prefix) + list(cont) for cont in continuations],
            "max_tokens": 1,
            "temperature": 0.0,
            "extra_body": {"prompt_logprobs": 1},
        }
        answers = self.client.send_many("completions", params, usage, HoleUsage("score"), "a score")
        if len(answers) != len(continuations):
            raise ModelError(f"{self.name}: {len(answers)} answers to {len(continuations)} prompts to score")
        out = []
        for cont, answer in zip(continuations, answers, strict=True):
            extra = getattr(answer.choice, "model_extra", None) or {}
            entries = extra.get("prompt_logprobs") or getattr(answer.choice, "prompt_logprobs", None)
            if not isinstance(entries, list) or len(entries) < len(prefix) + len(cont):
                raise ModelError(f"{self.name}: the answer has no prompt_logprobs for the continuation")
            lps = []
            for at, token in enumerate(cont, start=len(prefix)):
                entry = entries[at] if isinstance(entries[at], dict) else {}
                value = entry.get(str(token), entry.get(token))  # type: ignore[call-overload]
                logprob = value.get("logprob") if isinstance(value, dict) else None
                if not isinstance(logprob, (int, float)):
                    raise ModelError(f"{self.name}: no prompt logprob for token {token} at position {at}")
                lps.append(float(logprob))
            out.append(np.array(lps, dtype=np.float64))
        return out

    def _first_token_logprobs(
        self,
        prefix: list[int],
        continuations: list[list[int]],
        messages: list[dict[str, str]] | None,
        usage: Usage,
    ) -> list[np.ndarray]:
        """OpenAI: one answer token with its ``top_logprobs`` (chat: ``logprobs.content[0].top_logprobs``,
        a list of ``{"token", "logprob", "bytes"}``, at most 20; completions: ``logprobs.top_logprobs[0]``,
        a map from token to logprob, at most 5)."""
        firsts = [self.decode(cont[:1]) for cont in continuations]
        for i, first in enumerate(firsts):
            if not first or firsts.index(first) != i:
                raise UnsupportedError(
                    f"{self.name}: OpenAI reports log-probabilities only of the tokens it writes, so scoring "
                    f"needs continuations whose first tokens differ; {first!r} begins more than one"
                )
        chat = self.endpoint == "chat"
        params: dict[str, Any] = {"model": self.model, "temperature": 0.0}
        if chat:
            params["messages"] = self._score_messages(prefix, messages)
            params.update(logprobs=True, top_logprobs=20, max_completion_tokens=1)
        else:
            params.update(prompt=self.decode(list(prefix)), logprobs=5, max_tokens=1)
        answer = self.client.send(
            "chat" if chat else "completions", params, usage, HoleUsage("score"), "a score"
        )
        top = top_logprobs(getattr(answer.choice, "logprobs", None))
        out = []
        for cont, first in zip(continuations, firsts, strict=True):
            if first not in top:
                raise UnsupportedError(
                    f"{self.name}: {first!r} is not among the {len(top)} most likely first tokens OpenAI "
                    "reports, so its log-probability is unknown"
                )
            out.append(np.array([top[first]] + [0.0] * (len(cont) - 1), dtype=np.float64))
        return out

    def _score_messages(
        self, prefix: list[int], messages: list[dict[str, str]] | None
    ) -> list[dict[str, str]]:
        """The chat before the continuations: the query's messages, or its text as the user's message
        (as the hosted decoder sends a prompt without roles)."""
        if not messages:
            return [{"role": "user", "content": self.decode(list(prefix))}]
        chat = [dict(m) for m in messages]
        if chat[-1]["role"] == "assistant":
            if chat[-1]["content"]:
                raise UnsupportedError(
                    f"{self.name}: OpenAI's chat API can't continue a partly written assistant message, so it "
                    "can't score what follows one"
                )
            chat.pop()
        return chat

    def cancel(self) -> None:
        """Stop the runs in progress: the next request (or backoff wait) raises BackendError. A request
        already sent finishes (bounded by ``timeout``)."""
        self.client.cancelled.set()

    @property
    def last_usage(self) -> Usage | None:
        """The usage of the last run this thread made."""
        return getattr(self._local, "usage", None)

    def begin_run(self, usage: Usage) -> None:
        """A run starts on this thread: a cancel of an earlier run no longer applies, and ``last_usage``
        is ``usage`` (which the run's hole decoder fills)."""
        self.client.cancelled.clear()
        self._local.usage = usage


__all__ = ["OpenAIBackend", "Usage", "load", "FLAVOURS", "MECHANISMS"]

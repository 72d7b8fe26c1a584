"""One class per kind of OpenAI-compatible server: which of its parameters carry which constraint.

Servers differ in where a grammar, a JSON Schema, a choice list or a stop phrase goes, and a parameter
one server reads is silently ignored by another. So the kind of server is declared (``flavour=``) or
probed (``probe``), never guessed, and everything that depends on it is a capability flag or a method
here: adding a server is one class (as sqlglot adds a dialect), not a branch in every request builder.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from ...constraints.schema import strict_ok
from ...errors import ModelError
from .client import HostedClient


class Server:
    """An OpenAI-compatible server of unknown make: the OpenAI API's common parameters only."""

    name: ClassVar[str] = ""
    grammar: ClassVar[bool] = False
    """Takes a GBNF grammar (``grammar_params``)."""
    choice: ClassVar[bool] = False
    """Takes a list of choices (vLLM's ``structured_outputs.choice``)."""
    logit_bias: ClassVar[bool] = False
    """Honours ``logit_bias`` by token id."""
    reports_stop: ClassVar[bool] = False
    """Says which stop phrase ended an answer, so that every phrase can be sent as a ``stop``."""
    stop_phrase_field: ClassVar[str] = "stop_reason"
    """Where a choice names its stop phrase (``model_extra``)."""
    max_stops: ClassVar[int | None] = None
    """The most ``stop`` phrases a request may carry (more: none are sent, the value is validated locally)."""
    min_tokens: ClassVar[bool] = False
    """Takes ``min_tokens``."""
    prefill: ClassVar[str] = "none"
    """How a chat request continues a partly written assistant message: ``"flags"`` (vLLM/SGLang's
    ``continue_final_message``), ``"native"`` (a trailing assistant message is continued as it is),
    ``"template"`` (not at all on chat: rendered with the chat template here and sent to /completions),
    ``"none"`` (it can't)."""
    json_on_completions: ClassVar[bool] = False
    """Takes a JSON Schema on /completions too (not only on chat)."""
    native_tools: ClassVar[bool] = False
    """The agent's tools go as the API's own tools (OpenAI), not as a grammar."""
    lark_tools: ClassVar[bool] = False
    """Takes a Lark grammar as a custom tool (GPT-5)."""
    tiktoken: ClassVar[bool] = False
    """Its models' tokenizers are tiktoken encodings."""
    local_files: ClassVar[bool] = False
    """The served model may be a file on this machine, whose tokenizer can then be loaded here."""
    tokenize_adds_bos: ClassVar[bool] = False
    """Its tokenize endpoint puts a BOS token first."""
    regex: ClassVar[bool] = False
    """Takes a regular expression (``regex_params``)."""
    scoring: ClassVar[str] = ""
    """How it scores continuations (``OpenAIBackend.score``): ``"forced"`` (each continuation's token ids
    forced by a llguidance grammar, their logprobs read back: llama.cpp built with llguidance),
    ``"prompt_logprobs"`` (the prompt's own logprobs: vLLM), ``"top_logprobs"`` (the first token's 20
    most likely alternatives: OpenAI), or ``""`` (it can't)."""
    most_n: ClassVar[int] = 1
    """The most choices one request may ask for (``n``): 1 where the server ignores ``n``."""

    def llguidance(self, client: HostedClient, model: str) -> bool:
        """Whether the server enforces llguidance's Lark grammars (``%llguidance``), probed once per
        server URL (``lark_params``)."""
        return False

    def max_n(self, client: HostedClient) -> int:
        """How many choices (``n``) one request of ``sample(n)`` may ask this server for: ``sample(n)``
        sends one request for the samples that need the same one, in chunks of this size."""
        return self.most_n

    def lark_params(self, lark: str) -> dict[str, Any]:
        """The ``extra_body`` entries of a llguidance Lark grammar (``%llguidance`` first)."""
        raise NotImplementedError(f"{self.name} takes no llguidance grammar")

    def regex_params(self, pattern: str) -> dict[str, Any]:
        """The ``extra_body`` entries of a regular expression the whole answer must match."""
        raise NotImplementedError(f"{self.name} takes no regular expression")

    def default_endpoint(self, model: str) -> str:
        return "chat"

    def tokenize(self, client: HostedClient, model: str, text: str) -> list[int] | None:
        """The server's own token ids for ``text``; None where it has no tokenize endpoint."""
        return None

    def grammar_params(self, grammar: str, choices: list[str] | None) -> tuple[dict[str, Any], str]:
        """The ``extra_body`` entries of a GBNF grammar (or, where the server takes them and ``choices``
        is given, of a choice list), and the mechanism used."""
        raise NotImplementedError(f"{self.name} takes no grammar")

    def json_params(self, schema: dict, name: str, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request parameters and the ``extra_body`` entries of a JSON Schema."""
        return {
            "response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        }, {}

    def takes_json(self, chat: bool) -> bool:
        return chat or self.json_on_completions

    def stops(self, stops_at: list[str], stops_before: list[str]) -> tuple[list[str], dict[str, Any]]:
        """The ``stop`` phrases to send and the ``extra_body`` entries they need. A server that doesn't
        say which phrase it stopped at gets STOPS_BEFORE phrases only, and only without STOPS_AT ones
        (the value then ends before the phrase, whichever it was)."""
        if self.reports_stop:
            out = list(stops_at) + list(stops_before)
        elif stops_before and not stops_at:
            out = list(stops_before)
        else:
            out = []
        if self.max_stops is not None and len(out) > self.max_stops:
            out = []  # validate locally instead of truncating the list
        return out, {}

    def max_tokens_param(self, chat: bool) -> str:
        return "max_tokens"


class OpenAI(Server):
    name = "openai"
    most_n = 128  # the API's documented limit
    scoring = "top_logprobs"
    logit_bias = True
    max_stops = 4
    native_tools = True
    lark_tools = True
    tiktoken = True

    def default_endpoint(self, model: str) -> str:
        legacy = re.search(r"instruct|davinci|babbage|^text-", model)
        return "completions" if legacy else "chat"

    def json_params(self, schema: dict, name: str, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        fmt = {"name": name, "schema": schema, "strict": strict_ok(schema)}
        return {"response_format": {"type": "json_schema", "json_schema": fmt}}, {}

    def max_tokens_param(self, chat: bool) -> str:
        return "max_completion_tokens" if chat else "max_tokens"


class VLLM(Server):
    """vLLM >= 0.12: every structured-output parameter under ``structured_outputs`` (``choice``,
    ``regex``, ``json``, ``grammar``), which replaced the ``guided_*`` fields removed in v0.12.0
    (docs.vllm.ai/en/latest/features/structured_outputs/). Its grammar backend is the server's choice
    (xgrammar by default, which reads GBNF), so grammars go as GBNF, not as llguidance's Lark."""

    name = "vllm"
    scoring = "prompt_logprobs"
    grammar = True
    choice = True
    regex = True
    logit_bias = True
    reports_stop = True
    min_tokens = True
    prefill = "flags"
    json_on_completions = True
    most_n = 1024  # no limit of its own: a bound on one request's fan-out

    def regex_params(self, pattern: str) -> dict[str, Any]:
        return {"structured_outputs": {"regex": pattern}}

    def tokenize(self, client: HostedClient, model: str, text: str) -> list[int] | None:
        r = client.raw(
            "POST",
            f"{root_url(client)}/tokenize",
            {"model": model, "prompt": text, "add_special_tokens": False},
        )
        return _tokens(r)

    def grammar_params(self, grammar: str, choices: list[str] | None) -> tuple[dict[str, Any], str]:
        if choices:
            return {"structured_outputs": {"choice": choices}}, "choice"
        return {"structured_outputs": {"grammar": grammar}}, "grammar"

    def json_params(self, schema: dict, name: str, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {"structured_outputs": {"json": schema}}

    def stops(self, stops_at: list[str], stops_before: list[str]) -> tuple[list[str], dict[str, Any]]:
        out, extra = super().stops(stops_at, stops_before)
        return out, ({"include_stop_str_in_output": True} if out else extra)


class SGLang(Server):
    """SGLang: one of ``json_schema``, ``regex`` or ``ebnf`` per request, in ``extra_body``
    (docs.sglang.io/advanced_features/structured_outputs.html); its default grammar backend, XGrammar,
    reads GBNF."""

    name = "sglang"
    grammar = True
    regex = True
    reports_stop = True
    stop_phrase_field = "matched_stop"
    prefill = "flags"
    json_on_completions = True
    most_n = 1024  # no limit of its own: a bound on one request's fan-out

    def regex_params(self, pattern: str) -> dict[str, Any]:
        return {"regex": pattern}

    def grammar_params(self, grammar: str, choices: list[str] | None) -> tuple[dict[str, Any], str]:
        return {"ebnf": grammar}, "grammar"

    def json_params(self, schema: dict, name: str, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        if not chat:
            return {}, {"json_schema": json.dumps(schema)}
        return super().json_params(schema, name, chat)


LARK_PROBE = '%llguidance {}\nstart: "qzx7"\n'
"""A grammar that forces an answer no model would give: a server that honours it says exactly that."""
_LLGUIDANCE: dict[str, bool] = {}
"""The probe's answer, by server URL."""
_SLOTS: dict[str, int] = {}
"""A native llama.cpp server's ``total_slots`` (``/props``), by server URL."""


class LlamaCpp(Server):
    """llama.cpp's server, native (C++) or llama-cpp-python's: the same parameters. The native server
    is built with llguidance: a ``grammar`` whose first line is ``%llguidance`` is llguidance's Lark."""

    name = "llamacpp"
    scoring = "forced"  # where the server has llguidance (probed)
    grammar = True
    logit_bias = True
    prefill = "template"
    local_files = True
    tokenize_adds_bos = True

    def llguidance(self, client: HostedClient, model: str) -> bool:
        """Probed, never guessed: a llama.cpp server without llguidance ignores a grammar it can't parse
        without a word, so the probe sends one that forces "qzx7" and checks that the answer is that.
        Only a server with the native ``/props`` endpoint is asked (llama-cpp-python's has none)."""
        url = client.base_url
        if url not in _LLGUIDANCE:
            ok = False
            root = root_url(client)
            if isinstance(client.raw("GET", f"{root}/props"), dict):
                # the native endpoint (not /v1/completions: not a request of any run)
                body = {"prompt": "The word is", "grammar": LARK_PROBE, "n_predict": 8, "temperature": 0.0}
                r = client.raw("POST", f"{root}/completion", body, timeout=120.0)  # a loaded server is slow
                ok = isinstance(r, dict) and r.get("content") == "qzx7"
            _LLGUIDANCE[url] = ok
        return _LLGUIDANCE[url]

    def lark_params(self, lark: str) -> dict[str, Any]:
        return {"grammar": lark}

    def max_n(self, client: HostedClient) -> int:
        """The native server's number of slots (``/props`` ``total_slots``, read once per URL): it
        answers ``n`` choices at once up to that and refuses more (HTTP 400); llama-cpp-python's
        server (no ``/props``) silently answers one choice."""
        url = client.base_url
        if url not in _SLOTS:
            props = client.raw("GET", f"{root_url(client)}/props")
            slots = props.get("total_slots") if isinstance(props, dict) else None
            _SLOTS[url] = slots if isinstance(slots, int) and slots > 0 else 1
        return _SLOTS[url]

    def tokenize(self, client: HostedClient, model: str, text: str) -> list[int] | None:
        root = root_url(client)
        r = client.raw("POST", f"{root}/extras/tokenize", {"input": text, "model": model})
        if not (isinstance(r, dict) and isinstance(r.get("tokens"), list)):
            r = client.raw("POST", f"{root}/tokenize", {"content": text, "add_special": False})
        return _tokens(r)

    def grammar_params(self, grammar: str, choices: list[str] | None) -> tuple[dict[str, Any], str]:
        return {"grammar": grammar}, "grammar"

    def json_params(self, schema: dict, name: str, chat: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"response_format": {"type": "json_object", "schema": schema}}, {}


class Ollama(Server):
    name = "ollama"
    prefill = "native"


SERVERS: dict[str, type[Server]] = {cls.name: cls for cls in (OpenAI, VLLM, SGLang, LlamaCpp, Ollama)}
FLAVOURS = tuple(SERVERS)


def server(flavour: str) -> Server:
    if flavour not in SERVERS:
        raise ModelError(f"unknown flavour '{flavour}' (known: {', '.join(FLAVOURS)})")
    return SERVERS[flavour]()


def root_url(client: HostedClient) -> str:
    """The server's root (``base_url`` less a trailing ``/v1``): llama.cpp and Ollama serve their own
    endpoints there."""
    return re.sub(r"/v1$", "", client.base_url)


def served_models(client: HostedClient) -> tuple[Any, set[str], list[str]]:
    """GET /models: the answer, who owns the models (servers name themselves there), and their ids."""
    models = client.raw("GET", "/models")
    owners = set()
    served = []
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        for m in models["data"]:
            if isinstance(m, dict):
                owners.add(str(m.get("owned_by", "")))
                served.append(str(m.get("id", "")))
    return models, owners, served


def probe(client: HostedClient) -> tuple[str, list[str]]:
    """Which server this is, by endpoints only that kind of server has, and the models it serves; a
    ModelError when none answers (the constraint parameters of one server are silently ignored by
    another)."""
    models, owners, served = served_models(client)
    if "vllm" in owners:
        return "vllm", served
    if "sglang" in owners:
        return "sglang", served
    root = root_url(client)
    version = client.raw("GET", f"{root}/api/version")
    if isinstance(version, dict) and "version" in version:
        return "ollama", served
    tok = client.raw("POST", f"{root}/extras/tokenize", {"input": "probe"})
    if isinstance(tok, dict) and isinstance(tok.get("tokens"), list):
        return "llamacpp", served
    tok = client.raw("POST", f"{root}/tokenize", {"content": "probe"})
    if isinstance(tok, dict) and isinstance(tok.get("tokens"), list):
        return ("llamacpp" if "llamacpp" in owners or not owners else "vllm"), served
    if models is None:
        raise ModelError(
            f"{client.name}: no OpenAI-compatible server answers at {client.base_url} (GET /models failed)"
        )
    raise ModelError(
        f"{client.name}: can't tell which kind of server {client.base_url} is (owned_by {sorted(owners)}): "
        f"pass flavour= one of {', '.join(FLAVOURS)}"
    )


def _tokens(r: Any) -> list[int] | None:
    if isinstance(r, dict) and isinstance(r.get("tokens"), list):
        return [int(t) for t in r["tokens"]]
    return None

"""The hosted hole decoder: a hosted API returns whole texts, not next-token logits, so a hole is filled
by requests, each validated by the local matcher.

Each request carries the strongest constraint the server honours (its class in
``backends/hosted/servers.py`` says where: a grammar, a JSON Schema, ``logit_bias`` over a small choice
set, ``stop`` phrases, ``max_tokens``), and the answer is always validated with the same llguidance
matcher the local backend masks with (``PrefixMatcher``). An invalid answer is cut to its longest valid
prefix and continued (a bounded number of requests); a value that still can't be made valid is a
ConstraintError, never returned.

The decoder works on a ``HoleRequest`` (the hole's constraint and the text before it) and gives back
the value and its log-probability; it never changes an execution.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..backends.hosted.client import Answer, HoleUsage, Usage, scrubbing
from ..backends.openai import OpenAIBackend
from ..constraints import automata, gbnf
from ..constraints.lang import Grammar, Term, server_lark
from ..constraints.matcher import PrefixMatcher
from ..constraints.schema import for_server
from ..constraints.where import HoleConstraint
from ..errors import ConstraintError, Position, UnsupportedError
from .budget import over_budget
from .hole import FREE_TEXT, HoleOutput

log = logging.getLogger("querylm.openai")

TAIL = 8
"""Characters a server grammar lets a model write past a value that could go on, to say that it ends
(see ``constraints.gbnf.dfa_gbnf``); cut off locally."""


@dataclass
class HoleRequest:
    """What the hosted decoder needs of a hole: its constraint and the text before it."""

    hc: HoleConstraint
    position: Position | None
    prompt_ids: list[int]
    """The token ids before the hole (the prompt of a completions request)."""
    used: int
    """Tokens of the sequence so far (``max_len`` counts them)."""
    max_len: int
    messages: list[dict[str, str]]
    """The chat messages so far (empty: no chat template)."""
    prompt: str
    """The prompt text so far (a chat request's user message when there are no messages)."""
    emit: Callable[[str], None]
    """Streams the value's text as it is validated."""


@dataclass
class HostedValue:
    output: HoleOutput
    logprob: float
    """The value's log-probability as the server reported it (0.0 without ``logprobs``)."""


@dataclass
class HoleLang:
    """A hole's language in the forms servers take, computed once per hole."""

    dfa: automata.Automaton | None = None
    """The whole mask language as a DFA (regular holes, stop phrases folded in)."""
    json_schema: dict | None = None
    whole_grammar: str | None = None
    """GBNF for whole values only (JSON Schema, Lark grammars): no form for the rest of a cut value."""
    lark: str | None = None
    """The hole's own llguidance grammar as one ``%llguidance`` Lark text (whole values only), for a
    server built with llguidance: what it enforces is then exactly what the local matcher checks."""
    regex: str | None = None
    """A regular expression of whole values (one REGEX-like pattern, no stop phrase, no open end)."""
    exact: bool = False
    """True when the server-side form is the whole mask language (else it is a superset, or absent)."""


def hole_lang(hc: HoleConstraint, name: str, llguidance: bool = False) -> HoleLang:
    """``hc``'s language in the forms servers take (``name``: the model's, for the log); with
    ``llguidance`` (the server takes llguidance's Lark) no GBNF is made for whole values."""
    lang = HoleLang()
    grammars = hc.grammars()
    if not hc.cfgs:
        if hc.regular is None and not hc.stops_at and not hc.stops_before:
            lang.exact = True  # free text
            return lang
        try:
            lang.dfa = automata.hole_dfa(hc.regular, tuple(hc.stops_at), tuple(hc.stops_before))
            lang.exact = True
        except automata.NotTranslatable as err:
            log.info("%s: no server grammar for %s (%s)", name, hc.hole, err)
        open_end = lang.dfa is None or automata.ends_open(lang.dfa)
        if llguidance and len(grammars) == 1:
            lang.lark = server_lark(grammars[0], TAIL if open_end else 0)
            lang.exact = lang.lark is not None
        if isinstance(hc.regular, Term) and not hc.stops_at and not hc.stops_before and not open_end:
            lang.regex = hc.regular.pattern
        return lang
    lark_file = len(hc.cfgs) == 1 and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].kind == "lark"
    own_gbnf = lark_file and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].gbnf is not None
    if llguidance and len(grammars) == 1 and lark_file and not own_gbnf:
        # (not a grammar that brings its own GBNF, as an agent turn's does, nor JSON Schema holes:
        # llguidance's %json allows whitespace without end, which the model wrote until max_tokens on
        # the native server; the GBNF translation bounds it)
        lang.lark = server_lark(grammars[0], TAIL)
    if len(hc.cfgs) == 1 and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].kind == "json":
        schema = json.loads(hc.cfgs[0].text)
        lang.json_schema = for_server(schema)
        if lang.lark is None:
            try:
                lang.whole_grammar = gbnf.json_gbnf(schema)
                gbnf.check_gbnf(lang.whole_grammar)
            except (automata.NotTranslatable, ValueError) as err:
                log.info("%s: no GBNF for the JSON Schema of %s (%s)", name, hc.hole, err)
                lang.whole_grammar = None
        lang.exact = hc.regular is None and not hc.stops_at and not hc.stops_before
    elif len(hc.cfgs) == 1 and isinstance(hc.cfgs[0], Grammar) and hc.cfgs[0].kind == "lark":
        cfg = hc.cfgs[0]
        if lang.lark is None:
            try:
                lang.whole_grammar = cfg.gbnf or gbnf.lark_gbnf(cfg.text, tail=TAIL)
                gbnf.check_gbnf(lang.whole_grammar)
            except (automata.NotTranslatable, ValueError) as err:
                log.info("%s: no GBNF for the grammar of %s (%s)", name, hc.hole, err)
                lang.whole_grammar = None
        lang.exact = (lang.whole_grammar is not None or lang.lark is not None) and hc.regular is None
    if lang.lark is not None:
        lang.exact = True  # the hole's whole grammar (one), as the local matcher has it
    return lang


class HostedDecode:
    """Fills the holes of one run (one sample) through the API; ``usage`` is what the run cost."""

    def __init__(self, backend: OpenAIBackend, spec: Any, index: int):
        """``spec``: the decoder clause (its ``name`` and ``args``); ``index``: the sample's number."""
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

    @scrubbing
    def fill(self, req: HoleRequest) -> HostedValue:
        """One hole: request, validate, cut to the valid prefix, continue (or start over where the API
        can't continue a partly written answer), until the value is complete."""
        steps = self.steps(req)
        try:
            ask = next(steps)
            while True:
                ask = steps.send(
                    self.backend.client.send(ask.kind, ask.params, self.usage, ask.hole, ask.where)
                )
        except StopIteration as done:
            return done.value

    def steps(self, req: HoleRequest) -> Generator[Ask, Answer, HostedValue]:
        """``fill`` as a generator: it yields each request it needs (an ``Ask``) and is sent the
        answer, so that a caller may answer several samples' equal requests with one request of ``n``
        choices (``send_grouped``); it returns the value."""
        return _fill(self.backend, self, req)


@dataclass
class Ask:
    """A request one sample's hole needs: sent with that sample's ``usage`` and ``hole`` counts."""

    kind: str
    params: dict[str, Any]
    usage: Usage
    hole: HoleUsage
    where: str

    def key(self) -> str:
        """What makes two samples' requests the same request (the seed aside: one request of ``n``
        choices has one seed, and its choices differ all the same)."""
        return json.dumps(
            [self.kind, {k: v for k, v in self.params.items() if k != "seed"}], sort_keys=True, default=repr
        )


def send_grouped(b: OpenAIBackend, asks: list[Ask]) -> list[Answer | None]:
    """Answers for ``asks``, in order: equal requests (``Ask.key``) go as one request with ``n`` (at most
    the server's ``max_n``), counted in the first one's usage, the others' ``shared``; the rest one by
    one. A server that answers fewer choices than asked leaves None for the asks it did not answer
    (to be asked again)."""
    out: list[Answer | None] = [None] * len(asks)
    groups: dict[str, list[int]] = {}
    for i, ask in enumerate(asks):
        groups.setdefault(ask.key(), []).append(i)
    most = max(1, b.server.max_n(b.client))
    for members in groups.values():
        for start in range(0, len(members), most):
            chunk = members[start : start + most]
            first = asks[chunk[0]]
            params = dict(first.params, n=len(chunk)) if len(chunk) > 1 else first.params
            answers = b.client.send_many(first.kind, params, first.usage, first.hole, first.where)
            for i, answer in zip(chunk, answers[: len(chunk)], strict=False):
                out[i] = answer
                if i != chunk[0]:
                    asks[i].hole.shared += 1
    return out


def _fill(b: OpenAIBackend, run: HostedDecode, req: HoleRequest) -> Generator[Ask, Answer, HostedValue]:
    hc = req.hc
    pos = req.position
    logprob = 0.0
    where = f"{hc.hole} ({pos.filename}:{pos.line})" if pos is not None else hc.hole
    hole = HoleUsage(hc.hole)
    run.usage.holes.append(hole)
    lang = hole_lang(hc, b.name, b.llguidance)
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
            req.emit(v.text[emitted:])
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
            raise over_budget(hc, v.text, pos)
        if b.same_tokenizer and req.used + len(v.ids) >= req.max_len:
            if v.accepting() and len(v.ids) >= hc.min_tokens:
                ended_by = "max_len"
                break
            raise ConstraintError(
                f"{hc.hole} reached max_len={req.max_len} tokens before its value was complete: {hc.description}",
                pos,
            )
        if v.text or (
            can_continue and lang.whole_grammar is None and lang.json_schema is None and lang.lark is None
        ):
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
        params, mech, exact = _request(b, run, req, lang, v, kind, budget, repairs)
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
        answer = yield Ask("chat" if "messages" in params else "completions", params, run.usage, hole, where)
        text = last = answer.text
        if answer.stop_phrase and answer.stop_phrase in (*hc.stops_at, *hc.stops_before):
            if not text.endswith(answer.stop_phrase):
                text += answer.stop_phrase  # SGLang reports the phrase it stopped at and drops it
        before = len(v.text)
        got = v.feed(text, None if budget is None else budget - len(v.ids))
        emit()
        if b.want_logprobs and answer.logprobs:
            logprob += _logprob_of_prefix(answer.logprobs, len(got))
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
        req.emit(v.text)
    return HostedValue(HoleOutput(list(v.ids), v.text, ended_by), logprob)


def _has_grammar(mech: list[str]) -> bool:
    return any(m in ("grammar", "llguidance", "regex", "json_schema", "choice") for m in mech)


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
    prefill = b.server.prefill
    return prefill in ("flags", "native") or (prefill == "template" and _template_fallback(b))


def _template_fallback(b: OpenAIBackend) -> bool:
    """llama.cpp's chat endpoint closes a trailing assistant message; with the server's own tokenizer
    and chat template here, such a request goes to /completions with the template rendered locally."""
    return b.same_tokenizer and bool(getattr(b.tokenizer, "chat_template", None))


def prompt_text(b: OpenAIBackend, req: HoleRequest) -> str:
    """The prompt of a completions request: the text before the hole."""
    ids = list(req.prompt_ids)
    tok = b.tokenizer
    if len(ids) == 1 and ids[0] in (tok.bos_token_id, *b.eos_ids):
        return ""  # the runtime's start-of-text marker for an empty prompt: the server adds its own
    return b.decode(ids)


def messages_of(b: OpenAIBackend, req: HoleRequest, so_far: str) -> tuple[list[dict[str, str]], bool]:
    """The chat messages for a request, and whether the last one is an assistant message to continue."""
    messages = [dict(m) for m in req.messages]
    if not messages:
        text = req.prompt
        return [{"role": "user", "content": text}] + (
            [{"role": "assistant", "content": so_far}] if so_far else []
        ), bool(so_far)
    last = messages[-1]
    if last["role"] != "assistant" and not _template_fallback(b):
        raise UnsupportedError(
            f"{req.hc.hole} is in a {last['role']} message: a chat endpoint only generates assistant "
            "messages (use endpoint='completions' with a tokenizer that has the chat template)",
            req.position,
        )
    last["content"] += so_far
    if not last["content"] and last["role"] == "assistant":
        messages.pop()
        return messages, False
    return messages, True


def _request(
    b: OpenAIBackend,
    run: HostedDecode,
    req: HoleRequest,
    lang: HoleLang,
    v: PrefixMatcher,
    kind: str,
    budget: int | None,
    repairs: int = 0,
) -> tuple[dict[str, Any], list[str], bool]:
    """The parameters of the next request for this hole, the mechanisms they use, and whether the server
    enforces the hole's whole constraint with them."""
    hc = req.hc
    srv = b.server
    params: dict[str, Any] = {"model": b.model}
    extra: dict[str, Any] = {}
    mech: list[str] = []
    exact = False
    so_far = v.text
    if kind == "chat":
        messages, prefill = messages_of(b, req, so_far)
        if prefill:
            if srv.prefill == "flags":
                extra["continue_final_message"] = True
                extra["add_generation_prompt"] = False
            elif srv.prefill == "template":
                if not _template_fallback(b):
                    raise UnsupportedError(
                        f"{b.name}: llama.cpp's chat endpoint can't continue the assistant message that "
                        f"{hc.hole} is in, and the server's tokenizer isn't available here to render the "
                        "template (pass tokenizer=, or use endpoint='completions')",
                        req.position,
                    )
                kind = "completions"
                params["prompt"] = b.tokenizer.apply_chat_template(
                    messages, tokenize=False, continue_final_message=True
                )
            elif srv.prefill == "none":
                raise UnsupportedError(
                    f"OpenAI's chat API can't continue a partly written assistant message ({hc.hole} follows "
                    f"text in the assistant's turn): put that text in the user's message, or use a completions model",
                    req.position,
                )
        if kind == "chat":
            params["messages"] = messages
    else:
        params["prompt"] = prompt_text(b, req) + so_far
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
        limit = min(limit, max(1, req.max_len - req.used - len(v.ids)))
    state = None
    if lang.dfa is not None:
        state = lang.dfa.walk(so_far)
        longest = automata.longest_bytes(lang.dfa, state) if state is not None else None
        if longest is not None:
            limit = min(limit, max(1, longest + 4 * TAIL))

    allowed = b.mechanisms
    native = lang.lark is not None and not so_far and "llguidance" in allowed and b.llguidance
    grammar = None
    if native:
        pass  # the server takes the hole's own grammar: no GBNF
    elif lang.dfa is not None and state is not None:
        try:
            grammar = gbnf.dfa_gbnf(lang.dfa, state, tail=TAIL)
            gbnf.check_gbnf(grammar)
        except (automata.NotTranslatable, ValueError) as err:
            log.info("%s: no grammar for %s from %r: %s", b.name, hc.hole, so_far, err)
            grammar = None
    elif lang.whole_grammar is not None and not so_far:
        grammar = lang.whole_grammar
    choices = (
        automata.finite_strings(lang.dfa, state, limit=50)
        if lang.dfa is not None and state is not None
        else None
    )
    if choices is not None:
        choices = [c for c in choices if c]

    as_choice = srv.choice and choices and not so_far and "choice" in allowed
    if native:
        assert lang.lark is not None
        extra.update(srv.lark_params(lang.lark))
        mech.append("llguidance")
        exact = lang.exact
    elif "grammar" in allowed and srv.regex and lang.regex is not None and not so_far and not as_choice:
        extra.update(srv.regex_params(lang.regex))
        mech.append("regex")
        exact = lang.exact
    elif "grammar" in allowed and grammar is not None and srv.grammar:
        entries, used = srv.grammar_params(grammar, choices if as_choice else None)
        extra.update(entries)
        mech.append(used)
        exact = lang.exact and (lang.dfa is not None or not so_far)
    elif (
        "json_schema" in allowed
        and lang.json_schema is not None
        and not so_far
        and srv.takes_json(endpoint_chat)
    ):
        entries, body = srv.json_params(lang.json_schema, _schema_name(hc.hole), endpoint_chat)
        params.update(entries)
        extra.update(body)
        mech.append("json_schema")
    elif (
        srv.lark_tools
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
    if not mech and choices and "logit_bias" in allowed and srv.logit_bias:
        bias, longest_tokens = _choice_bias(b, choices)
        if bias:
            params["logit_bias"] = bias
            limit = min(limit, longest_tokens)
            mech.append("logit_bias")
    if not _has_grammar(mech) and "stop" in allowed:
        stops, entries = srv.stops(list(hc.stops_at), list(hc.stops_before))
        extra.update(entries)
        if stops:
            params["stop"] = stops
            mech.append("stop")
            if not mech[:-1] and lang.exact and hc.regular is None and not hc.cfgs:
                exact = True
    if "max_tokens" in allowed or budget is not None:
        params[srv.max_tokens_param(endpoint_chat)] = limit
        mech.append("max_tokens")
    if srv.min_tokens and hc.min_tokens > len(v.ids):
        extra["min_tokens"] = hc.min_tokens - len(v.ids)
    if b.want_logprobs:
        if endpoint_chat:
            params["logprobs"] = True
        else:
            params["logprobs"] = 1
    if extra:
        params["extra_body"] = extra
    return params, mech, exact


def _schema_name(hole: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", hole)[:64] or "value"


def _choice_bias(b: OpenAIBackend, choices: list[str]) -> tuple[dict[str, int], int]:
    """logit_bias (+100) for the server tokens of a small set of choices: at most 300 entries."""
    ids: set[int] = set()
    longest = 1
    for c in choices:
        toks = b.encode(c) if b.same_tokenizer else b.server_tokenize(c)
        if toks is None:
            return {}, 0
        if (
            not b.same_tokenizer
            and b.server.tokenize_adds_bos
            and toks
            and toks[0] == getattr(b.tokenizer, "bos_token_id", -1)
        ):
            toks = toks[1:]
        ids.update(toks)
        longest = max(longest, len(toks))
    if len(ids) > 300:
        return {}, 0
    return {str(i): 100 for i in sorted(ids)}, longest

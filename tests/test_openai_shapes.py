"""The hosted backend's requests, captured at the HTTP transport: each flavour gets its documented
parameters (vLLM ``structured_outputs``, SGLang ``ebnf``/``response_format``, llama.cpp ``grammar``,
Ollama ``response_format``, OpenAI ``response_format``/custom tools/``max_completion_tokens``), answers are
validated and continued, faults are retried, and the API key never leaks. No server, no model."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import llguidance
import pytest

pytest.importorskip("openai")

import httpx  # noqa: E402 - after the skip: the SDK brings it
import pydantic  # noqa: E402
from hosted_fakes import FakeServer  # noqa: E402

import querylm  # noqa: E402
from querylm import run_many  # noqa: E402
from querylm.backends.hub import byte_tokenizer  # noqa: E402
from querylm.backends.openai import OpenAIBackend, load  # noqa: E402
from querylm.constraints import gbnf as G  # noqa: E402
from querylm.errors import BackendError, ConstraintError, ModelError, UnsupportedError  # noqa: E402

KEY = "sk-test-Zq8v3K1mN0pL9rT2"


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def backend(srv: FakeServer, tok, **kw) -> OpenAIBackend:
    kw.setdefault("flavour", srv.flavour)
    kw.setdefault("endpoint", "completions")
    kw.setdefault("tokenizer", tok)
    kw.setdefault("backoff", 0.001)
    kw.setdefault("base_url", "http://fake/v1")  # (a server's llguidance probe is cached by URL)
    return OpenAIBackend("test-model", api_key=KEY, http_client=srv.client(), **kw)


@dataclasses.dataclass
class Point:
    x: int
    y: int


# -- probing and options ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["vllm", "sglang", "ollama", "llamacpp"])
def test_probe_tells_the_flavour(flavour: str, tok) -> None:
    srv = FakeServer(flavour, tokenize=lambda s: list(s.encode()))
    b = OpenAIBackend("m", base_url="http://fake/v1", api_key=KEY, http_client=srv.client(), tokenizer=tok)
    assert b.flavour == flavour


def test_probe_refuses_to_guess(tok) -> None:
    srv = FakeServer("unknown-server")
    with pytest.raises(ModelError, match="flavour="):
        OpenAIBackend("m", base_url="http://fake/v1", api_key=KEY, http_client=srv.client(), tokenizer=tok)


def test_model_id_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(ModelError, match="unknown option 'colour'"):
        load("openai/m?colour=red")
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        load("openai/m?api_key=sk-abc")
    import querylm.backends.openai as mod

    seen = {}

    class Capture(mod.OpenAIBackend):
        def __init__(self, model, **kw):
            seen.update(kw, model=model)

    monkeypatch.setattr(mod, "OpenAIBackend", Capture)
    mod.load(
        "openai/my-model?base_url=http://h:1/v1&flavour=vllm&endpoint=completions&max_retries=2"
        "&mechanisms=grammar,stop"
    )
    assert seen == {
        "model": "my-model",
        "base_url": "http://h:1/v1",
        "flavour": "vllm",
        "endpoint": "completions",
        "max_retries": 2,
        "mechanisms": ("grammar", "stop"),
    }


def test_openai_needs_a_key(monkeypatch: pytest.MonkeyPatch, tok) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ModelError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini", tokenizer=tok)


# -- llama.cpp ----------------------------------------------------------------------------------------


def test_llamacpp_grammar_per_hole(tok) -> None:
    srv = FakeServer("llamacpp", replies=["42", "Paris."])
    b = backend(srv, tok)
    r = querylm.run('"Q: legs?\\nA: [N]\\nCity: [C]" where INT(N) and STOPS_AT(C, ".")', model=b)
    assert r.variables == {"N": 42, "C": "Paris."}
    first, second = (c.body for c in srv.completions)
    assert first["prompt"] == "Q: legs?\nA: " and first["temperature"] == 0.0
    G.check_gbnf(first["grammar"])
    G.check_gbnf(second["grammar"])
    assert second["prompt"] == "Q: legs?\nA: 42\nCity: "
    assert "stop" not in second  # the stop phrase is in the grammar: the server keeps it in the text
    usage = b.last_usage
    assert usage is not None and usage.requests == 2
    assert [h.mechanisms for h in usage.holes] == [["grammar", "max_tokens"], ["grammar", "max_tokens"]]
    assert [h.server for h in usage.holes] == [["INT(N)"], ["STOPS_AT(C, '.')"]]


def test_llamacpp_json_hole_gets_a_json_grammar(tok) -> None:
    srv = FakeServer("llamacpp", replies=['{"x": 1, "y": 2}'])
    b = backend(srv, tok)
    r = querylm.run('"Point: [P: Point]"', model=b, Point=Point)
    assert r.variables["P"] == Point(1, 2)
    body = srv.completions[0].body
    G.check_gbnf(body["grammar"])
    assert '"\\x22x\\x22"' in body["grammar"]


def test_llamacpp_chat_json_falls_back_to_response_format(tok) -> None:
    srv = FakeServer("llamacpp", replies=['{"x": 1, "y": 2}'])
    b = backend(srv, tok, endpoint="chat", mechanisms=("json_schema", "max_tokens"))
    querylm.run('"Point: [P: Point]"', model=b, Point=Point)
    body = srv.completions[0].body
    assert body["response_format"]["type"] == "json_object"
    assert body["response_format"]["schema"]["required"] == ["x", "y"]
    assert body["messages"] == [{"role": "user", "content": "Point:"}]


def test_llamacpp_with_llguidance_gets_the_holes_own_grammars(tok) -> None:
    srv = FakeServer("llamacpp", replies=["42 legs", "Paris.", '{"x": 1, "y": 2}'], llguidance=True)
    b = backend(srv, tok, base_url="http://llg-yes/v1")
    assert b.llguidance
    r = querylm.run(
        '"Q: legs?\\nA: [N]\\nCity: [C]\\nP: [P: Point]" where INT(N) and STOPS_AT(C, ".")',
        model=b,
        Point=Point,
    )
    assert r.variables == {"N": 42, "C": "Paris.", "P": Point(1, 2)}  # " legs": the tail, cut off here
    bodies = [c.body for c in srv.completions]
    assert all(body["grammar"].startswith("%llguidance {}\n") for body in bodies[:2])
    G.check_gbnf(bodies[2]["grammar"])  # JSON: GBNF, whose whitespace is bounded
    assert "QLM_TAIL" in bodies[0]["grammar"]  # an INT could go on: the model may say it ends
    for body in bodies[:2]:  # what the server gets compiles in llguidance
        assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", body["grammar"])) == ""
    assert [h.mechanisms for h in b.last_usage.holes] == [["llguidance", "max_tokens"]] * 2 + [
        ["grammar", "max_tokens"]
    ]
    probes = [c for c in srv.requests if c.path == "/completion"]
    backend(srv, tok, base_url="http://llg-yes/v1")
    assert len(probes) == 1 == len([c for c in srv.requests if c.path == "/completion"])  # once per URL


def test_llamacpp_grammar_ignored_by_the_probe_means_gbnf(tok) -> None:
    srv = FakeServer("llamacpp", replies=["42"], llguidance=False)
    b = backend(srv, tok, base_url="http://llg-no/v1")
    assert not b.llguidance
    querylm.run('"N: [N]" where INT(N)', model=b)
    G.check_gbnf(srv.completions[0].body["grammar"])
    assert b.last_usage.holes[0].mechanisms == ["grammar", "max_tokens"]


def test_llguidance_can_be_left_out(tok) -> None:
    srv = FakeServer("llamacpp", replies=["42"], llguidance=True)
    b = backend(srv, tok, base_url="http://llg-out/v1", mechanisms=("grammar", "max_tokens"))
    assert not b.llguidance and not [c for c in srv.requests if c.path == "/completion"]  # not even probed
    querylm.run('"N: [N]" where INT(N)', model=b)
    G.check_gbnf(srv.completions[0].body["grammar"])


# -- vLLM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["vllm", "sglang"])
def test_regex_holes_go_as_regex(flavour: str, tok) -> None:
    srv = FakeServer(flavour, replies=["1969-07-20"])
    b = backend(srv, tok)
    r = querylm.run('"Date: [D]" where REGEX(D, "[0-9]{4}-[0-9]{2}-[0-9]{2}")', model=b)
    assert r.variables["D"] == "1969-07-20"
    body = srv.completions[0].body
    regex = body["structured_outputs"]["regex"] if flavour == "vllm" else body["regex"]
    assert regex == "[0-9]{4}-[0-9]{2}-[0-9]{2}"
    assert b.last_usage.holes[0].mechanisms == ["regex", "max_tokens"]


def test_vllm_structured_outputs(tok) -> None:
    srv = FakeServer("vllm", replies=["yes", "17", '{"x": 3, "y": 4}'])
    b = backend(srv, tok)
    r = querylm.run(
        '"A: [A]\\nB: [B]\\nC: [C: Point]" where A in ["yes", "no"] and INT(B)', model=b, Point=Point
    )
    assert r.variables["A"] == "yes" and r.variables["B"] == 17 and r.variables["C"] == Point(3, 4)
    so = [c.body["structured_outputs"] for c in srv.completions]
    assert sorted(so[0]["choice"]) == ["no", "yes"]
    G.check_gbnf(so[1]["grammar"])
    G.check_gbnf(so[2]["grammar"])  # JSON as the mask engine formats it, exactly


class Code(pydantic.BaseModel):
    code: str = pydantic.Field(pattern="^[A-Z]{3}$")


def test_vllm_json_schema_where_no_grammar_is_made(tok) -> None:
    srv = FakeServer("vllm", replies=['{"code": "ABC"}'])
    b = backend(srv, tok)
    r = querylm.run('"C: [C: Code]"', model=b, Code=Code)
    assert r.variables["C"].code == "ABC"
    so = srv.completions[0].body["structured_outputs"]
    assert so["json"]["properties"]["code"]["pattern"] == "^[A-Z]{3}$"
    assert b.last_usage.holes[0].mechanisms == ["json_schema", "max_tokens"]


def test_vllm_stop_phrases_come_back(tok) -> None:
    srv = FakeServer("vllm", replies=[{"text": "Rome.", "finish_reason": "stop", "stop_reason": "."}])
    b = backend(srv, tok, mechanisms=("stop", "max_tokens"))
    r = querylm.run('"City: [C]" where STOPS_AT(C, ".")', model=b)
    assert r.variables["C"] == "Rome."
    body = srv.completions[0].body
    assert body["stop"] == ["."] and body["include_stop_str_in_output"] is True


def test_vllm_continues_a_partial_assistant_message(tok) -> None:
    srv = FakeServer("vllm", replies=["Paris"])
    b = backend(srv, tok, endpoint="chat")
    querylm.run(
        '"{:user} Capital of France?" "{:assistant} The capital is [C]" where C in ["Paris", "Rome"]', model=b
    )
    body = srv.completions[0].body
    assert body["messages"][-1] == {"role": "assistant", "content": "The capital is "}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_vllm_logit_bias_uses_server_token_ids(tok) -> None:
    srv = FakeServer("vllm", replies=["no"], tokenize=lambda s: list(s.encode()))
    b = backend(srv, tok, mechanisms=("logit_bias", "max_tokens"))
    assert b.same_tokenizer  # the fake server tokenizes bytes, like the local byte tokenizer
    r = querylm.run('"Answer: [A]" where A in ["yes", "no"]', model=b)
    assert r.variables["A"] == "no"
    body = srv.completions[0].body
    assert body["logit_bias"] == {str(i): 100 for i in sorted(set(b"yesno"))}
    assert body["max_tokens"] == 3


# -- SGLang, Ollama -----------------------------------------------------------------------------------


def test_sglang_ebnf_and_json(tok) -> None:
    srv = FakeServer("sglang", replies=["12", '{"x": 1, "y": 2}'])
    b = backend(srv, tok)
    querylm.run('"N: [N]\\nP: [P: Point]" where INT(N)', model=b, Point=Point)
    first, second = (c.body for c in srv.completions)
    G.check_gbnf(first["ebnf"])
    G.check_gbnf(second["ebnf"])  # JSON as a grammar too: one constraint parameter per request
    srv2 = FakeServer("sglang", replies=['{"x": 1, "y": 2}'])
    b2 = backend(srv2, tok, endpoint="chat", mechanisms=("json_schema", "max_tokens"))
    querylm.run('"P: [P: Point]"', model=b2, Point=Point)
    rf = srv2.completions[0].body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["type"] == "object"


def test_sglang_matched_stop_is_put_back(tok) -> None:
    srv = FakeServer("sglang", replies=[{"text": "Oslo", "finish_reason": "stop", "matched_stop": "\n"}])
    b = backend(srv, tok, mechanisms=("stop", "max_tokens"))
    r = querylm.run('"City: [C]" where STOPS_AT(C, "\\n")', model=b)
    assert r.variables["C"] == "Oslo\n"


def test_ollama_json_and_stop(tok) -> None:
    srv = FakeServer("ollama", replies=['{"x": 5, "y": 6}', "Bern"])
    b = backend(srv, tok, endpoint="chat")
    r = querylm.run('"P: [P: Point]" "\\nCity: [C]" where STOPS_BEFORE(C, "\\n")', model=b, Point=Point)
    assert r.variables == {"P": Point(5, 6), "C": "Bern"}
    first, second = (c.body for c in srv.completions)
    assert first["response_format"]["type"] == "json_schema"
    assert "logit_bias" not in first and "grammar" not in first
    assert second["stop"] == ["\n"]


# -- OpenAI -------------------------------------------------------------------------------------------


def test_openai_chat_shapes(tok) -> None:
    srv = FakeServer("openai", replies=['{"x": 1, "y": 2}', "Lima"])
    b = backend(srv, tok, endpoint="chat", organization="org-123")
    r = querylm.run(
        '"{:user} Give a point." "{:assistant}[P: Point]" "{:user} A city?" "{:assistant}[C]" '
        'where STOPS_BEFORE(C, ["\\n", ".", "!", "?", ";"])',
        model=b,
        Point=Point,
    )
    assert r.variables["C"] == "Lima"
    first, second = srv.completions
    rf = first.body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert "max_completion_tokens" in first.body and "max_tokens" not in first.body
    assert (
        first.headers["authorization"] == f"Bearer {KEY}"
        and first.headers["openai-organization"] == "org-123"
    )
    assert "stop" not in second.body  # 5 phrases: more than OpenAI takes; validated locally instead
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]


def test_openai_gpt5_custom_tool_grammar(tok) -> None:
    reply = {
        "message": {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "custom", "custom": {"name": "value", "input": "2024-05-06"}}
            ],
        },
        "finish_reason": "tool_calls",
    }
    srv = FakeServer("openai", replies=[reply])
    b = backend(srv, tok, endpoint="chat")
    b.model = "gpt-5-mini"
    r = querylm.run('"Date: [D]" where REGEX(D, "[0-9]{4}-[0-9]{2}-[0-9]{2}")', model=b)
    assert r.variables["D"] == "2024-05-06"
    body = srv.completions[0].body
    tool = body["tools"][0]
    assert tool["type"] == "custom" and tool["format"]["grammar"]["syntax"] == "lark"
    assert body["tool_choice"] == {"type": "custom", "custom": {"name": "value"}}


def test_openai_cant_continue_an_assistant_message(tok) -> None:
    srv = FakeServer("openai", replies=["x"])
    b = backend(srv, tok, endpoint="chat")
    with pytest.raises(UnsupportedError, match="assistant"):
        querylm.run('"{:user} Hi" "{:assistant} Sure: [X]"', model=b)


# -- validation and continuation ----------------------------------------------------------------------


def test_invalid_answer_is_cut_and_continued(tok) -> None:
    srv = FakeServer("llamacpp", replies=["1x", "2"])
    b = backend(srv, tok, mechanisms=("max_tokens",))
    r = querylm.run('"Year: [Y]" where REGEX(Y, "[0-9]{2}")', model=b)
    assert r.variables["Y"] == "12"
    assert [c.body["prompt"] for c in srv.completions] == ["Year: ", "Year: 1"]
    hole = b.last_usage.holes[0]
    assert hole.local == ["REGEX(Y, '[0-9]{2}')"] and hole.server == [] and hole.continued == 1


def test_value_ends_where_the_model_leaves_the_language(tok) -> None:
    srv = FakeServer("llamacpp", replies=["42 apples"])
    b = backend(srv, tok, mechanisms=())
    r = querylm.run('"N: [N]" where INT(N)', model=b)
    assert r.variables["N"] == 42 and len(srv.completions) == 1


def test_never_an_invalid_value(tok) -> None:
    srv = FakeServer("llamacpp", default="maybe")
    b = backend(srv, tok, mechanisms=(), max_requests=2)
    with pytest.raises(ConstraintError, match="no valid value for A"):
        querylm.run('"A: [A]" where INT(A)', model=b)
    assert len(srv.completions) <= 6


def test_forced_text_needs_no_request(tok) -> None:
    srv = FakeServer("llamacpp", replies=["New"])
    b = backend(srv, tok, mechanisms=("max_tokens",))
    r = querylm.run('"City: [C]" where C in ["New York", "Boston"]', model=b)
    assert r.variables["C"] == "New York" and len(srv.completions) == 1
    srv2 = FakeServer("llamacpp")
    r = querylm.run('"Say: [S]" where S == "hello"', model=backend(srv2, tok))
    assert r.variables["S"] == "hello" and srv2.completions == []


def test_token_budget_is_max_tokens(tok) -> None:
    srv = FakeServer("llamacpp", replies=[("abcdefgh", "length")])
    b = backend(srv, tok)
    r = querylm.run('"W: [W]" where len(TOKENS(W)) < 4', model=b)
    assert r.variables["W"] == "abc"  # byte tokenizer: tokens are bytes
    assert srv.completions[0].body["max_tokens"] == 3


# -- faults -------------------------------------------------------------------------------------------


def test_retries_honour_retry_after(tok) -> None:
    srv = FakeServer(
        "llamacpp",
        replies=[
            httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0.3"}),
            httpx.Response(503, json={"error": {"message": "busy"}}),
            "7",
        ],
    )
    b = backend(srv, tok)
    t0 = time.monotonic()
    r = querylm.run('"N: [N]" where INT(N)', model=b)
    assert r.variables["N"] == 7
    assert time.monotonic() - t0 >= 0.3
    assert b.last_usage.requests == 3 and b.last_usage.retries == 2


def test_exhausted_retries_name_status_request_and_hole(tok, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fail = httpx.Response(
        500, json={"error": {"message": f"boom with key {KEY}"}}, headers={"x-request-id": "req_abc"}
    )
    srv = FakeServer("llamacpp", default=fail)
    b = backend(srv, tok, max_retries=2)
    with pytest.raises(BackendError) as info:
        querylm.run('"N: [N]" where INT(N)', model=b)
    msg = str(info.value)
    assert "HTTP 500" in msg and "req_abc" in msg and "N (" in msg and "3 attempts" in msg
    assert KEY not in msg and "***" in msg
    assert len(srv.completions) == 3
    assert KEY not in caplog.text
    assert KEY not in repr(b)


def test_client_errors_are_not_retried(tok) -> None:
    srv = FakeServer("llamacpp", default=httpx.Response(400, json={"error": {"message": "bad grammar"}}))
    b = backend(srv, tok)
    with pytest.raises(BackendError, match="HTTP 400: bad grammar"):
        querylm.run('"N: [N]" where INT(N)', model=b)
    assert len(srv.completions) == 1


def test_malformed_answers_are_retried(tok) -> None:
    srv = FakeServer(
        "llamacpp",
        replies=[
            httpx.Response(200, content=b'{"id": "x", "choi', headers={"content-type": "application/json"}),
            httpx.Response(200, json={"id": "x", "choices": []}),
            "5",
        ],
    )
    b = backend(srv, tok)
    assert querylm.run('"N: [N]" where INT(N)', model=b).variables["N"] == 5
    assert b.last_usage.retries == 2


def test_connection_errors_are_retried(tok) -> None:
    calls = []

    def flaky(body):
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return "3"

    srv = FakeServer("llamacpp", replies=[flaky, flaky])
    b = backend(srv, tok)
    assert querylm.run('"N: [N]" where INT(N)', model=b).variables["N"] == 3


def test_cancel_stops_the_retry_wait(tok) -> None:
    srv = FakeServer("llamacpp", default=httpx.Response(429, json={}, headers={"retry-after": "30"}))
    b = backend(srv, tok)
    import threading

    threading.Timer(0.3, b.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cancelled"):
        querylm.run('"N: [N]" where INT(N)', model=b)
    assert time.monotonic() - t0 < 5


# -- usage and concurrency ----------------------------------------------------------------------------


def test_run_many_runs_concurrently_and_reports_usage(tok) -> None:
    def slow(body):
        time.sleep(0.2)
        return "1"

    srv = FakeServer("llamacpp", default=slow)
    b = backend(srv, tok)
    t0 = time.monotonic()
    results = run_many(['"N: [N]" where INT(N)'] * 6, model=b, concurrency=6)
    assert time.monotonic() - t0 < 6 * 0.2
    assert all(r.variables["N"] == 1 for r in results)
    assert all(r.usage["requests"] == 1 and r.usage["prompt_tokens"] == 10 for r in results)
    assert all(r.usage["holes"][0]["mechanisms"] == ["grammar", "max_tokens"] for r in results)
    assert b.total.requests == 6
    json.dumps([r.usage for r in results])


def test_tiktoken_encodings_become_tokenizers(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenAI's models tokenize with tiktoken: converted to a Hugging Face tokenizer, its ids are the
    server's (logit_bias) and its counts are the server's (budgets)."""
    tiktoken = pytest.importorskip("tiktoken")
    from querylm.backends.hub import tiktoken_tokenizer

    monkeypatch.setenv("QUERYLM_CACHE", str(tmp_path))
    ranks = {bytes([i]): i for i in range(256)}
    for word in (b"ye", b"yes", b" n", b"no", b" no"):
        ranks[word] = len(ranks)
    enc = tiktoken.Encoding(
        name="tiny",
        pat_str=r"""'s|'t| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": len(ranks)},
    )
    hf = tiktoken_tokenizer(enc)
    for text in ["yes no", "no, yes!", "héllo 123"]:
        assert hf.encode(text, add_special_tokens=False) == enc.encode(text)
    srv = FakeServer("openai", replies=["yes"])
    b = OpenAIBackend(
        "tiny-model",
        base_url="http://fake/v1",
        api_key=KEY,
        flavour="openai",
        endpoint="completions",
        http_client=srv.client(),
        tokenizer=hf,
    )
    b.same_tokenizer = True  # what the backend concludes for tiktoken:<model> (no tokenize endpoint to ask)
    querylm.run('"Answer: [A]" where A in ["yes", "no"]', model=b)
    bias = srv.completions[0].body["logit_bias"]
    assert {int(k) for k in bias} == set(enc.encode("yes") + enc.encode("no"))


# -- sample(n) ----------------------------------------------------------------------------------------

SAMPLES = 'sample(n=3, temperature=0.8, seed=1) "N: [N]\\nC: [C]" where INT(N) and STOPS_AT(C, ".")'


def test_sample_n_is_one_request_with_n(tok) -> None:
    """The first hole's prompt is every sample's: one request with n=3, its three choices one per sample;
    the second hole's prompts differ (they follow different values), so one request each."""
    srv = FakeServer("vllm", replies=["1", "2", "3", "Oslo.", "Rome.", "Bern."])
    b = backend(srv, tok)
    results = querylm.run(SAMPLES, model=b)
    assert [r.variables for r in results] == [
        {"N": 1, "C": "Oslo."},
        {"N": 2, "C": "Rome."},
        {"N": 3, "C": "Bern."},
    ]
    bodies = [c.body for c in srv.completions]
    assert len(bodies) == 4 and bodies[0]["n"] == 3 and all("n" not in body for body in bodies[1:])
    assert bodies[0]["temperature"] == 0.8
    assert [body["prompt"] for body in bodies[1:]] == ["N: 1\nC: ", "N: 2\nC: ", "N: 3\nC: "]
    holes = [r.usage["holes"][0] for r in results]  # the shared request is billed once, to sample 1
    assert [(h["requests"], h["shared"]) for h in holes] == [(1, 0), (0, 1), (0, 1)]
    assert sum(r.usage["requests"] for r in results) == 4


def test_each_choice_is_validated_and_continued_alone(tok) -> None:
    """A choice that breaks the constraint is cut and continued by its own sample, as a single answer
    is; the others are taken as they are."""
    srv = FakeServer("openai", replies=["12", "x", "7 apples", "4"])
    b = backend(srv, tok, mechanisms=("max_tokens",))
    results = querylm.run('sample(n=3, temperature=1.0) "N: [N]" where INT(N)', model=b)
    assert [r.variables["N"] for r in results] == [12, 4, 7]
    first, again = (c.body for c in srv.completions)
    assert first["n"] == 3 and "n" not in again and again["prompt"] == "N: "


def test_fewer_choices_than_asked_are_asked_again(tok) -> None:
    srv = FakeServer("sglang", replies=["1", "2", "3", "4"], max_choices=2)
    b = backend(srv, tok)
    results = querylm.run('sample(n=4, temperature=1.0) "N: [N]" where INT(N)', model=b)
    assert sorted(r.variables["N"] for r in results) == [1, 2, 3, 4]
    assert [c.body.get("n", 1) for c in srv.completions] == [4, 2]


@pytest.mark.parametrize(("slots", "ns"), [(1, [1, 1, 1]), (2, [2, 1]), (4, [3])])
def test_llamacpp_asks_for_n_up_to_its_slots(tok, slots: int, ns: list[int]) -> None:
    """The native server refuses n past its slots (HTTP 400): its /props decides, once per URL."""
    srv = FakeServer("llamacpp", replies=["1", "2", "3"], default="5", llguidance=True, slots=slots)
    b = backend(srv, tok, base_url=f"http://slots-{slots}/v1")
    results = querylm.run('sample(n=3, temperature=1.0) "N: [N]" where INT(N)', model=b)
    assert [r.variables["N"] for r in results] == [1, 2, 3]
    assert [c.body.get("n", 1) for c in srv.completions] == ns
    querylm.run('sample(n=3, temperature=1.0) "N: [N]" where INT(N)', model=b)
    assert len([c for c in srv.requests if c.path == "/props"]) == 2  # the llguidance probe's, and n's


def test_llama_cpp_python_gets_one_request_per_sample(tok) -> None:
    srv = FakeServer("llamacpp", replies=["1", "2"])  # no /props: llama-cpp-python ignores n
    b = backend(srv, tok, base_url="http://llama-cpp-python/v1")
    results = querylm.run('sample(n=2, temperature=1.0) "N: [N]" where INT(N)', model=b)
    assert [r.variables["N"] for r in results] == [1, 2]
    assert [c.body.get("n", 1) for c in srv.completions] == [1, 1]


# -- scoring ------------------------------------------------------------------------------------------


def _vllm_scores(body: dict) -> httpx.Response:
    """vLLM's answer to a list of prompts with ``prompt_logprobs``: one choice per prompt, each with
    ``prompt_logprobs``, a list with one entry per prompt token (None for the first), each a map from
    token id (a JSON key) to ``{"logprob", "rank", "decoded_token"}``; here each token's logprob is
    -0.1 × its byte value, and the top-1 alternative is always token 32."""
    choices = []
    for i, prompt in enumerate(body["prompt"]):
        entries: list = [None]
        for t in prompt[1:]:
            entry = {str(t): {"logprob": -0.1 * t, "rank": 2, "decoded_token": chr(t)}}
            entry.setdefault("32", {"logprob": -0.05, "rank": 1, "decoded_token": " "})
            entries.append(entry)
        choices.append(
            {"index": i, "text": "x", "finish_reason": "length", "logprobs": None, "prompt_logprobs": entries}
        )
    return httpx.Response(
        200,
        json={
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 0,
            "model": "test-model",
            "choices": choices,
            "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
        },
    )


def test_vllm_scores_from_prompt_logprobs(tok) -> None:
    srv = FakeServer("vllm", replies=[_vllm_scores, _vllm_scores], tokenize=lambda s: list(s.encode()))
    b = backend(srv, tok)
    assert b.same_tokenizer
    yes, no = querylm.score("Q: A:", [" yes", " no"], model=b)
    assert yes.logprobs == pytest.approx([-0.1 * c for c in b" yes"])
    assert no.logprobs == pytest.approx([-0.1 * c for c in b" no"])
    (body,) = (c.body for c in srv.completions)  # one request for every continuation
    assert body["prompt"] == [list(b"Q: A: yes"), list(b"Q: A: no")]
    assert body["prompt_logprobs"] == 1 and body["max_tokens"] == 1
    r = querylm.run('argmax "Q: A:[A]" distribution A in [" no", " yes"]', model=b)
    assert r.variables["A"] == " no" and dict(r.variables["P(A)"])[" no"] > 0.5  # 'n' < 'y': likelier


def _openai_top(tokens: dict[str, float]) -> dict:
    """OpenAI's chat answer with ``logprobs``/``top_logprobs``: ``logprobs.content`` has one item per
    answer token, ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}``."""
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in tokens.items()]
    first = top[0]
    return {
        "message": {"role": "assistant", "content": first["token"]},
        "finish_reason": "length",
        "logprobs": {"content": [dict(first, top_logprobs=top)], "refusal": None},
    }


def test_openai_scores_first_tokens_from_top_logprobs(tok) -> None:
    srv = FakeServer("openai", replies=[_openai_top({"N": -0.2, "B": -1.9, "P": -3.0})])
    b = backend(srv, tok, endpoint="chat")
    b.same_tokenizer = True  # as with tiktoken:<model>: OpenAI's tokens are the local ones
    r = querylm.run(
        'argmax "{:user} Which city?" "{:assistant}[C]" distribution C in ["New York", "Boston"]',
        model=b,
    )
    assert r.variables["C"] == "New York"
    probs = dict(r.variables["P(C)"])
    assert probs["New York"] == pytest.approx(1 / (1 + 2.718281828 ** (-1.7)), rel=1e-6)
    body = srv.completions[0].body
    assert body["messages"] == [{"role": "user", "content": "Which city?"}]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_completion_tokens"] == 1


@pytest.mark.parametrize(
    ("values", "reason"),
    [(["New York", "Nairobi"], "first tokens differ"), (["New York", "Zurich"], "most likely first tokens")],
)
def test_openai_scoring_says_why_it_cant(tok, values: list[str], reason: str) -> None:
    srv = FakeServer("openai", default=_openai_top({"N": -0.2, "B": -1.9}))
    b = backend(srv, tok, endpoint="chat")
    b.same_tokenizer = True
    with pytest.raises(UnsupportedError, match=reason):
        querylm.score("Which city?", values, model=b)


@pytest.mark.parametrize("flavour", ["sglang", "ollama"])
def test_servers_without_scoring_say_so(tok, flavour: str) -> None:
    b = backend(FakeServer(flavour), tok)
    with pytest.raises(UnsupportedError, match=f"this {flavour} server gives no reliable"):
        querylm.score("Q:", [" yes", " no"], model=b)

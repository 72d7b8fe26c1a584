"""The hosted backend against a real OpenAI-compatible server: llama.cpp's serving the
default model's GGUF on loopback (the native C++ server, from xllamacpp), through the real ``openai`` client. Chat and completions, grammars,
logit_bias, stop, max_tokens, logprobs, and faults injected by a proxy in front of the server."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("openai") is None:
    pytest.skip("the openai SDK is not installed", allow_module_level=True)

from hosted_fakes import FaultProxy  # noqa: E402

import querylm  # noqa: E402
from querylm.backends.hosted.llama_server import LlamaServer  # noqa: E402
from querylm.backends.openai import OpenAIBackend  # noqa: E402
from querylm.errors import BackendError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def chat(server: LlamaServer) -> OpenAIBackend:
    """Probed, not declared: the flavour and the tokenizer are found from the server."""
    return OpenAIBackend("smollm2", base_url=server.base_url, endpoint="chat")


@pytest.fixture(scope="session")
def completions(server: LlamaServer, chat: OpenAIBackend) -> OpenAIBackend:
    return OpenAIBackend(
        "smollm2",
        base_url=server.base_url,
        flavour="llamacpp",
        endpoint="completions",
        tokenizer=chat.tokenizer,
    )


@pytest.fixture
def proxy(server: LlamaServer) -> Iterator[FaultProxy]:
    p = FaultProxy(server.base_url.removesuffix("/v1"))
    yield p
    p.close()


def via(proxy: FaultProxy, base: OpenAIBackend, **kw) -> OpenAIBackend:
    kw.setdefault("endpoint", "completions")
    kw.setdefault("backoff", 0.05)
    return OpenAIBackend("smollm2", base_url=proxy.url, flavour="llamacpp", tokenizer=base.tokenizer, **kw)


QUERY = (
    '"Q: How many legs does a spider have?\\nA: [LEGS]\\n"'
    '"Q: What is the capital of France?\\nA: [CITY]\\n"'
    '"Is Paris in France? [YN]"'
    ' where INT(LEGS) and len(TOKENS(LEGS)) < 4 and STOPS_AT(CITY, ".") and len(TOKENS(CITY)) < 12'
    ' and YN in ["yes", "no"]'
)


def check_values(r: querylm.QueryResult) -> None:
    assert isinstance(r.variables["LEGS"], int)
    city = r.variables["CITY"]
    assert "." not in city[:-1]
    assert r.variables["YN"] in ("yes", "no")


def test_probe_finds_llamacpp_and_its_tokenizer(chat: OpenAIBackend) -> None:
    assert chat.flavour == "llamacpp"
    assert chat.tokenizer_source.endswith(".gguf") and chat.same_tokenizer
    assert chat.llguidance  # the native server is built with llguidance: the probe's grammar held


def test_gbnf_where_llguidance_is_left_out(chat: OpenAIBackend, server: LlamaServer) -> None:
    b = OpenAIBackend(
        "smollm2",
        base_url=server.base_url,
        endpoint="completions",
        tokenizer=chat.tokenizer,
        mechanisms=("grammar", "json_schema", "logit_bias", "stop", "max_tokens"),
    )
    r = querylm.run(QUERY, model=b)
    check_values(r)
    assert b.last_usage.requests == 3 and all("grammar" in h.mechanisms for h in b.last_usage.holes)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_one_request_per_hole_under_grammars(
    endpoint: str, chat: OpenAIBackend, completions: OpenAIBackend
) -> None:
    b = chat if endpoint == "chat" else completions
    r = querylm.run(QUERY, model=b)
    check_values(r)
    usage = b.last_usage
    assert usage is not None
    assert usage.requests == 3  # requests <= holes: every hole is one request under a grammar
    assert all("llguidance" in h.mechanisms and h.local == [] for h in usage.holes)
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    if endpoint == "chat":
        assert [m["role"] for m in r.messages] == ["user", "assistant"]
        assert r.messages[-1]["content"].endswith(r.variables["YN"])


def test_chat_roles_become_messages(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    b = via(proxy, chat, endpoint="chat")
    r = querylm.run(
        '"{:system} You answer in one word." "{:user} Name a colour." "{:assistant}[C]"'
        ' where C in ["red", "green", "blue"]',
        model=b,
    )
    assert r.variables["C"] in ("red", "green", "blue")
    (body,) = proxy.bodies
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "grammar" in body


def test_json_and_regex_holes(completions: OpenAIBackend) -> None:
    @dataclasses.dataclass
    class City:
        name: str
        population: int

    r = querylm.run(
        '"Paris as JSON: [C: City]\\nA date (YYYY-MM-DD): [D]" where REGEX(D, "[0-9]{4}-[0-9]{2}-[0-9]{2}")',
        model=completions,
        City=City,
    )
    assert isinstance(r.variables["C"], City)
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", r.variables["D"])
    assert completions.last_usage.requests == 2


def test_lark_grammar_holes(chat: OpenAIBackend) -> None:
    r = querylm.run(
        '"When did Apollo 11 land? Date: [D]\\nWrite 2 plus 3 times 4 as an expression: [E]"'
        ' where GRAMMAR(D, "iso_date") and GRAMMAR(E, "arithmetic")',
        model=chat,
    )
    import datetime

    datetime.date.fromisoformat(r.variables["D"])
    assert re.fullmatch(r"[-0-9+*/(). ]+", r.variables["E"])
    assert chat.last_usage.requests <= 4 and all("llguidance" in h.mechanisms for h in chat.last_usage.holes)


def test_logit_bias_for_a_small_choice_set(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    b = via(proxy, chat, mechanisms=("logit_bias", "max_tokens"))
    r = querylm.run('"Is the sky blue? Answer yes or no: [A]" where A in ["yes", "no", "maybe"]', model=b)
    assert r.variables["A"] in ("yes", "no", "maybe")
    body = proxy.bodies[0]
    ids = {int(k) for k in body["logit_bias"]}
    expected = {t for w in ("yes", "no", "maybe") for t in chat.encode(w)}
    assert ids == expected and set(body["logit_bias"].values()) == {100}
    assert b.last_usage.holes[0].mechanisms == ["logit_bias", "max_tokens"]


def test_stop_phrases_and_max_tokens(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    b = via(proxy, chat, mechanisms=("stop", "max_tokens"))
    r = querylm.run(
        '"Write a list of fruits, one per line:\\n- [F]" where STOPS_BEFORE(F, "\\n") and len(TOKENS(F)) < 6',
        model=b,
    )
    assert "\n" not in r.variables["F"]
    assert len(chat.encode(r.variables["F"])) <= 5
    body = proxy.bodies[0]
    assert body["stop"] == ["\n"] and body["max_tokens"] == 5


def test_logprobs_score_the_values(chat: OpenAIBackend, server: LlamaServer) -> None:
    b = OpenAIBackend(
        "smollm2",
        base_url=server.base_url,
        flavour="llamacpp",
        endpoint="completions",
        tokenizer=chat.tokenizer,
        logprobs=True,
    )
    r = querylm.run('"The capital of France is[C]" where STOPS_AT(C, ".") and len(TOKENS(C)) < 8', model=b)
    assert r.score < 0


def test_cli_runs_an_example_against_the_server(server: LlamaServer) -> None:
    model = f"openai/smollm2?base_url={server.base_url}&flavour=llamacpp"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "querylm.cli",
            "run",
            str(ROOT / "examples" / "hosted.lmql"),
            "--model",
            model,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert '"LEGS"' in out.stdout


# -- faults -------------------------------------------------------------------------------------------


def test_429_retry_after_is_honoured(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    proxy.faults = [("status", 429, {"Retry-After": "1"}), ("status", 500)]
    b = via(proxy, chat)
    r = querylm.run('"N: [N]" where INT(N) and len(TOKENS(N)) < 3', model=b)
    assert isinstance(r.variables["N"], int)
    times = [t for _, _, t in proxy.seen]
    assert len(times) == 3 and times[1] - times[0] >= 1.0
    assert b.last_usage.retries == 2 and b.last_usage.requests == 3


@pytest.mark.parametrize("fault", ["reset", "truncated", "malformed"])
def test_broken_answers_are_retried(fault: str, chat: OpenAIBackend, proxy: FaultProxy) -> None:
    proxy.faults = [fault]
    b = via(proxy, chat)
    r = querylm.run('"N: [N]" where INT(N) and len(TOKENS(N)) < 3', model=b)
    assert isinstance(r.variables["N"], int)
    assert [f for _, f, _ in proxy.seen] == [fault, None]


def test_slow_answers_time_out_and_are_retried(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    # a timeout well above a loaded CI machine's answer time (about 1 s), well below the slow one
    proxy.faults = [("slow", 8.0)]
    b = via(proxy, chat, timeout=4.0)
    t0 = time.monotonic()
    r = querylm.run('"N: [N]" where INT(N) and len(TOKENS(N)) < 3', model=b)
    assert isinstance(r.variables["N"], int)
    assert time.monotonic() - t0 < 8.0 + 10
    assert b.last_usage.retries == 1


def test_exhausted_retries_are_a_backend_error(chat: OpenAIBackend, proxy: FaultProxy) -> None:
    proxy.faults = [("status", 500)] * 3
    b = via(proxy, chat, max_retries=2, api_key="sk-live-SECRETSECRET123")
    with pytest.raises(BackendError) as info:
        querylm.run('"N: [N]" where INT(N)', model=b)
    msg = str(info.value)
    assert "HTTP 500" in msg and "while filling N" in msg and "3 attempts" in msg
    assert "SECRETSECRET" not in msg


def test_distribution_and_score_on_the_native_server(completions: OpenAIBackend) -> None:
    r = querylm.run(
        'argmax "Q: Is the Earth round? Answer yes or no.\\nA:[A]" distribution A in [" yes", " no"]',
        model=completions,
    )
    probs = dict(r.variables["P(A)"])
    assert set(probs) == {" yes", " no"} and abs(sum(probs.values()) - 1) < 1e-6
    assert r.variables["A"] == max(probs, key=probs.__getitem__)
    (yes,) = querylm.score("Q: Is the Earth round? Answer yes or no.\nA:", [" yes"], model=completions)
    assert len(yes.logprobs) == len(completions.encode(" yes")) and yes.total < 0


def test_sample_n_on_the_native_server(completions: OpenAIBackend) -> None:
    """The native server has one slot here (/props): sample(n) sends one request per sample, not n
    (which it would refuse with HTTP 400), and every sample satisfies its constraint."""
    before = completions.total.requests
    results = querylm.run(
        'sample(n=3, temperature=1.0, seed=5) "Q: How many legs does a spider have?\\nA: [N]" '
        "where INT(N) and len(TOKENS(N)) < 4",
        model=completions,
    )
    assert len(results) == 3 and all(isinstance(r.variables["N"], int) for r in results)
    assert completions.server.max_n(completions.client) == 1
    assert completions.total.requests - before == sum(r.usage["requests"] for r in results) >= 3

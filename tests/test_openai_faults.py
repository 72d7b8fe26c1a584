"""A hostile server on loopback: it echoes the API key, asks for huge Retry-After waits and drip-feeds
its answers. The key must never show in an error (message, repr, chain) and a run must end by its
deadline whatever the server does (issue 10)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from querylm.errors import BackendError, ModelError, QueryError

pytest.importorskip("openai")

from querylm.backends.openai import OpenAIBackend  # noqa: E402

KEY = "sk-test-0123456789abcdefSECRET"


DEEP = "[" * 100_000 + "]" * 100_000


def _chat(message: dict[str, Any], finish: str = "stop") -> str:
    choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [choice],
            "usage": usage,
        }
    )


DEEP_BODIES = {
    # a native tool call whose arguments nest 100k deep
    "deep-arguments": _chat(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "echo", "arguments": '{"text": ' + DEEP + "}"},
                }
            ],
        },
        "tool_calls",
    ),
    # a turn's text that is a call nesting 100k deep
    "deep-content": _chat(
        {
            "role": "assistant",
            "content": '{"tool_calls": [{"name": "echo", "arguments": {"text": ' + DEEP + "}}]}",
        }
    ),
    # the same in the agent's own call format (grammar servers)
    "deep-tagged": _chat(
        {
            "role": "assistant",
            "content": '<tool_call>[\n{"name": "echo", "arguments": {"text": ' + DEEP + "}}\n]</tool_call>",
        }
    ),
    "deep-body": '{"id": "c", "choices": ' + DEEP + "}",  # the HTTP body itself
}


class Hostile(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mode = "echo"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Hostile

    def log_message(self, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        data = {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": f"owner {key}"}]}
        self.send(200, json.dumps(data).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        mode = self.server.mode
        if mode == "echo":
            error = {"error": {"message": f"bad key {key}", "type": "invalid_request_error"}}
            self.send(401, json.dumps(error).encode())
        elif mode == "retry-after":
            self.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "250"})
        elif mode == "drip":
            body = json.dumps({"choices": [{"index": 0, "text": "x" * 50, "finish_reason": "stop"}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for ch in body.encode():
                    self.wfile.write(bytes([ch]))
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass
        elif mode in DEEP_BODIES:
            self.send(200, DEEP_BODIES[mode].encode())
        else:
            self.send(404, b"{}")


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    srv = Hostile(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def texts(err: BaseException) -> str:
    """Everything an error shows: str, repr, args, and the same for its whole chain and traceback."""
    out, seen, todo = [], set(), [err]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out += [str(e), repr(e), repr(e.args), *map(str, getattr(e, "__notes__", []))]
        todo += [e.__cause__, e.__context__]
    out.append("".join(traceback.format_exception(err)))
    return "\n".join(out)


def url(srv: Hostile) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_a_key_echoed_in_the_models_list_is_scrubbed(hostile: Hostile) -> None:
    with pytest.raises(ModelError) as info:
        OpenAIBackend("m", base_url=url(hostile), api_key=KEY)
    assert "owner" in str(info.value)  # the message is about the server's kind, and names its owners
    assert KEY not in texts(info.value)
    assert "SECRET" not in texts(info.value)


def backend(srv: Hostile, **options: Any) -> OpenAIBackend:
    return OpenAIBackend(
        "m",
        base_url=url(srv),
        api_key=KEY,
        flavour="vllm",
        tokenizer="bytes",
        endpoint="completions",
        **options,
    )


def fill(b: OpenAIBackend) -> BaseException:
    from querylm.backends.hosted.client import HoleUsage, Usage

    try:
        b.client.send(
            "completions", {"model": "m", "prompt": "Q:", "max_tokens": 4}, Usage(), HoleUsage("X"), "X"
        )
    except QueryError as err:
        return err
    raise AssertionError("the hostile server's answer was accepted")


def test_a_key_echoed_in_an_error_body_is_scrubbed(hostile: Hostile) -> None:
    hostile.mode = "echo"
    err = fill(backend(hostile))
    assert isinstance(err, BackendError) and "HTTP 401" in str(err)
    assert KEY not in texts(err)


def test_a_huge_retry_after_is_capped_and_the_deadline_holds(hostile: Hostile) -> None:
    hostile.mode = "retry-after"
    b = backend(hostile, max_backoff=0.2, deadline=3.0, max_retries=100)
    t = time.monotonic()
    err = fill(b)
    took = time.monotonic() - t
    assert isinstance(err, BackendError) and "429" in str(err)
    assert took < 3.0 + 1.0
    assert b.total.retries >= 5  # waits of max_backoff, not of the server's 250 s


def test_a_drip_fed_answer_is_cut_off_at_the_timeout_and_the_deadline(hostile: Hostile) -> None:
    hostile.mode = "drip"
    b = backend(hostile, timeout=2.0, deadline=5.0, max_retries=10, backoff=0.1, max_backoff=0.1)
    t = time.monotonic()
    err = fill(b)
    took = time.monotonic() - t
    assert isinstance(err, BackendError)
    assert "within 2 s" in str(err) or "deadline" in str(err)
    assert took < 5.0 + 1.5
    assert KEY not in texts(err)


@pytest.mark.parametrize("flavour", ["openai", "vllm", "ollama"])
@pytest.mark.parametrize("mode", sorted(DEEP_BODIES))
def test_json_nested_100k_deep_is_an_error_result_or_a_query_error(
    hostile: Hostile, mode: str, flavour: str
) -> None:
    """Whatever nests 100k deep (a call's arguments, the turn's text, the HTTP body), the hosted agent
    answers with an error result the model reads or a QueryError, never a RecursionError."""
    from querylm.tools import Agent, ToolRegistry, tool

    @tool
    def echo(text: str) -> str:
        """Echo."""
        return text

    hostile.mode = mode
    b = OpenAIBackend(
        "m",
        base_url=url(hostile),
        api_key=KEY,
        flavour=flavour,
        tokenizer="bytes",
        endpoint="chat",
        max_retries=1,
        backoff=0.01,
    )
    try:
        r = Agent(b, ToolRegistry([echo]), tool_choice="required", max_turns=2).run("hi")
    except QueryError as err:
        assert mode == "deep-body" and "nested too deeply" in str(err), err
        return
    assert mode != "deep-body"
    assert r.messages and all(m["role"] != "tool" or '"error"' in m["content"] for m in r.messages)

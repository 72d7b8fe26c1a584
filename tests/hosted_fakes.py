"""Test doubles for the hosted backend: an in-process OpenAI-style server at the HTTP transport (requests
captured, answers scripted) and a loopback proxy that injects faults in front of a real server."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Captured:
    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclass
class FakeServer:
    """Answers like an OpenAI-compatible server of one flavour. ``replies`` is a queue of completion
    answers: a str (the text, finish_reason "stop"), a (text, finish_reason) pair, a dict (the whole
    choice, merged), an httpx.Response, or a callable(body) -> any of those. When it is empty the
    answer is ``default``."""

    flavour: str = "llamacpp"
    replies: list[Any] = field(default_factory=list)
    default: Any = ""
    tokenize: Callable[[str], list[int]] | None = None
    requests: list[Captured] = field(default_factory=list)
    model_id: str = "test-model"
    llguidance: bool | None = None
    """llama.cpp's native endpoints (``/props``, ``/completion``): None, none (llama-cpp-python); True,
    a server built with llguidance (the probe's grammar is honoured); False, one that ignores it."""
    slots: int = 1
    """The native llama.cpp server's ``total_slots`` (``/props``)."""
    max_choices: int | None = None
    """The most choices one answer has, whatever ``n`` asks (None: as many as asked)."""

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    @property
    def completions(self) -> list[Captured]:
        return [r for r in self.requests if r.path.endswith("/completions")]

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        self.requests.append(Captured(request.method, path, body, dict(request.headers)))
        owner = {"vllm": "vllm", "sglang": "sglang", "ollama": "library", "openai": "openai"}.get(
            self.flavour, "me"
        )
        if path.endswith("/models"):
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": [{"id": self.model_id, "object": "model", "owned_by": owner}],
                },
            )
        if path == "/api/version":
            return (
                httpx.Response(200, json={"version": "0.12.0"})
                if self.flavour == "ollama"
                else httpx.Response(404)
            )
        if path in ("/extras/tokenize", "/tokenize"):
            ok = (self.flavour == "llamacpp" and path == "/extras/tokenize") or (
                self.flavour == "vllm" and path == "/tokenize"
            )
            if not ok or self.tokenize is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            text = body.get("input", body.get("prompt", body.get("content", "")))
            return httpx.Response(200, json={"tokens": self.tokenize(text)})
        if path in ("/props", "/completion") and self.llguidance is not None:
            if path == "/props":
                return httpx.Response(200, json={"total_slots": self.slots})
            honoured = self.llguidance and body.get("grammar", "").startswith("%llguidance")
            return httpx.Response(200, json={"content": "qzx7" if honoured else "Hello"})
        if path.endswith("/completions"):
            wanted = int(body.get("n") or 1)
            replies = []
            for _ in range(min(wanted, self.max_choices or wanted)):
                reply = self.replies.pop(0) if self.replies else self.default
                if callable(reply):
                    reply = reply(body)
                if isinstance(reply, httpx.Response):
                    return reply
                replies.append(reply)
            chat = path.endswith("/chat/completions")
            data = completion(replies[0], chat=chat)
            data["choices"] = [
                dict(completion(r, chat=chat)["choices"][0], index=i) for i, r in enumerate(replies)
            ]
            return httpx.Response(200, json=data, headers={"x-request-id": f"req_{len(self.requests)}"})
        return httpx.Response(404, json={"detail": "Not Found"})


def completion(reply: Any, *, chat: bool, usage: tuple[int, int] = (10, 3)) -> dict[str, Any]:
    if isinstance(reply, str):
        reply = (reply, "stop")
    extra: dict[str, Any] = {}
    if isinstance(reply, dict):
        extra = dict(reply)
        text, finish = extra.pop("text", ""), extra.pop("finish_reason", "stop")
    else:
        text, finish = reply
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
    choice.update(extra)
    return {
        "id": "cmpl-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": "test-model",
        "choices": [choice],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


# -- a fault-injecting proxy in front of a real server ------------------------------------------------


class FaultProxy:
    """A loopback HTTP proxy. Requests to a completions endpoint take the next fault from ``faults``
    (None or an empty queue: forwarded as they are):

    - ``("status", code, headers)``: answer with that status (e.g. 429 with Retry-After, 500);
    - ``"reset"``: close the connection without answering;
    - ``("slow", seconds)``: wait, then forward (a client timeout shorter than that gives up first);
    - ``"truncated"``: forward, but send only half of the body (its Content-Length announces it all);
    - ``"malformed"``: answer 200 with a body that is not JSON.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.faults: list[Any] = []
        self.seen: list[tuple[str, Any, float]] = []
        """(path, fault, time) of each completions request."""
        self.bodies: list[Any] = []
        """The JSON body of each completions request."""
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.forward(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.forward(self.rfile.read(length))

            def forward(self, body: bytes) -> None:
                fault = None
                if self.path.endswith("/completions"):
                    with proxy.lock:
                        fault = proxy.faults.pop(0) if proxy.faults else None
                        proxy.seen.append((self.path, fault, time.monotonic()))
                        try:
                            proxy.bodies.append(json.loads(body))
                        except ValueError:
                            proxy.bodies.append(None)
                if fault == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "malformed":
                    return self.reply(200, b'{"id": "x", "choices": [', {"Content-Type": "application/json"})
                if isinstance(fault, tuple) and fault[0] == "status":
                    payload = json.dumps(
                        {"error": {"message": f"injected {fault[1]}", "type": "injected"}}
                    ).encode()
                    return self.reply(
                        fault[1],
                        payload,
                        {"Content-Type": "application/json", **(fault[2] if len(fault) > 2 else {})},
                    )
                if isinstance(fault, tuple) and fault[0] == "slow":
                    time.sleep(fault[1])
                try:
                    status, headers, data = self.upstream_call(body)
                except OSError as err:  # the server went away (e.g. at the end of the session)
                    return self.reply(502, json.dumps({"error": {"message": str(err)}}).encode(), {})
                if fault == "truncated":
                    self.send_response(status)
                    for k, v in headers:
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.reply(
                    status,
                    data,
                    {
                        k: v
                        for k, v in headers
                        if k.lower() not in ("content-length", "transfer-encoding", "connection")
                    },
                )

            def upstream_call(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                url = httpx.URL(proxy.upstream)
                conn = http.client.HTTPConnection(url.host, url.port, timeout=300)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                return resp.status, resp.getheaders(), data

            def reply(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (timeouts) or a reset we injected: nothing to report

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

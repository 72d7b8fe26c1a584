"""A llama.cpp OpenAI-compatible server on loopback (``llama-cpp-python[server]``), started and stopped
around a block: for the hosted backend's tests and benchmark, and for users who want the default model
behind an HTTP API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """``with LlamaServer(gguf) as srv: ... srv.base_url ...``; the server's output goes to ``log``."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 2048,
        startup_timeout: float = 180.0,
        log: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        if model is None:
            from .models import default_gguf

            model = default_gguf()
        self.model = str(model)
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.log_path = Path(log) if log else None
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with {self.proc.returncode} (see {self.log_path})"
                )
            if self.alive():
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within {self.startup_timeout:g} s")

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:  # noqa: S310 - loopback
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""A llama.cpp OpenAI-compatible server on loopback, started and stopped around a block: for the hosted
backend's tests and benchmark, and for users who want the default model behind an HTTP API.

Two flavours: ``native`` (the default) is llama.cpp's own C++ server, built with llguidance, from the
``xllamacpp`` wheel (no compiler needed; it has no command line, so ``python -m
querylm.backends.hosted.llama_server MODEL PORT N_CTX`` runs it in a child process); ``python`` is
llama-cpp-python's server (``llama-cpp-python[server]``, compiled from source on install)."""

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
        flavour: str = "native",
    ):
        if flavour not in ("native", "python"):
            raise ValueError(f"flavour must be 'native' or 'python', not {flavour!r}")
        self.flavour = flavour
        if model is None:
            from ..hub import default_gguf

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
        if self.flavour == "native":
            cmd = [sys.executable, "-m", __name__, self.model, str(self.port), str(self.n_ctx)]
        else:
            cmd = self._python_cmd()
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

    def _python_cmd(self) -> list[str]:
        return [
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


def serve_native(model: str, port: int, n_ctx: int) -> None:
    """llama.cpp's native server (xllamacpp) on 127.0.0.1:``port`` until this process is terminated."""
    import signal
    import threading

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = 1
    threads = min(2, os.cpu_count() or 1)
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_props = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = xllamacpp.Server(params)  # serves on its own threads until it is released
    try:
        stop.wait()
    finally:
        del server


if __name__ == "__main__":
    serve_native(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

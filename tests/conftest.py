"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def write_query(tmp_path: Path) -> Callable[..., Path]:
    """Write a query file under tmp_path and return its path (for file positions and the CLI)."""

    def write(text: str, name: str = "query.lmql") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """llama.cpp's native OpenAI-compatible server (xllamacpp) serving the default model's GGUF on
    loopback, once per session (test_openai_llamacpp.py, test_tools_hosted.py)."""
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp (llama.cpp's native server; in the test extra) is not installed")
    from querylm.backends.hosted.llama_server import LlamaServer
    from querylm.backends.hub import default_gguf

    try:
        gguf = default_gguf()
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"no default GGUF: {err}")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    srv = LlamaServer(gguf, n_ctx=2048, log=log)
    try:
        srv.start()
    except RuntimeError as err:
        pytest.skip(f"llama.cpp server did not start: {err}: {log.read_text()[-2000:]}")
    yield srv
    srv.stop()


def tiny_llama(seed: int, *, kv_heads: int = 2, sharpen: float = 1.0) -> Any:
    """A random-weight 2-layer Llama over SmolLM2's real tokenizer: real KV caches, fast. ``sharpen``
    scales the output layer (sharper logits: values end rather than run to their budgets)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from querylm.backends.local import LocalBackend
    from querylm.backends.models import resolve

    tok = resolve("random").tokenizer
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=kv_heads,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
    return LocalBackend("tiny", model, tok)

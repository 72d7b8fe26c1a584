"""Throughput of many queries: one at a time, ``run_many`` and ``querylm.map`` (the batch engine), beside
transformers' batched ``generate`` on the same prompts, in one run on the same model.

    python benchmarks/throughput.py [--queries 64] [--batch-sizes 1,4,16,32] [--threads T] [--gpu] [--quick]

Table 1, a mixed workload (``--queries`` of them, the four kinds in turn): a classification with ``IN``,
an ``INT`` extraction, a JSON-typed hole (a dataclass) and free text with a stop phrase, on plain
prompts. Rows: ``querylm.run`` one query after another; ``run_many(batch_size=B)`` over all of them;
``querylm.map`` once per kind (map runs one query over many rows, which is how a user would label with
it, so its batches never mix kinds); and HF ``generate`` per kind, batched by B with left padding, greedy
and unconstrained, with each kind's token bound as ``max_new_tokens``: the ceiling users know (it does no
masking, no stop phrase, no whole-value choice). queries/s = queries / wall time; tokens/s = generated
tokens (querylm: the holes' tokens; HF: up to EOS) / wall time. ``match`` counts the batched results whose
variables equal the one-at-a-time ones (argmax: a row's result must not depend on what runs beside it).

Table 2, the prefix cache: the same count of classification queries sharing a long few-shot prefix, decoded
token by token (``choices="tokens"``, as in the first version of this table, so that its figures
compare), on an
``Engine`` with the prefix cache (default) and without (``prefix_tokens=0``), a quarter of them at once
(up to the largest batch size) so that the rows joining later can find the prefix the first ones
stored, with the hit rate (share of looked-up prompt tokens whose KV came from the cache) from
``Engine.stats()``.

``--quick``: 8 queries, batch sizes 1 and 8 (a couple of minutes on a 2-core CPU). ``--gpu``: the default
model on CUDA (exits saying so when there is none). ``--threads``: torch's CPU threads (default: all
cores), printed in the header.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import querylm
from querylm.backends.local import LocalBackend
from querylm.backends.models import resolve
from querylm.runtime.engine import Engine, prepare_job
from querylm.runtime.run import Job


@dataclasses.dataclass
class City:
    name: str
    country: str
    population: int


REVIEWS = [
    "The soup was cold and the waiter ignored us for an hour.",
    "Best pizza I have had in years, and the staff were lovely.",
    "The hotel room was clean and exactly as described.",
    "The train was late again and nobody told us why.",
    "It was fine, nothing special, about what I expected.",
    "I would never buy this kettle again: it leaks.",
    "The concert was wonderful from start to finish.",
    "Delivery took three days, as promised.",
]
COUNTS = [
    "legs does a spider have",
    "days are in a week",
    "players are on a football team",
    "continents are there",
    "strings does a violin have",
    "months are in a year",
    "wheels does a bicycle have",
    "sides does a hexagon have",
]
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Delhi", "Rome", "Toronto"]
QUESTIONS = [
    "What is the sun?",
    "Why is the sky blue?",
    "What do bees make?",
    "What is a river?",
    "Why do we sleep?",
    "What is rain?",
    "What does a baker do?",
    "What is a library?",
]
LABELS = '["positive", "negative", "neutral"]'


@dataclasses.dataclass
class Kind:
    """One kind of query: its source, the prompt text before its hole (for HF), its inputs, its bound."""

    name: str
    query: str
    prompt: str
    inputs: list[dict[str, Any]]
    max_new: int


def kinds() -> list[Kind]:
    return [
        Kind(
            "classify (IN)",
            f'argmax\n    "Review: {{text}}\\nSentiment (positive, negative or neutral): [LABEL]" where LABEL in {LABELS}',
            "Review: {text}\nSentiment (positive, negative or neutral): ",
            [{"text": t} for t in REVIEWS],
            3,
        ),
        Kind(
            "extract (INT)",
            'argmax\n    "Q: How many {thing}?\\nA (a number): [N]" where INT(N) and len(TOKENS(N)) <= 6',
            "Q: How many {thing}?\nA (a number): ",
            [{"thing": t} for t in COUNTS],
            6,
        ),
        Kind(
            "JSON (dataclass)",
            'argmax\n    "Give {city} as JSON with name, country, population.\\n[C: City]" where len(TOKENS(C)) <= 40',
            "Give {city} as JSON with name, country, population.\n",
            [{"city": c, "City": City} for c in CITIES],
            40,
        ),
        Kind(
            "free text, stop",
            'argmax\n    "Q: {question}\\nA: [A]" where STOPS_AT(A, ".") and len(TOKENS(A)) <= 24',
            "Q: {question}\nA: ",
            [{"question": q} for q in QUESTIONS],
            24,
        ),
    ]


def mixed(n: int) -> list[tuple[Kind, dict[str, Any]]]:
    """``n`` queries, the kinds in turn, each kind's inputs in turn."""
    ks = kinds()
    return [(ks[i % len(ks)], ks[i % len(ks)].inputs[(i // len(ks)) % 8]) for i in range(n)]


def tokens_of(results: list[Any]) -> int:
    return sum(h.tokens for r in results if not isinstance(r, Exception) for h in r.holes)


def same(a: list[Any], b: list[Any]) -> int:
    """How many results of ``a`` have the variables of ``b``'s at the same place."""
    return sum(
        not isinstance(x, Exception) and not isinstance(y, Exception) and x.variables == y.variables
        for x, y in zip(a, b, strict=True)
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def one_at_a_time(backend: LocalBackend, work: list[tuple[Kind, dict[str, Any]]]) -> list[Any]:
    return [querylm.run(k.query, model=backend, chat=False, **inputs) for k, inputs in work]


def with_run_many(backend: LocalBackend, work: list[tuple[Kind, dict[str, Any]]], b: int) -> list[Any]:
    items = [{"query": k.query, **inputs} for k, inputs in work]
    return querylm.run_many(items, model=backend, chat=False, batch_size=b)


def with_map(backend: LocalBackend, work: list[tuple[Kind, dict[str, Any]]], b: int) -> list[Any]:
    """``querylm.map`` once per kind; the results put back in the mixed order."""
    out: list[Any] = [None] * len(work)
    for kind in {k.name: k for k, _ in work}.values():
        places = [i for i, (k, _) in enumerate(work) if k is kind]
        rows = [work[i][1] for i in places]
        for i, r in zip(places, querylm.map(kind.query, rows, batch_size=b, model=backend, chat=False, progress=False), strict=True):
            out[i] = r
    return out


def hf_generate(backend: LocalBackend, work: list[tuple[Kind, dict[str, Any]]], b: int) -> int:
    """Greedy, unconstrained ``generate`` per kind, ``b`` prompts a batch (left padding); returns the
    generated tokens up to each row's EOS."""
    tok = backend.tokenizer
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else backend.eos_ids[0]
    eos = set(backend.eos_ids)
    total = 0
    for kind in {k.name: k for k, _ in work}.values():
        prompts = [kind.prompt.format(**inputs) for k, inputs in work if k is kind]
        for start in range(0, len(prompts), b):
            enc = tok(prompts[start : start + b], return_tensors="pt", padding=True)
            enc = {k: v.to(backend.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = backend.model.generate(
                    **enc, max_new_tokens=kind.max_new, do_sample=False, pad_token_id=pad
                )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                total += next((i for i, t in enumerate(row) if t in eos), len(row))
    return total


FEW_SHOT = "".join(f"Review: {t}\nSentiment: {s}\n\n" for t, s in zip(
    REVIEWS + [r.replace("The", "Our") for r in REVIEWS],
    ["negative", "positive", "positive", "negative", "neutral", "negative", "positive", "neutral"] * 2,
    strict=True,
))
PREFIX_QUERY = f'argmax\n    "{FEW_SHOT.replace(chr(10), chr(92) + "n")}Review: {{text}}\\nSentiment: [LABEL]" where LABEL in {LABELS}'


def prefix_rows(backend: LocalBackend, n: int, b: int) -> list[str]:
    """The few-shot classification on an Engine with and without its prefix cache."""
    rows = Progress([])
    inputs = [{"text": f"{REVIEWS[i % 8]} (visit {i})"} for i in range(n)]
    prompt_tokens = len(backend.tokenizer(FEW_SHOT)["input_ids"])
    results = {}
    for label, prefix_tokens in (("prefix cache off", 0), ("prefix cache on", 4096)):
        engine = Engine(backend, batch_size=b, prefix_tokens=prefix_tokens)
        jobs = [prepare_job(i, Job(PREFIX_QUERY, x, {"model": backend, "chat": False, "choices": "tokens"})) for i, x in enumerate(inputs)]
        seconds, out = timed(lambda engine=engine, jobs=jobs: dict(engine.stream(jobs)))
        results[label] = [out[i] for i in range(n)]
        hit = engine.stats().get("prefix_cache", {}).get("hit_rate")
        hit_s = "-" if hit is None else f"{hit:.0%}"
        rows.add(f"| {label} | {b} | {n / seconds:.2f} | {tokens_of(results[label]) / seconds:.1f} | {hit_s} |")
    agree = same(results["prefix cache on"], results["prefix cache off"])
    rows.add(f"| (results equal, on vs off: {agree}/{n}; shared prefix {prompt_tokens} tokens) | | | | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,4,16,32")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores)")
    ap.add_argument("--gpu", action="store_true", help="the default model on CUDA")
    ap.add_argument("--quick", action="store_true", help="8 queries, batch sizes 1 and 8")
    args = ap.parse_args()
    if args.quick:
        args.queries, args.batch_sizes = 8, "1,8"
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: no CUDA device here; run without --gpu for the CPU")
    backend = resolve(None, device="cuda" if args.gpu else None)
    assert isinstance(backend, LocalBackend)
    work = mixed(args.queries)
    n = len(work)
    one_at_a_time(backend, mixed(4))  # warm up: mask-engine vocabulary, byte tables, kernels
    hf_generate(backend, mixed(4), 4)

    seconds, alone = timed(lambda: one_at_a_time(backend, work))
    rows = Progress([f"| querylm.run, one at a time | 1 | {n / seconds:.2f} | {tokens_of(alone) / seconds:.1f} | (reference) |"])
    base_qps = n / seconds
    for b in sizes:
        s_many, many = timed(lambda b=b: with_run_many(backend, work, b))
        s_map, mapped = timed(lambda b=b: with_map(backend, work, b))
        s_hf, hf_tokens = timed(lambda b=b: hf_generate(backend, work, b))
        rows.add(
            f"| run_many | {b} | {n / s_many:.2f} ({n / s_many / base_qps:.1f}x) | {tokens_of(many) / s_many:.1f} | {same(many, alone)}/{n} |"
        )
        rows.add(
            f"| map (per kind) | {b} | {n / s_map:.2f} ({n / s_map / base_qps:.1f}x) | {tokens_of(mapped) / s_map:.1f} | {same(mapped, alone)}/{n} |"
        )
        rows.add(f"| HF generate, unconstrained | {b} | {n / s_hf:.2f} | {hf_tokens / s_hf:.1f} | |")

    dev = torch.cuda.get_device_name() if backend.device.type == "cuda" else platform.processor() or "cpu"
    kinds_s = ", ".join(k.name for k in kinds())
    machine = f"{backend.name} on {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    table(f"throughput: {machine}, {n} mixed queries ({kinds_s})", TABLE_1, rows)
    # A quarter of the queries at once: the rows that join later find the prefix the first ones stored.
    b = max(1, min(max(sizes), n // 4))
    title = f"prefix cache: {n} few-shot classifications sharing one prefix, batch {b}"
    table(title, ("engine", "batch", "queries/s", "tokens/s", "prefix hit rate"), prefix_rows(backend, n, b))


class Progress(list[str]):
    """A table's rows, each also written to stderr as it is measured: a long run shows where it is, and
    an interrupted one keeps its figures."""

    def __init__(self, rows: list[str]):
        super().__init__()
        for row in rows:
            self.add(row)

    def add(self, row: str) -> None:
        print(row, file=sys.stderr, flush=True)
        self.append(row)


TABLE_1 = ("path", "batch", "queries/s (vs one at a time)", "tokens/s", "match one-at-a-time")


def table(title: str, columns: tuple[str, ...], rows: list[str]) -> None:
    print(f"# {title}", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|", *rows, "", sep="\n")

if __name__ == "__main__":
    main()

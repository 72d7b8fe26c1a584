"""The hosted backend against a real OpenAI-compatible server (llama.cpp serving the default model's GGUF),
side by side with a naive client and with LMQL 0.7.3.

    python benchmarks/hosted.py [--base-url http://127.0.0.1:8080/v1] [--endpoint chat|completions]
                                [--only NAME ...] [--repeats 2] [--json out.json]
                                [--arms querylm gbnf naive lmql]

Without --base-url it starts llama.cpp's native C++ server (from the ``xllamacpp`` wheel, built with
llguidance) on a free loopback port.

Arms, per query (``--arms`` picks some):
- querylm: each hole one request under the strongest mechanism the server has (on the native server
  the hole's own llguidance grammar, ``%llguidance`` Lark), validated locally, continued when cut;
- gbnf: the same, with the llguidance mechanism left out (``mechanisms=``): GBNF translations;
- naive: one request per hole with only ``stop`` and ``max_tokens``, the value validated afterwards
  with the same matcher, retried (sampling, temperature 0.7) up to 3 times; a hole still invalid after
  that fails the query;
- lmql: the same query text in LMQL 0.7.3 pointed at the same server, when ``lmql`` is importable (n/a
  otherwise, with the reason).

Columns: requests, prompt and completion tokens (as the server bills them) of one run, the fastest wall
time of ``--repeats`` runs, and whether
every constraint of every hole held (querylm re-checks each value in Python; "ok" means the query
ran to its end).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import querylm  # noqa: E402
from querylm.backends.hosted.client import HoleUsage  # noqa: E402
from querylm.backends.openai import MECHANISMS, OpenAIBackend  # noqa: E402
from querylm.constraints.matcher import accepts  # noqa: E402
from querylm.decoding.hole import FREE_TEXT, HoleOutput  # noqa: E402
from querylm.decoding.hosted import HoleRequest, HostedDecode, HostedValue, messages_of, prompt_text  # noqa: E402
from querylm.errors import QueryError  # noqa: E402
from querylm.runtime.hosted import HOSTED_DECODERS  # noqa: E402


@dataclasses.dataclass
class City:
    name: str
    country: str
    population: int


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


INPUTS: dict[str, Any] = {"City": City, "Colour": Colour}

SUITE: dict[str, str] = {
    "int": """
argmax
    "Q: How many legs does a spider have?\\nA: [LEGS]"
where INT(LEGS) and len(TOKENS(LEGS)) < 4
""",
    "stops_at": """
argmax
    "Q: What is the capital of France?\\nA: [CITY]"
where STOPS_AT(CITY, ".") and len(TOKENS(CITY)) < 16
""",
    "choice": """
argmax
    "Q: Is the Earth round? Answer yes or no.\\nA: [YN]"
where YN in ["yes", "no"]
""",
    "regex_date": """
argmax
    "Q: On which date did the Apollo 11 crew land on the Moon? Answer as YYYY-MM-DD.\\nA: [DATE]"
where REGEX(DATE, "[0-9]{4}-[0-9]{2}-[0-9]{2}")
""",
    "json": """
argmax
    "Describe Paris as JSON with its name, country and population: [C: City]"
""",
    "loop_list": """
argmax
    "Name three fruits, one per line.\\n"
    for i in range(3):
        "- [FRUIT]\\n" where STOPS_BEFORE(FRUIT, "\\n") and len(TOKENS(FRUIT)) < 8
""",
    "loop_ints": """
argmax
    "Count from one to three in digits.\\n"
    for i in range(3):
        "[N]\\n" where INT(N) and len(TOKENS(N)) < 3
""",
    "typed_choice": """
argmax
    "Q: What colour is the sky on a clear day? [C: Colour]\\nQ: Is water wet? [W: Literal['yes', 'no']]"
""",
    "chat_roles": """
argmax
    "{:system} You answer with one word."
    "{:user} Which planet is known as the red planet?"
    "{:assistant}[P]"
where P in ["Mars", "Venus", "Jupiter", "Saturn"]
""",
    "float": """
argmax
    "Q: What is the value of pi to two decimal places?\\nA: [PI]"
where FLOAT(PI) and len(TOKENS(PI)) < 6
""",
    "regex_email": """
argmax
    "Write an example email address for a person called John at example.com: [EMAIL]"
where REGEX(EMAIL, "[a-z]+@example\\.com")
""",
    "grammar": """
argmax
    "Q: When did Apollo 11 land on the Moon?\\nA: [DATE]"
where GRAMMAR(DATE, "iso_date")
""",
    "several_holes": """
argmax
    "Q: How many days are in a week?\\nA: [DAYS]\\n"
    "Q: What is the first day of the week?\\nA: [DAY]\\n"
    "Q: Is Sunday a weekday? [YN]"
where INT(DAYS) and len(TOKENS(DAYS)) < 4 and STOPS_AT(DAY, ".") and len(TOKENS(DAY)) < 10 and YN in ["yes", "no"]
""",
}


ARMS = {"querylm": "querylm", "gbnf": "querylm (GBNF)", "naive": "naive", "lmql": "lmql 0.7.3"}
"""--arms names and the arm column's labels."""


def inputs_of(source: str) -> dict[str, Any]:
    return {k: v for k, v in INPUTS.items() if k in source}


# -- the naive arm ------------------------------------------------------------------------------------


class NaiveDecode(HostedDecode):
    """One request per hole with stop and max_tokens only; the value validated afterwards; up to 3
    retries (sampling); an invalid value after that fails the query."""

    def fill(self, req: HoleRequest) -> HostedValue:
        b = self.backend
        hc = req.hc
        hole = HoleUsage(hc.hole)
        self.usage.holes.append(hole)
        grammars = hc.grammars() or [FREE_TEXT]
        text = ""
        for attempt in range(4):
            params: dict[str, Any] = {"model": b.model, "max_tokens": hc.max_tokens or 128}
            params["temperature"] = 0.0 if attempt == 0 else 0.7
            if attempt:
                params["seed"] = attempt
            stops = [*hc.stops_at, *hc.stops_before][:4]
            if stops:
                params["stop"] = stops
            if b.endpoint == "chat":
                messages, prefill = messages_of(b, req, "")
                if prefill:  # llama.cpp's chat endpoint closes the assistant turn: the raw prompt instead
                    params["prompt"] = b.tokenizer.apply_chat_template(
                        messages, tokenize=False, continue_final_message=True
                    )
                else:
                    params["messages"] = messages
            else:
                params["prompt"] = prompt_text(b, req)
            answer = b.client.send(
                "chat" if "messages" in params else "completions", params, self.usage, hole, hc.hole
            )
            text = answer.text
            if hc.stops_at and answer.finish == "stop" and not text.endswith(tuple(hc.stops_at)):
                text += hc.stops_at[0]
            if all(accepts(b.ll_tokenizer, g, text) for g in grammars):
                break
        ids = b.encode(text)
        return HostedValue(HoleOutput(ids, text, "naive"), 0.0)


class NaiveBackend(OpenAIBackend):
    """The same server, its holes filled by NaiveDecode."""


HOSTED_DECODERS[NaiveBackend] = NaiveDecode


# -- arms ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    query: str
    arm: str
    holes: int = 0
    requests: int | str = "n/a"
    prompt_tokens: int | str = "n/a"
    completion_tokens: int | str = "n/a"
    seconds: float | str = "n/a"
    ok: str = "n/a"
    note: str = ""


def run_arm(name: str, arm: str, source: str, backend: OpenAIBackend, repeats: int) -> Row:
    """The query ``repeats`` times (temperature 0: the same requests each time); the fastest wall time
    (this machine's CPU is shared: the slower runs measure other programs)."""
    row = Row(name, arm)
    times = []
    for _ in range(repeats):
        backend._local.usage = None
        t = time.perf_counter()
        try:
            result = querylm.run(source, model=backend, **inputs_of(source))
            row.ok = "ok"
            row.holes = len(result.holes)
            row.note = json.dumps(result.variables, default=str)[:80]
        except QueryError as err:
            row.ok = "FAIL"
            row.note = type(err).__name__ + ": " + err.message.splitlines()[0][:70]
        times.append(time.perf_counter() - t)
    row.seconds = round(min(times), 2)
    usage = backend.last_usage
    if usage is not None:
        row.requests = usage.requests
        row.prompt_tokens = usage.prompt_tokens
        row.completion_tokens = usage.completion_tokens
        row.holes = row.holes or len(usage.holes)
    return row


def run_lmql(name: str, source: str, base_url: str, model: str) -> Row:
    row = Row(name, "lmql 0.7.3")
    if importlib.util.find_spec("lmql") is None:
        row.note = "lmql not installed"
        return row
    import lmql  # type: ignore[import-not-found]

    t = time.perf_counter()
    try:
        m = lmql.model(f"openai/{model}", endpoint=base_url, tokenizer="HuggingFaceTB/SmolLM2-135M-Instruct")
        lmql.run_sync(source, model=m, **inputs_of(source))
        row.ok = "ok"
    except Exception as err:  # noqa: BLE001 - whatever LMQL raises is the row's result
        row.ok = "FAIL"
        row.note = f"{type(err).__name__}: {str(err).splitlines()[0][:70] if str(err) else ''}"
    row.seconds = round(time.perf_counter() - t, 2)
    return row


def table(rows: list[Row]) -> str:
    head = "| query | arm | holes | requests | prompt tok | completion tok | wall s | constraints | note |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r.query} | {r.arm} | {r.holes or ''} | {r.requests} | {r.prompt_tokens} | {r.completion_tokens} | "
            f"{r.seconds} | {r.ok} | {r.note.replace('|', '/')} |"
        )
    return "\n".join(lines)


def totals(rows: list[Row], arm: str) -> str:
    mine = [r for r in rows if r.arm == arm]
    ok = sum(r.ok == "ok" for r in mine)
    if mine and all(r.ok == "n/a" for r in mine):
        return f"{arm}: n/a ({mine[0].note})"
    if not mine or all(r.requests == "n/a" for r in mine):
        return f"{arm}: {ok}/{len(mine)} queries satisfied"
    req = sum(int(r.requests) for r in mine if r.requests != "n/a")
    holes = sum(r.holes for r in mine)
    billed = sum(int(r.prompt_tokens) + int(r.completion_tokens) for r in mine if r.prompt_tokens != "n/a")
    secs = sum(float(r.seconds) for r in mine if r.seconds != "n/a")
    return (
        f"{arm}: {ok}/{len(mine)} queries satisfied, {req} requests for {holes} holes, "
        f"{billed} billed tokens, {secs:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", help="an already running llama.cpp server (default: start one)")
    ap.add_argument("--endpoint", default="chat", choices=["chat", "completions"])
    ap.add_argument("--only", nargs="*", help="run only these queries")
    ap.add_argument("--json", help="write the rows as JSON to this file")
    ap.add_argument("--repeats", type=int, default=2, help="runs per query and arm; the fastest is reported")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS), help="the arms to run")
    args = ap.parse_args(argv)
    names = args.only or list(SUITE)

    server = None
    base_url = args.base_url
    if base_url is None:
        from querylm.backends.hosted.llama_server import LlamaServer

        server = LlamaServer().start()
        base_url = server.base_url
    try:
        hosted = OpenAIBackend("smollm2", base_url=base_url, endpoint=args.endpoint)
        same = {  # the server as probed once: its flavour and tokenizer
            "base_url": base_url,
            "flavour": hosted.flavour,
            "endpoint": args.endpoint,
            "tokenizer": hosted.tokenizer,
        }
        gbnf = OpenAIBackend("smollm2", **same, mechanisms=[m for m in MECHANISMS if m != "llguidance"])
        naive = NaiveBackend("smollm2", **same)
        print(
            f"server {base_url}: flavour {hosted.flavour}, endpoint {args.endpoint}, tokenizer "
            f"{Path(hosted.tokenizer_source).name} (same as the server's: {hosted.same_tokenizer}), "
            f"llguidance grammars: {hosted.llguidance}\n",
            flush=True,
        )
        for b in (hosted, gbnf, naive):  # warm up: the server's first prompt, the mask engine's vocabulary
            querylm.run('"Hi: [X]" where len(TOKENS(X)) < 2', model=b)
        rows: list[Row] = []
        for name in names:
            source = SUITE[name]
            backends = {"querylm": hosted, "gbnf": gbnf, "naive": naive}
            for arm in args.arms:
                if arm == "lmql":
                    row = run_lmql(name, source, base_url, "smollm2")
                else:
                    row = run_arm(name, ARMS[arm], source, backends[arm], args.repeats)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
        print()
        print(table(rows))
        print()
        for arm in args.arms:
            print(totals(rows, ARMS[arm]))
        if args.json:
            Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

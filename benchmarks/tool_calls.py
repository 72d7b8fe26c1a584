"""Tool calls on the default model: querylm's constrained calls against the same model asked for JSON.

    python benchmarks/tool_calls.py [--model M] [--limit N] [--llama-cpp] [--json OUT]

22 tool-use tasks over 8 tools (weather, arithmetic, units, notes, email, calendar, timers,
translation). Every arm sees the same system prompt (the tool list in SmolLM2's function-calling format)
and the same question, and makes one attempt (no retries):

- querylm: one assistant turn generated under the union grammar of the tools (tool_choice="required",
  names scored in full), as ``querylm.Agent`` does, its budget sized to the longest call the tools'
  bounded schemas allow (so a call can't be cut);
- unconstrained: the same prompt through ``querylm.run`` with a free hole and a 256-token budget, the
  text parsed afterwards (a ``<tool_call>`` block, else the first JSON value in it);
- llama.cpp (``--llama-cpp``, when llama-cpp-python is installed): the same GGUF file through
  llama-cpp-python's own OpenAI-style tools support (``chat_format="chatml-function-calling"``,
  ``tool_choice="auto"``, 256 tokens), which is what its OpenAI-compatible server runs; in a worker process,
  because its grammar code crashes on some schemas (counted in "crashed").

A call is valid when it parses, names a registered tool and its arguments validate against that tool's
JSON Schema; a task is valid when it made at least one call and all its calls are valid. "Right tool"
compares the first call's name with the task's expected tool (valid is not correct).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

import querylm
from querylm.tools import ToolRegistry, tool, validate

Unit = Literal["km", "mi", "m", "ft", "kg", "lb", "g", "oz", "c", "f", "l", "gal"]
Language = Literal["Spanish", "French", "German", "Italian", "Japanese"]


@tool
def get_weather(
    city: Annotated[str, Field(max_length=40)], unit: Literal["celsius", "fahrenheit"] = "celsius"
) -> str:
    """Get the current weather in a city.

    Args:
        city: The city, e.g. Paris.
        unit: The temperature unit.
    """
    return f"18 degrees {unit} and cloudy in {city}"


@tool
def calculate(a: float, op: Literal["+", "-", "*", "/", "**"], b: float) -> float:
    """Calculate a op b, for example 37 * 43 or 2 ** 10.

    Args:
        a: The first number.
        op: The operator: +, -, *, / or **.
        b: The second number.
    """
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan"), "**": a ** min(b, 64)}[op]


@tool
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> str:
    """Convert a quantity from one unit to another (length, mass, temperature, volume).

    Args:
        value: The quantity to convert.
        from_unit: The unit it is in.
        to_unit: The unit to convert it to.
    """
    return f"{value} {from_unit} in {to_unit}"


@tool
def search_notes(query: Annotated[str, Field(min_length=2, max_length=60)]) -> list[str]:
    """Search my notes for lines about a topic.

    Args:
        query: Words to look for.
    """
    return [f"a note about {query}"]


@tool
def send_email(
    to: Annotated[str, Field(pattern=r"^[a-z0-9._-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$", max_length=60)],
    subject: Annotated[str, Field(max_length=80)],
    body: Annotated[str, Field(max_length=200)],
) -> str:
    """Send an email.

    Args:
        to: The recipient's email address.
        subject: The subject line.
        body: The message.
    """
    return "sent"


@tool
def create_event(
    title: Annotated[str, Field(max_length=60)],
    date: Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")],
    time: Annotated[str, Field(pattern=r"^[0-2][0-9]:[0-5][0-9]$")],
) -> str:
    """Add an event to my calendar.

    Args:
        title: What the event is.
        date: The day, as YYYY-MM-DD.
        time: The start time, as HH:MM.
    """
    return "created"


@tool
def set_timer(minutes: Annotated[int, Field(ge=1, le=600)]) -> str:
    """Set a timer.

    Args:
        minutes: How many minutes.
    """
    return f"timer set for {minutes} minutes"


@tool
def translate(text: Annotated[str, Field(max_length=120)], target_language: Language) -> str:
    """Translate a text into another language.

    Args:
        text: The text to translate.
        target_language: The language to translate it into.
    """
    return f"({target_language}) {text}"


TOOLS = [get_weather, calculate, convert_units, search_notes, send_email, create_event, set_timer, translate]

TASKS: list[tuple[str, str]] = [
    ("What's the weather like in Paris?", "get_weather"),
    ("Is it cold in Oslo right now? Tell me in fahrenheit.", "get_weather"),
    ("What's the weather in Tokyo?", "get_weather"),
    ("What is 37 times 43?", "calculate"),
    ("Compute 17 plus 5.", "calculate"),
    ("What is 2 to the power of 10?", "calculate"),
    ("Divide 144 by 12.", "calculate"),
    ("How many pounds is 12 kg?", "convert_units"),
    ("Convert 10 km to miles.", "convert_units"),
    ("What is 100 fahrenheit in celsius?", "convert_units"),
    ("How many feet are in 3 meters?", "convert_units"),
    ("Find my notes about the dentist.", "search_notes"),
    ("Search my notes for the bike lock code.", "search_notes"),
    ("Email bob@example.com that the meeting moved to Friday.", "send_email"),
    ("Send an email to anna@example.org thanking her for the book.", "send_email"),
    ("Put 'Team lunch' in my calendar on 2025-06-12 at 12:30.", "create_event"),
    ("Schedule a dentist appointment for 2025-03-14 at 09:30.", "create_event"),
    ("Set a timer for 15 minutes.", "set_timer"),
    ("Set a 5 minute timer for the tea.", "set_timer"),
    ("Translate 'good morning' into Spanish.", "translate"),
    ("How do you say 'thank you' in German?", "translate"),
    ("Translate 'where is the station' into French.", "translate"),
]


@dataclass
class Outcome:
    text: str
    calls: list[Any] = field(default_factory=list)  # parsed call objects (dicts), possibly invalid
    parsed: bool = False
    seconds: float = 0.0
    tokens: int = 0
    truncated: bool = False
    crashed: bool = False


@dataclass
class Tally:
    name: str
    outcomes: list[tuple[str, Outcome]] = field(default_factory=list)

    def row(self, registry: ToolRegistry) -> dict[str, Any]:
        n = len(self.outcomes)
        valid = hallucinated = violations = no_call = right = 0
        for expected, o in self.outcomes:
            kinds = [classify(c, registry) for c in o.calls]
            if not kinds:
                no_call += 1
            hallucinated += "unknown_name" in kinds
            violations += "schema" in kinds
            if kinds and all(k == "valid" for k in kinds):
                valid += 1
            if o.calls and isinstance(o.calls[0], dict) and o.calls[0].get("name") == expected:
                right += 1
        pct = lambda k: round(100 * k / n, 1) if n else 0.0  # noqa: E731
        return {
            "arm": self.name,
            "tasks": n,
            "valid %": pct(valid),
            "no/unparseable call %": pct(no_call),
            "hallucinated name %": pct(hallucinated),
            "schema violation %": pct(violations),
            "right tool %": pct(right),
            "truncated": sum(o.truncated for _, o in self.outcomes),
            "crashed": sum(o.crashed for _, o in self.outcomes),
            "retries": 0,
            "s/task": round(sum(o.seconds for _, o in self.outcomes) / max(n, 1), 2),
        }


def classify(call: Any, registry: ToolRegistry) -> str:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return "malformed"
    if call["name"] not in registry:
        return "unknown_name"
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return "schema"
    return "valid" if not validate(registry[call["name"]].parameters, args) else "schema"


def parse_calls(text: str) -> tuple[bool, list[Any]]:
    """The calls in free text: a <tool_call> block if there is one, else the first JSON value."""
    m = re.search(r"<tool_call>(.*?)(?:</tool_call>|$)", text, re.S)
    body = m.group(1) if m else text
    decoder = json.JSONDecoder()
    for start, ch in enumerate(body):
        if ch in "[{":
            try:
                value, _ = decoder.raw_decode(body[start:])
            except ValueError:
                continue
            calls = value if isinstance(value, list) else [value]
            return True, calls
    return False, []


# -- the arms ------------------------------------------------------------------------------------------------


def run_querylm(model: Any, registry: ToolRegistry, question: str, agent: querylm.Agent) -> Outcome:
    start = time.perf_counter()
    result = agent.run(question)
    seconds = time.perf_counter() - start
    calls = [r.call.to_json() for r in result.tool_results if r.call is not None]
    truncated = any(r.error == "truncated" for r in result.tool_results)
    text = json.dumps(calls) if calls else "; ".join(r.message for r in result.tool_results)
    return Outcome(text, calls, bool(calls), seconds, result.tokens, truncated)


FREE = '"{:system}{system}{:user}{question}{:assistant}[OUT]" where len(TOKENS(OUT)) <= 256'


def run_unconstrained(model: Any, system: str, question: str) -> Outcome:
    start = time.perf_counter()
    r = querylm.run(FREE, model=model, system=system, question=question)
    seconds = time.perf_counter() - start
    text = r.variables["OUT"]
    parsed, calls = parse_calls(text)
    return Outcome(text, calls, parsed, seconds, r.holes[0].tokens, r.holes[0].ended_by == "budget")


_LLM: Any = None


def _llama_start(gguf: str) -> None:
    global _LLM
    from llama_cpp import Llama

    _LLM = Llama(gguf, chat_format="chatml-function-calling", n_ctx=4096, verbose=False)


def _llama_complete(system: str, question: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    return _LLM.create_chat_completion(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        tools=tools,
        tool_choice="auto",
        max_tokens=256,
        temperature=0.0,
    )


class LlamaCpp:
    """llama-cpp-python in a worker process: its grammar code can crash the process (a schema's
    ``pattern`` it can't escape ends in a segfault), which then counts as a failed task, not a lost run."""

    def __init__(self, gguf: str):
        self.gguf = gguf
        self.pool: ProcessPoolExecutor | None = None

    def complete(self, system: str, question: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
        if self.pool is None:
            ctx = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                1, mp_context=ctx, initializer=_llama_start, initargs=(self.gguf,)
            )
        try:
            return self.pool.submit(_llama_complete, system, question, tools).result()
        except BrokenProcessPool:
            self.pool = None
            return None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def run_llama_cpp(llm: LlamaCpp, registry: ToolRegistry, system: str, question: str) -> Outcome:
    start = time.perf_counter()
    out = llm.complete(system, question, registry.to_openai(strict=False))
    seconds = time.perf_counter() - start
    if out is None:
        return Outcome("llama.cpp crashed", seconds=seconds, crashed=True)
    msg = out["choices"][0]["message"]
    calls = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in msg.get("tool_calls") or []
    ]
    parsed = bool(calls)
    if not calls:
        parsed, calls = parse_calls(msg.get("content") or "")
    return Outcome(
        msg.get("content") or json.dumps(calls), calls, parsed, seconds, out["usage"]["completion_tokens"]
    )


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model id (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    ap.add_argument("--llama-cpp", action="store_true", help="also run llama-cpp-python's own tools support")
    ap.add_argument("--json", default=None, help="write the rows and every output to this file")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    registry = ToolRegistry(TOOLS)
    agent = querylm.Agent(
        model=args.model,
        tools=registry,
        tool_choice="required",
        max_turns=1,
        answer_last_turn=False,
    )
    system = agent.format.system_prompt(registry, "")
    tasks = TASKS[: args.limit] if args.limit else TASKS
    backend = agent.backend
    arms = [Tally("querylm (constrained)"), Tally("unconstrained (free hole + parse)")]
    llm = None
    if args.llama_cpp:
        if importlib.util.find_spec("llama_cpp") is None:
            print("llama-cpp-python is not installed: skipping that arm", file=sys.stderr)
        else:
            from querylm.backends.hub import default_gguf

            llm = LlamaCpp(str(default_gguf()))
            arms.append(Tally("llama.cpp tools (chatml-function-calling)"))
    for i, (question, expected) in enumerate(tasks):
        outcomes = [
            run_querylm(backend, registry, question, agent),
            run_unconstrained(backend, system, question),
        ]
        if llm is not None:
            outcomes.append(run_llama_cpp(llm, registry, system, question))
        for tally, o in zip(arms, outcomes, strict=True):
            tally.outcomes.append((expected, o))
            if args.verbose:
                print(f"[{i + 1}/{len(tasks)}] {tally.name}: {o.text[:160]!r}", file=sys.stderr)
    if llm is not None:
        llm.close()
    rows = [a.row(registry) for a in arms]
    print(f"{len(tasks)} tasks, model {backend.name}\n")
    print(table(rows))
    if args.json:
        detail = {
            a.name: [
                {"expected": e, "text": o.text, "calls": o.calls, "seconds": o.seconds} for e, o in a.outcomes
            ]
            for a in arms
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "outputs": detail}, f, indent=1, default=str)
    return rows


if __name__ == "__main__":
    main()

"""Answer quality on the default model: constrained queries against the same model unconstrained.

    python benchmarks/quality.py [--quick] [--families sentiment,date] [--per-family N] [--no-tools]
                                 [--tools-only] [--tool-tasks N] [--threads T] [--json OUT]

Constraints make every value valid; this measures whether they also keep it right. 72 labelled items
of our own (benchmarks/quality_data/items.jsonl, 12 per family: sentiment, topic, yes/no, a date, a
number, a name) and the 22 tool tasks of benchmarks/tool_calls.py (with their expected arguments in
quality_data/tool_args.json). Every arm of an item sees the same prompt; the arms:

- ``values``: the constrained query, small value sets (``IN``, ``Literal``) decided by each whole value's
  log-probability (``choices="values"``, querylm's default); tools: tool names scored in full;
- ``tokens``: the same query decided token by token (``choices="tokens"``); tools: names token by token;
- each of those with token healing on and off, where the installed querylm has it (``heal`` in
  ``querylm.run``'s signature): otherwise those arms read "n/a" and the arms that ran are the ones
  without healing. Tool tasks have no healing arms: an agent turn opens the assistant's message, where
  no prompt text comes before the call to heal;
- ``unconstrained``: the same prompt with a free hole (a token budget only), the answer read leniently
  from the text: the first label word (not a read-back of the options), the first number, the first date in any common format, the first
  capitalised name; for tools, the call parsed out of the text as tool_calls.py does.

Odd and even items of a family alternate two query styles, one of them LMQL's documented style (the
prompt ends without a space and the values carry it: ``S in [" positive", " negative", " neutral"]``).
A constrained value is right when it equals the label (case, surrounding space and a final full stop
aside; a name may keep a title such as "Doctor"). A tool call's arguments are exactly right when, with
the schema's defaults filled in, they have the expected keys and values: numbers equal, strings equal
ignoring case, surrounding quotes and a final full stop; free-text fields (an email body, a note
query) must contain the words the task gives, and an email subject only has to be non-empty.

Targets (issue 14), checked in the footer: constrained (default arm) >= unconstrained on every family;
healing never worse in total; tool tasks: right tool >= 85 %, arguments exactly right >= 60 %.
``--json OUT`` is rewritten after every item, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import querylm
from querylm.backends.models import resolve
from querylm.tools import ToolRegistry

HERE = Path(__file__).resolve().parent
DATA = HERE / "quality_data"
FAMILIES = ["sentiment", "topic", "yesno", "date", "number", "name"]
QUICK_ITEMS = 2  # items per family under --quick
QUICK_TOOL_TASKS = 4
FREE_BUDGET = 24  # tokens for the unconstrained answer: room for a sentence around the answer


def _tool_calls() -> Any:
    """benchmarks/tool_calls.py (the tools, the 22 tasks, the free-text call parser), loaded by path so
    this script runs from anywhere and the test suite can import it the same way."""
    name = "querylm_bench_tool_calls"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "tool_calls.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- the items and their queries ----------------------------------------------------------------------------

LABELS = {
    "sentiment": ["positive", "negative", "neutral"],
    "topic": ["sports", "politics", "technology", "food", "health"],
    "yesno": ["yes", "no"],
}

# The prompt of each family, up to the answer's cue; the hole follows the cue directly (LMQL's style,
# the value carries the space) or after a space.
PROMPTS = {
    "sentiment": r"Review: {text}\nIs the sentiment of this review positive, negative or neutral?\nSentiment:",
    "topic": r"Text: {text}\nWhich topic is this text about: sports, politics, technology, food or health?"
    r"\nTopic:",
    "yesno": r"Question: {text}\nAnswer yes or no.\nAnswer:",
    "date": r"Text: {text}\nWhat date does the text mention? Write it as YYYY-MM-DD.\nDate:",
    "number": r"Text: {text}\nQuestion: {question}\nAnswer with a number.\nAnswer:",
    "name": r"Text: {text}\nQuestion: {question}\nAnswer with the person's name only.\nName:",
}
NAME = r"[A-Z][a-z]+( [A-Z][a-z]+){0,2}"
DATE_LOOSE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def constrained_query(family: str, lmql_style: bool) -> str:
    """The constrained query for a family in one of its two styles (see the module docstring)."""
    prompt = PROMPTS[family]
    if family in LABELS:
        labels = LABELS[family]
        if lmql_style:
            options = ", ".join(f'" {v}"' for v in labels)
            return f'"{prompt}[A]" where A in [{options}]'
        literal = ", ".join(f"'{v}'" for v in labels)
        return f'"{prompt} [A: Literal[{literal}]]"'
    if family == "date":
        if lmql_style:
            return f'"{prompt}[A]" where REGEX(A, r" {DATE_LOOSE}")'
        return f'"{prompt} [A]" where GRAMMAR(A, "iso_date")'
    if family == "number":
        return f'"{prompt}{"" if lmql_style else " "}[A]" where INT(A)'
    if family == "name":
        return (
            f'"{prompt}{"" if lmql_style else " "}[A]" where REGEX(A, r"{" " if lmql_style else ""}{NAME}")'
        )
    raise ValueError(f"unknown family {family!r}")


def free_query(family: str, lmql_style: bool) -> str:
    """The same prompt with a free hole: only a token budget."""
    gap = "" if lmql_style else " "
    return f'"{PROMPTS[family]}{gap}[A]" where len(TOKENS(A)) < {FREE_BUDGET}'


def load_items(families: list[str], per_family: int | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line in (DATA / "items.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        fam = item["family"]
        if fam not in families:
            continue
        k = seen.get(fam, 0)
        seen[fam] = k + 1
        if per_family is not None and k >= per_family:
            continue
        item["lmql_style"] = k % 2 == 0
        items.append(item)
    return items


# -- reading answers ------------------------------------------------------------------------------------

TITLES = {"doctor", "dr", "dr.", "mr", "mr.", "mrs", "mrs.", "ms", "ms.", "professor", "prof."}


def norm(text: str) -> str:
    """Case, surrounding space and quotes, and a final full stop don't count."""
    return text.strip().strip("\"'").strip().rstrip(".!").strip().lower()


def norm_name(text: str) -> str:
    words = norm(text).split()
    while words and words[0] in TITLES:
        words = words[1:]
    return " ".join(words)


def first_label(text: str, labels: list[str]) -> str | None:
    """The label word that comes first in a free answer ("The sentiment is positive." -> positive). An
    answer naming three labels or more of a longer list reads the question's options back ("The topic is
    sports, politics, technology...") and gives none: otherwise the first option would win by echo."""
    found = []
    for label in labels:
        m = re.search(rf"\b{re.escape(label)}\b", text, re.I)
        if m:
            found.append((m.start(), label))
    if not found or (len(labels) >= 3 and len(found) >= 3):
        return None
    return min(found)[1]


NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
        " sixteen seventeen eighteen nineteen twenty".split()
    )
}


def first_number(text: str) -> int | float | None:
    """The first number in a free answer: digits (with digit-group commas) or a number word up to 20."""
    m = re.search(
        r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|\b(" + "|".join(NUMBER_WORDS) + r")\b", text, re.I
    )
    if not m:
        return None
    if m.group(1):
        return NUMBER_WORDS[m.group(1).lower()]
    value = float(m.group(0).replace(",", ""))
    return int(value) if value.is_integer() else value


MONTHS = {
    m: i + 1
    for i, m in enumerate(
        "january february march april may june july august september october november december".split()
    )
}
MONTH = "(" + "|".join(MONTHS) + r"|" + "|".join(m[:3] for m in MONTHS) + r")\.?"
DATE_FORMS = [
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), ("y", "m", "d")),
    (re.compile(rf"\b{MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I), ("M", "d", "y")),
    (
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{MONTH},?\s+(\d{{4}})\b", re.I),
        ("d", "M", "y"),
    ),
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), ("m", "d", "y")),  # US order, as the items are
]


def first_date(text: str) -> str | None:
    """The first date in a free answer, in any of the common forms, as YYYY-MM-DD."""
    found: list[tuple[int, str]] = []
    for pattern, order in DATE_FORMS:
        for m in pattern.finditer(text):
            parts = dict(zip(order, m.groups(), strict=True))
            if "M" in parts:
                month = next(v for k, v in MONTHS.items() if k.startswith(parts["M"].lower().rstrip(".")[:3]))
            else:
                month = int(parts["m"])
            try:
                found.append((m.start(), date(int(parts["y"]), month, int(parts["d"])).isoformat()))
            except ValueError:
                continue
            break
    return min(found)[1] if found else None


NOT_NAMES = {
    "the",
    "a",
    "an",
    "name",
    "answer",
    "he",
    "she",
    "it",
    "they",
    "who",
    "yesterday",
    "after",
    "our",
}


def first_name(text: str) -> str | None:
    """The first run of capitalised words in a free answer that isn't a sentence opener or a title."""
    for m in re.finditer(r"[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*", text):
        words = [w for w in m.group(0).split() if w.lower() not in NOT_NAMES and w.lower() not in TITLES]
        if words:
            return " ".join(words)
    return None


def right(family: str, value: Any, answer: Any, *, free: bool) -> bool:
    """Whether an arm's answer is the item's label; ``free``: read it leniently out of free text."""
    if free:
        text = str(value)
        if family in LABELS:
            return first_label(text, LABELS[family]) == answer
        if family == "number":
            return first_number(text) == answer
        if family == "date":
            return first_date(text) == answer
        got = first_name(text)
        return got is not None and norm_name(got) == norm_name(answer)
    if family == "number":
        return value == answer
    if family == "name":
        return norm_name(str(value)) == norm_name(answer)
    return norm(str(value)) == norm(str(answer))


# -- tool arguments -------------------------------------------------------------------------------------


def args_match(call: Any, expected_name: str, expected: dict[str, Any], registry: ToolRegistry) -> bool:
    """Whether a call names the expected tool with exactly the expected arguments (module docstring)."""
    if not isinstance(call, dict) or call.get("name") != expected_name or expected_name not in registry:
        return False
    args = call.get("arguments", call.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return False
    if not isinstance(args, dict):
        return False
    schema = registry[expected_name].parameters
    filled = {k: p["default"] for k, p in schema.get("properties", {}).items() if "default" in p}
    filled.update(args)
    if set(filled) != set(expected):
        return False
    return all(value_match(filled[k], want) for k, want in expected.items())


def value_match(got: Any, want: Any) -> bool:
    if isinstance(want, dict) and "$contains" in want:
        return isinstance(got, str) and all(w.lower() in got.lower() for w in want["$contains"])
    if isinstance(want, dict) and "$text" in want:
        return isinstance(got, str) and bool(got.strip())
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and float(got) == float(want)
    return isinstance(got, str) and norm(got) == norm(str(want))


# -- running --------------------------------------------------------------------------------------------


@dataclass
class Arm:
    """One way of answering: choices "values" / "tokens" / None (unconstrained), healing True / False /
    None (the library's default, for an installed querylm without the switch)."""

    choices: str | None
    heal: bool | None

    @property
    def name(self) -> str:
        if self.choices is None:
            return "unconstrained"
        return self.choices + {True: ", heal", False: ", no heal", None: ""}[self.heal]


@dataclass
class Cell:
    n: int = 0
    right: int = 0
    tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, int] = field(default_factory=dict)

    def add(self, ok: bool, tokens: int, seconds: float, **extra: bool) -> None:
        self.n += 1
        self.right += ok
        self.tokens += tokens
        self.seconds += seconds
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def pct(self, k: int | None = None) -> float:
        return round(100 * (self.right if k is None else k) / self.n, 1) if self.n else 0.0


def arms_for(has_heal: bool) -> tuple[list[Arm], list[str]]:
    """The arms that run, and the names of those this querylm can't run."""
    if has_heal:
        arms = [Arm(c, h) for c in ("values", "tokens") for h in (True, False)]
        return arms + [Arm(None, None)], []
    return [Arm("values", None), Arm("tokens", None), Arm(None, None)], [
        "values, heal",
        "tokens, heal",
    ]


def options_of(arm: Arm) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if arm.choices is not None:
        options["choices"] = arm.choices
    if arm.heal is not None:
        options["heal"] = arm.heal
    return options


def run_group(backend: Any, items: list[dict[str, Any]], arm: Arm, batch_size: int) -> list[dict[str, Any]]:
    """One arm over items of one family and style (one query), batched through ``querylm.map``: each
    item's seconds are the group's wall time shared out evenly."""
    fam, style = items[0]["family"], items[0]["lmql_style"]
    query = free_query(fam, style) if arm.choices is None else constrained_query(fam, style)
    rows = [{k: it[k] for k in ("text", "question") if k in it} for it in items]
    start = time.perf_counter()
    outcomes = querylm.map(
        query, rows, model=backend, batch_size=batch_size, progress=False, **options_of(arm)
    )
    seconds = (time.perf_counter() - start) / len(items)
    out = []
    for item, r in zip(items, outcomes, strict=True):
        if isinstance(r, querylm.QueryResult):
            value, tokens, error = r.variables["A"], sum(h.tokens for h in r.holes), None
            ended_by = [h.ended_by for h in r.holes]
            searched = any(getattr(h, "searched", False) for h in r.holes)
        else:  # a failed query is a wrong answer, and the JSON says why
            value, tokens, error, ended_by, searched = None, 0, f"{type(r).__name__}: {r}", [], False
        out.append(
            {
                "family": fam,
                "arm": arm.name,
                "lmql_style": style,
                "text": item["text"],
                "answer": item["answer"],
                "value": value,
                "right": value is not None and right(fam, value, item["answer"], free=arm.choices is None),
                "tokens": tokens,
                "seconds": round(seconds, 3),
                "ended_by": ended_by,
                "searched": searched,
                "error": error,
            }
        )
    return out


def same_as(rows: list[dict[str, Any]], arm: Arm) -> list[dict[str, Any]] | None:
    """The ``values`` rows standing for ``arm`` (``tokens``, same healing) where no hole was decided as a
    whole-value choice or a value search: the two settings then run the same decode, so it is not run
    twice. None where one was (the arm must run)."""
    if any("choice" in r["ended_by"] or r.get("searched") for r in rows):
        return None
    return [{**r, "arm": arm.name, "same_as": r["arm"]} for r in rows]


def run_tool_task(
    bench: Any, agents: dict[str, Any], registry: ToolRegistry, task: Any, arm: Arm
) -> dict[str, Any]:
    """One tool task through the agent of a constrained arm."""
    question, expected_name, expected_args = task
    start = time.perf_counter()
    result = agents[arm.name].run(question)
    calls = [r.call.to_json() for r in result.tool_results if r.call is not None]
    return tool_row(bench, registry, task, arm, calls, result.tokens, time.perf_counter() - start)


def run_free_tools(
    bench: Any, backend: Any, system: str, registry: ToolRegistry, tasks: list[Any], arm: Arm, batch_size: int
) -> list[dict[str, Any]]:
    """The unconstrained tool arm: tool_calls.py's free hole (same prompt, 256 tokens), batched, the call
    parsed out of the text as tool_calls.py parses it."""
    rows = [{"system": system, "question": q} for q, _, _ in tasks]
    start = time.perf_counter()
    outcomes = querylm.map(bench.FREE, rows, model=backend, batch_size=batch_size, progress=False)
    seconds = (time.perf_counter() - start) / len(tasks)
    out = []
    for task, r in zip(tasks, outcomes, strict=True):
        text = r.variables["OUT"] if isinstance(r, querylm.QueryResult) else ""
        tokens = sum(h.tokens for h in r.holes) if isinstance(r, querylm.QueryResult) else 0
        out.append(tool_row(bench, registry, task, arm, bench.parse_calls(text)[1], tokens, seconds))
    return out


def tool_row(
    bench: Any, registry: ToolRegistry, task: Any, arm: Arm, calls: list[Any], tokens: int, seconds: float
) -> dict[str, Any]:
    question, expected_name, expected_args = task
    first = calls[0] if calls else None
    kinds = [bench.classify(c, registry) for c in calls]
    return {
        "family": "tools",
        "arm": arm.name,
        "text": question,
        "answer": {"name": expected_name, "arguments": expected_args},
        "value": calls,
        "right_tool": isinstance(first, dict) and first.get("name") == expected_name,
        "args_exact": args_match(first, expected_name, expected_args, registry),
        "valid": bool(kinds) and all(k == "valid" for k in kinds),
        "tokens": tokens,
        "seconds": round(seconds, 3),
    }


TOOL_ARMS = [Arm("values", None), Arm("tokens", None), Arm(None, None)]
"""The tool tasks' arms: healing has nothing to heal at the start of an agent's turn (a role tag)."""


def make_agents(backend: Any, registry: ToolRegistry, arms: list[Arm]) -> dict[str, Any]:
    agents = {}
    for arm in arms:
        if arm.choices is None:
            continue
        agents[arm.name] = querylm.Agent(
            model=backend,
            tools=registry,
            tool_choice="required",
            max_turns=1,
            answer_last_turn=False,
            score_tool_names=arm.choices == "values",
        )
    return agents


# -- reporting ------------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summarise(results: list[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    """(family or "all" or "tools", arm) -> its tally; for tools, "right" is arguments exactly right."""
    cells: dict[tuple[str, str], Cell] = {}
    for r in results:
        if r["family"] == "tools":
            cell = cells.setdefault(("tools", r["arm"]), Cell())
            cell.add(r["args_exact"], r["tokens"], r["seconds"], tool=r["right_tool"], valid=r["valid"])
            continue
        for key in ((r["family"], r["arm"]), ("all", r["arm"])):
            cells.setdefault(key, Cell()).add(r["right"], r["tokens"], r["seconds"])
    return cells


NA = "n/a (no healing in this querylm)"


def ordered(arms: list[str], missing: list[str]) -> list[str]:
    """Constrained arms, then those that can't run here, then unconstrained (always last)."""
    return [*arms[:-1], *missing, arms[-1]]


def report(
    results: list[dict[str, Any]],
    families: list[str],
    arms: tuple[list[str], list[str]],
    tool_arms: list[str],
) -> tuple[str, dict[str, Any]]:
    """The tables and the target checks, as text and as JSON. ``arms``: the names of the arms that ran
    and of those this querylm can't run; ``tool_arms``: the tool tasks' arms."""
    cells = summarise(results)
    out: list[str] = []
    summary: dict[str, Any] = {"families": {}, "tools": {}, "targets": {}}
    ran = [f for f in families if any(k[0] == f for k in cells)]
    rows: list[list[Any]] = []
    for fam in [*ran, "all"] if ran else []:
        for name in ordered(*arms):
            c = cells.get((fam, name))
            if name in arms[1]:
                rows.append([fam, name, NA, "", "", ""])
            elif c is not None:
                rows.append([fam, name, f"{c.pct()} %", c.n, c.tokens, round(c.seconds, 1)])
                summary["families"].setdefault(fam, {})[name] = {
                    "accuracy": c.pct(),
                    "right": c.right,
                    "n": c.n,
                    "tokens": c.tokens,
                    "seconds": round(c.seconds, 2),
                }
    if rows:
        out.append(table(["family", "arm", "accuracy", "n", "tokens", "s"], rows))
    rows = []
    for name in tool_arms if any(k[0] == "tools" for k in cells) else []:
        c = cells.get(("tools", name))
        if c is not None:
            tool, valid = c.extra.get("tool", 0), c.extra.get("valid", 0)
            rows.append(
                [
                    name,
                    c.n,
                    f"{c.pct(tool)} %",
                    f"{c.pct()} %",
                    f"{c.pct(valid)} %",
                    c.tokens,
                    round(c.seconds, 1),
                ]
            )
            summary["tools"][name] = {
                "n": c.n,
                "right tool %": c.pct(tool),
                "args exact %": c.pct(),
                "args exact": c.right,
                "valid %": c.pct(valid),
                "tokens": c.tokens,
                "seconds": round(c.seconds, 2),
            }
    if rows:
        out.append(table(["tools arm", "tasks", "right tool", "args exact", "valid", "tokens", "s"], rows))
    out.append(footer(summary, ran, arms[0][0], tool_arms[0], bool(arms[1])))
    return "\n\n".join(out), summary


def footer(
    summary: dict[str, Any], families: list[str], default: str, tool_default: str, no_heal: bool
) -> str:
    """MET / NOT MET for each target of issue 14, on the arm a user gets by default (values, healed where
    the library heals)."""
    fams, tools, targets = summary["families"], summary["tools"], summary["targets"]
    lines = ["Targets:"]

    def check(key: str, ok: bool | None, text: str) -> None:
        targets[key] = ok
        lines.append(f"- {text}: {'n/a' if ok is None else ('MET' if ok else 'NOT MET')}")

    for fam in families:
        con, free = fams[fam].get(default), fams[fam].get("unconstrained")
        if con and free:
            check(
                f"constrained >= unconstrained: {fam}",
                con["right"] >= free["right"],
                f"{fam}: constrained ({default}) {con['right']}/{con['n']} >= unconstrained {free['right']}/{free['n']}",
            )
    if no_heal:
        check(
            "healing never worse in total", None, "healing never worse in total (no healing in this querylm)"
        )
    else:
        for c in ("values", "tokens"):
            on = sum(fams[f].get(f"{c}, heal", {}).get("right", 0) for f in families)
            off = sum(fams[f].get(f"{c}, no heal", {}).get("right", 0) for f in families)
            check(
                f"healing never worse in total: {c}",
                on >= off,
                f"{c}: right with healing {on} >= without {off}",
            )
    t = tools.get(tool_default)
    if t:
        check(
            "tools: right tool >= 85 %",
            t["right tool %"] >= 85,
            f"tools ({tool_default}): right tool {t['right tool %']} % >= 85 %",
        )
        check(
            "tools: args exact >= 60 %",
            t["args exact %"] >= 60,
            f"tools ({tool_default}): arguments exactly right {t['args exact %']} % >= 60 %",
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model id (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ITEMS} items per family, {QUICK_TOOL_TASKS} tool tasks"
    )
    ap.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated, of: " + ", ".join(FAMILIES)
    )
    ap.add_argument("--per-family", type=int, default=None, help="only the first N items of each family")
    ap.add_argument("--tool-tasks", type=int, default=None, help="only the first N tool tasks")
    ap.add_argument("--no-tools", action="store_true", help="skip the tool tasks")
    ap.add_argument("--tools-only", action="store_true", help="only the tool tasks")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per batch (querylm.map)")
    ap.add_argument("--json", default=None, help="write every answer and the summary here, as it goes")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        ap.error(f"unknown families {unknown}: choose from {FAMILIES}")
    if args.no_tools and args.tools_only:
        ap.error("--no-tools and --tools-only contradict each other")
    if args.tools_only:
        families = []
    per_family = args.per_family if args.per_family is not None else (QUICK_ITEMS if args.quick else None)
    n_tools = args.tool_tasks if args.tool_tasks is not None else (QUICK_TOOL_TASKS if args.quick else None)

    has_heal = "heal" in inspect.signature(querylm.run).parameters
    arms, missing = arms_for(has_heal)
    tool_arms = TOOL_ARMS
    items = load_items(families, per_family)
    bench = _tool_calls()
    tasks: list[tuple[str, str, dict[str, Any]]] = []
    if not args.no_tools:
        expected = json.loads((DATA / "tool_args.json").read_text(encoding="utf-8"))
        tasks = [(q, name, expected[q]) for q, name in bench.TASKS[:n_tools]]

    import torch
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)

    backend = resolve(args.model)
    registry = ToolRegistry(bench.TOOLS)
    agents = make_agents(backend, registry, tool_arms)
    system = next(iter(agents.values())).format.system_prompt(registry, "") if agents else ""
    meta = {
        "model": backend.name,
        "querylm": getattr(querylm, "__version__", "?"),
        "healing": has_heal,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "arms": [a.name for a in arms],
        "tool arms": [a.name for a in tool_arms],
        "torch threads": torch.get_num_threads(),
    }
    print(f"model {backend.name}, healing {'on/off' if has_heal else 'not in this querylm'}", file=sys.stderr)
    results: list[dict[str, Any]] = []
    names = ([a.name for a in arms], missing)
    tool_names = [a.name for a in tool_arms]

    def save() -> None:
        if args.json:
            _, summary = report(results, families, names, tool_names)
            Path(args.json).write_text(
                json.dumps({"meta": meta, "summary": summary, "results": results}, indent=1, default=str),
                encoding="utf-8",
            )

    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault((item["family"], item["lmql_style"]), []).append(item)
    steps = len(groups) * len(arms) + (len(tasks) * (len(tool_arms) - 1) + 1 if tasks else 0)
    with tqdm(total=steps, desc="quality", file=sys.stderr, unit="step") as bar:
        for (fam, style), group in groups.items():
            done: dict[str, list[dict[str, Any]]] = {}
            for arm in arms:
                bar.set_postfix_str(f"{fam} {'lmql style' if style else 'plain'}: {arm.name}")
                twin = done.get(Arm("values", arm.heal).name) if arm.choices == "tokens" else None
                rows = (twin is not None and same_as(twin, arm)) or run_group(
                    backend, group, arm, args.batch_size
                )
                done[arm.name] = rows
                results.extend(rows)
                bar.update()
                save()
        for task in tasks:
            for arm in tool_arms[:-1]:
                bar.set_postfix_str(f"tools: {arm.name}")
                results.append(run_tool_task(bench, agents, registry, task, arm))
                bar.update()
            save()
        if tasks:
            bar.set_postfix_str("tools: unconstrained")
            results.extend(
                run_free_tools(bench, backend, system, registry, tasks, tool_arms[-1], args.batch_size)
            )
            bar.update()
            save()
    text, summary = report(results, families, names, tool_names)
    print(
        f"{len(items)} items, {len(tasks)} tool tasks, model {backend.name}, querylm healing: "
        f"{'yes' if has_heal else 'no'}\n"
    )
    print(text)
    save()
    return {"meta": meta, "summary": summary, "results": results}


if __name__ == "__main__":
    main()

"""An agent that answers questions over a folder of your own markdown notes, on the local default model.

Nothing leaves the machine: the notes are searched by a plain keyword tool, the model reads what the
search returns and answers from it. The note names the model may open are an enum built from the folder,
so it can't ask for a file that does not exist (or one outside the folder).
Run: python examples/agent_notes.py "When is my dentist appointment?" [folder]

(No ``from __future__ import annotations`` here: the tools are defined inside a function, and their
argument types must be real objects, not strings, for their schemas to be built.)
"""

import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

import querylm

NOTES = Path(__file__).resolve().parent / "notes"
WORD = re.compile(r"[a-z0-9]+")
STOP = {
    "the",
    "a",
    "an",
    "is",
    "my",
    "of",
    "in",
    "on",
    "to",
    "and",
    "what",
    "when",
    "where",
    "which",
    "do",
    "i",
    "it",
}


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if w not in STOP}


def notes_tools(folder: Path = NOTES) -> querylm.ToolRegistry:
    """A registry over one folder: search (keyword overlap, best lines first) and read (by name)."""
    files = {p.stem: p for p in sorted(folder.glob("*.md"))}
    Name = Literal[tuple(files)]  # type: ignore[valid-type]

    @querylm.tool(read_only=True)
    def search_notes(query: Annotated[str, Field(min_length=2, max_length=60)]) -> list[dict[str, str]]:
        """Search my notes for lines about a topic.

        Args:
            query: Words to look for, e.g. "dentist appointment".
        """
        want = words(query)
        hits = []
        for name, path in files.items():
            for line in path.read_text(encoding="utf-8").splitlines():
                score = len(want & words(line)) + (2 if want & words(name) else 0)
                if line.strip() and not line.startswith("#") and score:
                    hits.append((score, name, line.strip()))
        hits.sort(key=lambda h: -h[0])
        return [{"note": n, "line": line} for _, n, line in hits[:3]]

    @querylm.tool(read_only=True)
    def read_note(name: Name) -> str:  # type: ignore[valid-type]
        """Read one of my notes in full.

        Args:
            name: The note's name.
        """
        return files[name].read_text(encoding="utf-8")

    return querylm.ToolRegistry([search_notes, read_note])


def make_agent(model: object = None, folder: Path = NOTES) -> querylm.Agent:
    return querylm.Agent(
        model=model,
        tools=notes_tools(folder),
        instructions="Answer questions about my notes. Search them first, then answer in one sentence.",
        tool_choice="search_notes",  # the first turn searches; then the model may read or answer
        max_turns=3,
        max_turn_tokens=64,
    )


def main(question: str, model: object = None, folder: Path = NOTES) -> querylm.AgentResult:
    result = None
    for event in make_agent(model, folder).stream(question):
        if event.type == "token":
            print(event.text, end="", flush=True)
        elif event.type == "tool_result":
            print(f"\n  -> {event.name}: {event.result.content}")
        elif event.type == "turn_end":
            print()
        elif event.type == "final":
            result = event.result
    assert result is not None
    print(f"[{result.stopped_by}: {result.turns} turns, {len(result.tool_results)} tool calls]")
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    folder = Path(args[1]) if len(args) > 1 else NOTES
    main(args[0] if args else "When is my dentist appointment?", folder=folder)

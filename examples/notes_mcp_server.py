"""A file-search MCP server over a folder of markdown notes, written with the official mcp SDK (no
querylm in it): any MCP client can use it, querylm's agent included (examples/agent_mcp.py).

Tools: ``search_notes`` (lines sharing words with a query, best first) and ``read_note`` (a note in full,
by name; names outside the folder are refused). Both are marked read-only.
Run: python examples/notes_mcp_server.py [folder]   (speaks MCP on stdin/stdout)
"""

import re
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

FOLDER = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "notes").resolve()
WORD = re.compile(r"[a-z0-9]+")
COMMON = {"the", "a", "an", "is", "my", "of", "in", "on", "to", "and", "what", "when", "where", "do", "i"}
READ_ONLY = ToolAnnotations(read_only_hint=True)

server = MCPServer("notes", instructions=f"Search and read the markdown notes in {FOLDER.name}/.")


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower())) - COMMON


@server.tool(annotations=READ_ONLY)
def search_notes(query: str) -> str:
    """Search my notes for lines about a topic, best matches first.

    Args:
        query: Words to look for, e.g. "dentist appointment".
    """
    want = words(query)
    hits = []
    for path in sorted(FOLDER.glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            score = len(want & words(line)) + 2 * len(want & words(path.stem))
            if score and line.strip() and not line.startswith("#"):
                hits.append((-score, path.stem, line.strip()))
    if not hits:
        return "no note mentions that"
    return "\n".join(f"{name}: {line}" for _, name, line in sorted(hits)[:3])


@server.tool(annotations=READ_ONLY)
def read_note(name: str) -> str:
    """Read one of my notes in full.

    Args:
        name: The note's name, as search_notes shows it (e.g. "dentist").
    """
    path = (FOLDER / f"{name}.md").resolve()
    if path.parent != FOLDER or not path.is_file():
        notes = ", ".join(p.stem for p in sorted(FOLDER.glob("*.md")))
        raise ToolError(f"there is no note {name!r} (the notes: {notes})")
    return path.read_text(encoding="utf-8")


if __name__ == "__main__":
    server.run()

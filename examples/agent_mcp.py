"""An agent over a folder of notes whose tools come from an MCP server, on the local default model.

examples/notes_mcp_server.py (written with the mcp SDK) is started as a subprocess over stdio; querylm
lists its tools and hands them to the agent like Python tools: each call is generated under the union
grammar of their schemas, validated with jsonschema, then sent to the server. The server's process ends
when the registry is closed (the ``with`` block).
Run: python examples/agent_mcp.py "When is my dentist appointment?" [folder]
"""

import sys
from pathlib import Path

import querylm

HERE = Path(__file__).resolve().parent
NOTES = HERE / "notes"


def main(question: str, model: object = None, folder: Path = NOTES) -> querylm.AgentResult:
    server = [sys.executable, str(HERE / "notes_mcp_server.py"), str(folder)]
    with querylm.ToolRegistry.from_mcp(server, timeout=10) as tools:
        print(f"[MCP tools: {', '.join(tools.names)}]")
        agent = querylm.Agent(
            model=model,
            tools=tools,
            instructions="Answer questions about my notes. Search them first, then answer in one sentence.",
            tool_choice="search_notes",  # the first turn searches, the second answers
            max_turns=2,
            max_turn_tokens=64,
        )
        result = agent.run(question)
    for r in result.tool_results:
        print(f"  -> {r.name}({r.call.arguments if r.call else ''}): {r.content}")
    print(result.output)
    print(f"[{result.stopped_by}: {result.turns} turns, {len(result.tool_results)} tool calls]")
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0] if args else "When is my dentist appointment?",
        folder=Path(args[1]) if len(args) > 1 else NOTES,
    )

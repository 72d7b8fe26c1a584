"""What the tests serve with ``querylm mcp serve tests/mcp_serve_target.py``: a registry's tools and a
``@query`` function (on the random model, so no model weights are needed)."""

from __future__ import annotations

import querylm

tools = querylm.ToolRegistry()


@tools.tool(read_only=True)
def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count.
    """
    print("counting")  # stdout is the protocol while serving: this must not reach the client
    return len(text.split())


@tools.tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


@querylm.query(model="random")
def pick_number(topic: str, most: int = 99):
    """lmql
    "Q: A number about {topic}?\\nA: [N: int]" where N < most
    return N
    """

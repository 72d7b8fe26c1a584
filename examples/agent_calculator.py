"""A calculator and unit-conversion agent on the embedded default model (SmolLM2-135M-Instruct).

Every call the model makes is generated under the grammar of these tools' schemas, so it parses, names a
real tool and has arguments of the right types: numbers are numbers, and the operator and the units are
enums (the model can't invent "x" or "kilograms"). Run: python examples/agent_calculator.py "How many pounds is 12 kg?"
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from typing import Literal

import querylm

Unit = Literal["km", "mi", "m", "ft", "kg", "lb", "g", "oz", "c", "f", "l", "gal"]

# Each unit as (dimension, factor to the base unit, offset): temperatures need the offset.
UNITS: dict[str, tuple[str, float, float]] = {
    "km": ("length", 1000.0, 0.0), "mi": ("length", 1609.344, 0.0), "m": ("length", 1.0, 0.0),
    "ft": ("length", 0.3048, 0.0), "kg": ("mass", 1.0, 0.0), "lb": ("mass", 0.45359237, 0.0),
    "g": ("mass", 0.001, 0.0), "oz": ("mass", 0.028349523125, 0.0), "c": ("temperature", 1.0, 0.0),
    "f": ("temperature", 5 / 9, -32.0), "l": ("volume", 1.0, 0.0), "gal": ("volume", 3.785411784, 0.0),
}  # fmt: skip


Operator = Literal["+", "-", "*", "/", "**"]
OPS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
}


@querylm.tool(read_only=True)
def calculate(a: float, op: Operator, b: float) -> float:
    """Calculate a op b, for example 37 * 43 or 2 ** 10.

    Args:
        a: The first number.
        op: The operator: +, -, *, / or **.
        b: The second number.
    """
    if op == "**" and abs(b) > 100:
        raise ValueError("exponent too large")
    return round(OPS[op](a, b), 6)  # dividing by zero comes back to the model as an error result


@querylm.tool(read_only=True)
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> float:
    """Convert a quantity from one unit to another (length, mass, temperature, volume).

    Args:
        value: The quantity to convert.
        from_unit: The unit it is in.
        to_unit: The unit to convert it to.
    """
    dim_a, fa, oa = UNITS[from_unit]
    dim_b, fb, ob = UNITS[to_unit]
    if dim_a != dim_b:
        raise ValueError(f"can't convert {dim_a} ({from_unit}) to {dim_b} ({to_unit})")
    return round((value + oa) * fa / fb - ob, 4)


def make_agent(model: object = None) -> querylm.Agent:
    tools = querylm.ToolRegistry([calculate, convert_units])
    # A forced call on the first turn (the model answers arithmetic from memory otherwise, wrongly),
    # then the answer from the result (a 135M model chains a second call poorly: max_turns=2).
    return querylm.Agent(model=model, tools=tools, tool_choice="required", max_turns=2, max_turn_tokens=64)


def main(question: str, model: object = None) -> querylm.AgentResult:
    agent = make_agent(model)
    for event in agent.stream(question):
        if event.type == "token":
            print(event.text, end="", flush=True)
        elif event.type == "tool_result":
            print(f"\n  -> {event.name}: {event.result.content}")
        elif event.type == "turn_end":
            print()
    result = event.result
    print(
        f"[{result.stopped_by}: {result.turns} turns, {len(result.tool_results)} tool calls, {result.tokens} tokens]"
    )
    return result


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is 37 times 43?")

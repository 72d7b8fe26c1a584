"""Queries as Python functions: ``@querylm.query`` turns a function whose docstring is a query into a
function that runs it (its parameters are the query's inputs). One sync, one async, and one query used
as a hole's type inside another (a nested query: its prompt is decoded in place, then only its return
value stays in the outer prompt).

Run: python examples/function_form.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import querylm


@querylm.query
def capital(country: str):
    """lmql
    "{:user} What is the capital of {country}?"
    "{:assistant} The capital of {country} is[CITY]" where STOPS_BEFORE(CITY, ".") and len(TOKENS(CITY)) < 8
    return CITY.strip()
    """


@querylm.query
async def opposite(word: str):
    """lmql
    "{:user} What is the opposite of '{word}'? Answer with one word."
    "{:assistant} The opposite of '{word}' is '[OPPOSITE]'" where REGEX(OPPOSITE, r"[A-Za-z]+") and len(TOKENS(OPPOSITE)) < 5
    return OPPOSITE
    """


@querylm.query
def step_by_step():
    """lmql
    "Let's think step by step.[REASONING]" where STOPS_AT(REASONING, ".") and len(TOKENS(REASONING)) < 24
    " So the answer is[ANSWER]" where STOPS_BEFORE(ANSWER, ".") and len(TOKENS(ANSWER)) < 8
    return ANSWER.strip()
    """


@querylm.query
def solve(question: str):
    """lmql
    "{:user} {question}"
    "{:assistant} [ANSWER: step_by_step]"
    return ANSWER
    """


def main() -> dict[str, Any]:
    city = capital("France")  # a sync query function returns what its query returns
    print(f"capital('France') = {city!r}")
    word = asyncio.run(opposite("hot"))  # an async one is awaited
    print(f"opposite('hot') = {word!r}")
    # .run() gives the whole QueryResult: of the nested query's prompt only its return value remains.
    result = solve.run("Tom has 3 apples and buys 2 more. How many apples does he have?")
    print(f"solve(...) = {result.return_value!r}")
    print(f"its prompt: {result.prompt!r}")
    return {"capital": city, "opposite": word, "solve": result}


if __name__ == "__main__":
    results = main()

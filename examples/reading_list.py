"""Reading-list triage: label each article read-now / later / skip and summarise it in one sentence,
then file it with a tool call, on the local default model.

The label is a typed hole (the model can only write one of the three labels). Filing is a tool-call
hole: ``[FILED: shelf.fix(title=..., label=LABEL)]`` is generated under the grammar of the ``shelve``
tool's schema with the title and the label already chosen, so the model writes only the summary (one
sentence, by the schema's pattern); the runtime runs the call and binds its ToolResult.
Run: python examples/reading_list.py
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

import querylm

Label = Literal["read-now", "later", "skip"]
LABELS: tuple[str, ...] = ("read-now", "later", "skip")


@dataclass
class Article:
    title: str
    text: str


ARTICLES = [
    Article(
        "Your train to Lyon leaves from platform 4",
        "Tomorrow's 8:05 train to Lyon leaves from platform 4, not 7. Boarding closes two minutes before.",
    ),
    Article(
        "A history of the paperclip",
        "The paperclip was patented many times in the 1890s; the Gem design won without ever being patented.",
    ),
    Article(
        "Ten celebrity diets ranked",
        "We asked ten celebrities what they eat for breakfast and ranked their answers by colour.",
    ),
]

SENTENCE = r"^[A-Z][^.!?\n]*[.!?]$"
"""One sentence: a capital first, one end mark last, none and no newline in between."""

SHELF: dict[str, list[str]] = {label: [] for label in LABELS}


@querylm.tool
def shelve(
    title: Annotated[str, Field(max_length=80)],
    label: Label,
    summary: Annotated[str, Field(pattern=SENTENCE, max_length=160)],
) -> str:
    """File an article on the reading list.

    Args:
        title: The article's title.
        label: read-now, later or skip.
        summary: One sentence about the article.
    """
    SHELF[label].append(title)
    return f"filed under {label}"


TRIAGE = r"""
"{:system}You triage the user's reading list. Urgent practical news is read-now, interesting "
"reading is later, gossip and clickbait is skip."
"{:user}Title: {article.title}\n{article.text}\n\nShould I read it now, later, or skip it?{:assistant}"
"[LABEL: Label]"
"{:user}File it with a one-sentence summary.{:assistant}"
"[FILED: shelf.fix(title=article.title, label=LABEL)]"
return LABEL, FILED
"""


def triage(article: Article, model: object = None) -> tuple[str, querylm.ToolResult]:
    shelf = querylm.ToolRegistry([shelve]).only("shelve")
    result = querylm.run(TRIAGE, model=model, article=article, shelf=shelf, Label=Label)
    return result.return_value


def main(model: object = None) -> list[tuple[str, querylm.ToolResult]]:
    rows = []
    for article in ARTICLES:
        label, filed = triage(article, model=model)
        rows.append((label, filed))
        summary = filed.call.arguments["summary"] if filed.call else ""
        print(f"[{label:8}] {article.title}\n           {summary}\n           -> {filed.content}")
    return rows


if __name__ == "__main__":
    main()

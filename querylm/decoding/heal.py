"""Token healing: a hole right after prompt text starts one token early.

A prompt is tokenized on its own, so it ends at a token boundary the model would rarely have chosen:
"Sentiment:" + " positive" is written by the model as ":" " positive", but a prompt ending in "... "
leaves the value to start without its space, where a small model is lost ("README: a hole right after
a space"). Healing backs off the prompt's last token and makes the hole's grammar start with that text
(``HoleConstraint.heal``), so the value's first token may be any token that writes it again and goes on
(" positive" after "Sentiment:", with the space). The prompt's text never changes, and the value the
user sees excludes the healed text.

Only the last token of plain prompt text the user wrote, right before the hole, is backed off: never
a special token or a chat template's role transition (they are not text the model could write again),
nor a previous hole's value (that is decided), nor the only token of the sequence (the model needs
something to condition on).

llguidance has token healing of its own (``LLInterpreter.process_prompt``), but on the interpreter
API, which owns the whole prompt and decides how far to back off by itself; querylm drives
``LLMatcher``s (several AND-ed per hole, forked for beams) and must not back off across a role tag or
a previous value, so it backs off here and gives the grammars the text as a literal prefix.

A hole with a token budget (``len(TOKENS(X))``, ``HoleConstraint.counts_tokens``) is not healed:
the budget counts the tokens the model writes for the value, and a healed first token is partly the
prompt's, so the value alone tokenizes otherwise, most often longer (" seventeenth" is one token,
"seventeenth" three): LMQL's own programs count a value by re-tokenizing it, and healing under a
budget broke their bounds. ``inside`` tells the tokens that only write the healed text again, which
the hole's record does not count as the value's.
"""

from __future__ import annotations

from collections.abc import Callable

from ..backends.base import Backend


def backoff(backend: Backend, ids: list[int], *, before: int) -> tuple[list[int], str]:
    """``ids`` (the tokens of the prompt text right before a hole) without their last token, and that
    token's text for the hole to write again; ``ids`` as they are and "" when it can't be healed.
    ``before``: how many tokens the sequence holds before ``ids``."""
    if not ids or before + len(ids) < 2:
        return ids, ""
    last = ids[-1]
    vocab = backend.ll_tokenizer
    if vocab.is_special_token(last) or last in backend.eos_ids:
        return ids, ""
    raw = vocab.decode_bytes([last])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # part of a character: the grammar can only start at a whole one
        return ids, ""
    return ids[:-1], text


def inside(backend: Backend, heal: str, tokens: list[int]) -> int:
    """How many of a value's first ``tokens`` lie wholly inside its healed text ``heal``: they write the
    prompt again, not the value, so the value's count of tokens leaves them out."""
    if not heal:
        return 0
    room = len(heal.encode("utf-8"))
    n = used = 0
    for t in tokens:
        used += len(backend.ll_tokenizer.decode_bytes([t]))
        if used > room:
            break
        n += 1
    return n


def value_pieces(pieces: list[str], heal: str) -> list[str]:
    """The value's tokens as strings (``TOKENS(X)``) from the strings of the tokens generated for it: the
    ones inside the healed text left out, and the healed part of the first token cut off."""
    left = len(heal)
    out = []
    for p in pieces:
        if left >= len(p) and left:
            left -= len(p)
            continue
        out.append(p[left:])
        left = 0
    return out


def streamed(heal: str, emit: Callable[[str], None]) -> Callable[[str], None]:
    """``emit`` for a value's streamed text, which starts with the healed text: the prompt has already
    streamed that, so it is dropped once."""
    if not heal:
        return emit
    left = [len(heal)]

    def out(text: str) -> None:
        cut = min(left[0], len(text))
        left[0] -= cut
        if text[cut:]:
            emit(text[cut:])

    return out

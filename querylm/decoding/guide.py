"""Guiding the tokens of generated JSON past what the mask decides: the mask keeps every value valid,
and a small model still writes valid values that are wrong. At each chosen token the guide may revise
it into a run of tokens the grammar accepts (checked on a fork of the matcher before anything is
written, so no constraint is ever violated); where a rule has nothing the grammar allows, the token
stands. The rules, each at a point the JSON text says (``jsontext.JsonScan``):

- **Repetition.** A string value whose last tokens repeat a run of it written earlier (at least
  ``REPEAT_TOKENS`` tokens and ``REPEAT_CHARS`` characters: an n-gram too long to recur by chance) is
  ended where its grammar allows: the token is replaced by the model's favourite of the allowed tokens
  that close it (``"``, ``",``, ``"}`` ...). An array whose items start repeating so is marked, and
  closed (``]``) at the first point its grammar allows. (Measured before: a quarter of all tokens of
  tool calls were repeats running on to their bound.)
- **Excluded phrases.** A string value may not come to contain one of ``GuideRules.excluded`` (a tool
  format's closing tag, ``</tool_call>``, which would end the call for any reader that finds calls by
  their tags): the token that would complete it is refused and the next best allowed one taken.
- **Digit groups.** JSON has no ``200,000``: a model writing the number a question gives as "$200,000"
  stops at the comma (200). Numbers written in the prompt with digit-group commas are read the way
  people write them (``$1,250,000`` is 1250000); where a number value ends right after digits that are
  the leading groups of one of them (and no number in the prompt is those digits alone), the rest of
  its digits is written before the token that ends it.
- **Optional keys by scoring.** Where an object may close or take another key (its required keys
  written), the model's token decides both at once, by one token. Instead "close the object" and each
  key the grammar still allows (found by walking the matcher) are scored in full: each with the text
  the grammar forces after it (closing the arguments object forces the call's end; a key its ``": "``),
  so that a model that wants to go on pays for closing. The run's chooser picks among the totals (argmax
  the best; a sample draws by them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints.matcher import Matcher, TokenSet
from .choose import END, Chooser
from .jsontext import JsonScan

REPEAT_TOKENS = 3
REPEAT_CHARS = 10
"""A run repeated inside one string or array counts as repetition from this many tokens and characters
(in dates and codes single digits recur; "2025-06-1" is 9 characters)."""

MAX_KEYS = 16
MAX_KEY_CHARS = 64
MAX_WALK = 400
"""How many keys, of how many characters, the walk for an object's remaining keys looks for, in at
most how many steps."""

GROUPED = re.compile(r"(?<![\d.,])(\d{1,3}(?:,\d{3})+)(\.\d+)?(?![\d,]*\d)")
"""A number written with digit-group commas (1,250,000 or 1,250.50), not part of a longer number."""
PLAIN = re.compile(r"(?<![\d.,])\d+(?![\d,]*\d)")


@dataclass(frozen=True)
class GuideRules:
    """What the guide of one value does (module docstring)."""

    json_after: str = ""
    """The text after which the value is JSON (a tool format's opening tag); "" from its start."""
    excluded: tuple[str, ...] = ()
    """Text a string value may not contain."""
    repetition: bool = True
    digit_groups: bool = True
    optional_keys: bool = True


class JsonGuide:
    """The guide of one value decoded on ``seq`` (its tokens start at ``seq``'s length when made)."""

    def __init__(self, rules: GuideRules, backend: Backend, seq: Sequence):
        self.rules, self.backend, self.seq = rules, backend, seq
        self.first = backend.byte_tables[0]
        self.single = backend.byte_tables[1]
        self.prompt = backend.decode(list(seq.ids)) if rules.digit_groups else ""
        self.groups = grouped_numbers(self.prompt)
        self.ids: list[int] = []
        self.starts: list[int] = []
        self.lengths: list[int] = []
        self.text = ""
        self.scan: JsonScan | None = None
        self._texts: dict[int, str] = {}

    # -- keeping up with the value's text ----------------------------------------------------------------

    def _sync(self, tokens: list[int]) -> None:
        for i in range(len(self.ids), len(tokens)):
            self.starts.append(len(self.backend.decode(tokens[:i]).rstrip("\ufffd")))
            self.lengths.append(len(self.token_text(tokens[i])))
            self.ids.append(tokens[i])
        self.text = self.backend.decode(tokens)
        if self.scan is None:
            after = self.rules.json_after
            if after and not self.text.startswith(after):
                return
            self.scan = JsonScan(len(after))
        self.scan.feed(self.text, len(self.text.rstrip("\ufffd")))

    def token_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = self.backend.decode([token])
        return text

    # -- the revision ------------------------------------------------------------------------------------

    def revise(
        self,
        matcher: Matcher,
        tokens: list[int],
        token: int,
        logits: np.ndarray,
        allowed: TokenSet,
        chooser: Chooser,
        room: int,
    ) -> list[int]:
        """The tokens to write instead of ``token`` (chosen by ``chooser`` from ``allowed`` by
        ``logits``) after the value's ``tokens``, at most ``room`` of them: ``[token]`` where no rule
        applies. ``matcher`` is not changed."""
        self._sync(tokens)
        scan = self.scan
        if scan is None or len(self.text) != len(self.text.rstrip("\ufffd")):
            return [token]
        rules = self.rules
        text = self.token_text(token)
        top = scan.top
        array = top if top is not None and top.kind == "array" else None
        if rules.repetition and array is not None and not array.closing and self._repeats(array.start, token):
            array.closing = True
        if scan.in_value_string():
            assert scan.string is not None
            ends_item = array is not None and array.closing and text.startswith('"')
            if rules.repetition and (ends_item or self._repeats(scan.string, token)):
                closing = self._closing(scan, allowed, '"')
                if closing.any():
                    return [self._pick(chooser, logits, closing, token)]
            if rules.excluded:
                token = self._not_excluded(scan.string, token, logits, allowed, chooser)
            text = self.token_text(token)
            if not text.startswith('"'):  # the string goes on; one that closes may be an object's value
                return [token]
        elif array is not None and array.closing and scan.number is None and not scan.literal:
            closing = self._closing(scan, allowed, "]")
            if closing.any():
                return [self._pick(chooser, logits, closing, token)]
        if rules.digit_groups and scan.number is not None and text[:1] not in "0123456789.eE+-":
            run = self._digit_groups(matcher, scan.number, token)
            if run is not None and len(run) <= room:
                return run
        if rules.optional_keys:
            whole = self.text + text
            event = next((e for e in scan.copy().feed(whole) if e.offset >= len(self.text)), None)
            if event is not None:
                run = self._key_or_close(matcher, whole[len(self.text) : event.offset], logits, chooser)
                if run is not None and len(run) <= room:
                    return run
        return [token]

    def _pick(self, chooser: Chooser, logits: np.ndarray, among: TokenSet, fallback: int) -> int:
        pick = chooser.choose(logits, among)
        return fallback if pick == END else pick

    # -- repetition and excluded phrases ------------------------------------------------------------------

    def _repeats(self, start: int, token: int) -> bool:
        """Whether the tokens from text offset ``start`` on, with ``token``, end in a run of at least
        REPEAT_TOKENS tokens and REPEAT_CHARS characters that occurs earlier among them."""
        inside = [i for i, s in enumerate(self.starts) if s >= start]
        run = [self.ids[i] for i in inside] + [token]
        lengths = [self.lengths[i] for i in inside] + [len(self.token_text(token))]
        chars, m = 0, 0
        while m < len(run) and (m < REPEAT_TOKENS or chars < REPEAT_CHARS):
            m += 1
            chars += lengths[-m]
        if m < REPEAT_TOKENS or chars < REPEAT_CHARS or m >= len(run):
            return False
        tail = run[-m:]
        return any(run[j : j + m] == tail for j in range(len(run) - m))

    def _closing(self, scan: JsonScan, allowed: TokenSet, mark: str) -> TokenSet:
        """The allowed tokens whose text starts with ``mark`` (a string's closing quote, an array's
        bracket), or with the quote and the bracket when the string is an item of an array being closed."""
        chain = mark
        if mark == '"' and len(scan.stack) and scan.stack[-1].kind == "array" and scan.stack[-1].closing:
            chain = '"]'
        ids = allowed.ids
        ids = ids[self.first[ids] == ord(mark)]
        good = [int(t) for t in ids if _leads(self.token_text(int(t)), chain)]
        return TokenSet.of(good, allowed.size)

    def _not_excluded(
        self, start: int, token: int, logits: np.ndarray, allowed: TokenSet, chooser: Chooser
    ) -> int:
        """``token``, or the next best allowed one where it would complete an excluded phrase in the
        string whose content starts at ``start``."""
        refused: list[int] = []
        while self._completes_excluded(start, token):
            refused.append(token)
            rest = TokenSet(allowed.words.copy(), allowed.size)
            rest.discard(refused)
            pick = chooser.choose(logits, rest)
            if pick == END:  # nothing else is allowed (a pattern's last character): it stands
                return refused[0]
            token = pick
        return token

    def _completes_excluded(self, start: int, token: int) -> bool:
        text = (self.text[start:] + self.token_text(token)).replace("\\/", "/")
        return any(p in text for p in self.rules.excluded)

    # -- digit groups ----------------------------------------------------------------------------------

    def _digit_groups(self, matcher: Matcher, start: int, token: int) -> list[int] | None:
        """The rest of a grouped prompt number whose leading groups the number ends after, then
        ``token``; None when no such number fits or the grammar refuses the digits."""
        written = self.text[start:]
        if not written.isdigit() or written in self.groups.plain:
            return None
        for digits, fraction in self.groups.grouped:
            lead = digits.split(",")
            joined = ["".join(lead[:k]) for k in range(1, len(lead))]
            if written in joined:
                rest = digits.replace(",", "")[len(written) :] + fraction
                run = self.backend.encode(rest) + [token]
                if _accepts(matcher, run):
                    return run
        return None

    # -- optional keys ---------------------------------------------------------------------------------

    def _key_or_close(
        self, matcher: Matcher, prefix: str, logits: np.ndarray, chooser: Chooser
    ) -> list[int] | None:
        """At an object that may close or take another key after ``prefix`` (what the chosen token
        writes before its separator or close: a string's closing quote, or nothing), the run of the
        alternative the chooser picks by whole scores; None when there is nothing to choose."""
        close = self.backend.encode(prefix + "}")
        forced = _forced_after(matcher, close)
        if forced is None:  # the object can't close here (a required key is missing): nothing to decide
            return None
        runs, scored = [close], [close + forced]
        for key in self._keys_after(matcher, prefix):
            run = self.backend.encode(f'{prefix}, "{key}":')
            forced = _forced_after(matcher, run)
            if forced is not None:
                runs.append(run)
                scored.append(run + forced)
        if len(runs) < 2:
            return None
        totals = np.array([lp.sum() for lp in self.seq.score(self.backend, scored)])
        pick = chooser.choose(totals, np.arange(len(runs)))
        return runs[int(np.argmax(totals)) if pick == END else pick]

    def _keys_after(self, matcher: Matcher, prefix: str) -> list[str]:
        """The keys the grammar allows after ``prefix`` and a separator, by walking the matcher through
        the tokens it allows (a closed object's keys are a finite set: its properties not yet written;
        the mask engine allows only some tokenizations of each, so the walk is small); none where the
        walk finds more than MAX_KEYS keys or MAX_WALK steps (an open object takes any key)."""
        m = matcher.fork()
        if not _consume(m, self.backend.encode(prefix + ', "')):
            return []
        keys: set[str] = set()
        steps = 0

        def walk(m: Matcher, path: str) -> bool:
            """False once the walk is too large."""
            nonlocal steps
            steps += 1
            ids = m.next_tokens().ids.copy()
            for t in ids:
                text = self.token_text(int(t))
                if text.startswith('"'):
                    keys.add(path)
                    continue
                if steps > MAX_WALK or len(keys) > MAX_KEYS or len(path) > MAX_KEY_CHARS:
                    return False
                sub = m.fork()
                sub.consume(int(t))
                if not walk(sub, path + text):
                    return False
            return True

        return sorted(keys) if walk(m, "") and keys and "" not in keys else []


def _leads(text: str, chain: str) -> bool:
    return text.startswith(chain) or (len(text) < len(chain) and chain.startswith(text))


def _consume(m: Matcher, run: list[int]) -> bool:
    try:
        for t in run:
            m.consume(t)
    except RuntimeError:
        return False
    return True


def _accepts(matcher: Matcher, run: list[int]) -> bool:
    """Whether the grammar takes ``run`` from here (on a fork: ``matcher`` is not changed)."""
    return _consume(matcher.fork(), run)


def _forced_after(matcher: Matcher, run: list[int]) -> list[int] | None:
    """The tokens the grammar forces after ``run``, or None when it refuses ``run``."""
    m = matcher.fork()
    if not _consume(m, run):
        return None
    return m.forced()[:16]


@dataclass(frozen=True)
class PromptNumbers:
    grouped: list[tuple[str, str]]
    """Numbers with digit-group commas: their digits and commas, and a fraction (".50" or "")."""
    plain: frozenset[str]
    """Numbers written without commas (digits only)."""


def grouped_numbers(text: str) -> PromptNumbers:
    """The numbers of ``text`` written with digit-group commas, and those written plainly."""
    grouped = [(m.group(1), m.group(2) or "") for m in GROUPED.finditer(text)]
    plain = frozenset(m.group(0) for m in PLAIN.finditer(text))
    return PromptNumbers(grouped, plain)

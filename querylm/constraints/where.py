"""A where clause → the constraint of one hole.

Each conjunct of the clause (its top-level ``and``) that mentions the hole becomes one of:

- a stop phrase: ``STOPS_AT(X, s)``, ``STOPS_BEFORE(X, s)``;
- a token budget: ``len(TOKENS(X)) <op> n``;
- a language for the mask engine: ``INT``, ``FLOAT``, ``REGEX``, ``GRAMMAR``, ``X in [...]``,
  ``"s" in X``, ``X == v``, ``len(X) <op> n``, ``len(WORDS(X)) <op> n``, and their and/or/not;
- otherwise a Python predicate, checked when the hole closes.

Every conjunct is also re-checked in Python on the finished value (see functions.py). Misused constraint
forms (an unsupported comparison, a stop phrase under ``or``, a bad regex, an unknown grammar) are errors
with the user's position, never dropped.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llguidance

from ..errors import Position, QueryCompileError, UnsupportedError
from ..positions import SourceMap
from . import functions, regex, satisfiable
from .lang import And, Grammar, Lang, NotExpressible, Or, Term, is_regular, to_grammar
from .lang import Not as LNot
from .types import TypedHole

UNKNOWN = object()
"""What a constant evaluates to when we check a query without running it."""

OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==", ast.Gt: ">", ast.GtE: ">="}
FLIP = {"<": ">", "<=": ">=", "==": "==", ">": "<", ">=": "<="}


def _grammar_dir() -> Path:
    """The shipped grammars: ``querylm/grammars`` in a wheel, ``grammars/`` at the top of a source
    checkout (an editable install maps no package onto that folder, for it has no ``__init__.py``)."""
    package = Path(__file__).resolve().parent.parent
    for d in (package / "grammars", package.parent / "grammars"):
        if d.is_dir():
            return d
    return package / "grammars"


GRAMMAR_DIR = _grammar_dir()


@dataclass
class Check:
    """A conjunct evaluated in Python on the finished value."""

    node: ast.expr
    text: str
    position: Position
    masked: bool
    """True when the mask already enforces it (the check is the safety net), False for a predicate
    only Python can decide (a failure then prunes the value)."""


@dataclass
class HoleConstraint:
    hole: str
    regular: Lang | None = None
    """The intersection of the regular parts: one terminal, with the stop phrases folded in."""
    cfgs: list[Lang] = field(default_factory=list)
    """Context-free languages (grammars, JSON): each gets its own matcher, the masks AND-ed."""
    stops_at: list[str] = field(default_factory=list)
    stops_before: list[str] = field(default_factory=list)
    min_tokens: int = 0
    max_tokens: int | None = None
    checks: list[Check] = field(default_factory=list)
    budget_checks: list[Check] = field(default_factory=list)
    """The token budgets, which the decoder enforces on the generated tokens. They join ``checks``
    (catching a value the grammar ended before its minimum) unless a STOPS_BEFORE phrase may be
    dropped: the value is then tokenized anew, and its count is no longer the one decoding saw."""
    labels: list[str] = field(default_factory=list)
    convert: str | None = None
    """"int" / "float" when INT(X) / FLOAT(X) is a conjunct: the query's code then sees a number."""
    stop_after: int = 0
    """LMQL's side conditions on a stop phrase: a phrase ends the value only once the other
    constraints hold. The grammar sees every side condition but a token minimum: with
    ``len(TOKENS(X)) > n``, the value is decoded under ``grammars(staged=True)`` (no stop) for its first
    ``stop_after`` tokens, and then under ``grammars_after`` their text (a phrase may end it)."""
    choices: list[str] | None = None
    """A finite set the value must come from (``X in [...]``, a ``Literal`` or enum type), when one is
    known: a superset of the hole's language (other conjuncts may rule some out), so that the value can
    be decided by scoring each whole value (``decoding/choices.py``) rather than token by token."""
    heal: str = ""
    """Token healing (``decoding/heal.py``): the prompt's last token, backed off; every grammar starts
    with this text, so the value's first token(s) write it again (the value itself excludes it)."""
    line_start: bool = False
    """The hole opens a message or a line: leading whitespace of a whole value is layout the prompt
    already gives (``decoding/choices.py`` scores the value without it)."""

    @property
    def description(self) -> str:
        return " and ".join(self.labels) if self.labels else "(no constraint)"

    @property
    def counts_tokens(self) -> bool:
        """Whether a token budget (``len(TOKENS(X))``) bounds the value. Such a hole is not healed: its
        budget counts the tokens the model writes for the value, and a healed first token is partly
        the prompt's, so the value alone would be tokenized differently (and often longer: " Saint"
        is one token, "Saint" without its space two) than what the budget counted."""
        return self.max_tokens is not None or self.min_tokens > 0

    @property
    def side_conditioned(self) -> bool:
        """Whether a stop phrase waits for other constraints (LMQL's side conditions)."""
        return bool(self.stops_at or self.stops_before) and (self.regular is not None or self.stop_after > 0)

    def grammars(self, *, staged: bool = False) -> list[str]:
        """llguidance grammars (TopLevelGrammar JSON) whose masks are AND-ed; empty = unmasked.
        ``staged``: the caller switches to ``grammars_after`` once ``stop_after`` tokens are made."""
        if self.stop_after and not staged:
            raise UnsupportedError(
                f"a stop phrase that waits for a token minimum ({self.description}) is decoded only by "
                "the argmax and sample decoders on a local or random model"
            )
        heal = self.heal
        out = [to_grammar(g, [], [], heal=heal) for g in self.cfgs]
        if self.stop_after:
            if self.regular is not None:
                out.append(to_grammar(self.regular, [], [], heal=heal))
        elif self.regular is not None or self.stops_at or self.stops_before:
            out.append(to_grammar(self.regular, self.stops_at, self.stops_before, heal=heal))
        if heal and not out:  # free text, after the healed text
            out.append(to_grammar(None, [], [], heal=heal))
        return out

    def cut(self, text: str, last_token_start: int) -> str:
        """A side-conditioned value as LMQL cuts it: at the earliest phrase that ends inside the last
        token's text (kept for STOPS_AT, dropped for STOPS_BEFORE); a value that ended otherwise is
        left as it is. ``'abc",'`` under STOPS_BEFORE ``'"'`` and ``','`` is ``'abc'``. Phrases starting
        at the same place: a STOPS_BEFORE one wins (it is dropped), as when the value merely ends in it."""
        best: tuple[int, int] | None = None  # (start, end of what is kept)
        for phrases, keep in ((self.stops_before, False), (self.stops_at, True)):
            for p in phrases:
                i = text.find(p, max(0, last_token_start - len(p) + 1))
                if i >= 0 and (best is None or i < best[0]):
                    best = (i, i + len(p) if keep else i)
        return text if best is None else text[: best[1]]

    def grammars_after(self, prefix: str) -> list[str]:
        """The grammars once the first ``stop_after`` tokens, ``prefix``, are made: a phrase ending
        after them ends the value where the other constraints hold (a token minimum: never healed)."""
        out = [to_grammar(g, [], []) for g in self.cfgs]
        out.append(to_grammar(self.regular, self.stops_at, self.stops_before, prefix=prefix))
        return out

    def add_lang(self, lang: Lang) -> None:
        if is_regular(lang):
            self.regular = _and(self.regular, lang)
        else:
            self.cfgs.append(lang)


def conjuncts(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [c for v in node.values for c in conjuncts(v)]
    return [node]


def names_in(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _NotMaskable(Exception):
    """This part is a Python predicate: check it when the hole closes."""


class Classifier:
    """Classifies the conjuncts of one hole. ``evaluate`` gives the value of an expression that does not
    mention the hole (UNKNOWN when checking a query without running it)."""

    def __init__(
        self,
        hole: str,
        smap: SourceMap,
        evaluate: Callable[[ast.expr], Any],
        base_dir: Path | None = None,
    ):
        self.hole = hole
        self.smap = smap
        self.evaluate = evaluate
        self.base_dir = base_dir

    # -- helpers ------------------------------------------------------------------------------------

    def err(self, message: str, node: ast.AST) -> QueryCompileError:
        return QueryCompileError(message, self.smap.of(node))

    def is_hole(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and node.id == self.hole

    def call_of(self, node: ast.AST, *names: str) -> str | None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            return node.func.id
        return None

    def value(self, node: ast.expr) -> Any:
        return self.evaluate(node)

    def hole_arg(self, call: ast.Call, nargs: int) -> None:
        fn = call.func.id  # type: ignore[attr-defined]
        if len(call.args) != nargs or call.keywords:
            want = "X" if nargs == 1 else "X, " + ", ".join(["value"] * (nargs - 1))
            raise self.err(f"{fn} takes {nargs} argument{'s' * (nargs > 1)}: {fn}({want})", call)
        if not isinstance(call.args[0], ast.Name):
            raise self.err(f"the first argument of {fn} must be a hole variable", call.args[0])

    # -- the conjunct level -------------------------------------------------------------------------

    def add(self, hc: HoleConstraint, node: ast.expr) -> None:
        text = ast.unparse(node)
        hc.labels.append(text)
        stop = self.call_of(node, "STOPS_AT", "STOPS_BEFORE")
        if stop:
            assert isinstance(node, ast.Call)
            self.hole_arg(node, 2)
            phrases = self.phrases(node.args[1])
            (hc.stops_at if stop == "STOPS_AT" else hc.stops_before).extend(phrases)
            hc.checks.append(Check(node, text, self.smap.of(node), True))
            return
        budget = self.token_budget(node)
        if budget is not None:
            lo, hi = budget
            hc.min_tokens = max(hc.min_tokens, lo)
            hc.max_tokens = hi if hc.max_tokens is None or hi is None else min(hc.max_tokens, hi)
            if hc.max_tokens is None and hi is not None:
                hc.max_tokens = hi
            hc.budget_checks.append(Check(node, text, self.smap.of(node), True))
            return
        try:
            lang = self.lang(node)
        except _NotMaskable:
            hc.checks.append(Check(node, text, self.smap.of(node), False))
            return
        if hc.choices is None and self.choice_list(node):
            assert isinstance(node, ast.Compare)
            hc.choices = self.choices(self.value(node.comparators[0]), node.comparators[0])
        hc.checks.append(Check(_as_text_check(node, self.hole), text, self.smap.of(node), True))
        if lang is not None:
            hc.add_lang(lang)
        fn = self.call_of(node, "INT", "FLOAT")
        if fn and self.is_hole(node.args[0]) and hc.convert != "int":  # type: ignore[attr-defined]
            hc.convert = fn.lower()  # INT and FLOAT: the text is an integer, and stays an int

    def phrases(self, node: ast.expr) -> list[str]:
        val = self.value(node)
        if val is UNKNOWN:
            return []
        if isinstance(val, str):
            vals = [val]
        elif isinstance(val, (list, tuple)) and all(isinstance(v, str) for v in val):
            vals = list(val)
        else:
            raise self.err(f"a stop phrase must be a string, not {type(val).__name__}", node)
        if any(v == "" for v in vals):
            raise self.err("a stop phrase can't be empty", node)
        return vals

    def token_budget(self, node: ast.expr) -> tuple[int, int | None] | None:
        found = self.len_compare(node, "TOKENS")
        if found is None:
            return None
        op, n = found
        if n is UNKNOWN:
            return (0, None)
        return regex.bounds(op, n)

    def len_compare(self, node: ast.expr, inner: str | None) -> tuple[str, Any] | None:
        """``(op, n)`` if ``node`` is ``len(<inner>(X)) <op> n`` (or ``len(X)`` when ``inner`` is None)."""
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            return None
        left, right = node.left, node.comparators[0]
        op_t = type(node.ops[0])
        if self.is_len(right, inner) and not self.is_len(left, inner):
            left, right = right, left
            flipped = True
        elif self.is_len(left, inner):
            flipped = False
        else:
            return None
        if op_t not in OPS:
            sym = {ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}.get(
                op_t, "?"
            )
            raise self.err(
                f"unsupported comparison '{sym}' for {ast.unparse(left)}: use <, <=, ==, > or >=", node
            )
        if self.hole in names_in(right):  # len(set(X)) == len(X): a predicate on the value, not a bound
            return None
        op = FLIP[OPS[op_t]] if flipped else OPS[op_t]
        n = self.value(right)
        if n is not UNKNOWN and (not isinstance(n, int) or isinstance(n, bool)):
            raise self.err(
                f"{ast.unparse(left)} must be compared with an integer, not {type(n).__name__}", right
            )
        return op, n

    def choice_list(self, node: ast.expr) -> bool:
        """Whether ``node`` is ``X in [known values]`` (a conjunct that makes the value one of them)."""
        return (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In)
            and self.is_hole(node.left)
            and self.hole not in names_in(node.comparators[0])
            and self.value(node.comparators[0]) is not UNKNOWN
        )

    def is_len(self, node: ast.expr, inner: str | None) -> bool:
        if not (self.call_of(node, "len") and len(node.args) == 1):  # type: ignore[attr-defined]
            return False
        arg = node.args[0]  # type: ignore[attr-defined]
        if inner is None:
            return self.is_hole(arg)
        if self.call_of(arg, inner):
            self.hole_arg(arg, 1)
            return self.is_hole(arg.args[0])
        return False

    # -- the language level -------------------------------------------------------------------------

    def lang(self, node: ast.expr) -> Lang | None:
        """The language ``node`` restricts the hole to; None when it only reads other values."""
        if self.hole not in names_in(node):
            return None
        if isinstance(node, ast.BoolOp):
            parts = tuple(self.sub(v) for v in node.values)
            return And(parts) if isinstance(node.op, ast.And) else Or(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.sub(node.operand)
            if not is_regular(inner):
                raise self.err("'not' can't be applied to a grammar or JSON constraint", node)
            return LNot(inner)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        raise _NotMaskable

    def sub(self, node: ast.expr) -> Lang:
        if self.call_of(node, "STOPS_AT", "STOPS_BEFORE"):
            raise self.err(f"{node.func.id} can only be joined to other constraints with 'and'", node)  # type: ignore[attr-defined]
        if self.len_compare(node, "TOKENS") is not None:
            raise self.err("len(TOKENS(...)) can only be joined to other constraints with 'and'", node)
        lang = self.lang(node)
        if lang is None:
            raise _NotMaskable
        return lang

    def call(self, node: ast.Call) -> Lang:
        fn = self.call_of(node, "INT", "FLOAT", "REGEX", "GRAMMAR")
        if fn is None:
            if self.call_of(node, "STOPS_AT", "STOPS_BEFORE", "TOKENS", "WORDS"):
                raise self.err(f"{node.func.id}(...) is not a constraint on its own here", node)  # type: ignore[attr-defined]
            raise _NotMaskable
        if fn in ("INT", "FLOAT"):
            self.hole_arg(node, 1)
            if not self.is_hole(node.args[0]):
                raise _NotMaskable
            return Term(regex.INT if fn == "INT" else regex.FLOAT)
        self.hole_arg(node, 2)
        if not self.is_hole(node.args[0]):
            raise _NotMaskable
        arg = self.value(node.args[1])
        if arg is UNKNOWN:
            return Term(regex.ANY)
        if not isinstance(arg, str):
            raise self.err(f"{fn} takes a string, not {type(arg).__name__}", node.args[1])
        if fn == "REGEX":
            return Term(self.checked_regex(arg, node.args[1]))
        return self.grammar(arg, node.args[1])

    def checked_regex(self, pattern: str, node: ast.expr) -> str:
        try:
            re.compile(pattern)
        except re.error as e:
            raise self.err(f"invalid regular expression: {e}", node) from None
        body = _slash_escaped(pattern)
        err = llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", f"start: /{body}/"))
        if err:
            detail = err.strip().splitlines()[0]
            raise self.err(f"invalid regular expression for the mask engine: {detail}", node)
        return body

    def grammar(self, name: str, node: ast.expr) -> Grammar:
        path = resolve_grammar(name, self.base_dir)
        if path is None:
            known = ", ".join(sorted(p.stem for p in GRAMMAR_DIR.glob("*.lark")))
            raise self.err(
                f"unknown grammar '{name}' (shipped: {known}; or a relative path to a .lark file inside "
                "the query's folder)",
                node,
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise self.err(f"grammar {path.name} is not UTF-8 text ({e.reason})", node) from None
        err = llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", text))
        if err:
            raise self.err(f"invalid grammar {path.name}: {err.strip().splitlines()[0]}", node)
        return Grammar("lark", text, f"GRAMMAR({name!r})")

    def compare(self, node: ast.Compare) -> Lang:
        if len(node.ops) > 1:  # 1 < len(X) < 10
            parts = []
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                parts.append(self.sub(ast.copy_location(ast.Compare(left, [op], [right]), node)))
                left = right
            return And(tuple(parts))
        for inner, build in (("WORDS", regex.words), (None, regex.chars)):
            found = self.len_compare(node, inner)
            if found is not None:
                cmp_op, n = found
                return Term(regex.ANY if n is UNKNOWN else build(cmp_op, n))
        if self.len_compare(node, "TOKENS") is not None:  # reached only under or/not
            raise self.err("len(TOKENS(...)) can only be joined to other constraints with 'and'", node)
        op = node.ops[0]
        left, right = node.left, node.comparators[0]
        if isinstance(op, (ast.In, ast.NotIn)):
            if self.is_hole(left) and self.hole not in names_in(right):
                values = self.value(right)
                lang: Lang = (
                    Term(regex.ANY)
                    if values is UNKNOWN
                    else Term(regex.alternation(self.choices(values, right)))
                )
            elif self.is_hole(right) and self.hole not in names_in(left):
                sub = self.value(left)
                if sub is UNKNOWN:
                    lang = Term(regex.ANY)
                elif not isinstance(sub, str):
                    raise self.err(
                        f"'... in {self.hole}' needs a string on the left, not {type(sub).__name__}", left
                    )
                else:
                    lang = Term(regex.contains([sub]))
            else:
                raise _NotMaskable
            return LNot(lang) if isinstance(op, ast.NotIn) else lang
        if isinstance(op, (ast.Eq, ast.NotEq)):
            other = right if self.is_hole(left) else left if self.is_hole(right) else None
            if other is None or self.hole in names_in(other):
                raise _NotMaskable
            val = self.value(other)
            if val is not UNKNOWN and not isinstance(val, str):
                raise _NotMaskable
            lang = Term(regex.literal(val) if isinstance(val, str) else regex.ANY)
            return LNot(lang) if isinstance(op, ast.NotEq) else lang
        raise _NotMaskable

    def choices(self, values: Any, node: ast.expr) -> list[str]:
        if isinstance(values, str) or not hasattr(values, "__iter__"):
            raise self.err(f"'{self.hole} in ...' needs a list of values, not {type(values).__name__}", node)
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise self.err(
                    f"'{self.hole} in ...' values must be strings or numbers, not {type(v).__name__}", node
                )
            out.append(str(v))
        return out


def _as_text_check(node: ast.expr, hole: str) -> ast.expr:
    """The Python form of a masked conjunct, which sees the generated text: ``X in [1, 2]`` masks the
    texts "1" and "2", so its check compares ``X`` with ``str`` of each value, as the mask does."""

    class Rewrite(ast.NodeTransformer):
        def visit_Compare(self, cmp: ast.Compare) -> ast.expr:
            right = cmp.comparators[0]
            if not (
                len(cmp.ops) == 1
                and isinstance(cmp.ops[0], (ast.In, ast.NotIn))
                and isinstance(cmp.left, ast.Name)
                and cmp.left.id == hole
                and hole not in names_in(right)
            ):
                return self.generic_visit(cmp)  # type: ignore[return-value]
            var = ast.Name("__querylm_v", ast.Load())
            strs = ast.ListComp(
                ast.Call(ast.Name("str", ast.Load()), [var], []),
                [ast.comprehension(ast.Name("__querylm_v", ast.Store()), right, [], 0)],
            )
            return ast.copy_location(ast.Compare(cmp.left, cmp.ops, [strs]), cmp)

    # fix_missing_locations gives the new nodes their parent's position
    return ast.fix_missing_locations(Rewrite().visit(copy.deepcopy(node)))


def _slash_escaped(pattern: str) -> str:
    """``pattern`` inside Lark's ``/.../``: every unescaped ``/`` escaped (an escaped one, ``\\/``, is
    left as it is: escaping it again would end the terminal)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "".join(out)


def _and(a: Lang | None, b: Lang) -> Lang:
    if a is None:
        return b
    left = a.parts if isinstance(a, And) else (a,)
    return And((*left, b))


def _is_stop(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id
        in (
            "STOPS_AT",
            "STOPS_BEFORE",
        )
    )


def _side_conditioned_checks(hc: HoleConstraint) -> None:
    """A phrase that waits for side conditions ends the value at the first text where they hold: its
    Python check runs the masked side conditions on every earlier text that ends with a phrase
    (``functions.first_stop``). With a token minimum the stop points depend on the generated tokens,
    which only the staged matcher sees: the stop is then enforced by it alone."""
    sides = [c.node for c in hc.checks if c.masked and not _is_stop(c.node)]
    out = []
    for c in hc.checks:
        if not _is_stop(c.node):
            out.append(c)
            continue
        if hc.stop_after:
            continue
        assert isinstance(c.node, ast.Call)
        # ``lambda X, WORDS=WORDS, ...: sides``: a lambda in eval() sees only globals, so the names the
        # side conditions read come in as defaults, evaluated where the check is
        loads = {n.id for s in sides for n in ast.walk(s) if isinstance(n, ast.Name)}
        stores = {
            n.id
            for s in sides
            for n in ast.walk(s)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
        }
        free = sorted(loads - stores - {hc.hole})
        args = ast.arguments(
            posonlyargs=[],
            args=[ast.arg(hc.hole), *(ast.arg(n) for n in free)],
            vararg=None,
            kwonlyargs=[],
            kw_defaults=[],
            kwarg=None,
            defaults=[ast.Name(n, ast.Load()) for n in free],
        )
        body = ast.BoolOp(ast.And(), sides) if len(sides) > 1 else sides[0] if sides else ast.Constant(True)
        holds = ast.Lambda(args, body)
        call = ast.Call(
            ast.Name(functions.FIRST_STOP, ast.Load()), [c.node.args[0], c.node.args[1], holds], []
        )
        out.append(
            Check(ast.fix_missing_locations(ast.copy_location(call, c.node)), c.text, c.position, True)
        )
    hc.checks = out


def resolve_grammar(name: str, base_dir: Path | None) -> Path | None:
    """The file ``GRAMMAR(X, name)`` may read, or None. A query names a shipped grammar (``"json"``) or a
    relative path ending in ``.lark`` that, symlinks resolved, lies inside the query file's folder (the
    current directory for a string query): no absolute path, no ``..`` out of it. The answer is the same
    None for a refused path and a missing file, so a query can't probe which files exist."""
    if name.endswith(".lark") or "/" in name or "\\" in name:
        root = (base_dir or Path.cwd()).resolve()
        if not name.endswith(".lark") or Path(name).is_absolute():
            return None
        path = (root / name).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None
    path = GRAMMAR_DIR / f"{name}.lark"
    return path if path.is_file() else None


def build(
    hole: str,
    conjunct_nodes: list[ast.expr],
    smap: SourceMap,
    evaluate: Callable[[ast.expr], Any],
    *,
    typed: TypedHole | None = None,
    base_dir: Path | None = None,
) -> HoleConstraint:
    """The constraint of ``hole`` from the conjuncts that apply to it (and its type, if typed). A
    combination no value can satisfy is an error naming the conjuncts that conflict, before decoding."""
    values: dict[int, Any] = {}

    def once(node: ast.expr) -> Any:  # the conflict search rebuilds: the user's expressions run once
        if id(node) not in values:
            values[id(node)] = evaluate(node)
        return values[id(node)]

    def make(nodes: list[ast.expr], with_type: bool) -> HoleConstraint:
        return _build(hole, nodes, smap, once, typed if with_type else None, base_dir)

    hc = make(conjunct_nodes, True)
    # staged: without a stop phrase that waits for a token minimum; empty there is empty with it too
    if not satisfiable.is_empty(tuple(hc.grammars(staged=True))):
        return hc
    # The conflict, made minimal: drop each part whose absence leaves the language still empty.
    nodes, with_type = list(conjunct_nodes), typed is not None and typed.lang is not None
    if with_type and satisfiable.is_empty(tuple(make(nodes, False).grammars(staged=True))):
        with_type = False
    for node in list(nodes):
        rest = [n for n in nodes if n is not node]
        if satisfiable.is_empty(tuple(make(rest, with_type).grammars(staged=True))):
            nodes = rest
    names = ([f"the type {typed.label}"] if typed is not None and with_type else []) + [
        ast.unparse(n) for n in nodes
    ]
    what = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    together = "" if len(names) == 1 else " together"
    at = nodes[-1] if nodes else conjunct_nodes[0] if conjunct_nodes else None
    raise QueryCompileError(
        f"no value of {hole} can satisfy {what}{together}", smap.of(at) if at is not None else None
    )


def _build(
    hole: str,
    conjunct_nodes: list[ast.expr],
    smap: SourceMap,
    evaluate: Callable[[ast.expr], Any],
    typed: TypedHole | None,
    base_dir: Path | None,
) -> HoleConstraint:
    hc = HoleConstraint(hole, choices=typed.choices if typed else None)
    if typed is not None and typed.lang is not None:
        hc.labels.append(f"{hole}: {typed.label}")
        hc.add_lang(typed.lang)
    classifier = Classifier(hole, smap, evaluate, base_dir)
    for node in conjunct_nodes:
        classifier.add(hc, node)
    if not hc.stops_before:
        hc.checks.extend(hc.budget_checks)
    if (hc.stops_at or hc.stops_before) and hc.min_tokens > 1:
        hc.stop_after = hc.min_tokens - 1  # the phrase counts from the token that meets the minimum
    if hc.side_conditioned:
        _side_conditioned_checks(hc)
    if hc.cfgs and (hc.stops_at or hc.stops_before):
        raise QueryCompileError(
            "STOPS_AT/STOPS_BEFORE can't be combined with a grammar or JSON type: the grammar already ends the value",
            smap.of(conjunct_nodes[0]) if conjunct_nodes else None,
        )
    try:
        hc.grammars(staged=True)
    except NotExpressible:
        raise QueryCompileError(
            "this combination of constraints can't be compiled to a token mask", smap.of(conjunct_nodes[0])
        ) from None
    return hc


__all__ = ["HoleConstraint", "Check", "build", "conjuncts", "names_in", "UNKNOWN", "functions"]

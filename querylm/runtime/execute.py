"""Running a compiled query: drive its generator, render prompt text and chat roles into the backend's
sequence, decode each hole under its constraint, check it, bind it.

Chat models: role tags ``{:system}`` ``{:user}`` ``{:assistant}`` become the model's chat template. A
query without role tags on a model with a chat template is rendered as one exchange: the text before
the first hole is the user's message, and the assistant's reply starts at the first hole (instruct
models answer a "Q: ...\nA: [ANSWER]" far better so than when the reply has to continue "A: ").
``chat=False`` feeds the prompt as raw text.

Token healing (``decoding/heal.py``, on unless ``heal=False``): a hole right after prompt text gets
that text's last token backed off, and the hole's grammar starts with its text; the prompt keeps its
text, and the value excludes it.

An Execution is steppable: ``advance()`` runs the program to its next hole and returns it as a
PendingHole (its constraint built, the prompt flushed into the sequence); the decoder fills it token by
token; ``finish()`` checks and binds the value. ``fork()`` copies an execution for another beam or
sample: the program's state is not copied but derived, by replaying the generator with the recorded
hole values (the program is deterministic given them).
"""

from __future__ import annotations

import ast
import functools
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints import functions
from ..constraints.lang import Grammar, to_grammar
from ..constraints.matcher import accepts
from ..constraints.types import TypeNotSupported, typed_hole
from ..constraints.where import HoleConstraint, build, resolve_grammar
from ..decoding.heal import backoff, inside, streamed, value_pieces
from ..decoding.hole import HoleOutput
from ..errors import (
    ConstraintError,
    Position,
    QueryCompileError,
    QueryError,
    QueryRuntimeError,
    UnsupportedError,
)
from ..language.check import Plan
from ..language.compile import RETURNED
from ..language.ir import Hole
from . import decorators as deco
from .chat import open_role
from .nested import NestedCall, evaluate_type, in_query_code, nested_call
from .result import HoleRecord, QueryResult

StreamFn = Callable[[str], None]


@dataclass
class PendingHole:
    """A hole the program has reached: what the decoder needs to fill it, and what finish() needs."""

    hole: Hole
    hc: HoleConstraint
    start: int
    """Where the value's tokens begin in the sequence."""
    evaluate: Callable[..., Any]
    """(node, execution) -> value: evaluates a where-clause expression in the query's scope."""
    env: dict[str, Any]
    convert: Callable[[str], Any] | None
    decorators: list[Any] = field(default_factory=list)
    """The hole's ``[@f X]`` streaming and post decorators, nearest the name first."""


Decode = Callable[["Execution", PendingHole], HoleOutput]


class Execution:
    """One run of a query (one sample, one beam): its sequence, prompt, chat state and bound values."""

    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        seq: Sequence,
        *,
        max_len: int = 2048,
        chat: bool | None = None,
        stream: StreamFn | None = None,
        heal: bool = True,
    ):
        self.plan = plan
        self.backend = backend
        self.max_len = max_len
        self.stream = stream
        self.seq = seq
        self.chat = backend.has_chat_template if chat is None else (chat and backend.has_chat_template)
        self.heal = heal and backend.heals
        self.healing = ""  # the text backed off before the hole being opened (``before_hole``)
        self.tail = ""  # the text last written into the sequence; "" after a role transition
        self.prompt: list[str] = []
        self.pending = ""
        self.role: str | None = None
        self.strip_next = False
        self.messages: list[dict[str, str]] = []
        self.variables: dict[str, Any] = {}
        self.holes: list[HoleRecord] = []
        self._current_tokens: tuple[str, list[str]] | None = None
        # The program: a live generator, or None after a fork (rebuilt by replaying ``log``).
        self.inputs: dict[str, Any] = {}
        self.gen: Generator[Any, Any, Any] | None = None
        self.events = 0  # events the program has yielded so far
        self.log: list[Any] = []  # the value sent back for each hole event, in order
        self.to_send: Any = None
        self.returned: Any = None
        self.has_returned = False  # an explicit `return X` ran (X may be None)
        self.finished = False
        self.score = 0.0  # total log-probability of the generated tokens (beam decoders)
        self.decode_nested: Decode | None = None

    # -- driving ------------------------------------------------------------------------------------

    def start(self, inputs: dict[str, Any]) -> None:
        self.inputs = inputs
        self.gen = self._call()

    def _call(self) -> Generator[Any, Any, Any]:
        if self.plan.compiled.uses_context:
            return self.plan.compiled.call(**self.inputs, context=Context(self))
        return self.plan.compiled.call(**self.inputs)

    def fork(self, seq: Sequence) -> Execution:
        """A copy for another beam/sample writing into ``seq``; its program is replayed when needed."""
        other = object.__new__(Execution)
        other.__dict__.update(self.__dict__)
        other.seq = seq
        other.prompt = list(self.prompt)
        other.messages = [dict(m) for m in self.messages]
        other.variables = dict(self.variables)
        other.holes = list(self.holes)
        other.log = list(self.log)
        other.gen = None
        return other

    def _program(self) -> Generator[Any, Any, Any]:
        if self.gen is None:
            gen = self._call()
            send: Any = None
            holes = 0
            for _ in range(self.events):
                event = gen.send(send)
                send = None
                if event[0] == "hole":
                    send = self.log[holes] if holes < len(self.log) else None
                    holes += 1
            self.gen = gen
        return self.gen

    def advance(self) -> PendingHole | None:
        """Run the program to its next hole (returned) or to its end (None; ``finished`` is set)."""

        gen = self._program()
        plan = self.plan
        while True:
            token = in_query_code().set(True)
            try:
                event = gen.send(self.to_send)
            except StopIteration as stop:
                marked = isinstance(stop.value, tuple) and len(stop.value) == 2 and stop.value[0] == RETURNED
                self.returned = stop.value[1] if marked else None
                self.has_returned = marked
                self.finished = True
                self.flush()
                return None
            except QueryError:
                raise
            except Exception as err:
                raise self.user_error(err, plan) from err
            finally:
                in_query_code().reset(token)
            self.events += 1
            self.to_send = None
            kind = event[0]
            if kind == "text":
                self.text(event[1])
            elif kind == "interp":
                prompt_i, seg_i = event[1]
                seg = plan.compiled.query.prompts[prompt_i].segments[seg_i]
                # str() is user code too: an input whose __str__ raises is placed at its {expr}
                text = self.call_user(functools.partial(_as_text, event[2]), seg.position)  # type: ignore[union-attr]
                self.text(text)
            elif kind == "role":
                self.set_role(event[1])
            elif kind == "hole":
                hole = plan.compiled.query.holes[event[1]]
                tp = self.hole_type(event[2], hole) if event[2] is not None else None
                decorators = self.call_user(event[3], hole.position)[::-1] if event[3] is not None else []
                if decorators and self.pre_decorated(hole, tp, decorators):
                    continue
                pending = self.hole(hole, tp, gen, plan)
                if pending is not None:
                    pending.decorators = [d for d in decorators if deco.kind(d) != "pre"]
                    return pending

    def run(self, inputs: dict[str, Any], decode: Decode) -> QueryResult:
        """Run to the end, filling each hole with ``decode`` (argmax, sample)."""
        self.decode_nested = decode
        self.start(inputs)
        while (pending := self.advance()) is not None:
            self.finish(pending, decode(self, pending))
        return self.result()

    def result(self) -> QueryResult:
        return QueryResult(
            prompt="".join(self.prompt),
            variables=dict(self.variables),
            return_value=self.returned,
            returned=self.has_returned,
            messages=[dict(m) for m in self.messages],
            holes=list(self.holes),
            model=self.backend.name,
            decoder=self.plan.compiled.query.decoder.name,
            score=self.score,
        )

    def call_user(self, thunk: Callable[[], Any], position: Position) -> Any:
        try:
            return thunk()
        except QueryError:
            raise
        except Exception as err:
            try:
                detail = str(err)
            except Exception:  # noqa: BLE001 (an exception whose str() raises is still reported)
                detail = f"<{type(err).__name__} whose str() raised>"
            raise QueryRuntimeError(f"{type(err).__name__}: {detail}", position) from err

    def hole_type(self, thunk: Callable[[], Any], hole: Hole) -> Any:
        """Evaluate ``[X: type]``; a query function called there is a nested query, not a run."""
        return evaluate_type(lambda: self.call_user(thunk, hole.position))

    def user_error(self, err: Exception, plan: Plan) -> QueryRuntimeError:
        """Place an exception raised by the query's own code at the query line that raised it."""
        filename = plan.compiled.code_filename
        line = None
        for frame, lineno in traceback.walk_tb(err.__traceback__):
            if frame.f_code.co_filename == filename:
                line = lineno
        pos = plan.compiled.query.source_map.position(line, 0) if line else None
        if pos is not None:
            indent = len(pos.source_line) - len(pos.source_line.lstrip())
            pos = Position(pos.filename, pos.line, indent + 1, pos.source_line)
        return QueryRuntimeError(f"{type(err).__name__}: {err}", pos)

    # -- prompt text and roles ----------------------------------------------------------------------

    def emit(self, text: str) -> None:
        if self.stream is not None and text:
            self.stream(text)

    def text(self, text: str) -> None:
        self.prompt.append(text)
        self.pending += text
        self.emit(text)

    def flush(self, *, end_of_message: bool = False, heal: bool = False) -> None:
        """Write the pending prompt text into the sequence; with ``heal`` (right before a hole), its last
        token is held back for the hole to write again (``self.healing``)."""
        text = self.pending
        self.pending = ""
        if self.chat and self.strip_next:
            text = text.lstrip()
            self.strip_next = not text
        if self.chat and end_of_message:
            text = text.rstrip()
        if not text:
            return
        ids = self.backend.encode(text)
        if heal and self.heal:
            ids, self.healing = backoff(self.backend, ids, before=len(self.seq.ids))
        self.seq.append(ids)
        self.tail = text
        if self.chat and self.role is not None:
            self.messages[-1]["content"] += text

    def open_message(self, role: str) -> None:
        open_role(self.backend, self.seq, self.role, role)
        self.tail = ""
        self.role = role
        self.messages.append({"role": role, "content": ""})
        self.strip_next = True

    def set_role(self, role: str) -> None:
        if not self.chat:
            return  # a model without a chat template: the tags only separate text
        self.flush(end_of_message=True)
        self.open_message(role)

    def before_hole(self, *, heal: bool = False) -> None:
        """Write the prompt up to a hole into the sequence; ``heal``: heal its last token (``flush``)."""
        self.healing = ""
        if self.chat and self.role is None:  # no role tags: the text so far is the user's message
            self.open_message("user")
            self.flush(end_of_message=True)
            self.open_message("assistant")
        self.flush(heal=heal)
        if not self.seq.ids:  # nothing to condition on: start from BOS like generate() does
            bos = self.backend.tokenizer.bos_token_id
            self.seq.append([bos if bos is not None else self.backend.eos_ids[0]])

    # -- holes --------------------------------------------------------------------------------------

    def pre_decorated(self, hole: Hole, tp: Any, decorators: list[Any]) -> bool:
        """Run the hole's ``pre`` decorators; True when one fixed its value (bound, in the prompt, and
        not decoded). Decorators apply to decoded holes only: a nested query or distribution is refused."""
        dist = self.plan.compiled.query.distribution
        if nested_call(tp) is not None or (dist is not None and dist.variable == hole.name):
            raise QueryCompileError(
                "variable decorators apply to holes the model decodes, not a nested query or a distribution",
                hole.position,
            )
        variable = deco.Variable(hole.name)
        for d in decorators:
            if deco.kind(d) != "pre":
                continue
            value = self.call_user(functools.partial(d, variable), hole.position)
            if value is not variable:
                text = str(value)
                self.text(text)
                self.holes.append(
                    HoleRecord(hole.name, value, text, 0, "fixed by a pre decorator", "decorator")
                )
                self.bind(hole, value)
                return True
        return False

    def decorated(self, pending: PendingHole, value: Any, tokens: list[int]) -> Any:
        """The value after the hole's streaming decorators saw it grow and its post decorators ran."""
        position = pending.hole.position
        for d in pending.decorators:
            if deco.kind(d) == "streaming":
                for k in range(len(tokens) + 1):
                    partial = self.backend.decode(tokens[:k])[len(pending.hc.heal) :]
                    self.call_user(functools.partial(d, partial, Context(self)), position)
            else:
                value = self.call_user(functools.partial(d, value), position)
        return value

    def hole(self, hole: Hole, tp: Any, gen: Generator[Any, Any, Any], plan: Plan) -> PendingHole | None:
        call = nested_call(tp)
        if call is not None:
            self.bind(hole, self.nested(hole, call))
            return None
        frame = getattr(gen, "gi_frame", None)  # the query's variables, for constants in its constraints
        env = dict(frame.f_locals) if frame is not None else {}
        glb = frame.f_globals if frame is not None else {}
        typed = None
        if tp is not None:
            try:
                typed = typed_hole(tp, {**glb, **plan.compiled.scope, **env})
            except TypeNotSupported as err:
                raise QueryCompileError(f"unsupported hole type: {err}", hole.position) from None
        smap = plan.compiled.query.source_map
        filename = plan.compiled.code_filename

        def evaluate(node: ast.expr, ex: Execution = self) -> Any:
            """``ex``: the execution whose TOKENS/GRAMMAR to use (a fork checks its own value)."""
            try:
                code = compile(ast.Expression(body=node), filename, "eval")
                return eval(code, glb, {**functions.namespace(ex.tokens_of, ex.grammar_accepts), **env})  # noqa: S307
            except QueryError:
                raise
            except Exception as err:
                raise QueryRuntimeError(f"{type(err).__name__}: {err}", smap.of(node)) from err

        dist = plan.compiled.query.distribution
        if dist is not None and hole.name == dist.variable:
            self.distribution(hole, evaluate(dist.values.body), dist.position)
            return None
        bound = {name for name in plan.hole_names if name in self.variables}
        nodes = plan.conjuncts_for(hole, bound)
        hc = build(
            hole.name,
            nodes,
            smap,
            evaluate,
            typed=typed,
            base_dir=plan.base_dir,
        )
        self.before_hole(heal=not hc.counts_tokens)
        hc.heal = self.healing
        hc.line_start = self.tail == "" or self.tail.endswith("\n")
        return PendingHole(hole, hc, len(self.seq.ids), evaluate, env, typed.convert if typed else None)

    def value_stream(self, pending: PendingHole) -> StreamFn:
        """Where a hole's generated text streams: the prompt's stream, less the healed text it has shown."""
        return streamed(pending.hc.heal, self.emit)

    def finish(self, pending: PendingHole, out: HoleOutput) -> Any:
        """Close a hole the decoder filled (its tokens are in the sequence): drop a STOPS_BEFORE phrase,
        convert, check every constraint in Python, bind the value for the program."""
        hole, hc = pending.hole, pending.hc
        heal = hc.heal  # the value's tokens write it first; the value is what follows
        assert out.text.startswith(heal), "a healed hole's grammar starts with the healed text"
        made = out.text[len(heal) :]
        text, tokens = made, out.tokens
        if hc.side_conditioned:
            text = hc.cut(text, max(0, len(self.backend.decode(tokens[:-1])) - len(heal)))
            if text != made:
                tokens = self.retokenize_tail(pending.start, tokens, heal + text)
        for phrase in [] if hc.side_conditioned else sorted(hc.stops_before, key=len, reverse=True):
            if text.endswith(phrase):  # ["b", "ab"] on "xab" drops "ab"
                text = text[: -len(phrase)]
                tokens = self.retokenize_tail(pending.start, tokens, heal + text)
                break
        raw_tokens = value_pieces(self._token_strings(tokens), heal)
        value = self.convert(hole, hc, pending.convert, text)
        # LMQL's side conditions hold on the text the phrase ended, before a STOPS_BEFORE drops it
        seen = made if hc.side_conditioned else text
        self.check(hole, hc, seen, value, raw_tokens, pending.evaluate, pending.env)
        if pending.decorators:
            decorated = self.decorated(pending, value, tokens)
            if decorated is not value and str(decorated) != text:  # the prompt shows what the program sees
                text = str(decorated)
                tokens = self.retokenize_tail(pending.start, tokens, heal + text)
            value = decorated
        self.prompt.append(text)
        self.tail = heal + text or self.tail
        if self.chat and self.role is not None:
            self.messages[-1]["content"] += text
        self.strip_next = False
        self.holes.append(
            HoleRecord(
                hole.name,
                value,
                text,
                len(tokens) - inside(self.backend, heal, tokens),
                hc.description,
                out.ended_by,
                list(tokens),
                out.searched,
            )
        )
        self.bind(hole, value)
        return value

    def distribution(self, hole: Hole, values: Any, position: Position) -> None:
        """``distribution VAR in [values]``: score every value as the continuation (two forward passes
        for all of them), bind the most likely, and report the normalised distribution as LMQL does:
        ``P(VAR)`` and ``log P(VAR)``, lists of (value, probability) in the order given."""
        if isinstance(values, str) or not hasattr(values, "__iter__") or not list(values):
            raise QueryCompileError("distribution needs a non-empty list of values", position)
        values = list(values)
        self.before_hole()
        conts = [self.backend.encode(str(v)) for v in values]
        if any(not c for c in conts):
            raise QueryCompileError("distribution values can't be empty strings", position)
        scores = self.seq.score(self.backend, conts, self.messages if self.chat else None)
        totals = np.array([lp.sum() for lp in scores])
        top = totals.max()
        log_p = totals - (top + np.log(np.exp(totals - top).sum()))
        best = int(np.argmax(totals))
        self.variables[f"P({hole.name})"] = [
            (v, float(np.exp(lp))) for v, lp in zip(values, log_p, strict=True)
        ]
        self.variables[f"log P({hole.name})"] = [(v, float(lp)) for v, lp in zip(values, log_p, strict=True)]
        text = str(values[best])
        self.seq.append(conts[best])
        self.prompt.append(text)
        self.tail = text
        self.emit(text)
        if self.chat and self.role is not None:
            self.messages[-1]["content"] += text
        self.score += float(totals[best])
        self.holes.append(
            HoleRecord(
                hole.name,
                values[best],
                text,
                len(conts[best]),
                f"distribution over {len(values)} values",
                "distribution",
            )
        )
        self.bind(hole, values[best])

    def bind(self, hole: Hole, value: Any) -> None:
        self.variables[hole.name] = value
        self.to_send = value
        self.log.append(value)

    def retokenize_tail(self, start: int, tokens: list[int], text: str) -> list[int]:
        """Drop a generated stop phrase: keep the longest run of generated tokens that is a prefix of
        ``text``, truncate the sequence there and encode the rest of ``text`` anew."""
        keep = len(tokens)
        while keep and not text.startswith(self.backend.decode(tokens[:keep])):
            keep -= 1
        kept = tokens[:keep]
        rest = text[len(self.backend.decode(kept)) :]
        self.seq.truncate(start + keep)
        extra = self.backend.encode(rest)
        self.seq.append(extra)
        return kept + extra

    def _token_strings(self, tokens: list[int]) -> list[str]:
        return [self.backend.decode([t]) for t in tokens]

    def tokens_of(self, value: Any) -> list[str]:
        """TOKENS(X) on a finished value: the tokens it was generated as, else its tokenization."""
        text = value if isinstance(value, str) else str(value)
        current = self._current_tokens
        if current is not None and current[0] == text:
            return current[1]
        return self._token_strings(self.backend.encode(text))

    def grammar_accepts(self, value: Any, name: str) -> bool:
        path = resolve_grammar(name, self.plan.base_dir)
        if path is None:
            return False
        return accepts(
            self.backend.ll_tokenizer, to_grammar(Grammar("lark", path.read_text(), name), [], []), str(value)
        )

    def convert(
        self, hole: Hole, hc: HoleConstraint, typed_convert: Callable[[str], Any] | None, text: str
    ) -> Any:
        try:
            if typed_convert is not None:
                return typed_convert(text)
            if hc.convert == "int":
                return int(text.strip())
            if hc.convert == "float":
                return float(text.strip())
        except Exception as err:
            raise ConstraintError(
                f"{hole.name} = {text!r} is not a valid value: {err}", hole.position
            ) from None
        return text

    def check(
        self,
        hole: Hole,
        hc: HoleConstraint,
        text: str,
        value: Any,
        tokens: list[str],
        evaluate: Callable[..., Any],
        env: dict[str, Any],
    ) -> None:
        """Evaluate every applicable conjunct in Python on the finished value. Masked conjuncts see the
        generated text (their meaning is defined on strings); Python predicates see the converted value,
        as the query's code will."""
        self._current_tokens = (text, tokens)
        try:
            for chk in hc.checks:
                env[hole.name] = text if chk.masked else value
                ok = evaluate(chk.node, self)
                if not ok:
                    kind = "violates" if chk.masked else "fails the predicate"
                    raise ConstraintError(f"{hole.name} = {text!r} {kind} `{chk.text}`", chk.position)
        finally:
            self._current_tokens = None

    # -- nested queries -----------------------------------------------------------------------------

    def nested(self, hole: Hole, call: NestedCall) -> Any:
        """LMQL's nested queries (runtime/nested.py): the callee's prompt is decoded in place, then
        unwound; only its return value (or, without a return, the text it generated) stays in the prompt."""
        if self.decode_nested is None:
            raise UnsupportedError("nested queries are not supported with beam decoders yet", hole.position)
        plan, inputs = call.function.__querylm_nested__(call.args, call.kwargs, hole.position)
        self.before_hole()
        mark = len(self.seq.ids)
        inner = Execution(
            plan,
            self.backend,
            self.seq,
            max_len=self.max_len,
            chat=self.chat,
            stream=self.stream,
            heal=self.heal,
        )
        inner.role, inner.messages = self.role, [dict(m) for m in self.messages]
        result = inner.run(inputs, self.decode_nested)
        value = result.return_value if result.returned else result.prompt
        self.seq.truncate(mark)
        text = str(value)
        self.seq.append(self.backend.encode(text))
        self.prompt.append(text)
        self.tail = text or self.tail
        if self.chat and self.role is not None and self.messages:
            self.messages[-1]["content"] += text
        self.emit(f"\n[{hole.name} = {text!r}]\n" if self.stream else "")
        self.holes.append(
            HoleRecord(hole.name, value, text, 0, f"nested query {call.function.name}", "return")
        )
        return value


class Context:
    """LMQL's ``context`` in a query's code: the running query's state as it stands."""

    def __init__(self, execution: Execution):
        self._execution = execution

    @property
    def prompt(self) -> str:
        """The prompt so far, holes filled."""
        return "".join(self._execution.prompt)

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self._execution.variables)


def _as_text(thunk: Callable[[], Any]) -> str:
    """An interpolated value as prompt text."""
    return str(thunk())

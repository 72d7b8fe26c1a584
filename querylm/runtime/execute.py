"""Running a compiled query: drive its generator, render prompt text and chat roles into the backend's
sequence, decode each hole under its constraint, check it, bind it.

Chat models: role tags ``{:system}`` ``{:user}`` ``{:assistant}`` become the model's chat template. A
query without role tags on a model with a chat template is rendered as one exchange: the text before
the first hole is the user's message, and the assistant's reply starts at the first hole (instruct
models answer a "Q: ...\nA: [ANSWER]" far better so than when the reply has to continue "A: ").
``chat=False`` feeds the prompt as raw text.
"""

from __future__ import annotations

import ast
import traceback
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..backends.base import Backend, Sequence
from ..constraints import functions
from ..constraints.matcher import accepts
from ..constraints.types import TypeNotSupported, typed_hole
from ..constraints.where import HoleConstraint, build
from ..decoding.choose import Chooser
from ..decoding.hole import decode_hole
from ..errors import ConstraintError, Position, QueryCompileError, QueryError, QueryRuntimeError
from ..language.ir import Hole
from .plan import Plan
from .result import HoleRecord, QueryResult

StreamFn = Callable[[str], None]


class Execution:
    """One run of a query (one sample): owns a sequence and the prompt built so far."""

    def __init__(
        self,
        plan: Plan,
        backend: Backend,
        chooser: Chooser,
        *,
        max_len: int = 2048,
        chat: bool | None = None,
        stream: StreamFn | None = None,
    ):
        self.plan = plan
        self.backend = backend
        self.chooser = chooser
        self.max_len = max_len
        self.stream = stream
        self.seq: Sequence = backend.new_sequence()
        self.chat = backend.has_chat_template if chat is None else (chat and backend.has_chat_template)
        self.prompt: list[str] = []
        self.pending = ""
        self.role: str | None = None
        self.strip_next = False
        self.messages: list[dict[str, str]] = []
        self.variables: dict[str, Any] = {}
        self.holes: list[HoleRecord] = []
        self._current_tokens: tuple[str, list[str]] | None = None

    # -- driving ------------------------------------------------------------------------------------

    def run(self, inputs: dict[str, Any]) -> QueryResult:
        compiled = self.plan.compiled
        gen = compiled.function(**inputs)
        value = self.drive(gen, self.plan)
        return QueryResult(
            prompt="".join(self.prompt),
            variables=dict(self.variables),
            return_value=value,
            messages=[dict(m) for m in self.messages],
            holes=list(self.holes),
            model=self.backend.name,
            decoder=compiled.query.decoder.name,
        )

    def drive(self, gen: Generator[Any, Any, Any], plan: Plan) -> Any:
        send: Any = None
        while True:
            try:
                event = gen.send(send)
            except StopIteration as stop:
                return stop.value
            except QueryError:
                raise
            except Exception as err:
                raise self.user_error(err, plan) from err
            kind = event[0]
            send = None
            if kind == "text":
                self.text(event[1])
            elif kind == "interp":
                prompt_i, seg_i = event[1]
                seg = plan.compiled.query.prompts[prompt_i].segments[seg_i]
                self.text(str(self.call_user(event[2], seg.position)))  # type: ignore[union-attr]
            elif kind == "role":
                self.set_role(event[1])
            elif kind == "hole":
                hole = plan.compiled.query.holes[event[1]]
                tp = self.hole_type(event[2], hole) if event[2] is not None else None
                send = self.hole(hole, tp, gen, plan)

    def call_user(self, thunk: Callable[[], Any], position: Position) -> Any:
        try:
            return thunk()
        except QueryError:
            raise
        except Exception as err:
            raise QueryRuntimeError(f"{type(err).__name__}: {err}", position) from err

    def hole_type(self, thunk: Callable[[], Any], hole: Hole) -> Any:
        """Evaluate ``[X: type]``; a query function called there is a nested query, not a run."""
        from ..query import nested_mode

        token = nested_mode().set(True)
        try:
            return self.call_user(thunk, hole.position)
        finally:
            nested_mode().reset(token)

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

    def flush(self, *, end_of_message: bool = False) -> None:
        text = self.pending
        self.pending = ""
        if self.chat and self.strip_next:
            text = text.lstrip()
            self.strip_next = not text
        if self.chat and end_of_message:
            text = text.rstrip()
        if not text:
            return
        self.seq.append(self.backend.encode(text))
        if self.chat and self.role is not None:
            self.messages[-1]["content"] += text

    def open_message(self, role: str) -> None:
        self.seq.append(self.backend.encode(self.backend.chat_transition(self.role, role), special=True))
        self.role = role
        self.messages.append({"role": role, "content": ""})
        self.strip_next = True

    def set_role(self, role: str) -> None:
        if not self.chat:
            return  # a model without a chat template: the tags only separate text
        self.flush(end_of_message=True)
        self.open_message(role)

    def before_hole(self) -> None:
        if self.chat and self.role is None:  # no role tags: the text so far is the user's message
            self.open_message("user")
            self.flush(end_of_message=True)
            self.open_message("assistant")
        self.flush()
        if not self.seq.ids:  # nothing to condition on: start from BOS like generate() does
            bos = self.backend.tokenizer.bos_token_id
            self.seq.append([bos if bos is not None else self.backend.eos_ids[0]])

    # -- holes --------------------------------------------------------------------------------------

    def hole(self, hole: Hole, tp: Any, gen: Generator[Any, Any, Any], plan: Plan) -> Any:
        from ..query import NestedCall, QueryFunction

        if isinstance(tp, (QueryFunction, NestedCall)):
            return self.nested(hole, tp)
        typed = None
        if tp is not None:
            try:
                typed = typed_hole(tp)
            except TypeNotSupported as err:
                raise QueryCompileError(f"unsupported hole type: {err}", hole.position) from None
        frame = getattr(gen, "gi_frame", None)  # the query's variables, for constants in its constraints
        env = dict(frame.f_locals) if frame is not None else {}
        glb = frame.f_globals if frame is not None else {}
        smap = plan.compiled.query.source_map
        filename = plan.compiled.code_filename

        def evaluate(node: ast.expr) -> Any:
            try:
                code = compile(ast.Expression(body=node), filename, "eval")
                return eval(code, glb, {**functions.namespace(self.tokens_of, self.grammar_accepts), **env})  # noqa: S307
            except QueryError:
                raise
            except Exception as err:
                raise QueryRuntimeError(f"{type(err).__name__}: {err}", smap.of(node)) from err

        bound = {name for name in plan.hole_names if name in self.variables}
        nodes = plan.conjuncts_for(hole, bound)
        hc = build(
            hole.name,
            nodes,
            smap,
            evaluate,
            typed=typed.lang if typed else None,
            typed_label=typed.label if typed else None,
            base_dir=plan.base_dir,
        )
        self.before_hole()
        start = len(self.seq.ids)
        out = decode_hole(
            self.backend,
            self.seq,
            hc,
            self.chooser,
            max_len=self.max_len,
            position=hole.position,
            on_token=self.emit,
        )
        text, tokens = out.text, out.tokens
        for phrase in hc.stops_before:
            if text.endswith(phrase):
                text = text[: -len(phrase)]
                tokens = self.retokenize_tail(start, tokens, text)
                break
        raw_tokens = self._token_strings(tokens)
        value = self.convert(hole, hc, typed.convert if typed else None, text)
        self.check(hole, hc, text, value, raw_tokens, evaluate, env)
        self.prompt.append(text)
        if self.chat and self.role is not None:
            self.messages[-1]["content"] += text
        self.strip_next = False
        self.variables[hole.name] = value
        self.holes.append(HoleRecord(hole.name, value, text, len(tokens), hc.description, out.ended_by))
        return value

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
        from ..constraints.lang import Grammar, to_grammar
        from ..constraints.where import resolve_grammar

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
        evaluate: Callable[[ast.expr], Any],
        env: dict[str, Any],
    ) -> None:
        """Evaluate every applicable conjunct in Python on the finished value. Masked conjuncts see the
        generated text (their meaning is defined on strings); Python predicates see the converted value,
        as the query's code will."""
        self._current_tokens = (text, tokens)
        try:
            for chk in hc.checks:
                env[hole.name] = text if chk.masked else value
                ok = evaluate(chk.node)
                if not ok:
                    kind = "violates" if chk.masked else "fails the predicate"
                    raise ConstraintError(f"{hole.name} = {text!r} {kind} `{chk.text}`", chk.position)
        finally:
            self._current_tokens = None

    # -- nested queries -----------------------------------------------------------------------------

    def nested(self, hole: Hole, tp: Any) -> Any:
        """LMQL's nested queries: the callee's prompt is decoded in place, then unwound; only its return
        value (or, without a return, the text it generated) stays in the prompt."""
        from ..query import NestedCall

        call = tp if isinstance(tp, NestedCall) else NestedCall(tp, (), {})
        plan, inputs = call.function.nested_plan(call.args, call.kwargs, hole.position)
        self.before_hole()
        mark_ids = len(self.seq.ids)
        mark_prompt = len(self.prompt)
        mark_msgs = [dict(m) for m in self.messages]
        saved_vars = self.variables
        mark_holes = len(self.holes)
        self.variables = {}
        try:
            gen = plan.compiled.function(**inputs)
            value = self.drive(gen, plan)
            self.flush()
        finally:
            inner_text = "".join(self.prompt[mark_prompt:])
            self.variables = saved_vars
        if value is None:
            value = inner_text
        del self.prompt[mark_prompt:]
        del self.holes[mark_holes:]
        self.messages = mark_msgs
        self.seq.truncate(mark_ids)
        text = str(value)
        self.pending = ""
        self.seq.append(self.backend.encode(text))
        self.prompt.append(text)
        if self.chat and self.role is not None and self.messages:
            self.messages[-1]["content"] += text
        self.emit(f"\n[{hole.name} = {text!r}]\n" if self.stream else "")
        self.variables[hole.name] = value
        self.holes.append(
            HoleRecord(hole.name, value, text, 0, f"nested query {call.function.name}", "return")
        )
        return value


def make_rng(seed: int | None, index: int) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else [seed, index])

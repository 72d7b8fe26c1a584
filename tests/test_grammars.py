"""The shipped grammars (grammars/*.lark): each one validated, checked on tables of strings it must accept
and reject, and compared with a Python reference (json.loads, datetime, csv, ast) on generated inputs,
through the same llguidance path a GRAMMAR(X, "name") constraint takes."""

from __future__ import annotations

import ast
import csv
import datetime
import io
import json
import math
import sys
from pathlib import Path

import llguidance
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import querylm
from querylm.backends.models import resolve
from querylm.constraints.lang import Grammar, to_grammar
from querylm.constraints.matcher import accepts

GRAMMARS = Path(__file__).resolve().parent.parent / "grammars"
SHIPPED = ["json", "arithmetic", "iso_date", "iso_datetime", "csv_row"]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any character the test vocabulary (SmolLM2's) can spell: not a lone surrogate (no UTF-8 for it), and not
# U+40000-U+BFFFF (unassigned planes): the vocabulary has no token for their first bytes, F1 and F2.
# Control characters other than tab and line breaks have no token in SmolLM2's vocabulary: a model can't
# write them, and the tokenizer drops them, so they are left out of the generated text.
TEXT_CHARS = st.characters(
    max_codepoint=0x3FFFF, exclude_categories=("Cs", "Cc"), include_characters="\t\n\r"
)


@pytest.fixture(scope="module")
def tokenizer() -> llguidance.LLTokenizer:
    return resolve("random").ll_tokenizer


def grammar_json(name: str) -> str:
    return to_grammar(Grammar("lark", (GRAMMARS / f"{name}.lark").read_text(), name), [], [])


def ok(tokenizer: llguidance.LLTokenizer, name: str, text: str) -> bool:
    return accepts(tokenizer, grammar_json(name), text)


# -- every file ---------------------------------------------------------------------------------------


def test_the_shipped_set_is_what_is_tested() -> None:
    assert sorted(p.stem for p in GRAMMARS.glob("*.lark")) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_grammar_is_valid_and_documented(name: str) -> None:
    text = (GRAMMARS / f"{name}.lark").read_text()
    assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", text)) == ""
    assert text.startswith("// "), "each grammar starts with a comment saying what it accepts"


@pytest.mark.parametrize("name", SHIPPED)
def test_grammar_is_found_by_name_in_a_query(name: str) -> None:
    plan = querylm.compile_source(f'"Value: [X]" where GRAMMAR(X, "{name}")')
    assert plan.compiled.query.holes[0].name == "X"


# -- tables -------------------------------------------------------------------------------------------

TABLES: dict[str, tuple[list[str], list[str]]] = {
    "json": (
        [
            "{}",
            "[]",
            '{"a": 1}',
            '{"a":1,"b":[true,false,null]}',
            "[1, -2.5, 3e10, 4E-2, -0, 0.0]",
            '"x\\u00e9\\n\\t\\"\\\\\\/"',
            '"héllo ✓"',
            '{"nested": {"deep": [[[]], {}]}}',
            '{ "a" : [ 1 ,\n 2 ] }',
            "true",
            "null",
            "123",
            '""',
        ],
        [
            "",
            "{",
            '{"a": 1,}',
            "[1, 2,]",
            "{'a': 1}",
            "{a: 1}",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "-Infinity",
            "True",
            "nul",
            '"unterminated',
            '"raw\ttab"',
            '"bad \\x escape"',
            '"\\u12"',
            "[1] [2]",
            " {}",
            "{} ",
            '{"a" 1}',
        ],
    ),
    "arithmetic": (
        [
            "1",
            "1+2",
            "(3.5 - 1) * 4",
            "-2 / (7 + 0.25)",
            "2*(3+4)*5",
            "((1))",
            "-(1+2)",
            "--3",
            "10 / 2 - 3 * 4",
            "1 +  2",
            "( 1 )",
            "0.05 * 100",
            "12345678901234567890.5",
        ],
        [
            "",
            "1+",
            "+1",
            "1 2",
            "1.",
            ".5",
            "()",
            "(1",
            "1)",
            "(1)(2)",
            "1e5",
            "2^3",
            "1 + x",
            " 1",
            "1 ",
            "1,5",
            "1**2",
            "007",
            "01.5",
        ],
    ),
    "iso_date": (
        ["2024-05-17", "2024-02-29", "2000-02-29", "0001-01-01", "9999-12-31", "1999-04-30", "2023-12-31"],
        [
            "",
            "2023-02-29",
            "1900-02-29",
            "2024-02-30",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-01-32",
            "0000-01-01",
            "2024-1-01",
            "24-01-01",
            "20240517",
            "2024/05/17",
            "2024-05-17T10:00",
            " 2024-05-17",
            "2024-05-17 ",
        ],
    ),
    "iso_datetime": (
        [
            "2024-05-17T09:30",
            "2024-05-17T09:30:15",
            "2024-02-29T23:59:59.5Z",
            "1999-12-31T00:00:00+05:30",
            "2024-05-17T09:30:00.123456-08:00",
        ],
        [
            "2024-05-17",
            "2024-05-17T24:00",
            "2024-05-17T09:60",
            "2024-05-17T09:30:61",
            "2024-05-17 09:30",
            "2024-05-17T9:30",
            "2024-05-17T09:30:00.1234567",
            "2024-05-17T09:30+5:30",
            "2023-02-29T00:00",
        ],
    ),
    "csv_row": (
        [
            "a,b,c",
            "a,,b",
            ",",
            "a,",
            ",a",
            '"a,b",c',
            '"say ""hi""",x',
            '"line\nbreak",2',
            '""',
            '"",""',
            " spaced , x ",
            "1,2.5,-3",
            "naïve,✓",
        ],
        ["", "a\nb", "a,b\n", "a\r", 'a"b', '"a"b', '"unterminated', '"a""', 'x,"y"z', "a\r\nb"],
    ),
}

CASES = [(name, text, True) for name, (good, _) in TABLES.items() for text in good] + [
    (name, text, False) for name, (_, bad) in TABLES.items() for text in bad
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[f"{n}-{t!r}" for n, t, _ in CASES])
def test_table(tokenizer: llguidance.LLTokenizer, name: str, text: str, expected: bool) -> None:
    assert ok(tokenizer, name, text) is expected


def test_tables_agree_with_python_references() -> None:
    """The tables themselves are right: each accepted/rejected string is so for Python too."""
    for text in TABLES["json"][0]:
        strict_json(text)
    for text in TABLES["arithmetic"][0]:
        assert is_arithmetic(text)
    for text in TABLES["iso_date"][0]:
        datetime.date.fromisoformat(text)
    for text in ("2023-02-29", "1900-02-29", "2024-02-30", "2024-04-31", "0000-01-01"):
        with pytest.raises(ValueError):
            datetime.date.fromisoformat(text)
    for text in TABLES["csv_row"][0]:
        assert len(csv_rows(text)) == 1


# -- JSON against json.loads --------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def strict_json(text: str) -> object:
    """json.loads without Python's NaN/Infinity extension."""
    return json.loads(text, parse_constant=_reject_constant)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT_CHARS),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(TEXT_CHARS), inner, max_size=4),
    max_leaves=12,
)


@PROPERTY
@given(
    value=JSON_VALUES,
    indent=st.sampled_from([None, 0, 2, "\t"]),
    compact=st.booleans(),
    ensure_ascii=st.booleans(),
)
def test_json_accepts_what_json_dumps_writes(
    tokenizer: llguidance.LLTokenizer, value: object, indent: object, compact: bool, ensure_ascii: bool
) -> None:
    text = json.dumps(
        value,
        indent=indent,  # type: ignore[arg-type]
        separators=(",", ":") if compact else None,
        ensure_ascii=ensure_ascii,
    )
    assert ok(tokenizer, "json", text), text


JSON_PIECES = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', '"', '"a"', '\\', '\\u', '0', '1', '-', '.', 'e', '+', 'true', 'null',
     'nan', ' ', '\n', '\t', 'x', 'é', '\x01', '00', '12.5', 'E9']
)  # fmt: skip


@PROPERTY
@given(st.lists(JSON_PIECES, max_size=12).map("".join))
def test_json_agrees_with_json_loads(tokenizer: llguidance.LLTokenizer, text: str) -> None:
    """On near-JSON text: accepted exactly when strict json.loads parses it (json.loads also allows
    whitespace around the value; llguidance's %ignore does not, which suits a hole's value)."""
    try:
        strict_json(text)
        expected = text == text.strip(" \t\n\r")
    except ValueError:
        expected = False
    assert ok(tokenizer, "json", text) is expected


# -- arithmetic against Python's parser ---------------------------------------------------------------


def is_arithmetic(text: str) -> bool:
    """True if Python reads ``text`` as numbers joined by + - * / and unary minus."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return False
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
                return False
        elif not isinstance(node, allowed):
            return False
    return True


NUMBERS = st.from_regex(r"(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?", fullmatch=True)
SPACE = st.sampled_from(["", "", " ", "  "])


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> tuple[str, float]:
    """A random expression, rendered with random spacing, and its value computed without the text."""
    kind = draw(st.sampled_from(["num", "num", "neg", "paren", "bin", "bin"] if depth else ["num"]))
    if kind == "num":
        text = draw(NUMBERS)
        return text, float(text)
    if kind == "neg":
        text, value = draw(expressions(depth - 1))
        return f"-({text})", -value
    if kind == "paren":
        text, value = draw(expressions(depth - 1))
        return f"({draw(SPACE)}{text}{draw(SPACE)})", value
    (a, x), (b, y) = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    op = draw(st.sampled_from("+-*/"))
    assume(op != "/" or y != 0)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else 0.0}[op]
    return f"({a}){draw(SPACE)}{op}{draw(SPACE)}({b})", value


@PROPERTY
@given(expressions())
def test_arithmetic_accepts_generated_expressions(
    tokenizer: llguidance.LLTokenizer, expr: tuple[str, float]
) -> None:
    text, value = expr
    assert ok(tokenizer, "arithmetic", text), text
    assert math.isclose(eval(text), value, rel_tol=1e-9, abs_tol=1e-9)  # noqa: S307 - digits and operators


@PROPERTY
@given(st.text(alphabet="0123456789.+-*/() ", max_size=14))
def test_arithmetic_accepts_only_python_arithmetic(tokenizer: llguidance.LLTokenizer, text: str) -> None:
    if ok(tokenizer, "arithmetic", text):
        assert is_arithmetic(text), text
        assert text == text.strip()


# -- dates against datetime ---------------------------------------------------------------------------


@PROPERTY
@given(st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True))
def test_iso_date_agrees_with_fromisoformat(tokenizer: llguidance.LLTokenizer, text: str) -> None:
    try:
        datetime.date.fromisoformat(text)
        expected = True
    except ValueError:
        expected = False
    assert ok(tokenizer, "iso_date", text) is expected


@st.composite
def date_like(draw: st.DrawFn) -> str:
    """YYYY-MM-DD with digits chosen near the edges (month 00-13, day 00-32), so the rules are hit."""
    year = draw(
        st.sampled_from([0, 1, 4, 100, 400, 1900, 2000, 2023, 2024, 9996, 9999]) | st.integers(0, 9999)
    )
    return f"{year:04d}-{draw(st.integers(0, 13)):02d}-{draw(st.integers(0, 32)):02d}"


@PROPERTY
@given(date_like())
def test_iso_date_calendar_edges(tokenizer: llguidance.LLTokenizer, text: str) -> None:
    try:
        datetime.date.fromisoformat(text)
        expected = True
    except ValueError:
        expected = False
    assert ok(tokenizer, "iso_date", text) is expected


@PROPERTY
@given(st.dates())
def test_iso_date_accepts_every_date(tokenizer: llguidance.LLTokenizer, day: datetime.date) -> None:
    assert ok(tokenizer, "iso_date", day.isoformat())


@PROPERTY
@given(
    moment=st.datetimes(),
    timespec=st.sampled_from(["minutes", "seconds", "milliseconds", "microseconds"]),
    offset=st.none() | st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
def test_iso_datetime_accepts_isoformat(
    tokenizer: llguidance.LLTokenizer, moment: datetime.datetime, timespec: str, offset: int | None
) -> None:
    if offset is not None:
        moment = moment.replace(tzinfo=datetime.timezone(datetime.timedelta(minutes=offset)))
    text = moment.isoformat(timespec=timespec)
    assert ok(tokenizer, "iso_datetime", text), text
    if offset == 0:
        assert ok(tokenizer, "iso_datetime", text.replace("+00:00", "Z"))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="fromisoformat reads all of ISO 8601 from 3.11")
@PROPERTY
@given(
    st.from_regex(
        r"[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9](:[0-6][0-9](\.[0-9]{1,7})?)?(Z|[+-][0-2][0-9]:[0-6][0-9])?",
        fullmatch=True,
    )
)
def test_iso_datetime_accepts_only_what_fromisoformat_reads(
    tokenizer: llguidance.LLTokenizer, text: str
) -> None:
    if ok(tokenizer, "iso_datetime", text):
        datetime.datetime.fromisoformat(text)


# -- CSV against the csv module -----------------------------------------------------------------------


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def csv_line(fields: list[str], quoting: int) -> str:
    """A row as csv.writer writes it, less its line break (with lineterminator="" the writer would no
    longer quote a field holding a bare CR or LF)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n", quoting=quoting).writerow(fields)
    return out.getvalue().removesuffix("\r\n")


@PROPERTY
@given(
    fields=st.lists(st.text(TEXT_CHARS, max_size=8), min_size=1, max_size=5),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
)
def test_csv_row_accepts_what_csv_writer_writes(
    tokenizer: llguidance.LLTokenizer, fields: list[str], quoting: int
) -> None:
    text = csv_line(fields, quoting)
    assert ok(tokenizer, "csv_row", text), text
    assert csv_rows(text) == [fields]


@PROPERTY
@given(st.text(alphabet=st.sampled_from(["a", "b", " ", ",", '"', "\n", "\r", "é"]), max_size=10))
def test_csv_row_accepts_only_one_well_formed_row(tokenizer: llguidance.LLTokenizer, text: str) -> None:
    """Accepted text is one row the csv module reads strictly and writes back as the same fields."""
    if ok(tokenizer, "csv_row", text):
        rows = csv_rows(text)
        assert len(rows) == 1, text
        assert csv_rows(csv_line(rows[0], csv.QUOTE_MINIMAL)) == rows
    if text and not any(c in text for c in '"\n\r'):  # only unquoted fields: always one row
        assert ok(tokenizer, "csv_row", text), text


# -- through a query ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_date_grammars_in_a_query(seed: int) -> None:
    """On random logits, every value a GRAMMAR hole yields is one datetime reads: the grammar ends it."""
    model = resolve("random", seed=seed)
    r = querylm.run(
        '"Day: [D]\\nAt: [T]" where GRAMMAR(D, "iso_date") and GRAMMAR(T, "iso_datetime")', model=model
    )
    assert isinstance(r, querylm.QueryResult)
    datetime.date.fromisoformat(r.variables["D"])
    datetime.datetime.fromisoformat(r.variables["T"])
    assert [h.ended_by for h in r.holes][0] == "grammar"

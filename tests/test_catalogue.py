"""The bad-input catalogue: every table of bad queries in the suite, gathered under categories and run
through both faces a user meets, Python (``compile_source``) and the CLI (``querylm check``, exit 2, the
``FILE:LINE:COL: message`` line, the source line and a caret).

The tables stay beside the code they test (test_errors.py, UNSATISFIABLE there too, test_hostile_inputs.py,
test_check_hardening.py); this module only files them, so a case added there is catalogued here.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from test_check_hardening import BAD_DECODERS
from test_check_hardening import CASES as PATH_CASES
from test_errors import COMPILE_ERRORS, UNSATISFIABLE
from test_hostile_inputs import BAD as HOSTILE

from querylm import QueryCompileError, QueryError, compile_source
from querylm.cli import main

# test_errors.COMPILE_ERRORS by the id's category; the ids are the table's own.
_BY_ID = {
    "query body": "body-syntax decoder-body-syntax indentation unterminated-string unterminated-triple-quoted "
    "bracket-never-closed unmatched-bracket no-prompt no-prompt-after-decoder await await-in-loop tab-indent",
    "prompt strings and holes": "hole-not-a-name unclosed-bracket unclosed-brace empty-braces "
    "single-closing-brace bad-interpolation bad-hole-type hole-type-missing bad-hole-after-escape f-string "
    "unknown-role",
    "decoder clause": "unknown-decoder positional-decoder-arg unknown-decoder-arg "
    "unknown-beam-arg one-line-form one-line-form-args",
    "from / where / distribution clauses": "from-not-a-model second-where empty-where where-ends-early "
    "where-never-closed where-syntax inline-ends-early inline-empty bad-distribution",
    "names in constraints": "where-near-miss no-hole inline-other-hole inline-without-hole",
    "constraint forms": "tokens-not-equal len-is tokens-float stops-at-under-or stops-before-under-or "
    "tokens-under-or tokens-under-not int-arity stops-at-arity tokens-alone stop-not-a-string stop-empty "
    "in-a-string regex-python regex-mask-engine unknown-grammar",
    "positions (multi-line, non-ASCII)": "multi-line-where non-ascii-column",
}
_CATEGORY = {case_id: cat for cat, ids in _BY_ID.items() for case_id in ids.split()}


def _hostile_category(source: str, message: str) -> str:
    if "reserved" in message:
        return "hole names"
    if "yield" in message:
        return "query body"
    if "NUL" in message:
        return "hostile bytes (NUL)"
    if "nests too deeply" in message:
        return "hostile depth (recursion, memory)"
    return "positions (multi-line, non-ASCII)"


def _catalogue() -> list[tuple[str, str, str, type[QueryError] | None, str, int | None, int | None]]:
    """(category, id, source, class or None for any QueryError, message fragment, line, column)."""
    rows = []
    for param in COMPILE_ERRORS:
        src, cls, message, line, col = param.values
        rows.append((_CATEGORY[param.id], param.id, src, cls, message, line, col))
    for i, (src, cls, message, line, col) in enumerate(HOSTILE):
        rows.append((_hostile_category(src, message), f"hostile-{i}", src, cls, message, line, col))
    for i, (src, cls, message, line, col) in enumerate(PATH_CASES):
        category = "grammar paths" if "grammar" in message else "prompt strings and holes"
        rows.append((category, f"check-{i}", src, cls, message, line, col))
    for param in UNSATISFIABLE:
        src, constraint, line, col = param.values
        rows.append(("empty constraint languages", param.id, src, QueryCompileError, constraint, line, col))
    for i, (src, message, col) in enumerate(BAD_DECODERS):
        rows.append(("decoder arguments", f"decoder-arg-{i}", src, None, message, 1, col))
    return rows


CATALOGUE = _catalogue()
_PARAMS = [pytest.param(*row[2:], id=f"{row[0]}:{row[1]}") for row in CATALOGUE]


def test_the_catalogue_covers_at_least_80_bad_inputs_in_every_category() -> None:
    counts = Counter(row[0] for row in CATALOGUE)
    assert sum(counts.values()) >= 80, counts
    assert len(counts) >= 10, counts
    assert len({row[1] for row in CATALOGUE}) == len(CATALOGUE)  # no case filed twice


@pytest.mark.parametrize("src, cls, message, line, col", _PARAMS)
def test_python_raises_a_positioned_query_error(
    src: str, cls: type[QueryError] | None, message: str, line: int, col: int
) -> None:
    with pytest.raises(QueryError) as info:
        compile_source(src)
    err = info.value
    assert cls is None or type(err) is cls, f"{type(err).__name__}: {err}"
    assert message in err.message
    assert err.position is not None and (err.position.line, err.position.col) == (line, col), str(err)


@pytest.mark.parametrize("src, cls, message, line, col", _PARAMS)
def test_the_cli_exits_2_with_the_file_position_and_a_caret(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    src: str,
    cls: type[QueryError] | None,
    message: str,
    line: int,
    col: int,
) -> None:
    path = tmp_path / "query.lmql"
    path.write_text(src, encoding="utf-8")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.rstrip("\n").split("\n")
    assert err[0].startswith(f"{path}:{line}:{col}: ") and message in err[0], err[0][:300]
    assert err[-1] == "    " + " " * (col - 1) + "^"

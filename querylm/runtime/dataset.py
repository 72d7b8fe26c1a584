"""Rows in and records out, for running one query over a dataset.

Rows come from dicts, any iterable of them, a pandas DataFrame or a JSONL file; each keeps its index and
(from a file) its line number, so a bad row is reported where the user can find it. Records go to a JSONL
file that is appended to and synced as each row finishes, so that a run that is killed loses nothing and
a rerun over the same output does only the rows that are not in it yet. This module knows nothing of
queries: the caller checks a row's inputs against its query.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Position, QueryInputError
from .result import QueryResult, jsonable


@dataclass(frozen=True)
class Row:
    """One row of a dataset: its inputs, or why it has none (not JSON, not an object)."""

    index: int
    """0-based, in input order (a JSONL file's blank lines are not rows)."""
    inputs: dict[str, Any] | None
    key: str
    """A digest of the inputs (of the raw line for a row that is not JSON): a record names its row."""
    line: int | None = None
    """1-based line of a JSONL file."""
    error: QueryInputError | None = None
    source: str | None = None
    """The JSONL file the row came from."""
    text: str = ""
    """The row's line as written, for the caret of an error."""

    def position(self) -> Position | None:
        if self.source is None or self.line is None:
            return None
        return Position(self.source, self.line, 1, self.text)

    def fail(self, message: str) -> QueryInputError:
        """An error about this row, at its line of the file (or naming its index)."""
        where = self.position()
        return QueryInputError(message if where else f"row {self.index}: {message}", where)


def row_key(inputs: Any) -> str:
    """Equal inputs give equal keys, whatever the order of their names."""
    text = json.dumps(jsonable(inputs), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_jsonl_path(rows: Any) -> bool:
    return isinstance(rows, (str, Path, os.PathLike))


def read_rows(rows: Any) -> Iterator[Row]:
    """The rows of ``rows``: a JSONL path (``str`` or ``Path``), a pandas DataFrame (one row per record,
    columns as inputs), or an iterable of dicts. Read lazily; a bad row is yielded with its error."""
    if is_jsonl_path(rows):
        yield from _jsonl_rows(Path(rows))
        return
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # a pandas DataFrame, without importing pandas
        rows = rows.to_dict(orient="records")
    if not isinstance(rows, Iterable) or isinstance(rows, (Mapping, bytes)):
        raise QueryInputError(
            f"rows must be a JSONL path, a DataFrame or an iterable of dicts, not {type(rows).__name__}"
        )
    for index, item in enumerate(rows):
        if isinstance(item, Mapping):
            inputs = {str(k): v for k, v in item.items()}
            yield Row(index, inputs, row_key(inputs))
        else:
            row = Row(index, None, row_key(repr(item)))
            yield _failed(row, f"a row must be a dict of inputs, not {type(item).__name__}")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as err:
        raise QueryInputError(f"can't read rows from {path}: {err.strerror}") from None
    index = 0
    with handle:
        for line_no, line in enumerate(handle, 1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            row = Row(index, None, row_key(text), line_no, None, str(path), text)
            index += 1
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                yield _failed(row, f"not JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(value, dict):
                yield _failed(row, f"a row must be a JSON object of inputs, not {type(value).__name__}")
                continue
            yield Row(index - 1, value, row_key(value), line_no, None, str(path), text)


def _failed(row: Row, message: str) -> Row:
    return Row(row.index, None, row.key, row.line, row.fail(message), row.source, row.text)


# -- records ------------------------------------------------------------------------------------------


def record(row: Row, result: QueryResult | list[QueryResult] | BaseException) -> dict[str, Any]:
    """The JSONL record of a finished row: where it came from, then its result or its error."""
    out: dict[str, Any] = {"index": row.index}
    if row.line is not None:
        out["line"] = row.line
    out["key"] = row.key
    if isinstance(result, BaseException):
        message = getattr(result, "message", None) or str(result)
        out["error"] = {"type": type(result).__name__, "message": message}
        return out
    results = result if isinstance(result, list) else [result]
    payloads = []
    for r in results:
        payload = r.to_json()
        if r.return_value is not None:
            payload["return"] = jsonable(r.return_value)
        payloads.append(payload)
    if isinstance(result, list):
        out["results"] = payloads
    else:
        out.update(payloads[0])
    return out


def generated_tokens(result: Any) -> int:
    """Tokens the model generated for a result (0 for an error), for the progress bar's tokens/s."""
    results = result if isinstance(result, list) else [result]
    return sum(h.tokens for r in results if isinstance(r, QueryResult) for h in r.holes)


class OutputLog:
    """An append-only JSONL file of records. Opening it reads the records already there (the rows a rerun
    skips); a last line torn by a kill mid-write is cut off, so its row is done again. Each record is
    flushed and fsynced as it is written: what a record says is done survives a kill or a crash."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[int, dict[str, Any]] = {}
        """Records already in the file, by row index."""
        self.torn = False
        """Whether the file ended in a torn line, now cut off."""
        self._read()
        self._file = path.open("a", encoding="utf-8")

    def _read(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            raise QueryInputError(f"can't read output {self.path}: {err.strerror}") from None
        good = 0  # bytes of whole, valid records
        lines = data.split(b"\n")
        for line_no, line in enumerate(lines, 1):
            last = line_no == len(lines)
            if last and not line:
                break
            try:
                rec = json.loads(line.decode("utf-8"))
                if not isinstance(rec, dict) or not isinstance(rec.get("index"), int) or "key" not in rec:
                    raise ValueError("not a record")
                if last:
                    raise ValueError("no newline: cut by a kill mid-write")
            except ValueError as err:
                if last or (line_no == len(lines) - 1 and not lines[-1]):
                    self.torn = True  # the last record was being written: cut it and do its row again
                    break
                raise QueryInputError(
                    f"{self.path}:{line_no}: not a querylm record ({err}): is this the output of another run?"
                ) from None
            self.done[rec["index"]] = rec
            good += len(line) + 1
        if self.torn:
            with self.path.open("r+b") as f:
                f.truncate(good)

    def check(self, row: Row) -> bool:
        """Whether ``row`` is done already; an error if the output holds another row at its index."""
        rec = self.done.get(row.index)
        if rec is None:
            return False
        if rec["key"] != row.key:
            where = f"line {row.line}" if row.line is not None else f"row {row.index}"
            raise QueryInputError(
                f"{self.path} was written from other inputs: its record of row {row.index} does not match "
                f"{where} of the inputs now; write to a new --output"
            )
        return True

    def write(self, rec: dict[str, Any]) -> None:
        self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[rec["index"]] = rec

    def close(self) -> None:
        self._file.close()


# -- progress -----------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar of rows (rows/s and ETA), with tokens/s: on a terminal only, and only with tqdm
    installed (``pip install 'querylm[dataset]'``); otherwise it does nothing."""

    def __init__(self, enabled: bool, total: int | None, desc: str = "rows"):
        self.bar: Any = None
        self.tokens = 0
        self.start = time.monotonic()
        if not enabled or not sys.stderr.isatty():
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, desc=desc, unit="row", dynamic_ncols=True, file=sys.stderr)

    def update(self, result: Any) -> None:
        if self.bar is None:
            return
        self.tokens += generated_tokens(result)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
        self.bar.update(1)

    def note(self, message: str) -> None:
        """A message on stderr (above the bar, when there is one)."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

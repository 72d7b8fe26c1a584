"""querylm.map / amap over every kind of rows, the resumable `querylm run --inputs/--output`, bad rows with
their line numbers, and Ray Data. The `random` model where the model does not matter (its logits depend
only on the tokens so far, so a row's result is the same however rows are run), the default model for
the shipped example."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import querylm
from querylm.cli import main as cli
from querylm.integrations.ray import QueryRunner
from querylm.runtime.dataset import Progress
from querylm.runtime.run import iter_many

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SAY = '"Say {word}:[X]" where len(TOKENS(X)) < 4'
WORDS = ["apple", "pear", "fig", "plum", "kiwi"]


def one_at_a_time(query: str, **inputs: Any) -> querylm.QueryResult:
    result = querylm.run(query, model="random", **inputs)
    assert isinstance(result, querylm.QueryResult)
    return result


def assert_same_as_run(results: list[Any], words: list[str]) -> None:
    assert len(results) == len(words)
    for result, word in zip(results, words, strict=True):
        assert isinstance(result, querylm.QueryResult), result
        assert result.prompt.startswith(f"Say {word}:")  # input order kept
        assert result.variables == one_at_a_time(SAY, word=word).variables


# -- map ----------------------------------------------------------------------------------------------


def test_map_over_dicts_keeps_input_order_and_equals_run() -> None:
    results = querylm.map(SAY, [{"word": w} for w in WORDS], model="random", concurrency=4, progress=False)
    assert_same_as_run(results, WORDS)


def test_map_over_an_iterable_a_dataframe_and_a_jsonl_file(tmp_path: Path) -> None:
    rows = (dict(word=w) for w in WORDS)  # a generator: read lazily, never len()
    assert_same_as_run(querylm.map(SAY, rows, model="random", progress=False), WORDS)
    frame = pd.DataFrame({"id": range(len(WORDS)), "word": WORDS})  # "id" is not read by the query
    assert_same_as_run(querylm.map(SAY, frame, model="random", progress=False), WORDS)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"word": w}) + "\n\n" for w in WORDS))  # blank lines are no rows
    assert_same_as_run(querylm.map(SAY, path, model="random", progress=False), WORDS)
    assert_same_as_run(querylm.map(SAY, str(path), model="random", progress=False), WORDS)


def test_a_failing_row_holds_its_error_and_the_others_go_on() -> None:
    query = '"{100 // n} [X]" where len(TOKENS(X)) < 3'
    rows: list[Any] = [{"n": 5}, {"n": 0}, {"m": 1}, ["n", 2], {"n": 7}]
    results = querylm.map(query, rows, model="random", concurrency=3, progress=False)
    assert [type(r).__name__ for r in results] == [
        "QueryResult",
        "QueryRuntimeError",  # 100 // 0, raised while the row ran
        "QueryInputError",
        "QueryInputError",
        "QueryResult",
    ]
    assert results[0].prompt.startswith("20 ") and results[4].prompt.startswith("14 ")
    assert "ZeroDivisionError" in str(results[1])
    assert str(results[2]) == "row 2: missing input 'n' (the row has: m)"
    assert str(results[3]) == "row 3: a row must be a dict of inputs, not list"


def test_bad_jsonl_rows_are_errors_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"word": "fig"}\n\nnot json\n[1, 2]\n{"wort": "x"}\n{"word": "kiwi"}\n')
    results = querylm.map(SAY, path, model="random", progress=False)
    assert [type(r).__name__ for r in results] == ["QueryResult", *["QueryInputError"] * 3, "QueryResult"]
    lines = [r.position.line for r in results[1:4]]
    assert lines == [3, 4, 5]
    assert all(r.position.filename == str(path) for r in results[1:4])
    assert "not JSON" in str(results[1]) and "not json\n    ^" in str(results[1])
    assert "a row must be a JSON object of inputs, not list" in str(results[2])
    assert "missing input 'word' (the row has: wort)" in str(results[3])


@querylm.query(model="random")
def shout(word: str, times: int):
    """lmql
    "{word.upper() * times}:[X]" where len(TOKENS(X)) < 3
    return X
    """


def test_map_a_query_function_validates_rows_by_its_annotations() -> None:
    rows = [{"word": "ab", "times": 2}, {"word": "cd", "times": "many"}, {"word": "ef"}, {"times": 1}]
    results = querylm.map(shout, rows, progress=False)
    assert isinstance(results[0], querylm.QueryResult)
    assert results[0].prompt.startswith("ABAB:")
    assert results[0].return_value == results[0].variables["X"] == shout("ab", 2)
    assert isinstance(results[1], querylm.QueryInputError) and "'times' must be int" in str(results[1])
    assert str(results[1]).startswith("row 1: ")
    assert all(isinstance(r, querylm.QueryInputError) and "missing" in str(r) for r in results[2:])


def test_amap_is_map_for_async_code() -> None:
    results = asyncio.run(querylm.amap(SAY, [{"word": w} for w in WORDS[:2]], model="random", progress=False))
    assert_same_as_run(results, WORDS[:2])


def test_iter_many_reads_items_lazily_and_yields_each_index_once() -> None:
    taken: list[int] = []

    def items() -> Any:
        for i, w in enumerate(WORDS):
            taken.append(i)
            yield {"query": SAY, "word": w, "model": "random"}

    stream = iter_many(items(), batch_size=2, concurrency=1)
    first = next(stream)
    assert len(taken) <= 3  # a window of batch_size ahead, not the whole iterable
    seen = dict([first, *stream])
    assert sorted(seen) == list(range(len(WORDS)))
    assert_same_as_run([seen[i] for i in range(len(WORDS))], WORDS)


def test_an_input_named_like_a_run_option_is_an_input() -> None:
    """Rows are Jobs (inputs apart from options): a column named "model" reaches the query."""
    results = querylm.map('"{model} says:[X]" where len(TOKENS(X)) < 3', [{"model": "gpt"}], model="random")
    assert isinstance(results[0], querylm.QueryResult) and results[0].prompt.startswith("gpt says:")


def test_progress_bar_shows_rows_per_second_tokens_per_second_and_eta(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    results = querylm.map(SAY, [{"word": w} for w in WORDS], model="random")
    err = capsys.readouterr().err
    assert "5/5" in err and "row/s" in err and "tok/s" in err and "<" in err  # elapsed<ETA
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # not a terminal: no bar
    bar = Progress(True, 5)
    bar.update(results[0])
    bar.close()
    querylm.map(SAY, [{"word": "fig"}], model="random", progress=True)
    assert bar.bar is None and capsys.readouterr().err == ""


# -- the resumable CLI ----------------------------------------------------------------------------------

SLOW = 'argmax\n    "Row {n}:[X]"\nfrom "random"\nwhere len(TOKENS(X)) < 100\n'  # ~0.2 s a row


def records(path: Path) -> list[dict[str, Any]]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda r: r["index"])


@pytest.fixture
def slow_job(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A query, 24 rows, and the records of an uninterrupted run of them."""
    query = tmp_path / "slow.lmql"
    query.write_text(SLOW)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"n": i, "id": f"r{i}"}) + "\n" for i in range(24)))
    full = tmp_path / "full.jsonl"
    # One row at a time in every run here: threads running rows at once on one local model can mix up
    # values (rarely; seen before this change too), and this test is about resuming.
    assert cli(["run", str(query), "--inputs", str(rows), "--output", str(full), "--concurrency", "1"]) == 0
    return query, rows, records(full)


def test_a_killed_run_resumes_and_every_row_is_done_exactly_once(
    slow_job: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    query, rows, full = slow_job
    out = tmp_path / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "querylm.cli",
        "run",
        str(query),
        "--inputs",
        str(rows),
        "--output",
        str(out),
    ]
    cmd += ["--concurrency", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = records(out)
    assert 4 <= len(before) < len(full), "killed part-way"
    assert len({r["index"] for r in before}) == len(before)
    again = subprocess.run([*cmd, "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{len(full) - len(before)} rows done, 0 failed, {len(before)} already there" in again.stderr
    after = records(out)
    assert [r["index"] for r in after] == list(range(24))  # each row exactly once
    assert after == full  # and the same records as a run that was never interrupted
    assert all(r["line"] == r["index"] + 1 and r["key"] for r in after)


def test_a_torn_last_line_is_cut_and_its_row_done_again(
    slow_job: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query, rows, full = slow_job
    out = tmp_path / "out.jsonl"
    lines = [json.dumps(r) for r in full[:5]]
    for torn in (lines[4][: len(lines[4]) // 2], lines[4]):  # cut mid-record; whole but without its newline
        out.write_text("\n".join(lines[:4]) + "\n" + torn)
        args = ["run", str(query), "--inputs", str(rows), "--output", str(out), "--concurrency", "1"]
        assert cli(args) == 0
        assert "cut a torn last line" in capsys.readouterr().err
        assert records(out) == full


def test_an_output_from_other_inputs_is_refused(
    slow_job: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query, rows, full = slow_job
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in full[:3]))
    rows.write_text("".join(json.dumps({"n": i + 100}) + "\n" for i in range(24)))
    assert cli(["run", str(query), "--inputs", str(rows), "--output", str(out)]) == 2
    assert "written from other inputs" in capsys.readouterr().err
    assert records(out) == full[:3]  # untouched


def test_bad_rows_are_reported_with_their_line_and_written_as_error_records(
    write_query: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = write_query('argmax\n    "Say {word}:[X]"\nfrom "random"\nwhere len(TOKENS(X)) < 4\n')
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"word": "fig"}\n{"word": "kiwi"\n\n{"wrd": "x"}\n"fig"\n{"word": "plum"}\n')
    out = tmp_path / "out.jsonl"
    args = ["run", str(query), "--inputs", str(rows), "--output", str(out)]
    assert cli(args) == 3  # some rows failed
    err = capsys.readouterr().err
    assert f"{rows}:2:1: not JSON" in err and '    {"word": "kiwi"\n    ^' in err
    assert f"{rows}:4:1: missing input 'word' (the row has: wrd)" in err
    assert f"{rows}:5:1: a row must be a JSON object of inputs, not str" in err
    assert "2 rows done, 3 failed" in err
    recs = records(out)
    assert [(r["line"], "error" in r) for r in recs] == [
        (1, False),
        (2, True),
        (4, True),
        (5, True),
        (6, False),
    ]
    assert recs[2]["error"] == {
        "type": "QueryInputError",
        "message": "missing input 'word' (the row has: wrd)",
    }
    assert cli(args) == 3  # a rerun runs nothing and still says rows failed
    assert "0 rows done, 0 failed, 5 already there (3 of them failed)" in capsys.readouterr().err
    assert len(records(out)) == 5


def test_inputs_needs_output(write_query: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = write_query('"Say {word}:[X]" where len(TOKENS(X)) < 4')
    assert cli(["run", str(query), "--inputs", str(tmp_path / "rows.jsonl")]) == 2
    assert "--inputs and --output go together" in capsys.readouterr().err


# -- Ray ------------------------------------------------------------------------------------------------


def test_query_runner_on_a_batch_reports_a_null_input_as_missing() -> None:
    runner = QueryRunner(SAY, model="random")
    batch = {"word": np.array(["fig", None, "plum"], dtype=object), "id": np.array([1, 2, 3])}
    out = runner(batch)
    assert out["id"] == [1, 2, 3] and out["word"] == ["fig", None, "plum"]
    assert out["X"][0] == one_at_a_time(SAY, word="fig").variables["X"] and out["X"][1] is None
    assert out["error"][0] is None and out["error"][2] is None
    assert out["error"][1] == "row 1: missing input 'word' (the row has: id)"


@pytest.mark.model
def test_the_ray_example_labels_rows_on_a_local_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/ray_map.py on a real local Ray (2 actors; 4 logical CPUs, so that reading the rows
    finds one free beside the actors), on the default model."""
    import runpy

    import ray

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the actors import this checkout's querylm
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        example = runpy.run_path(str(EXAMPLES / "ray_map.py"))
        out = example["main"](rows=4)
    finally:
        ray.shutdown()
    assert [r["id"] for r in out] == [1, 2, 3, 4]
    reviews = [json.loads(line) for line in (EXAMPLES / "reviews.jsonl").read_text().splitlines()[:4]]
    assert [r["review"] for r in out] == [r["review"] for r in reviews]
    assert all(r["error"] is None and r["LABEL"] in ("positive", "negative", "neutral") for r in out)
    here = querylm.run(EXAMPLES / "sentiment.lmql", review=reviews[0]["review"])
    assert isinstance(here, querylm.QueryResult) and out[0]["LABEL"] == here.variables["LABEL"]


@pytest.mark.model
def test_the_sentiment_example_labels_the_shipped_dataset(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    example = EXAMPLES / "sentiment.lmql"
    assert cli(["run", str(example), "--inputs", str(EXAMPLES / "reviews.jsonl"), "--output", str(out)]) == 0
    recs = records(out)
    reviews = [json.loads(line) for line in (EXAMPLES / "reviews.jsonl").read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(20)) and len(reviews) == 20
    assert all(r["variables"]["LABEL"] in ("positive", "negative", "neutral") for r in recs)
    for i in (0, 7):  # batched rows give what one run gives
        one = querylm.run(example, review=reviews[i]["review"])
        assert isinstance(one, querylm.QueryResult) and recs[i]["variables"] == one.to_json()["variables"]

"""``querylm run FILE``, ``querylm check FILE`` and ``querylm mcp serve TARGET``.

Exit codes: 0 ok, 2 a query error (positioned, with the source line and a caret), 1 anything else,
3 a run over ``--inputs`` where some rows failed (their error records are in ``--output``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import QueryError, QueryInputError


def _input(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        return name, json.loads(value)  # numbers, lists, true/false, "quoted strings"
    except json.JSONDecodeError:
        return name, value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="querylm", description="Run LMQL-style queries with constrained decoding."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a .lmql query, streaming the prompt as it is generated")
    r.add_argument("file", type=Path)
    r.add_argument("--model", help="model id (overrides the query's from clause); default: local:smollm2")
    r.add_argument(
        "--decoder", help='decoder (overrides the query\'s): argmax, "sample(n=2, temperature=0.7)"'
    )
    r.add_argument(
        "--input",
        "-i",
        action="append",
        type=_input,
        default=[],
        metavar="NAME=VALUE",
        help="an input the query reads (JSON values are parsed: 3, true, [1,2])",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"prompt", "variables"} (a list when n > 1)',
    )
    r.add_argument("--no-chat", action="store_true", help="feed the prompt as raw text even to a chat model")
    r.add_argument(
        "--choices",
        choices=["values", "tokens"],
        default="values",
        help="decide a hole with a few possible values, or a short value under a grammar (argmax), by whole values (default) or token by token",
    )
    r.add_argument(
        "--no-heal",
        action="store_true",
        help="no token healing: a hole starts after the prompt's last token, as the prompt was tokenized",
    )
    r.add_argument(
        "--trace",
        type=Path,
        metavar="OUT",
        help="write the probability trace: OUT.json (data) or OUT.png (plot)",
    )
    r.add_argument("--device", help="cuda, cpu, cuda:1 ... (default: cuda when present)")
    r.add_argument("--dtype", help="float32, bfloat16, float16 (default: bfloat16 on GPU, float32 on CPU)")
    r.add_argument(
        "--inputs",
        type=Path,
        metavar="ROWS.jsonl",
        help="run once per row of a JSONL file (one JSON object of inputs a line); needs --output",
    )
    r.add_argument(
        "--output",
        type=Path,
        metavar="OUT.jsonl",
        help="with --inputs: append one record per finished row; a rerun skips the rows already there",
    )
    r.add_argument("--batch-size", type=int, default=16, help="with --inputs: rows run together (16)")
    r.add_argument("--concurrency", type=int, default=8, help="with --inputs: rows run at once (8)")
    r.add_argument("--no-progress", action="store_true", help="with --inputs: no progress bar")
    r.add_argument("-v", "--verbose", action="store_true")
    c = sub.add_parser("check", help="parse and compile a query without loading a model")
    c.add_argument("file", type=Path)
    m = sub.add_parser("mcp", help="Model Context Protocol").add_subparsers(dest="mcp_command", required=True)
    s = m.add_parser(
        "serve", help="serve tools and @query functions to MCP clients over stdio (stdout is the protocol)"
    )
    s.add_argument(
        "target",
        help="FILE.py or a module, optionally :ATTR (a ToolRegistry, tools, @query functions); "
        "without ATTR every registry, tool and @query function it defines",
    )
    s.add_argument("--name", default="querylm", help="the server's name, as clients show it")
    s.add_argument("--model", help="the model @query functions run on (default: each one's own)")
    s.add_argument("--timeout", type=float, default=300.0, help="seconds per call (default: 300)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="querylm: %(message)s",
    )
    try:
        if args.command == "check":
            from .language.check import compile_source

            plan = compile_source(args.file)
            q = plan.compiled.query
            holes = ", ".join(dict.fromkeys(h.name for h in q.holes))
            inputs = ", ".join(plan.compiled.inputs) or "none"
            print(f"{args.file}: ok ({q.decoder.name}; holes: {holes}; inputs: {inputs})")
            return 0
        if args.command == "mcp":
            from .tools.mcp_server import load_target, serve_mcp

            serve_mcp(load_target(args.target), name=args.name, model=args.model, timeout=args.timeout)
            return 0
        if args.inputs is not None or args.output is not None:
            return _run_rows(args)
        return _run(args)
    except QueryError as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # anything else: one line, not a traceback
        print(f"querylm: error: {type(err).__name__}: {err}", file=sys.stderr)
        if getattr(args, "verbose", False):
            raise
        return 1


def _run(args: argparse.Namespace) -> int:
    from .runtime.result import QueryResult
    from .runtime.run import run

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = run(
        args.file,
        model=args.model,
        decoder=args.decoder,
        stream=None if args.json else stream,
        chat=False if args.no_chat else None,
        choices=args.choices,
        heal=not args.no_heal,
        device=args.device,
        dtype=args.dtype,
        trace=args.trace is not None,
        **dict(args.input),
    )
    results: list[QueryResult] = result if isinstance(result, list) else [result]
    if args.trace is not None:
        from .runtime.trace import save

        if results[0].trace is None:
            print(f"querylm: no trace: the {results[0].decoder} decoder records none", file=sys.stderr)
        else:
            save(results[0].trace, args.trace, title=f"{args.file} ({results[0].model})")
    if args.json:
        payload: Any = [r.to_json() for r in results] if isinstance(result, list) else results[0].to_json()
        print(json.dumps(payload, ensure_ascii=False))
        return 0
    print()
    for i, r in enumerate(results):
        if len(results) > 1:  # beams come best first, with their scores; samples in the order drawn
            ranked = r.decoder in ("beam", "beam_sample", "best_k")
            print(f"--- result {i + 1} (score {r.score:.3f}) ---" if ranked else f"--- sample {i + 1} ---")
        for name, value in r.to_json()["variables"].items():
            print(f"{name} = {json.dumps(value, ensure_ascii=False)}")
        if r.return_value is not None:
            print(f"return = {r.return_value!r}")
    return 0


def _run_rows(args: argparse.Namespace) -> int:
    """``--inputs ROWS --output OUT``: every finished row is a record in OUT at once (synced), a rerun
    does only the rows OUT lacks, and a bad row is an error record reported with its line number."""
    from .mapping import Target, count_rows, run_rows
    from .runtime.dataset import OutputLog, Progress, read_rows, record

    if args.inputs is None or args.output is None:
        raise QueryInputError("--inputs and --output go together: rows in, one record a row out")
    if args.input:
        raise QueryInputError("--input and --inputs don't mix: put every input in the rows")
    if args.trace is not None:
        raise QueryInputError("--trace records one run: it does not go with --inputs")
    target = Target(args.file)
    log = OutputLog(args.output)
    try:
        if log.torn:
            print(f"querylm: {args.output}: cut a torn last line (its row runs again)", file=sys.stderr)
        rows = read_rows(args.inputs)
        todo = (count_rows(args.inputs) or 0) - len(log.done)
        bar = Progress(not args.no_progress, max(todo, 0))
        done = failed = 0
        try:
            for row, outcome in run_rows(
                target,
                rows,
                batch_size=args.batch_size,
                concurrency=args.concurrency,
                skip=log.check,
                model=args.model,
                decoder=args.decoder,
                chat=False if args.no_chat else None,
                device=args.device,
                dtype=args.dtype,
            ):
                log.write(record(row, outcome))
                bar.update(outcome)
                if isinstance(outcome, Exception):
                    failed += 1
                    bar.note(
                        str(outcome) if isinstance(outcome, QueryError) else f"row {row.index}: {outcome}"
                    )
                else:
                    done += 1
        finally:
            bar.close()
    finally:
        log.close()
    skipped = len(log.done) - done - failed
    failed_before = sum(1 for rec in log.done.values() if "error" in rec) - failed
    print(
        f"querylm: {args.output}: {done} rows done, {failed} failed"
        + (f", {skipped} already there ({failed_before} of them failed)" if skipped else ""),
        file=sys.stderr,
    )
    return 3 if failed or failed_before else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

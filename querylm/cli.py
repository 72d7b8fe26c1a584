"""``querylm run FILE``, ``querylm check FILE`` and ``querylm mcp serve TARGET``.

Exit codes: 0 ok, 2 a query error (positioned, with the source line and a caret), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .errors import QueryError


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
        help="decide a hole with a few possible values by whole values (default) or token by token",
    )
    r.add_argument(
        "--trace",
        type=Path,
        metavar="OUT",
        help="write the probability trace: OUT.json (data) or OUT.png (plot)",
    )
    r.add_argument("--device", help="cuda, cpu, cuda:1 ... (default: cuda when present)")
    r.add_argument("--dtype", help="float32, bfloat16, float16 (default: bfloat16 on GPU, float32 on CPU)")
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
            from .query import compile_source

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

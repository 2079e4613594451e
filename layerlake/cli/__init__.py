"""The ``layerlake`` command line.

``commands`` (one parser and handler per sub-command, all through
:class:`layerlake.Lake`), ``render`` (everything written to the terminal),
``quickstart`` (the embedded default corpus and model).

Exit codes: 0 success, 1 runtime error (damaged data, failed write), 2 bad input
or usage. Errors are one line on stderr; set LAYERLAKE_DEBUG=1 for tracebacks.
Run as the ``layerlake`` program (``main()`` without arguments), the process
ends right after the command, with its exit code: native thread pools of
zarr, DuckDB and torch are not torn down at interpreter exit, where they can
abort the process ("terminate called without an active exception").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import LayerlakeError
from .commands import COMMANDS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerlake",
        description="An offline activation data lake for transformer models: ingest once, then query stored "
                    "hidden states, losses and Jacobian sketches with SQL, Polars and metrics.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    # the same two flags are accepted after the sub-command too
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress details")
    common.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS, help="hide progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common, *k.pop("parents", [])], **k)  # type: ignore
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv=None`` (the program) exits the process with the code, others return it."""
    if argv is not None:
        return _run(argv)
    try:
        code = _run(argv)
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
    _exit(code)
    return code  # not reached


def _exit(code: int) -> None:
    """Flush what was written and end the process now, skipping the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written anyway
            pass
    logging.shutdown()
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from ..progress import set_progress
    if args.no_progress:
        set_progress(False)
    try:
        return int(args.func(args) or 0)
    except LayerlakeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; committed shards are kept, run the same command again to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: write or read failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the CLI never shows a traceback unless asked
        if os.environ.get("LAYERLAKE_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc} (set LAYERLAKE_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1

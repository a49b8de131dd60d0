"""The ``gemini-pool`` command line (also ``python -m langchain_gemini_pool``).

``gemini-pool demo``          a burst through the pool: the embedded emulator, or a real exchange
``gemini-pool keys``          ``list`` / ``add`` / ``check`` the configured keys (always masked)
``gemini-pool status``        key states, cooldowns, quarantines, window room
``gemini-pool usage``         ledger totals by user, key, project, model, with cost and overage
``gemini-pool cache``         ``stats`` / ``clear`` the response cache
``gemini-pool emulator``      run the local Gemini API emulator until Ctrl-C

Exit status: 0 all is well, 1 a problem was found, 2 the command line was wrong. The commands
live in ``langchain_gemini_pool._cli``; each imports the heavy parts only when it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import TextIO

from langchain_gemini_pool import __version__
from langchain_gemini_pool._cli._output import PROBLEM, USAGE, CliError, Context
from langchain_gemini_pool._cli._output import format_table as format_table
from langchain_gemini_pool._cli._parser import DEFAULT_MODEL as DEFAULT_MODEL
from langchain_gemini_pool._cli._parser import build_parser as _build_parser

__all__ = ["build_parser", "main"]


def build_parser() -> object:
    """The argument parser (for documentation tools)."""
    return _build_parser(__version__)


def _normalise(argv: list[str]) -> list[str]:
    """Accept ``gemini-pool emulator -- --port 8766`` as well as ``emulator --port 8766``."""
    if "emulator" in argv:
        at = argv.index("emulator")
        if at + 1 < len(argv) and argv[at + 1] == "--":
            return argv[: at + 1] + argv[at + 2 :]
    return argv


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the command line; returns the exit status (0 ok, 1 problem found, 2 usage error)."""
    args_list = _normalise(list(sys.argv[1:] if argv is None else argv))
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _build_parser(__version__)
    try:  # argparse writes help and usage errors to sys.stdout / sys.stderr
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    ctx = Context(out=out, err=err, stdin=stdin or sys.stdin, debug=args.debug)
    module_name, function_name = args.handler.split(":")
    try:
        module = importlib.import_module(f"langchain_gemini_pool._cli.{module_name}")
        return int(getattr(module, function_name)(args, ctx))
    except CliError as exc:
        if args.debug:
            traceback.print_exc(file=err)
        prefix = "usage error" if exc.code == USAGE else "error"
        print(f"gemini-pool {args.command}: {prefix}: {exc}", file=err, flush=True)
        if exc.__cause__ is not None and not args.debug:
            print("(run again with --debug for the full traceback)", file=err)
        return exc.code
    except KeyboardInterrupt:
        print("Interrupted.", file=err)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc(file=err)
        from langchain_gemini_pool._cli._failures import configured_secrets, explain

        secrets = configured_secrets(getattr(args, "env_file", None))
        print(f"gemini-pool {args.command}: error: {explain(exc, '', secrets)}", file=err)
        if not args.debug:
            print("(run again with --debug for the full traceback)", file=err)
        return PROBLEM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

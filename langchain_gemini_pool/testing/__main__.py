"""``python -m langchain_gemini_pool.testing``: run the Gemini emulator until Ctrl-C.

The same options as ``gemini-pool emulator`` (declared once, in ``_cli/_emulator.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from langchain_gemini_pool._cli._emulator import add_emulator_arguments, build_server, serve
from langchain_gemini_pool._cli._output import CliError


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until interrupted; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m langchain_gemini_pool.testing",
        description="A local emulator of the Gemini Developer API (the real google-genai SDK "
        "talks to it as to Google). Any key is accepted unless --key or --project is given.",
    )
    add_emulator_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(build_server(args), args, sys.stdout)
    except CliError as exc:
        parser.exit(exc.code, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())

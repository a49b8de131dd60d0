"""``gemini-pool cache stats | clear``: the response cache (``GeminiDiskCache``) on disk.

An explicit ``--directory`` that holds no cache is an error (exit 1) and is never created;
the default directory with nothing cached yet reports zero entries. JSON fields of ``stats``
(stable): ``directory``, ``exists``, ``entries``, ``bytes``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from langchain_gemini_pool._cli._output import OK, PROBLEM, CliError, Context


def _directory(args: argparse.Namespace) -> tuple[Path, bool]:
    """The directory to read and whether it holds a cache; an explicit one must."""
    from langchain_gemini_pool._cache import default_cache_directory

    explicit = args.directory is not None
    path = Path(args.directory).expanduser() if explicit else default_cache_directory()
    exists = (path / "cache.db").is_file()
    if explicit and not exists:
        what = "does not exist" if not path.exists() else "holds no response cache (no cache.db)"
        raise CliError(
            f"The cache directory {str(path)!r} {what}. Check the path (the default is "
            "$GEMINI_POOL_CACHE_DIR or the user cache directory; leave --directory out to use it).",
            PROBLEM,
        )
    return path, exists


def _open(path: Path) -> Any:
    from langchain_gemini_pool._cache import GeminiDiskCache

    return GeminiDiskCache(path)


def stats(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool cache stats``."""
    output = ctx.output(args.json)
    path, exists = _directory(args)
    figures = {"entries": 0, "bytes": 0}
    if exists:
        cache = _open(path)
        found = cache.stats()
        cache.close()
        figures = {"entries": found["entries"], "bytes": found["bytes"]}
    doc = {"directory": str(path.absolute()), "exists": exists, **figures}
    if args.json:
        output.json(doc)
        return OK
    output.line(f"Response cache: {path.absolute()}")
    if not exists:
        output.line("Nothing cached yet (the directory holds no cache).")
    output.line(f"entries  {figures['entries']:,}")
    output.line(f"size     {figures['bytes'] / 1e6:,.2f} MB")
    return OK


def clear(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool cache clear``: asks first unless ``--yes``."""
    path, exists = _directory(args)
    if not exists:
        print(f"Nothing to clear: {path} holds no cache.", file=ctx.out)
        return OK
    cache = _open(path)
    entries = cache.stats()["entries"]
    if not args.yes:
        print(
            f"Remove all {entries:,} entries from {path}? [y/N] ", end="", file=ctx.out, flush=True
        )
        answer = ctx.stdin.readline()
        if answer.strip().lower() not in ("y", "yes"):
            why = (
                "" if answer else " (no answer on standard input; pass --yes to skip the question)"
            )
            print(f"\nNothing removed{why}.", file=ctx.out)
            cache.close()
            return PROBLEM
    cache.clear()
    left = cache.stats()["entries"]
    cache.close()
    print(f"Removed {entries - left:,} entries from {path}.", file=ctx.out)
    return OK if left == 0 else PROBLEM

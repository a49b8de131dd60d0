"""``gemini-pool keys list | add | check``: what is configured, adding keys, testing each key.

No key text is ever printed: keys appear as ``mask_key`` (``…`` plus the last four characters).
``list`` imports only ``_keys`` (dotenv, pydantic) so that it starts fast; ``check`` imports
google-genai, and sends one ``countTokens`` per key (free of generate quota), concurrently.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from langchain_gemini_pool._cli._output import OK, PROBLEM, USAGE, CliError, Context

LIST_COLUMNS = (
    ("index", "#"),
    ("key", "key"),
    ("source", "from"),
    ("project", "project"),
)
CHECK_COLUMNS = (
    ("index", "#"),
    ("key", "key"),
    ("project", "project"),
    ("result", "result"),
    ("reason", "reason"),
    ("seconds", "s"),
)
_NUMBERED = re.compile(r"^GEMINI_API_KEY_(\d+)$")
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]{8,256}$")
_NOT_IN_KEYS = set("\"'`#=,;\\")


def _env_path(env_file: str | None) -> Path | None:
    from dotenv import find_dotenv

    if env_file is not None:
        return Path(env_file)
    found = find_dotenv(usecwd=True)
    return Path(found) if found else None


def _file_lines(path: Path | None) -> dict[str, int]:
    """Variable name -> line number in the ``.env`` file (its last assignment)."""
    if path is None or not path.is_file():
        return {}
    from dotenv.parser import parse_stream

    lines: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8") as stream:
            for binding in parse_stream(stream):
                if binding.key and not binding.error:
                    lines[binding.key] = binding.original.line
    except (OSError, UnicodeDecodeError):
        return {}
    return lines


def _sources(path: Path | None) -> dict[str, str]:
    """Key text -> where it was read (variable, and ``.env`` line or environment)."""
    from dotenv import dotenv_values

    from langchain_gemini_pool._keys import _clean

    file_values = dict(dotenv_values(path, encoding="utf-8")) if path and path.is_file() else {}
    lines = _file_lines(path)
    merged: dict[str, str | None] = {**file_values, **os.environ}
    names = ["GEMINI_API_KEY"]
    numbered = [(int(m.group(1)), n) for n in merged if (m := _NUMBERED.match(n)) is not None]
    names += [n for _, n in sorted(numbered)]
    names += ["GEMINI_API_KEYS", "GOOGLE_API_KEY"]
    out: dict[str, str] = {}
    for name in names:
        raw = merged.get(name)
        if not raw:
            continue
        where = (
            "environment"
            if name in os.environ
            else f"{path.name if path else '.env'}:{lines.get(name, '?')}"
        )
        parts = _clean(raw).split(",") if name == "GEMINI_API_KEYS" else [raw]
        for part in parts:
            out.setdefault(_clean(part), f"{name} ({where})")
    return out


def configured(env_file: str | None) -> list[dict[str, Any]]:
    """The keys ``ChatGeminiPool()`` would load: index, masked key, source, project.

    Raises:
        CliError: No key is configured, or the ``.env`` file cannot be read.
    """
    from langchain_gemini_pool._keys import load_api_keys, mask_key, normalize_keys

    try:
        keys = load_api_keys(env_file)
    except ValueError as exc:
        code = USAGE if env_file is not None and "does not exist" in str(exc) else PROBLEM
        raise CliError(str(exc), code) from None
    sources = _sources(_env_path(env_file))
    entries = normalize_keys(keys)
    return [
        {
            "index": i,
            "key": mask_key(entry.secret),
            "source": sources.get(entry.secret.get_secret_value(), "?"),
            "project": entry.project,
            "_secret": entry.secret.get_secret_value(),
        }
        for i, entry in enumerate(entries)
    ]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def list_keys(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool keys [list]``."""
    output = ctx.output(args.json)
    rows = configured(args.env_file)
    if args.json:
        output.json({"keys": [_public(r) for r in rows]})
        return OK
    output.table(rows, LIST_COLUMNS, title=f"{len(rows)} Gemini API key(s), masked")
    return OK


# -- add -------------------------------------------------------------------------------------


def _malformed(key: str) -> str | None:
    """Why ``key`` cannot be a Gemini API key, or ``None``."""
    if not _KEY_SHAPE.match(key):
        if any(c.isspace() for c in key) or not key.isascii() or not key.isprintable():
            return "it holds whitespace, control or non-ASCII characters"
        return "a key is 8 to 256 printable characters"
    if set(key) & _NOT_IN_KEYS:
        return "it holds a quote, '#', '=', ',', ';' or backslash"
    return None


def _read_new_keys(args: argparse.Namespace, ctx: Context) -> list[str]:
    if args.keys:
        return [k.strip() for k in args.keys]
    if ctx.stdin.isatty():  # a person at a terminal: ask, without echoing what is pasted
        import getpass

        print("Paste one key per prompt (input hidden); an empty line ends.", file=ctx.err)
        typed: list[str] = []
        while key := getpass.getpass(f"key {len(typed) + 1}: ").strip():
            typed.append(key)
        if not typed:
            raise CliError("no key given.", USAGE)
        return typed
    keys = [line.strip() for line in ctx.stdin.read().splitlines() if line.strip()]
    if not keys:
        raise CliError(
            "no key given: nothing was on standard input and no KEY argument was passed.", USAGE
        )
    return keys


def add_keys(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool keys add [KEY...]``: append under the next free ``GEMINI_API_KEY_N``."""
    from dotenv import dotenv_values

    from langchain_gemini_pool._keys import _clean, mask_key

    new = _read_new_keys(args, ctx)
    path = Path(args.env_file)
    if path.exists() and not path.is_file():
        raise CliError(f"{str(path)!r} is not a file; pass --env-file PATH of a .env file.", USAGE)
    existing = dict(dotenv_values(path, encoding="utf-8")) if path.is_file() else {}
    known = {
        _clean(part)
        for value in [*existing.values(), *os.environ.values()]
        if value
        for part in value.split(",")
    }
    problems = []
    seen: set[str] = set()
    for n, key in enumerate(new, 1):
        why = _malformed(key)
        if why:
            problems.append(f"key {n} ({mask_key(key)}) is malformed: {why}")
        elif key in known:
            problems.append(f"key {n} ({mask_key(key)}) is already configured")
        elif key in seen:
            problems.append(f"key {n} ({mask_key(key)}) is given twice")
        seen.add(key)
    if problems:
        raise CliError("nothing was added: " + "; ".join(problems) + ".", PROBLEM)
    taken = {int(m.group(1)) for name in existing if (m := _NUMBERED.match(name))}
    taken |= {int(m.group(1)) for name in os.environ if (m := _NUMBERED.match(name))}
    lines, names = [], []
    number = max(taken, default=0)
    for key in new:
        number += 1
        names.append(f"GEMINI_API_KEY_{number}")
        lines.append(f"GEMINI_API_KEY_{number}={key}\n")
    prefix = ""
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            prefix = "" if f.read(1) == b"\n" else "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(prefix + "".join(lines))
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    for name, key in zip(names, new, strict=True):
        print(f"added {mask_key(key)} as {name} in {path}", file=ctx.out)
    print(f"{path} is readable by you only (mode 0600). Never commit it.", file=ctx.out)
    return OK


# -- check -----------------------------------------------------------------------------------


def _check_one(secret: str, model: str, base_url: str | None, timeout: float) -> dict[str, Any]:
    import time

    from google import genai
    from google.genai import types

    from langchain_gemini_pool._errors import FailureKind, classify

    options = types.HttpOptions(timeout=int(timeout * 1000), base_url=base_url)
    started = time.perf_counter()
    try:
        client = genai.Client(api_key=secret, http_options=options)
        client.models.count_tokens(model=model, contents="ping")
        result, reason = "valid", None
    except Exception as exc:  # classified below; nothing escapes a key check
        failure = classify(exc)
        if failure.kind is FailureKind.BAD_KEY:
            result, reason = "invalid", failure.reason
        elif failure.kind is FailureKind.RATE_LIMITED:
            result, reason = "rate limited", failure.reason
        elif failure.reason.startswith("transport"):
            result, reason = "unreachable", failure.reason
        else:
            result, reason = "error", failure.reason
    return {"result": result, "reason": reason, "seconds": round(time.perf_counter() - started, 3)}


def check_keys(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool keys check``: one countTokens per key, concurrently."""
    if args.timeout <= 0:
        raise CliError("--timeout must be a positive number of seconds.", USAGE)
    output = ctx.output(args.json)
    rows = configured(args.env_file)
    with ThreadPoolExecutor(max_workers=min(16, len(rows))) as pool:
        results = list(
            pool.map(
                lambda r: _check_one(r["_secret"], args.model, args.base_url, args.timeout), rows
            )
        )
    checked = [{**_public(r), **res} for r, res in zip(rows, results, strict=True)]
    bad = [r for r in checked if r["result"] in ("invalid", "unreachable", "error")]
    target = args.base_url or "Google"
    if args.json:
        output.json(
            {"base_url": args.base_url, "model": args.model, "keys": checked, "ok": not bad}
        )
    else:
        output.table(
            checked,
            CHECK_COLUMNS,
            title=f"countTokens per key against {target}",
            state_field="result",
        )
        summary = f"{len(checked) - len(bad)} of {len(checked)} key(s) usable"
        output.line(summary + ("." if not bad else f"; {len(bad)} need attention (see reason)."))
    return PROBLEM if bad else OK

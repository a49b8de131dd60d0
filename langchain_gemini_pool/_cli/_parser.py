"""The argument parser of ``gemini-pool``: every command, every option, with help.

Each command names its handler as ``"module:function"`` inside this package; the module is
imported only when that command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse

from langchain_gemini_pool._cli._emulator import add_emulator_arguments

DEFAULT_MODEL = "gemini-2.5-flash"

_EPILOG = """\
exit status: 0 all is well, 1 a problem was found (an invalid key, a missing ledger, a failed
request), 2 the command line was wrong.

Keys are read from GEMINI_API_KEY, GEMINI_API_KEY_1 … GEMINI_API_KEY_N, GEMINI_API_KEYS and
GOOGLE_API_KEY, in the environment or the nearest .env upward from the working directory.
Keys are only ever printed masked (… plus the last four characters)."""


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document (stable fields; see README)"
    )


def _env_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        default=None,
        metavar="PATH",
        help="read keys from this .env file (default: the nearest .env upward from here)",
    )


def _handler(parser: argparse.ArgumentParser, target: str) -> None:
    parser.set_defaults(handler=target)


def build_parser(version: str) -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="gemini-pool",
        description="A pool of Gemini API keys for LangChain: try it, check your keys, watch "
        "quotas and usage, run the local emulator.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and DEBUG logs on failure"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="drive a burst of requests through ChatGeminiPool (emulator, or a real exchange)",
        description="With no keys configured (or with --emulator): a burst through the pool "
        "against the embedded emulator — failover, 429s, a bad key — then the same burst with "
        "QuotaLimits and a disk cache, then repeated from the cache. With keys configured: a "
        "short real exchange with Google.",
    )
    demo.add_argument(
        "--model", default=DEFAULT_MODEL, help="Gemini model name (default %(default)s)"
    )
    demo.add_argument(
        "--requests", type=int, default=12, help="requests in each emulated burst (default 12)"
    )
    demo.add_argument(
        "--emulator", action="store_true", help="use the embedded emulator even when keys are set"
    )
    demo.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="with real keys: talk to this endpoint instead of Google (a proxy, or the emulator)",
    )
    _env_file(demo)
    _handler(demo, "_demo:run")

    keys = sub.add_parser(
        "keys",
        help="list, add and check API keys",
        description="Without a subcommand: the same as 'keys list'.",
    )
    _env_file(keys)
    _json(keys)
    _handler(keys, "_keys:list_keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    klist = keys_sub.add_parser(
        "list", help="the keys that would be loaded: masked key, where it came from, project"
    )
    _env_file(klist)
    _json(klist)
    _handler(klist, "_keys:list_keys")
    kadd = keys_sub.add_parser(
        "add",
        help="append keys to .env as GEMINI_API_KEY_N (file mode 0600)",
        description="Appends each key under the next free GEMINI_API_KEY_N. With no KEY "
        "arguments the keys are read from standard input (one per line), so they stay out of "
        "your shell history: `gemini-pool keys add < new-keys.txt`. A key is never echoed.",
    )
    kadd.add_argument("keys", nargs="*", metavar="KEY", help="keys to add (default: read stdin)")
    kadd.add_argument(
        "--env-file",
        default=".env",
        metavar="PATH",
        help="the .env file to append to (default: ./.env, created with mode 0600)",
    )
    _handler(kadd, "_keys:add_keys")
    kcheck = keys_sub.add_parser(
        "check",
        help="one cheap call per key (countTokens), concurrently: valid / invalid / rate limited",
        description="Sends one countTokens request per key (free of generate quota) and "
        "reports each key as valid, invalid (with Google's reason) or rate limited. Exit "
        "status 1 if any key is invalid or unreachable.",
    )
    _env_file(kcheck)
    kcheck.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="talk to this endpoint instead of Google (e.g. the emulator's http://127.0.0.1:8765)",
    )
    kcheck.add_argument("--model", default=DEFAULT_MODEL, help="model to count tokens on")
    kcheck.add_argument(
        "--timeout", type=float, default=15.0, metavar="SECONDS", help="per key (default 15)"
    )
    _json(kcheck)
    _handler(kcheck, "_keys:check_keys")

    status = sub.add_parser(
        "status",
        help="key states, cooldowns, quarantines and window room",
        description="What a pool built from the configured keys reports: each key's state "
        "(ready / cooling / invalid), cooldown left, quarantine reason and window room. No "
        "request is sent. With a shared state backend (--state or GEMINI_POOL_STATE) it is "
        "what every worker sees; without one, the state of a fresh pool in this process.",
    )
    _env_file(status)
    status.add_argument(
        "--state",
        default=None,
        metavar="URL_OR_DIR",
        help="the pool's shared state: a redis:// URL or a DiskState directory "
        "(default: $GEMINI_POOL_STATE)",
    )
    status.add_argument("--model", default=DEFAULT_MODEL, help="model the pool is built for")
    status.add_argument("--rpm", type=int, help="QuotaLimits rpm to show window room against")
    status.add_argument("--tpm", type=int, help="QuotaLimits tpm to show window room against")
    status.add_argument("--rpd", type=int, help="QuotaLimits rpd to show window room against")
    _json(status)
    _handler(status, "_status:run")

    usage = sub.add_parser(
        "usage",
        help="ledger totals by user, key, project and model, with cost and overage",
        description="Reads a UsageLedger directory (never creates one) and prints its totals "
        "for one period, grouped by user, key, project and model.",
    )
    usage.add_argument(
        "--directory",
        default=None,
        metavar="PATH",
        help="the ledger directory (default: $GEMINI_POOL_LEDGER_DIR or the user cache dir); "
        "an explicit directory that holds no ledger is an error",
    )
    usage.add_argument("--user", default=None, help="only this user")
    usage.add_argument("--model", default=None, help="only this model")
    usage.add_argument(
        "--period",
        choices=("day", "month", "all"),
        default="month",
        help="the current day, the current month or all time (default %(default)s)",
    )
    usage.add_argument(
        "--by",
        choices=("user", "key", "project", "model"),
        action="append",
        default=None,
        help="group by this (repeatable; default: all four)",
    )
    usage.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a UsageLimits figure (requests_per_day, tokens_per_day, tokens_per_month, "
        "cost_per_month) to show each user's overage against (repeatable)",
    )
    usage.add_argument(
        "--tz", default=None, help="time zone of days and months (default UTC, as the ledger's)"
    )
    _json(usage)
    _handler(usage, "_usage:run")

    cache = sub.add_parser("cache", help="the response cache: stats, clear")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    cache_sub.required = True
    for name, text in (
        ("stats", "entries, size on disk and directory"),
        ("clear", "remove every entry"),
    ):
        one = cache_sub.add_parser(name, help=text)
        one.add_argument(
            "--directory",
            default=None,
            metavar="PATH",
            help="the cache directory (default: $GEMINI_POOL_CACHE_DIR or the user cache dir)",
        )
        if name == "stats":
            _json(one)
            _handler(one, "_cache:stats")
        else:
            one.add_argument("--yes", "-y", action="store_true", help="do not ask before clearing")
            _handler(one, "_cache:clear")

    emulator = sub.add_parser(
        "emulator",
        help="run the local Gemini API emulator until Ctrl-C",
        description="A local emulator of the Gemini Developer API (the same as `python -m "
        "langchain_gemini_pool.testing`). Any key is accepted unless --key or --project is given.",
    )
    add_emulator_arguments(emulator)
    _handler(emulator, "_emulator:run")
    return parser

"""The ``gemini-pool`` command line.

``gemini-pool demo``      the main job: a burst through the pool (the embedded emulator when no
                          keys are configured; one short real request when they are)
``gemini-pool keys``      the keys the environment and ``.env`` provide, masked
``gemini-pool emulator``  run the local Gemini API emulator until Ctrl-C
``gemini-pool usage``     totals from a usage ledger
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from langchain_gemini_pool._keys import load_api_keys, mask_key

DEFAULT_MODEL = "gemini-2.5-flash"
_STATUS_COLUMNS = (
    ("index", "#"),
    ("fingerprint", "key"),
    ("project", "project"),
    ("state", "state"),
    ("ready_in_s", "ready in s"),
    ("requests", "requests"),
    ("successes", "ok"),
    ("rate_limited", "429s"),
    ("errors", "errors"),
    ("reason", "reason"),
)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table of ``rows`` (dicts) with the given (key, heading) columns."""
    cells = [[h for _, h in columns]]
    for row in rows:
        cells.append(["" if row.get(k) is None else str(row.get(k)) for k, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _print_status(pool: Any, out: TextIO) -> None:
    print("\npool_status():", file=out)
    print(format_table(pool.pool_status(), _STATUS_COLUMNS), file=out)


def _describe(message: Any) -> str:
    meta = message.response_metadata
    failovers = [a for a in meta.get("attempts", []) if a["outcome"] != "ok"]
    text = f"key {meta['key_index']} ({meta['key_fingerprint']}, {meta['project']})"
    if failovers:
        steps = ", ".join(f"key {a['key_index']} {a['outcome']}" for a in failovers)
        text += f"  after: {steps}"
    return text


def demo_emulated(out: TextIO, requests: int = 12, model: str = DEFAULT_MODEL) -> int:
    """Drive a burst through the pool against the embedded emulator."""
    from langchain_gemini_pool._quota import QuotaLimits
    from langchain_gemini_pool.chat_models import ChatGeminiPool
    from langchain_gemini_pool.testing import FakeGeminiServer, Quota

    keys = {
        "team-alpha": ["demo-key-alpha-0001", "demo-key-alpha-0002"],
        "team-beta": ["demo-key-beta-0003", "demo-key-beta-0004"],
    }
    window = 2.0
    print(
        "No Gemini API keys configured: running against the embedded emulator.\n"
        f"Keys: 2 projects x 2 keys; key …0004 is invalid; each project may send 3 requests "
        f"per {window:g} s window (a scaled-down minute).\n",
        file=out,
    )
    with FakeGeminiServer(
        keys=keys,
        quotas=Quota(rpm=3),
        bad_keys={"demo-key-beta-0004": "invalid"},
        window_s=window,
    ) as server:
        pool = ChatGeminiPool(model=model, api_keys=keys, base_url=server.base_url, max_wait=10)
        started = time.perf_counter()
        for n in range(1, requests + 1):
            begun = time.perf_counter()
            message = pool.invoke(f"Request number {n}: say something short.")
            took = time.perf_counter() - begun
            print(f"request {n:2d}  {took:5.2f} s  served by {_describe(message)}", file=out)
        elapsed = time.perf_counter() - started
        _print_status(pool, out)
        total = server.stats()["total"]
        print(
            f"\n{requests} requests in {elapsed:.1f} s; the emulator saw {total['requests']} "
            f"HTTP calls, {total['rate_limited']} of them answered 429 and "
            f"{total['client_errors']} refused a bad key. Every request reached the caller.",
            file=out,
        )
    with FakeGeminiServer(
        keys=keys, quotas=Quota(rpm=3), bad_keys={"demo-key-beta-0004": "invalid"}, window_s=window
    ) as server:
        polite = ChatGeminiPool(
            model=model,
            api_keys=keys,
            base_url=server.base_url,
            max_wait=10,
            limits=QuotaLimits(rpm=3, window_s=window),
        )
        started = time.perf_counter()
        for n in range(1, requests + 1):
            polite.invoke(f"Request number {n}: say something short.")
        elapsed = time.perf_counter() - started
        total = server.stats()["total"]
        print(
            f"\nThe same burst with limits=QuotaLimits(rpm=3, window_s={window:g}): {requests} "
            f"requests in {elapsed:.1f} s, {total['requests']} HTTP calls, "
            f"{total['rate_limited']} answered 429 — the pool waited for room instead.",
            file=out,
        )
    return 0


def demo_real(out: TextIO, model: str = DEFAULT_MODEL) -> int:
    """One short real request with the configured keys."""
    from langchain_gemini_pool.chat_models import ChatGeminiPool

    pool = ChatGeminiPool(model=model)
    print(f"Sending one short request to Google ({model}) through the pool.", file=out)
    message = pool.invoke("Say hello in five words.")
    print(f"reply: {message.content!s}", file=out)
    print(f"served by {_describe(message)}; usage: {message.usage_metadata}", file=out)
    _print_status(pool, out)
    return 0


def _has_keys(env_file: str | None) -> bool:
    try:
        load_api_keys(env_file)
    except ValueError:
        return False
    return True


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    if args.emulator or not _has_keys(args.env_file):
        return demo_emulated(out, args.requests, args.model)
    return demo_real(out, args.model)


def _cmd_keys(args: argparse.Namespace, out: TextIO) -> int:
    try:
        keys = load_api_keys(args.env_file)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for index, key in enumerate(keys):
        print(f"{index}  {mask_key(key)}", file=out)
    return 0


def _cmd_emulator(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_gemini_pool.testing.__main__ import main as emulator_main

    emulator_main(args.rest)
    return 0


def _cmd_usage(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_gemini_pool._usage_ledger import UsageLedger

    try:
        ledger = UsageLedger(args.directory)
    except ValueError as exc:  # a directory that cannot be one: say so, no traceback
        print(f"gemini-pool usage: {exc}", file=sys.stderr)
        return 2
    totals = ledger.totals(user=args.user, period=args.period)
    for name, value in totals.to_dict().items():
        print(f"{name:22s} {value}", file=out)
    if ledger.problem is not None:  # already logged as a WARNING; the figures are incomplete
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gemini-pool",
        description="A pool of Gemini API keys for LangChain: demo, keys, emulator, usage.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="drive a burst of requests through ChatGeminiPool")
    demo.add_argument("--model", default=DEFAULT_MODEL)
    demo.add_argument("--requests", type=int, default=12, help="requests in the emulated burst")
    demo.add_argument("--emulator", action="store_true", help="use the emulator even with keys")
    demo.add_argument("--env-file", default=None)
    demo.set_defaults(func=_cmd_demo)

    keys = sub.add_parser("keys", help="list the configured keys, masked")
    keys.add_argument("--env-file", default=None)
    keys.set_defaults(func=_cmd_keys)

    emulator = sub.add_parser("emulator", help="run the local Gemini API emulator")
    emulator.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the emulator")
    emulator.set_defaults(func=_cmd_emulator)

    usage = sub.add_parser("usage", help="print totals from a usage ledger")
    usage.add_argument("--directory", default=None)
    usage.add_argument("--user", default=None)
    usage.add_argument("--period", choices=("day", "month", "all"), default="all")
    usage.set_defaults(func=_cmd_usage)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args, out or sys.stdout))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

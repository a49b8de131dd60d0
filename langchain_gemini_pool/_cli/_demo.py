"""``gemini-pool demo``: the pool at work, against the embedded emulator or Google.

Emulated: a burst through a pool of 2 projects x 2 keys (one key invalid, tight quotas) that
collects 429s and fails over; the same burst with ``QuotaLimits`` and a disk cache, which earns
no 429; the same burst again, answered from disk with 0 HTTP calls; then per-key and per-user
usage tables from a ``GeminiUsageCallbackHandler``. Real: a short exchange with Google.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from langchain_gemini_pool._cli._output import PROBLEM, USAGE, CliError, Context, Output

STATUS_COLUMNS = (
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
USAGE_COLUMNS = (
    ("name", ""),
    ("requests", "requests"),
    ("attempts", "HTTP attempts"),
    ("successful_requests", "ok"),
    ("cached_requests", "cached"),
    ("failed_requests", "failed"),
    ("total_tokens", "tokens"),
    ("cost_usd", "cost $"),
)
_USERS = ("alice", "bob", "carol")
_WINDOW = 2.0
_KEYS = {
    "team-alpha": ["demo-key-alpha-0001", "demo-key-alpha-0002"],
    "team-beta": ["demo-key-beta-0003", "demo-key-beta-0004"],
}
_BAD = {"demo-key-beta-0004": "invalid"}


def describe(message: Any) -> str:
    """Which key served ``message``, and the failovers before it."""
    meta = message.response_metadata
    if meta.get("cache_hit"):
        return "the disk cache (no HTTP call)"
    failovers = [a for a in meta.get("attempts", []) if a["outcome"] != "ok"]
    text = f"key {meta['key_index']} ({meta['key_fingerprint']}, {meta['project']})"
    if failovers:
        text += "  after: " + ", ".join(f"key {a['key_index']} {a['outcome']}" for a in failovers)
    return text


@contextlib.contextmanager
def _progress(output: Output, title: str, total: int) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=output.console,
    ) as progress:
        task = progress.add_task(title, total=total)
        yield lambda: progress.advance(task)


def _burst(pool: Any, output: Output, title: str, n: int, handler: Any, log: bool) -> float:
    started = time.perf_counter()
    with _progress(output, title, n) as advance:
        for i in range(1, n + 1):
            begun = time.perf_counter()
            user = _USERS[(i - 1) % len(_USERS)]
            message = pool.invoke(
                f"Request number {i}: say something short.",
                config={"callbacks": [handler], "metadata": {"user_id": user}},
            )
            if log:
                output.console.print(
                    f"request {i:2d}  {time.perf_counter() - begun:5.2f} s  {user:5s}  "
                    f"served by {describe(message)}"
                )
            advance()
    return time.perf_counter() - started


def usage_tables(output: Output, handler: Any) -> None:
    """Per-key and per-user tables from a ``GeminiUsageCallbackHandler``."""
    by_key = [{"name": f"key {k}", **v.to_dict()} for k, v in sorted(handler.by_key.items())]
    by_user = [{"name": u, **v.to_dict()} for u, v in sorted(handler.by_user.items())]
    output.line()
    output.table(by_key, USAGE_COLUMNS, title="Usage per key (GeminiUsageCallbackHandler)")
    output.line()
    output.table(by_user, USAGE_COLUMNS, title="Usage per user")


def demo_emulated(output: Output, requests: int, model: str, keys_configured: int) -> int:
    """Three bursts against the embedded emulator; returns the exit status."""
    from langchain_gemini_pool._cache import GeminiDiskCache
    from langchain_gemini_pool._quota import QuotaLimits
    from langchain_gemini_pool._usage_handler import GeminiUsageCallbackHandler
    from langchain_gemini_pool.chat_models import ChatGeminiPool
    from langchain_gemini_pool.testing import FakeGeminiServer, Quota

    if keys_configured:
        output.line(
            f"--emulator: running against the embedded emulator; the {keys_configured} "
            "configured key(s) are not used."
        )
    else:
        output.line("No Gemini API keys configured: running against the embedded emulator.")
    output.line(
        "Keys: 2 projects x 2 keys; key …0004 is invalid; each project may send 3 requests "
        f"per {_WINDOW:g} s window (a scaled-down minute). Requests rotate over users "
        f"{', '.join(_USERS)}.\n"
    )
    handler = GeminiUsageCallbackHandler()
    settings: dict[str, Any] = {"keys": _KEYS, "quotas": Quota(rpm=3), "bad_keys": _BAD}
    with FakeGeminiServer(**settings, window_s=_WINDOW) as server:
        pool = ChatGeminiPool(model=model, api_keys=_KEYS, base_url=server.base_url, max_wait=10)
        elapsed = _burst(pool, output, "burst 1 (no QuotaLimits)", requests, handler, log=True)
        output.line("\npool_status():")
        output.table(pool.pool_status(), STATUS_COLUMNS, state_field="state")
        total = server.stats()["total"]
        output.line(
            f"\n{requests} requests in {elapsed:.1f} s; the emulator saw {total['requests']} "
            f"HTTP calls, {total['rate_limited']} of them answered 429 and "
            f"{total['client_errors']} refused a bad key. Every request reached the caller.\n"
        )
    with (
        FakeGeminiServer(**settings, window_s=_WINDOW) as server,
        tempfile.TemporaryDirectory(prefix="gemini-pool-demo-") as directory,
    ):
        cache = GeminiDiskCache(directory)
        polite = ChatGeminiPool(
            model=model,
            api_keys=_KEYS,
            base_url=server.base_url,
            max_wait=10,
            limits=QuotaLimits(rpm=3, window_s=_WINDOW),
            cache=cache,
        )
        title = "burst 2 (QuotaLimits + disk cache)"
        elapsed = _burst(polite, output, title, requests, handler, log=False)
        total = server.stats()["total"]
        output.line(
            f"The same burst with limits=QuotaLimits(rpm=3, window_s={_WINDOW:g}): {requests} "
            f"requests in {elapsed:.1f} s, {total['requests']} HTTP calls, "
            f"{total['rate_limited']} answered 429 — the pool waited for room instead.\n"
        )
        server.reset_stats()
        hits_before = cache.stats()["hits"]
        elapsed = _burst(polite, output, "burst 2 again (from the cache)", requests, handler, False)
        hits = cache.stats()["hits"] - hits_before
        calls = server.stats()["total"]["requests"]
        output.line(
            f"The burst repeated: {hits} of {requests} answered from the disk cache in "
            f"{elapsed:.2f} s, {calls} HTTP calls."
        )
        cache.close()
    usage_tables(output, handler)
    return 0


def demo_real(output: Output, model: str, env_file: str | None, base_url: str | None) -> int:
    """A short real exchange with Google through the configured keys."""
    from langchain_gemini_pool._cli._failures import explain
    from langchain_gemini_pool._keys import load_api_keys, mask_key
    from langchain_gemini_pool._usage_handler import GeminiUsageCallbackHandler
    from langchain_gemini_pool.chat_models import ChatGeminiPool

    secrets = [k.get_secret_value() for k in load_api_keys(env_file)]
    pool = ChatGeminiPool(
        model=model,
        env_file=env_file,
        base_url=base_url,
        max_wait=15,
        max_attempts=len(secrets),
        timeout=20,
    )
    handler = GeminiUsageCallbackHandler()
    config: Any = {"callbacks": [handler], "metadata": {"user_id": "demo"}}
    output.line(
        f"{len(secrets)} key(s) configured ({', '.join(mask_key(k) for k in secrets)}). "
        f"A short exchange with {base_url or 'Google'} ({model}) through the pool:\n"
    )
    try:
        message = pool.invoke("In one short sentence: what is a key pool?", config=config)
        output.line(f"> {message.content!s}")
        output.line(f"  served by {describe(message)}\n")
        output.line("Streaming a second answer:")
        last: Any = None
        for chunk in pool.stream("Name three colours, comma-separated.", config=config):
            output.out.write(str(chunk.content))
            output.out.flush()
            last = chunk if last is None else last + chunk
        output.line(f"\n  served by {describe(last)}" if last is not None else "")
    except Exception as exc:
        tried = ", ".join(
            f"{row['fingerprint']} ({row['project']})"
            for row in pool.pool_status()
            if row["requests"] or row["errors"] or row["state"] != "ready"
        )
        raise CliError(explain(exc, tried, secrets), PROBLEM) from exc
    finally:
        output.line("\npool_status():")
        output.table(pool.pool_status(), STATUS_COLUMNS, state_field="state")
    usage_tables(output, handler)
    return 0


def run(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool demo``."""
    from langchain_gemini_pool._keys import load_api_keys

    if args.requests < 1:
        raise CliError("--requests must be at least 1.", USAGE)
    output = ctx.output()
    try:
        configured = len(load_api_keys(args.env_file))
    except ValueError as exc:
        if args.env_file is not None and "does not exist" in str(exc):
            raise CliError(str(exc), USAGE) from None
        if args.env_file is not None and not args.emulator:
            raise CliError(str(exc), PROBLEM) from None
        configured = 0
    if args.emulator or not configured:
        return demo_emulated(output, args.requests, args.model, configured)
    return demo_real(output, args.model, args.env_file, args.base_url)

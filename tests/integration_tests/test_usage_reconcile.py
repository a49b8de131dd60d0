"""End to end: the handler's and the ledger's per-key figures equal the emulator's ground truth.

A pool of four keys (two projects and a bad key) runs invoke, ainvoke, stream, astream and
batch through the real SDK over loopback HTTP, with 5xx, 429, a bad key, a request that fails
on every key and a cache hit; a stream cut after its first chunk is checked on its own.
Whatever went over the wire must be what the usage accounting says, key by key and project
by project.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_google_genai.chat_models import GoogleAPIError

from langchain_gemini_pool import (
    ChatGeminiPool,
    GeminiUsageCallbackHandler,
    ManualClock,
    UsageLedger,
    UsageLimitExceededError,
    UsageLimits,
    UsageTotals,
    get_gemini_usage_callback,
    mask_key,
)
from langchain_gemini_pool.testing import FakeGeminiServer, Faults

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]
PROJECTS = {"team": KEYS[:2], "solo": KEYS[2:4]}


def as_stats(t: UsageTotals) -> dict[str, int]:
    """The accounting figures the emulator also counts."""
    return {
        "requests": t.attempts,
        "ok": t.successful_requests,
        "prompt_tokens": t.input_tokens,
        "total_tokens": t.total_tokens,
    }


def truth(row: dict[str, Any]) -> dict[str, int]:
    return {
        "requests": row["requests"],
        "ok": row["ok"],
        "prompt_tokens": row["prompt_tokens"],
        "total_tokens": row["total_tokens"],
    }


async def drive(pool: ChatGeminiPool, server: FakeGeminiServer) -> None:
    alice: Any = {"metadata": {"user_id": "alice"}}
    bob: Any = {"metadata": {"user_id": "bob"}}
    server.faults = Faults(schedule=[503, None, 429])
    pool.invoke("first question", config=alice)
    await pool.ainvoke("second question", config=bob)
    "".join(str(c.content) for c in pool.stream("third question please", config=alice))
    async for _ in pool.astream("fourth question", config=bob):
        pass
    pool.batch([f"batch item {i}" for i in range(6)], config=alice)
    pool.invoke("first question", config=alice)  # a cache hit: nothing is sent
    server.faults = Faults(error_rate=1.0)
    with pytest.raises(GoogleAPIError, match="500 INTERNAL"):  # every key fails
        pool.invoke("doomed question", config=bob)
    server.faults = Faults()
    pool.invoke("last question", config=bob)


def reconcile(usage: GeminiUsageCallbackHandler, ledger: UsageLedger, stats: Any) -> None:
    index_of = {mask_key(k): i for i, k in enumerate(KEYS)}
    for fingerprint, row in stats["keys"].items():
        i = index_of[fingerprint]
        assert as_stats(usage.by_key.get(i, UsageTotals())) == truth(row), f"handler key {i}"
        assert as_stats(ledger.totals(key_index=i)) == truth(row), f"ledger key {i}"
    for project, row in stats["projects"].items():
        assert as_stats(usage.by_project[project]) == truth(row), f"handler {project}"
        assert as_stats(ledger.totals(project=project)) == truth(row), f"ledger {project}"
    assert as_stats(usage.total) == truth(stats["total"])
    assert as_stats(ledger.totals()) == truth(stats["total"])


async def test_handler_and_ledger_reconcile_with_the_emulator(
    emulator: Emulator, make_pool: MakePool, tmp_path: Path
) -> None:
    clock = ManualClock()
    server = emulator(keys=PROJECTS, bad_keys={KEYS[1]: "invalid"}, clock=clock)
    ledger = UsageLedger(tmp_path, clock=clock)
    pool = make_pool(server, api_keys=PROJECTS, clock=clock, ledger=ledger, cache=InMemoryCache())
    with get_gemini_usage_callback() as usage:
        await drive(pool, server)

    stats = server.stats()
    assert stats["total"]["rate_limited"] >= 1
    assert stats["total"]["server_errors"] >= 2
    assert stats["total"]["client_errors"] >= 1  # the bad key was tried
    reconcile(usage, ledger, stats)
    for totals in (usage.total, ledger.totals()):
        assert totals.requests == 13
        assert totals.cached_requests == 1
        assert totals.failed_requests == 1
        assert totals.successful_requests == 11
        assert totals.cost_usd is not None
        assert totals.cost_usd > 0
    assert usage.by_user["alice"] == ledger.totals(user="alice")
    assert usage.by_user["bob"] == ledger.totals(user="bob")
    assert usage.by_model["gemini-2.5-flash"].requests == 13


async def test_a_stream_cut_after_output_reconciles_its_attempts(
    emulator: Emulator, make_pool: MakePool, tmp_path: Path
) -> None:
    server = emulator(faults=Faults(stream_cut_after=1))
    ledger = UsageLedger(tmp_path)
    pool = make_pool(server, ledger=ledger)
    with get_gemini_usage_callback() as usage, pytest.raises(GoogleAPIError) as caught:
        for _ in pool.stream("a story cut short", config={"metadata": {"user_id": "dan"}}):
            pass
    billed = server.stats()["total"]["total_tokens"]
    assert billed > 0  # the emulator bills the chunk it sent before the cut
    assert caught.value.gemini_pool_usage is not None  # the pool hands over what was billed
    for totals in (usage.total, ledger.totals(user="dan")):
        assert (totals.requests, totals.failed_requests, totals.attempts) == (1, 1, 1)
        assert totals.total_tokens == billed


async def test_hard_limit_refuses_before_sending(
    emulator: Emulator, make_pool: MakePool, tmp_path: Path
) -> None:
    clock = ManualClock()
    server = emulator(clock=clock)
    ledger = UsageLedger(tmp_path, clock=clock)
    pool = make_pool(
        server, clock=clock, ledger=ledger, usage_limits={"carol": UsageLimits(requests_per_day=2)}
    )
    carol: Any = {"metadata": {"user_id": "carol"}}
    with get_gemini_usage_callback() as usage:
        pool.invoke("one", config=carol)
        await pool.ainvoke("two", config=carol)
        with pytest.raises(UsageLimitExceededError) as caught:
            pool.invoke("three", config=carol)
        with pytest.raises(UsageLimitExceededError):
            async for _ in pool.astream("four", config=carol):
                pass
        pool.invoke("someone else")  # "anonymous" has no limit
    assert (caught.value.user, caught.value.limit_name) == ("carol", "requests_per_day")
    assert server.stats()["total"]["requests"] == 3  # nothing sent for the refused two
    assert usage.by_user["carol"].refused_requests == 2
    assert usage.by_user["carol"].attempts == 2
    assert ledger.totals(user="carol", period="day").successful_requests == 2
    assert ledger.totals(user="carol", period="day").refused_requests == 2
    clock.advance(86_400)  # a new day: carol may ask again
    pool.invoke("five", config=carol)
    assert server.stats()["total"]["requests"] == 4


async def test_soft_limit_records_overage_and_cache_hits_are_free(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    pool = make_pool(
        server,
        cache=InMemoryCache(),
        usage_limits={"erin": UsageLimits(requests_per_day=1, tokens_per_day=10, hard=False)},
    )
    erin: Any = {"metadata": {"user_id": "erin"}}
    first = pool.invoke("a question of some length", config=erin)
    assert pool.overage("erin") == {"tokens_per_day": first.usage_metadata["total_tokens"] - 10}
    pool.invoke("a question of some length", config=erin)  # a cache hit: free, not a request
    pool.invoke("another question", config=erin)  # soft: let through
    assert server.stats()["total"]["requests"] == 2
    overage = pool.overage("erin")
    assert overage["requests_per_day"] == 1
    assert overage["tokens_per_day"] > 0
    assert pool.overage("nobody") == {}

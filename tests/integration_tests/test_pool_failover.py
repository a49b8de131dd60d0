"""ChatGeminiPool against the emulator, through the real SDK: rotation and failover."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleAPIError, GoogleModelNotFoundError

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    ManualClock,
    NoValidKeysError,
)
from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]


def served_by(pool: ChatGeminiPool, n: int, prompt: str = "hello") -> list[int]:
    return [pool.invoke(f"{prompt} {i}").response_metadata["key_index"] for i in range(n)]


def test_is_a_chat_google_generative_ai(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    assert isinstance(pool, ChatGoogleGenerativeAI)


def test_round_robin_starts_at_zero_and_cycles(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    assert served_by(pool, 7) == [0, 1, 2, 0, 1, 2, 0]


async def test_one_rotation_shared_by_every_path(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator())
    first = pool.invoke("a").response_metadata["key_index"]
    second = (await pool.ainvoke("b")).response_metadata["key_index"]
    streamed = [c.response_metadata.get("key_index") for c in pool.stream("c")]
    astreamed = [c.response_metadata.get("key_index") async for c in pool.astream("d")]
    assert [first, second, streamed[-1], astreamed[-1]] == [0, 1, 2, 0]
    # only the final chunk says which key served it
    assert all(k is None for k in streamed[:-1])
    assert pool.get_num_tokens("count me") > 0
    assert pool.invoke("e").response_metadata["key_index"] == 2  # get_num_tokens took key 1


def test_metadata_names_the_key_and_keeps_usage(emulator: Emulator, make_pool: MakePool) -> None:
    server = emulator()
    pool = make_pool(server)
    message = pool.invoke("what is the weather")
    assert message.response_metadata["key_fingerprint"] == "…aaaa"
    assert message.response_metadata["project"]
    assert message.response_metadata["attempts"] == [
        {"key_index": 0, "project": message.response_metadata["project"], "outcome": "ok"}
    ]
    stats = server.stats()["keys"]["…aaaa"]
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == stats["prompt_tokens"]
    assert message.usage_metadata["total_tokens"] == stats["total_tokens"]


def test_least_used_strategy(emulator: Emulator, make_pool: MakePool) -> None:
    pool = make_pool(emulator(), strategy="least_used")
    assert sorted(Counter(served_by(pool, 9)).values()) == [3, 3, 3]


# --- rate limits -------------------------------------------------------------------------------


def test_429_cools_the_whole_project_and_fails_over_at_once(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"team": KEYS[:2], "solo": KEYS[2:3]}
    server = emulator(keys=keys, quotas={"team": Quota(rpm=1)}, clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock)
    assert served_by(pool, 3) == [0, 2, 2]  # key 1 met team's 429 and was stepped around
    status = {row["index"]: row for row in pool.pool_status()}
    assert status[0]["state"] == status[1]["state"] == "cooling"
    assert status[1]["rate_limited"] == 1
    assert status[2]["state"] == "ready"
    # RetryInfo honoured: the window has 50 s left at T0 (10:00:10)
    assert status[0]["ready_in_s"] == pytest.approx(50, abs=1)
    assert server.stats()["total"]["rate_limited"] == 1
    assert clock.slept == []  # failover does not wait


def test_cooling_key_is_used_again_once_its_time_has_passed(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS[:2], quotas=Quota(rpm=1), clock=clock)
    pool = make_pool(server, api_keys=KEYS[:2], clock=clock, max_wait=0)
    assert served_by(pool, 2) == [0, 1]
    with pytest.raises(AllKeysRateLimitedError):
        pool.invoke("third")
    clock.advance(51)
    assert served_by(pool, 2) == [0, 1]


def test_daily_quota_cools_until_midnight_pacific(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"daily": KEYS[:1], "other": KEYS[1:2]}
    server = emulator(keys=keys, quotas={"daily": Quota(rpd=1)}, clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock)
    assert served_by(pool, 3) == [0, 1, 1]
    row = pool.pool_status()[0]
    assert row["state"] == "cooling"
    expected = next_pacific_midnight(clock.now()) - clock.now()
    assert row["ready_in_s"] == pytest.approx(expected, abs=1)
    clock.advance(expected + 1)
    assert pool.pool_status()[0]["state"] == "ready"
    assert served_by(pool, 2) == [0, 1]


def test_a_new_cooldown_never_shortens_an_old_one(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"p": KEYS[:2], "q": KEYS[2:3]}
    server = emulator(keys=keys, quotas={"p": Quota(rpd=1, rpm=5)}, clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock)
    served_by(pool, 3)  # key 1 hits p's daily limit: keys 0 and 1 cool to midnight
    long_wait = pool.pool_status()[1]["ready_in_s"]
    assert long_wait > 3600
    pool.reset_key(0)
    server.faults = Faults(schedule=[429])  # a per-minute 429 (50 s) on key 0, project p
    assert pool.invoke("x").response_metadata["key_index"] == 2
    status = pool.pool_status()
    assert status[0]["ready_in_s"] == pytest.approx(50, abs=1)
    assert status[1]["ready_in_s"] == pytest.approx(long_wait, abs=1)  # not shortened


def test_all_keys_cooling_waits_when_the_next_frees_within_max_wait(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS[:2], quotas=Quota(rpm=1), clock=clock)
    pool = make_pool(server, api_keys=KEYS[:2], clock=clock, max_wait=60)
    served_by(pool, 2)
    message = pool.invoke("third")  # both cooling 50 s: waits, then succeeds
    assert message.response_metadata["key_index"] in (0, 1)
    assert sum(clock.slept) == pytest.approx(50, abs=1)


async def test_async_wait_does_not_block_the_loop(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS[:1], quotas=Quota(rpm=1), clock=clock)
    pool = make_pool(server, api_keys=KEYS[:1], clock=clock, max_wait=60)
    await pool.ainvoke("first")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(3):
            ticks += 1
            await asyncio.sleep(0)

    message, _ = await asyncio.gather(pool.ainvoke("second"), ticker())
    assert message.response_metadata["key_index"] == 0
    assert ticks == 3
    assert sum(clock.slept) == pytest.approx(50, abs=1)


@pytest.mark.parametrize("use_async", [False, True])
async def test_all_keys_cooling_raises_with_retry_after(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock, use_async: bool
) -> None:
    server = emulator(keys=KEYS[:2], quotas=Quota(rpm=1), clock=clock)
    pool = make_pool(server, api_keys=KEYS[:2], clock=clock, max_wait=5)
    served_by(pool, 2)
    with pytest.raises(AllKeysRateLimitedError) as info:
        if use_async:
            await pool.ainvoke("third")
        else:
            pool.invoke("third")
    # a reactive pool learns from the two 429s, then sends nothing more while all cool
    assert server.stats()["total"]["rate_limited"] == 2
    assert info.value.retry_after == pytest.approx(50, abs=1)
    assert "50" in str(info.value) or "49" in str(info.value)
    before = server.stats()["total"]["requests"]
    with pytest.raises(AllKeysRateLimitedError):
        pool.invoke("fourth")
    assert server.stats()["total"]["requests"] == before
    from langchain_core.exceptions import ModelRateLimitError

    assert isinstance(info.value, ModelRateLimitError)


# --- bad keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["invalid", "expired", "leaked", "service_disabled", "suspended", "denied"]
)
def test_bad_key_is_quarantined_and_the_next_key_serves(
    emulator: Emulator, make_pool: MakePool, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = emulator(bad_keys={KEYS[0]: kind})
    pool = make_pool(server)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert served_by(pool, 4) == [1, 2, 1, 2]
    row = pool.pool_status()[0]
    assert row["state"] == "invalid"
    assert row["reason"]
    assert server.stats()["keys"]["…aaaa"]["requests"] == 1  # never tried again
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("…aaaa" in m and "Quarantined" in m for m in warned)
    assert not any(KEYS[0] in m for m in warned)


def test_reset_key_lifts_a_quarantine(emulator: Emulator, make_pool: MakePool) -> None:
    server = emulator(bad_keys={KEYS[0]: "invalid"})
    pool = make_pool(server)
    served_by(pool, 1)
    assert pool.pool_status()[0]["state"] == "invalid"
    assert server.stats()["keys"]["…aaaa"]["requests"] == 1
    pool.reset_key(0)
    assert pool.pool_status()[0]["state"] == "ready"
    served_by(pool, 3)  # the key is in the rotation again: it is tried (and refused) anew
    assert server.stats()["keys"]["…aaaa"]["requests"] == 2
    assert pool.pool_status()[0]["state"] == "invalid"
    pool.reset_key(KEYS[0])  # by key text too
    assert pool.pool_status()[0]["state"] == "ready"


@pytest.mark.parametrize("use_async", [False, True])
async def test_every_key_invalid_raises_no_valid_keys(
    emulator: Emulator, make_pool: MakePool, use_async: bool
) -> None:
    server = emulator(bad_keys={KEYS[0]: "invalid", KEYS[1]: "leaked"})
    pool = make_pool(server, api_keys=KEYS[:2])
    with pytest.raises(NoValidKeysError) as info:
        if use_async:
            await pool.ainvoke("hi")
        else:
            pool.invoke("hi")
    text = str(info.value)
    assert "…aaaa" in text and "…bbbb" in text
    assert KEYS[0] not in text and KEYS[1] not in text
    from langchain_core.exceptions import ModelAuthenticationError

    assert isinstance(info.value, ModelAuthenticationError)


# --- server faults and bad requests ------------------------------------------------------------


@pytest.mark.parametrize("fault", [500, 503, "reset"])
def test_server_fault_moves_on_without_quarantine(
    emulator: Emulator, make_pool: MakePool, fault: Any
) -> None:
    server = emulator(faults=Faults(schedule=[fault]))
    pool = make_pool(server, clock=ManualClock())
    message = pool.invoke("hi")
    assert message.response_metadata["key_index"] == 1
    assert [a["outcome"] for a in message.response_metadata["attempts"]] == ["server_fault", "ok"]
    row = pool.pool_status()[0]
    assert row["state"] == "ready"
    assert row["errors"] == 1


def test_server_faults_are_bounded_by_max_attempts(emulator: Emulator, make_pool: MakePool) -> None:
    server = emulator(faults=Faults(unavailable_rate=1.0))
    clock = ManualClock()
    pool = make_pool(server, clock=clock, max_attempts=4)
    with pytest.raises(GoogleAPIError):
        pool.invoke("hi")
    assert server.stats()["total"]["requests"] == 4
    assert all(row["state"] == "ready" for row in pool.pool_status())
    assert len(clock.slept) == 3  # backoff between attempts, on the pool's clock


def test_default_max_attempts_is_each_key_once_at_least_three(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(faults=Faults(error_rate=1.0))
    pool = make_pool(server, api_keys=KEYS[:1], clock=ManualClock())
    with pytest.raises(GoogleAPIError):
        pool.invoke("hi")
    assert server.stats()["total"]["requests"] == 3
    server.reset_stats()
    pool = make_pool(server, api_keys=KEYS, clock=ManualClock())
    with pytest.raises(GoogleAPIError):
        pool.invoke("hi")
    assert server.stats()["total"]["requests"] == 4
    assert len(server.stats()["keys"]) == 4


@pytest.mark.parametrize("use_async", [False, True])
async def test_bad_request_is_raised_at_once_without_touching_other_keys(
    emulator: Emulator, make_pool: MakePool, use_async: bool
) -> None:
    server = emulator(unknown_models=["gemini-0-nope"])
    pool = make_pool(server, model="gemini-0-nope")
    with pytest.raises(GoogleModelNotFoundError) as info:
        if use_async:
            await pool.ainvoke("hi")
        else:
            pool.invoke("hi")
    assert server.stats()["total"]["requests"] == 1
    assert pool.pool_status()[0]["state"] == "ready"
    assert info.value.gemini_pool_attempts == [
        {"key_index": 0, "project": pool.pool_status()[0]["project"], "outcome": "bad_request"}
    ]


# --- streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True])
async def test_stream_fails_over_before_the_first_chunk(
    emulator: Emulator, make_pool: MakePool, use_async: bool
) -> None:
    server = emulator(faults=Faults(schedule=[503, 429]))
    pool = make_pool(server, clock=ManualClock())
    if use_async:
        chunks = [c async for c in pool.astream("tell me a story")]
    else:
        chunks = list(pool.stream("tell me a story"))
    assert len(chunks) >= 3
    text = "".join(str(c.content) for c in chunks)
    assert text == pool.invoke("tell me a story").content
    last = chunks[-1]
    assert last.response_metadata["key_index"] == 2
    assert [a["outcome"] for a in last.response_metadata["attempts"]] == [
        "server_fault",
        "rate_limited",
        "ok",
    ]
    assert all("key_index" not in c.response_metadata for c in chunks[:-1])


@pytest.mark.parametrize("use_async", [False, True])
async def test_stream_error_after_first_chunk_is_raised_never_retried(
    emulator: Emulator, make_pool: MakePool, use_async: bool
) -> None:
    server = emulator(faults=Faults(stream_cut_after=1))
    pool = make_pool(server, clock=ManualClock())
    received: list[str] = []
    with pytest.raises(GoogleAPIError):
        if use_async:
            async for chunk in pool.astream("tell me a long story"):
                received.append(str(chunk.content))
        else:
            for chunk in pool.stream("tell me a long story"):
                received.append(str(chunk.content))
    assert len(received) == 1
    assert server.stats()["total"]["requests"] == 1  # no second attempt, no duplicated text


# --- concurrency -------------------------------------------------------------------------------


def test_fair_shares_under_threads(emulator: Emulator, make_pool: MakePool) -> None:
    keys = [f"fake-key-{i:04d}" for i in range(10)]
    server = emulator()
    pool = make_pool(server, api_keys=keys)
    results = pool.batch([f"q{i}" for i in range(1000)], config={"max_concurrency": 32})
    shares = Counter(m.response_metadata["key_index"] for m in results)
    assert len(shares) == 10
    assert all(95 <= n <= 105 for n in shares.values()), shares
    assert server.stats()["total"]["ok"] == 1000


async def test_fair_shares_under_asyncio(emulator: Emulator, make_pool: MakePool) -> None:
    keys = [f"fake-key-{i:04d}" for i in range(10)]
    server = emulator()
    pool = make_pool(server, api_keys=keys)
    results = await pool.abatch([f"q{i}" for i in range(1000)], config={"max_concurrency": 64})
    shares = Counter(m.response_metadata["key_index"] for m in results)
    assert all(95 <= n <= 105 for n in shares.values()), shares


def test_timeouts_are_server_faults_never_quarantines(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(faults=Faults(latency_s=0.5))
    pool = make_pool(server, api_keys=KEYS[:2], clock=ManualClock(), timeout=0.1)
    with pytest.raises(httpx2.TimeoutException) as info:  # the SDK's sync transport: httpx2
        pool.invoke("slow")
    outcomes = [a["outcome"] for a in info.value.gemini_pool_attempts]
    assert outcomes == ["server_fault"] * 3  # max_attempts: each key once, at least 3
    assert all(row["state"] == "ready" for row in pool.pool_status())
    server.faults = None
    assert pool.invoke("fast again").response_metadata["key_index"] in (0, 1)

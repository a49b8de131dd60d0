"""Quota-aware scheduling through the pool: stay under every project's limits."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import pytest

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    ManualClock,
    QuotaLimits,
    get_gemini_usage_callback,
)
from langchain_gemini_pool._quota import WINDOW_MARGIN_S
from langchain_gemini_pool.testing import FakeGeminiServer, Quota

from .conftest import KEYS, T0

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]

TWO_PROJECTS = {"alpha": KEYS[:2], "beta": KEYS[2:3]}


def test_limits_keep_the_pool_from_earning_429s(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=TWO_PROJECTS, quotas=Quota(rpm=3), clock=clock)
    pool = make_pool(
        server, api_keys=TWO_PROJECTS, clock=clock, limits=QuotaLimits(rpm=3), max_wait=120
    )
    for i in range(15):
        pool.invoke(f"request {i}")
    stats = server.stats()["total"]
    assert stats["rate_limited"] == 0
    assert stats["requests"] == 15
    # six requests a window fit (3 per project): it waited twice for room instead of
    # sending requests bound to fail
    assert len([s for s in clock.slept if s > 0]) == 2
    served = sorted(s["ok"] for s in server.stats()["projects"].values())
    assert sum(served) == 15
    assert served[0] >= 6  # both projects carried their share


def test_no_room_within_max_wait_raises_without_sending(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=TWO_PROJECTS, quotas=Quota(rpm=2), clock=clock)
    pool = make_pool(
        server, api_keys=TWO_PROJECTS, clock=clock, limits=QuotaLimits(rpm=2), max_wait=5
    )
    for i in range(4):
        pool.invoke(f"request {i}")
    with pytest.raises(AllKeysRateLimitedError) as info:
        pool.invoke("one too many")
    assert server.stats()["total"]["requests"] == 4  # nothing sent
    assert 55 < info.value.retry_after <= 61
    assert server.stats()["total"]["rate_limited"] == 0


def test_room_is_reported_per_project(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=TWO_PROJECTS, clock=clock)
    pool = make_pool(
        server,
        api_keys=TWO_PROJECTS,
        clock=clock,
        limits={"alpha": QuotaLimits(rpm=10, tpm=1000, rpd=100)},
    )
    pool.invoke("hello")  # key 0, project alpha
    rows = {row["index"]: row for row in pool.pool_status()}
    assert rows[0]["room"]["rpm"] == 9
    assert rows[0]["room"]["rpd"] == 99
    assert rows[1]["room"] == rows[0]["room"]  # same project, same room
    used = server.stats()["projects"]["alpha"]["prompt_tokens"]
    assert rows[0]["room"]["tpm"] == 1000 - used  # corrected by the real usage
    assert rows[2]["room"] == {"rpm": None, "tpm": None, "rpd": None}
    clock.advance(61)
    assert pool.pool_status()[0]["room"]["rpm"] == 10


def test_token_window_is_respected(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"only": KEYS[:1]}
    server = emulator(keys=keys, quotas=Quota(tpm=60), clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock, limits=QuotaLimits(tpm=60), max_wait=300)
    prompt = "x" * 100  # 25 tokens a request
    for _ in range(6):
        pool.invoke(prompt)
    assert server.stats()["total"]["rate_limited"] == 0
    assert sum(clock.slept) > 60  # six requests of 25 tokens need three windows


def test_a_lower_server_limit_corrects_the_setting(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {"p": KEYS[:1], "q": KEYS[1:2]}
    server = emulator(keys=keys, quotas={"p": Quota(rpm=2)}, clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock, limits=QuotaLimits(rpm=5))
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        for i in range(6):
            pool.invoke(f"r{i}")
    assert server.stats()["projects"]["p"]["rate_limited"] == 1  # learned once
    assert "lowering" in caplog.text
    clock.advance(61)
    assert pool.pool_status()[0]["room"]["rpm"] == 2


def test_priority_tiers_use_overflow_only_when_needed(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"paid": KEYS[:1], "free": KEYS[1:3]}
    server = emulator(keys=keys, clock=clock)
    pool = make_pool(
        server,
        api_keys=keys,
        clock=clock,
        limits={
            "paid": QuotaLimits(rpm=4, priority=0),
            "free": QuotaLimits(rpm=10, priority=1),
        },
    )
    served = Counter(pool.invoke(f"r{i}").response_metadata["project"] for i in range(7))
    assert served == {"paid": 4, "free": 3}
    clock.advance(61)
    assert pool.invoke("again").response_metadata["project"] == "paid"


def test_daily_quota_warning_at_80_percent(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    keys = {"daily": KEYS[:1]}
    server = emulator(keys=keys, clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock, limits=QuotaLimits(rpd=10))
    with (
        caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"),
        get_gemini_usage_callback() as usage,
    ):
        for i in range(7):
            assert "quota_warnings" not in pool.invoke(f"r{i}").response_metadata
        assert "80%" not in caplog.text
        chunks = list(pool.stream("eighth"))  # the request that reaches 80%
        pool.invoke("ninth")
    assert "daily" in caplog.text
    assert "80%" in caplog.text
    assert chunks[-1].response_metadata["quota_warnings"] == [
        {"project": "daily", "used": 0.8, "rpd": 10}
    ]
    # a callback event the usage handler counts, once
    assert usage.total.quota_warnings == 1
    assert usage.by_project["daily"].quota_warnings == 1


class SteppedClock:
    """A clock the test moves by hand; ``asleep`` really waits until it has been moved far
    enough (unlike ``ManualClock``, whose waits end at once), so the order in which
    waiters wake is the scheduler's, not the event loop's."""

    def __init__(self, start: float) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        raise AssertionError("the async path must not block")

    async def asleep(self, seconds: float) -> None:
        import asyncio

        until = self._now + seconds
        while self._now < until:
            await asyncio.sleep(0.002)


async def test_waiters_are_served_in_arrival_order_one_slot_each(
    emulator: Emulator, make_pool: MakePool
) -> None:
    import asyncio

    seen: list[str] = []

    def reply(request: dict) -> str:
        text = request["contents"][-1]["parts"][0]["text"]
        seen.append(text)
        return f"Echo: {text}"

    async def until_seen(count: int) -> None:
        for _ in range(2500):
            if len(seen) >= count:
                return
            await asyncio.sleep(0.002)
        raise AssertionError(f"only {seen} reached the server")

    clock = SteppedClock(T0)
    keys = {"only": KEYS[:1]}
    server = emulator(keys=keys, reply=reply)
    pool = make_pool(
        server, api_keys=keys, clock=clock, limits=QuotaLimits(rpm=1, window_s=30), max_wait=600
    )
    await pool.ainvoke("first")
    waiters = []
    for i in range(4):
        waiters.append(asyncio.create_task(pool.ainvoke(f"waiter {i}")))
        await asyncio.sleep(0.05)  # each books its slot before the next one arrives
    assert seen == ["first"]  # the window is full: everybody waits
    for i in range(4):
        clock.advance(30 + WINDOW_MARGIN_S + 0.01)  # one window later: exactly one slot frees
        await until_seen(2 + i)
        await asyncio.sleep(0.05)
        assert seen[1:] == [f"waiter {j}" for j in range(i + 1)]  # the next in line, alone
    answers = await asyncio.gather(*waiters)
    assert [a.content for a in answers] == [f"Echo: waiter {i}" for i in range(4)]
    assert server.stats()["total"]["rate_limited"] == 0


async def test_a_cancelled_wait_gives_its_slot_back(
    emulator: Emulator, make_pool: MakePool
) -> None:
    import asyncio

    clock = SteppedClock(T0)
    keys = {"only": KEYS[:1]}
    server = emulator(keys=keys)
    pool = make_pool(
        server, api_keys=keys, clock=clock, limits=QuotaLimits(rpm=1, window_s=30), max_wait=600
    )
    await pool.ainvoke("first")
    waiting = asyncio.create_task(pool.ainvoke("second"))  # books the slot in ~30 s
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    key = pool._scheduler._keys[0]
    assert key.in_flight == 0  # the booked, unused slot released its key
    assert server.stats()["total"]["requests"] == 1


async def test_a_cancelled_wait_leaves_its_slot_to_the_next_caller(
    emulator: Emulator, make_pool: MakePool
) -> None:
    import asyncio

    clock = SteppedClock(T0)
    keys = {"only": KEYS[:1]}
    server = emulator(keys=keys)
    pool = make_pool(
        server, api_keys=keys, clock=clock, limits=QuotaLimits(rpm=1, window_s=30), max_wait=600
    )
    await pool.ainvoke("first")
    waiting = asyncio.create_task(pool.ainvoke("second"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    clock.advance(30 + WINDOW_MARGIN_S + 0.01)  # the window has room again
    later = await asyncio.wait_for(pool.ainvoke("third"), 5)  # hangs if the slot was kept
    assert later.content == "Echo: third"


def test_a_burst_one_over_the_window_waits_with_the_default_max_wait(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    keys = {"free": KEYS[:1]}
    server = emulator(keys=keys, quotas=Quota(rpm=10), clock=clock)
    pool = make_pool(server, api_keys=keys, clock=clock, limits=QuotaLimits(rpm=10))
    results = [pool.invoke(f"burst {i}") for i in range(11)]  # max_wait defaults to 60 s
    assert len(results) == 11
    assert server.stats()["total"]["rate_limited"] == 0
    assert max(clock.slept) == pytest.approx(60.25)

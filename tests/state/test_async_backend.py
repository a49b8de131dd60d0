"""Async requests use the backend's own async I/O: ``RedisState.aadmit``/``asettle``
(``redis.asyncio``) on the event loop, never the sync client; ``DiskState``'s SQLite work
off the loop's thread. One ``admit`` before each attempt and one ``settle`` after it.

Real parts: a real ``redis-server`` (started by the fixtures), real SQLite, the emulator
over loopback HTTP through the real SDK. The backends are real subclasses that only note
which method ran, and on which thread, before doing the real work.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from langchain_gemini_pool import ChatGeminiPool, DiskState, InMemoryState, QuotaLimits, RedisState
from langchain_gemini_pool._driver import Io
from langchain_gemini_pool._scheduler import Pick
from langchain_gemini_pool.testing import FakeGeminiServer, Faults
from tests.state.conftest import RedisServer

MODEL = "gemini-2.5-flash"
KEYS = ["fake-key-async-0001", "fake-key-async-0002"]
BAD = "fake-key-async-dead"
LIMITS = QuotaLimits(rpm=1000, rpd=50)


class Noted:
    """Notes ``(method, thread id)`` for each backend call, then makes the real one (a
    mixin before the backend's class)."""

    calls: list[tuple[str, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls = []
        super().__init__(*args, **kwargs)

    def admit(self, *args: Any, **kwargs: Any) -> Any:
        self.note("admit")
        return super().admit(*args, **kwargs)  # type: ignore[misc]

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        self.note("settle")
        return super().settle(*args, **kwargs)  # type: ignore[misc]

    def note(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def names(self) -> Counter[str]:
        return Counter(name for name, _ in self.calls)

    def threads(self, *names: str) -> set[int]:
        return {thread for name, thread in self.calls if name in names}


class NotedRedisState(Noted, RedisState):
    async def aadmit(self, *args: Any, **kwargs: Any) -> Any:
        self.note("aadmit")
        return await super().aadmit(*args, **kwargs)

    async def asettle(self, *args: Any, **kwargs: Any) -> Any:
        self.note("asettle")
        return await super().asettle(*args, **kwargs)


class NotedDiskState(Noted, DiskState):
    pass


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer(keys=KEYS) as started:
        yield started


PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"


def ladder_on(server: FakeGeminiServer, state: Any, prefer: Any) -> ChatGeminiPool:
    """A pro -> flash ladder on ``state``; the server gives pro no quota."""
    return ChatGeminiPool(
        model=PRO,
        fallback_models=[FLASH],
        prefer=prefer,
        api_keys=KEYS,
        base_url=server.base_url,
        state=state,
        max_wait=0,
    )


def pool_on(server: FakeGeminiServer, state: Any, keys: list[str] | None = None) -> ChatGeminiPool:
    return ChatGeminiPool(
        model=MODEL,
        api_keys=[BAD, *KEYS] if keys is None else keys,
        base_url=server.base_url,
        state=state,
        limits=LIMITS,
    )


def row(pool: ChatGeminiPool) -> dict[str, Any]:
    return pool.pool_status()[0]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (bounded by steps, not a timing)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def everything_async(pool: ChatGeminiPool) -> None:
    """``abatch``, ``ainvoke`` and ``astream``, each answered."""
    replies = await pool.abatch([f"q{i}" for i in range(6)])
    assert all(r.content for r in replies)
    assert (await pool.ainvoke("one more")).content
    chunks = [c async for c in pool.astream("stream me")]
    assert chunks and "key_index" in chunks[-1].response_metadata


async def test_async_requests_await_redis_asyncio_on_the_loop(
    server: FakeGeminiServer, redis_factory: Callable[..., RedisServer]
) -> None:
    state = NotedRedisState(redis_factory().url)
    pool = pool_on(server, state)
    loop_thread = threading.get_ident()
    await everything_async(pool)
    names = state.names()
    assert set(names) == {"aadmit", "asettle"}  # never the sync client's admit or settle
    assert state.threads("aadmit", "asettle") == {loop_thread}  # no thread in between
    assert names["aadmit"] == names["asettle"] >= 8  # 8 requests (and BAD's attempts)
    status = pool.pool_status()
    assert (status[0]["state"], status[0]["in_flight"]) == ("invalid", 0)  # all settled
    assert sum(r["successes"] for r in status) == 8
    assert server.stats()["total"]["ok"] == 8


async def test_async_requests_do_disk_work_off_the_loop(
    server: FakeGeminiServer, tmp_path: Path
) -> None:
    state = NotedDiskState(tmp_path / "state")
    pool = pool_on(server, state)
    loop_thread, ticks = threading.get_ident(), 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(ticker())
    await everything_async(pool)
    beat.cancel()
    names = state.names()
    assert names["admit"] == names["settle"] >= 8  # one admit and one settle per attempt
    assert loop_thread not in state.threads("admit", "settle")  # SQLite never on the loop
    assert ticks > 8  # the loop kept running meanwhile
    assert row(pool)["in_flight"] == 0


async def test_one_round_trip_before_the_call_and_one_after(
    server: FakeGeminiServer, redis_factory: Callable[..., RedisServer]
) -> None:
    state = NotedRedisState(redis_factory().url)
    pool = pool_on(server, state, keys=KEYS)
    assert (await pool.ainvoke("one")).content
    assert state.calls == [("aadmit", threading.get_ident()), ("asettle", threading.get_ident())]
    state.calls.clear()
    assert [c async for c in pool.astream("two")]
    assert state.names() == Counter({"aadmit": 1, "asettle": 1})
    state.calls.clear()
    assert await pool.abatch(["three", "four", "five"])
    assert state.names() == Counter({"aadmit": 3, "asettle": 3})
    state.calls.clear()
    assert pool.invoke("sync").content  # the sync path: the sync client, the same budget
    assert state.names() == Counter({"admit": 1, "settle": 1})


async def test_an_ainvoke_cancelled_mid_call_gives_its_key_back_in_redis(
    redis_factory: Callable[..., RedisServer],
) -> None:
    with FakeGeminiServer(keys=KEYS[:1], faults=Faults(latency_s=3.0)) as slow:
        state = NotedRedisState(redis_factory().url)
        pool = pool_on(slow, state, keys=KEYS[:1])
        task = asyncio.create_task(pool.ainvoke("slow question"))
        await until(lambda: slow.stats()["total"]["requests"] == 1, "the request reached it")
        assert row(pool)["in_flight"] == 1  # read back from Redis
        assert state.names() == Counter({"aadmit": 1})
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the give-back does not hold the cancelled caller up; it still happens
        await until(lambda: row(pool)["in_flight"] == 0, "the key given back in Redis")
        assert row(pool)["room"]["rpd"] == LIMITS.rpd - 1  # it was sent: the server counts it
        assert state.names()["aadmit"] == 1


async def test_an_abandoned_astream_gives_its_key_back_in_redis(
    server: FakeGeminiServer, redis_factory: Callable[..., RedisServer]
) -> None:
    state = NotedRedisState(redis_factory().url)
    pool = pool_on(server, state, keys=KEYS[:1])
    stream = pool.astream("tell me a long story about many things")
    async for chunk in stream:
        assert chunk.content
        break  # the caller stops reading
    await stream.aclose()  # type: ignore[attr-defined]
    await until(lambda: row(pool)["in_flight"] == 0, "the key given back in Redis")
    assert (await pool.ainvoke("and then?")).response_metadata["key_index"] == 0


async def test_a_redis_killed_during_async_requests_falls_back_and_comes_back(
    server: FakeGeminiServer,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = redis_factory()
    state = NotedRedisState(redis.url, timeout=0.3)
    pool = pool_on(server, state, keys=KEYS)
    assert (await pool.ainvoke("before")).content
    redis.stop()
    caplog.set_level(logging.WARNING, logger="langchain_gemini_pool")
    await everything_async(pool)  # no caller request fails because of it
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if "unreachable" in m and redis.url in m]) == 1  # once, loudly
    assert {r["state"] for r in pool.pool_status()} == {"ready"}
    assert row(pool)["in_flight"] == 0  # the local fallback settled what it admitted
    assert set(state.names()) == {"aadmit", "asettle"}  # the fallback is inside them
    redis.start()  # the same port: Redis is back
    for _ in range(100):  # the reconnect backs off (0.5 s first): bounded, not timed
        assert (await pool.ainvoke("after")).content
        if any("is back" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("RedisState never went back to Redis")
    assert server.stats()["total"]["client_errors"] == 0


class GatedRedisState(NotedRedisState):
    """A real ``RedisState`` whose settles (sync or async) wait for ``gate``: a give-back
    that cannot finish until the test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def settle(self, *args: Any, **kwargs: Any) -> Any:
        self.gate.wait(30)
        return super().settle(*args, **kwargs)

    async def asettle(self, *args: Any, **kwargs: Any) -> Any:
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        return await super().asettle(*args, **kwargs)


async def test_a_cancelled_caller_does_not_wait_for_the_give_back(
    redis_factory: Callable[..., RedisServer],
) -> None:
    with FakeGeminiServer(keys=KEYS[:1], faults=Faults(latency_s=3.0)) as slow:
        state = GatedRedisState(redis_factory().url)
        pool = pool_on(slow, state, keys=KEYS[:1])
        task = asyncio.create_task(pool.ainvoke("slow question"))
        await until(lambda: slow.stats()["total"]["requests"] == 1, "the request reached it")
        task.cancel()
        # the give-back cannot finish (gated): a caller that waited for it would hang here
        done, _ = await asyncio.wait([task], timeout=20)
        assert done and task.cancelled()
        assert row(pool)["in_flight"] == 1  # not given back yet ...
        state.gate.set()
        await until(lambda: row(pool)["in_flight"] == 0, "the key given back in Redis")


async def test_an_async_ladder_over_redis_makes_one_admit_per_attempt(
    redis_factory: Callable[..., RedisServer],
) -> None:
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        state = NotedRedisState(redis_factory().url)
        pool = ladder_on(server, state, prefer="fallback")
        assert (await pool.ainvoke("learn that pro is out")).content
        assert set(state.names()) == {"aadmit", "asettle"}
        assert state.threads("aadmit", "asettle") == {threading.get_ident()}
        state.calls.clear()
        answer = await pool.ainvoke("hello")
        assert answer.response_metadata["model_name"] == FLASH
        assert state.names() == Counter({"aadmit": 1, "asettle": 1})  # the ladder in one admit


def test_a_scheduler_without_a_backend_yields_no_io() -> None:
    """The in-process ``Scheduler``'s steps end at once: nothing for the runners to do."""
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS, limits=LIMITS)
    plan = pool._plan(pool._scheduler, pool._clock, [HumanMessage("hi")])
    with pytest.raises(StopIteration) as chosen:
        next(plan.next_steps())
    pick = chosen.value.value
    assert isinstance(pick, Pick)
    with pytest.raises(StopIteration):
        next(plan.succeeded_steps(pick, 3))
    assert row(pool)["in_flight"] == 0 and plan.attempts[-1]["outcome"] == "ok"


def test_in_memory_state_is_asked_inline_with_no_io_op() -> None:
    """``InMemoryState`` does no I/O: the steps call its ``admit`` and settle at once, sync
    and async alike (its ``aadmit`` is its ``admit``), and yield nothing to the runners."""
    state = InMemoryState()
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS, limits=LIMITS, state=state)
    plan = pool._plan(pool._scheduler, pool._clock, [HumanMessage("hi")])
    with pytest.raises(StopIteration) as chosen:
        next(plan.next_steps())
    pick = chosen.value.value
    assert isinstance(pick, Pick) and row(pool)["in_flight"] == 1
    assert row(pool)["room"]["rpd"] == LIMITS.rpd - 1  # the admit took its slot
    with pytest.raises(StopIteration):
        next(plan.succeeded_steps(pick, 3))
    assert row(pool)["in_flight"] == 0 and plan.attempts[-1]["outcome"] == "ok"
    assert not state._keys[pick.reservation.fingerprint].flights  # the settle ended it
    plan = pool._plan(pool._scheduler, pool._clock, [HumanMessage("hi")])
    with pytest.raises(StopIteration) as chosen:
        next(plan.next_steps())
    pick = chosen.value.value
    assert pool.pool_status()[pick.index]["room"]["rpm"] == LIMITS.rpm - 1
    with pytest.raises(StopIteration):
        next(plan.cancelled_steps(pick, sent=False))
    assert pool.pool_status()[pick.index]["room"]["rpm"] == LIMITS.rpm  # given back, inline


def test_a_backend_decision_is_one_admit_op_and_one_settle_op(tmp_path: Path) -> None:
    """Over a backend, ``next_steps`` yields one op (``admit``, with ``aadmit`` as its
    awaitable twin) and ``succeeded_steps`` one (``settle`` / ``asettle``)."""
    state = NotedDiskState(tmp_path / "state")
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS, limits=LIMITS, state=state)
    plan = pool._plan(pool._scheduler, pool._clock, [HumanMessage("hi")])
    steps = plan.next_steps()
    admit = next(steps)
    assert isinstance(admit, Io) and admit.blocking and admit.afn is not None
    assert state.calls == []  # deciding did no I/O: the op is the I/O
    with pytest.raises(StopIteration) as chosen:
        steps.send(admit.fn(*admit.args))
    pick = chosen.value.value
    assert isinstance(pick, Pick) and state.names() == Counter({"admit": 1})
    assert row(pool)["in_flight"] == 1
    steps = plan.succeeded_steps(pick, 3)
    settle = next(steps)
    assert (settle.fn, settle.afn) == (state.settle, state.asettle)
    with pytest.raises(StopIteration):
        steps.send(settle.fn(*settle.args))
    assert state.names() == Counter({"admit": 1, "settle": 1})
    assert row(pool)["in_flight"] == 0


async def test_an_async_ladder_that_prefers_waiting_asks_each_model_through_aadmit(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """``prefer="wait"`` asks the backend once per model it tries: each an ``aadmit``."""
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        state = NotedRedisState(redis_factory().url)
        pool = ladder_on(server, state, prefer="wait")
        assert (await pool.ainvoke("learn that pro is out")).content
        state.calls.clear()
        answer = await pool.ainvoke("hello")
        assert answer.response_metadata["model_name"] == FLASH
        assert state.names() == Counter({"aadmit": 2, "asettle": 1})  # pro (out), then flash
        assert state.threads("aadmit", "asettle") == {threading.get_ident()}

"""Requests that end without an outcome give their key and their unsent slot back.

Through the real SDK over loopback HTTP against the emulator. Assertions read the pool's
books (``in_flight``, ``room``) against the emulator's ground truth, never wall-clock time:
where a real clock is needed (tasks waiting concurrently), nothing depends on its speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_gemini_pool import ChatGeminiPool, DiskState, ManualClock, QuotaLimits
from langchain_gemini_pool._pool_request import estimate_tokens
from langchain_gemini_pool._quota import WINDOW_MARGIN_S
from langchain_gemini_pool.testing import FakeGeminiServer, Faults

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]
ONE = {"only": KEYS[:1]}


def row(pool: ChatGeminiPool) -> dict[str, Any]:
    return pool.pool_status()[0]


def sent(server: FakeGeminiServer) -> int:
    return int(server.stats()["total"]["requests"])


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop run until ``condition`` holds (bounded by steps, not by a timing)."""
    for _ in range(4000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_cancelled_waiters_leave_no_phantom_slots(
    emulator: Emulator, make_pool: MakePool
) -> None:
    """The issue's case (rpm=2, ten waiters cancelled), with windows long enough that no
    booked slot comes due during the test however slow the machine."""
    server = emulator(keys=ONE)
    limits = QuotaLimits(rpm=2, rpd=100, window_s=30)
    pool = make_pool(server, api_keys=ONE, limits=limits, max_wait=600)
    await asyncio.gather(pool.ainvoke("one"), pool.ainvoke("two"))
    waiters = [asyncio.create_task(pool.ainvoke(f"waiter {i}")) for i in range(10)]
    await until(lambda: row(pool)["in_flight"] == 10, "ten waiters holding booked slots")
    for task in waiters:
        task.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert sent(server) == 2
    now = pool._clock.now()
    status = row(pool)
    assert status["in_flight"] == 0
    assert status["room"]["rpd"] == 100 - sent(server)  # today's count = what was sent
    span = limits.window_s + min(WINDOW_MARGIN_S, 0.01 * limits.window_s)
    # the next request books the first slot after the two real ones, not the twelfth
    plan = pool._plan(pool._scheduler, pool._clock, [HumanMessage("next")])
    pause = plan.next()
    assert isinstance(pause, float)
    assert pause <= span
    plan.close()
    assert row(pool)["in_flight"] == 0
    # every real request is out of the window one span from now; a phantom would not be
    later = pool._scheduler.status(now + span + 0.01)[0]
    assert later["room"]["rpm"] == 2


def test_a_sync_stream_abandoned_early_releases_its_key(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(keys=ONE)
    pool = make_pool(server, api_keys=ONE, limits=QuotaLimits(rpd=50))
    for chunk in pool.stream("tell me a long story about many things"):
        assert chunk.content
        break  # the caller stops reading
    status = row(pool)
    assert status["in_flight"] == 0
    assert status["room"]["rpd"] == 50 - sent(server) == 49  # it was sent: it counts
    assert pool.invoke("and then?").response_metadata["key_index"] == 0


async def test_an_ainvoke_cancelled_mid_call_releases_its_key(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(keys=ONE, faults=Faults(latency_s=3.0))
    pool = make_pool(server, api_keys=ONE, limits=QuotaLimits(rpd=50))
    task = asyncio.create_task(pool.ainvoke("slow question"))
    await until(lambda: sent(server) == 1, "the emulator received the request")
    assert row(pool)["in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = row(pool)
    assert status["in_flight"] == 0
    # the request reached the server, which counts it: so does the pool's window
    assert status["room"]["rpd"] == 50 - sent(server) == 49


async def test_an_astream_cancelled_before_its_first_chunk_releases_its_key(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(keys=ONE, faults=Faults(latency_s=3.0))
    pool = make_pool(server, api_keys=ONE, limits=QuotaLimits(rpd=50))

    async def consume() -> list[Any]:
        return [chunk async for chunk in pool.astream("slow stream")]

    task = asyncio.create_task(consume())
    await until(lambda: sent(server) == 1, "the emulator received the stream request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert row(pool)["in_flight"] == 0
    assert row(pool)["room"]["rpd"] == 49


class InterruptedClock(ManualClock):
    """A clock whose waits are interrupted, like Ctrl-C during a sleep."""

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt


def test_an_interrupted_wait_gives_its_booked_slot_back(
    emulator: Emulator, make_pool: MakePool
) -> None:
    clock = InterruptedClock(1_000_000.0)
    server = emulator(keys=ONE, clock=clock)
    pool = make_pool(server, api_keys=ONE, clock=clock, limits=QuotaLimits(rpm=1, rpd=10))
    pool.invoke("fills the window")
    with pytest.raises(KeyboardInterrupt):
        pool.invoke("books the next window, then is interrupted")
    status = row(pool)
    assert (status["in_flight"], status["requests"]) == (0, 1)
    assert status["room"] == {"rpm": 0, "tpm": None, "rpd": 9}
    assert sent(server) == 1


def test_counting_tokens_uses_no_generate_quota(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=ONE, clock=clock)
    pool = make_pool(server, api_keys=ONE, clock=clock, limits=QuotaLimits(rpm=1, rpd=10))
    assert pool.get_num_tokens("how many tokens is this") > 0
    assert row(pool)["room"] == {"rpm": 1, "tpm": None, "rpd": 10}
    pool.invoke("the one request this window allows")
    assert sum(clock.slept) == 0  # the count took no slot: the invoke did not wait
    assert row(pool)["room"] == {"rpm": 0, "tpm": None, "rpd": 9}


MANY_SHORT = [SystemMessage("a"), *(HumanMessage(c) for c in "bcdefghij")]
"""Ten one-character messages: the pool estimates 3 tokens, the server counts one a part."""


def test_a_stream_corrects_its_estimated_tokens(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=ONE, clock=clock)
    pool = make_pool(server, api_keys=ONE, clock=clock, limits=QuotaLimits(tpm=1000))
    list(pool.stream(MANY_SHORT))
    used = server.stats()["total"]["prompt_tokens"]
    assert used != estimate_tokens(MANY_SHORT)  # else the test could not tell
    assert row(pool)["room"]["tpm"] == 1000 - used


async def test_an_astream_corrects_its_estimated_tokens(
    emulator: Emulator, make_pool: MakePool, clock: ManualClock
) -> None:
    server = emulator(keys=ONE, clock=clock)
    pool = make_pool(server, api_keys=ONE, clock=clock, limits=QuotaLimits(tpm=1000))
    async for _ in pool.astream(MANY_SHORT):
        pass
    used = server.stats()["total"]["prompt_tokens"]
    assert used != estimate_tokens(MANY_SHORT)
    assert row(pool)["room"]["tpm"] == 1000 - used


async def test_an_astream_closed_early_releases_its_key(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator(keys=ONE)
    pool = make_pool(server, api_keys=ONE, limits=QuotaLimits(rpd=50))
    async with contextlib.aclosing(pool.astream("a long story about many things")) as stream:
        async for _ in stream:
            break  # the caller stops reading, and closes the stream
    # LangChain's inner generators are closed by the event loop's finalizer, a few turns on
    await until(lambda: row(pool)["in_flight"] == 0, "the abandoned stream gave its key back")
    assert row(pool)["room"]["rpd"] == 50 - sent(server) == 49


class WatchedDiskState(DiskState):
    """A real ``DiskState`` that notes which thread each decision and settlement ran on."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.threads: list[int] = []

    def admit(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().admit(*args, **kwargs)

    def settle(self, outcome: Any) -> None:
        self.threads.append(threading.get_ident())
        super().settle(outcome)


async def test_shared_state_is_never_reached_from_the_event_loop_even_when_cancelled(
    emulator: Emulator, make_pool: MakePool, tmp_path: Any
) -> None:
    """Async requests on a shared backend decide, settle and give back a cancelled key in
    threads: a cancelled task is not held up by the backend, and the key still comes back."""
    state = WatchedDiskState(str(tmp_path / "state"))
    server = emulator(keys=ONE, faults=Faults(latency_s=3.0))
    pool = make_pool(server, api_keys=ONE, limits=QuotaLimits(rpd=50), state=state)
    loop_thread = threading.get_ident()
    task = asyncio.create_task(pool.ainvoke("slow"))
    await until(lambda: sent(server) == 1, "the emulator received the request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: row(pool)["in_flight"] == 0, "the cancelled request's key came back")
    assert len(state.threads) >= 2  # its admit, and the give-back
    assert loop_thread not in state.threads
    assert row(pool)["room"]["rpd"] == 49  # it was sent: the window keeps it

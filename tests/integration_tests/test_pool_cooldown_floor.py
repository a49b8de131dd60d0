"""Through the SDK: a 429 in the last milliseconds of a window waits instead of spinning."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from langchain_gemini_pool import ChatGeminiPool, InMemoryState, ManualClock
from langchain_gemini_pool.testing import FakeGeminiServer, Quota

from .conftest import KEYS, T0


@pytest.mark.parametrize("shared", [False, True], ids=["in_process", "shared"])
def test_a_429_at_the_end_of_a_window_is_waited_out(
    emulator: Callable[..., FakeGeminiServer],
    make_pool: Callable[..., ChatGeminiPool],
    shared: bool,
) -> None:
    clock = ManualClock(T0 + 49.9996)  # 0.4 ms before the emulator's window turns
    server = emulator(keys={"p": KEYS[:1]}, quotas=Quota(rpm=1), clock=clock)
    extra = {"state": InMemoryState(clock)} if shared else {}
    pool = make_pool(server, api_keys={"p": KEYS[:1]}, clock=clock, max_wait=30, **extra)
    pool.invoke("first")
    reply = pool.invoke("second: its 429 says retry in 0s")  # raised GoogleRateLimitError
    assert reply.content
    total = server.stats()["total"]
    assert total["rate_limited"] == 1  # one 429, then a wait, not a spin of them
    assert clock.slept and max(clock.slept) >= 1.0

"""Fixtures for tests that talk to the emulator through the real SDK over loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from langchain_gemini_pool import ChatGeminiPool, ManualClock
from langchain_gemini_pool.testing import FakeGeminiServer

MODEL = "gemini-2.5-flash"
KEYS = ["fake-key-aaaa", "fake-key-bbbb", "fake-key-cccc", "fake-key-dddd"]
# 10:00:10 UTC: windows aligned at :00, so a 60 s window has 50 s left.
T0 = datetime(2026, 3, 2, 10, 0, 10, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def make_pool() -> Callable[..., ChatGeminiPool]:
    def make(server: FakeGeminiServer, api_keys: Any = None, **kwargs: Any) -> ChatGeminiPool:
        kwargs.setdefault("model", MODEL)
        return ChatGeminiPool(
            api_keys=KEYS[:3] if api_keys is None else api_keys,
            base_url=server.base_url,
            **kwargs,
        )

    return make

"""Fixtures every test folder shares."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_gemini_pool.testing import FakeGeminiServer


@pytest.fixture
def emulator() -> Iterator[Callable[..., FakeGeminiServer]]:
    """Start emulators with the given settings; all are stopped at the end of the test."""
    started: list[FakeGeminiServer] = []

    def start(**kwargs: Any) -> FakeGeminiServer:
        server = FakeGeminiServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

"""The pool facing Google's real error bodies (``tests/fixtures/google_errors``) over HTTP.

A tiny loopback server replays a fixture body to every request, so the real SDK, the real
LangChain wrapper and the pool see exactly what Google sent.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    ManualClock,
    NoValidKeysError,
    QuotaLimits,
)
from tests.google_errors import load

from .conftest import T0

Replay = Callable[[str], str]


@pytest.fixture
def replay() -> Iterator[Callable[[str], tuple[str, list[str]]]]:
    """``replay(name)`` -> (base_url, keys seen): a server answering with that fixture."""
    servers: list[ThreadingHTTPServer] = []

    def start(name: str) -> tuple[str, list[str]]:
        doc = load(name)
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("x-goog-api-key", "")
                seen.append(key)
                # Google echoes the key in a suspended consumer's message: do the same
                text = json.dumps(doc["body"]).replace("AIza…REDACTED", key).encode()
                self.send_response(doc["http_status"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_key_google_echoes_never_reaches_the_caller(
    replay: Callable[[str], tuple[str, list[str]]], caplog: pytest.LogCaptureFixture
) -> None:
    url, seen = replay("403_consumer_suspended")
    key = "fake-key-suspended-7777"
    pool = ChatGeminiPool(model="gemini-2.5-flash", api_keys=[key], base_url=url)
    with pytest.raises(NoValidKeysError) as info:
        pool.invoke("hi")
    assert seen == [key]  # the server did get it, and put it in its message
    assert "…7777: 403 CONSUMER_SUSPENDED" in str(info.value)
    chain: list[BaseException] = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert all(key not in str(e) and key not in repr(e) for e in chain)
    assert key not in caplog.text


def test_a_model_without_free_tier_stops_the_pool_at_once(
    replay: Callable[[str], tuple[str, list[str]]],
) -> None:
    url, seen = replay("429_quota_zero")
    pool = ChatGeminiPool(
        model="gemini-2.0-flash",
        api_keys=["fake-key-zero-0001"],
        base_url=url,
        clock=ManualClock(T0),
        limits=QuotaLimits(rpm=10, tpm=100_000, rpd=200),
    )
    with pytest.raises(AllKeysRateLimitedError):
        pool.invoke("hi")
    assert len(seen) == 1
    # the 0s in the message were learned: no further request is worth sending, ever
    with pytest.raises(AllKeysRateLimitedError) as info:
        pool.invoke("hi again")
    assert math.isinf(info.value.retry_after)
    assert len(seen) == 1

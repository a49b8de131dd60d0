"""ChatGeminiPool with GeminiDiskCache: hits never depend on rotation, streams are served too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langchain_core.globals import set_llm_cache
from langchain_google_genai.chat_models import GoogleAPIError

from langchain_gemini_pool import (
    ChatGeminiPool,
    GeminiDiskCache,
    ManualClock,
    get_gemini_usage_callback,
)
from langchain_gemini_pool.testing import FakeGeminiServer, Faults

from .conftest import KEYS

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[GeminiDiskCache]:
    disk = GeminiDiskCache(tmp_path / "cache")
    yield disk
    disk.close()


def requests_seen(server: FakeGeminiServer) -> int:
    return int(server.stats()["total"]["requests"])


def test_a_repeated_invoke_is_a_visible_cache_hit(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator()
    pool = make_pool(server, cache=cache)
    first = pool.invoke("what is a token?")
    second = pool.invoke("what is a token?")
    assert second.content == first.content
    assert second.response_metadata["cache_hit"] is True
    assert "key_index" not in second.response_metadata
    assert "cache_hit" not in first.response_metadata
    assert requests_seen(server) == 1
    assert cache.stats()["hits"] == 1


def test_hits_do_not_depend_on_which_keys_the_pool_holds(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator()
    one = make_pool(server, api_keys=KEYS[:2], cache=cache)
    other = make_pool(server, api_keys=KEYS[2:], cache=cache)
    one.invoke("shared prompt")
    assert other.invoke("shared prompt").response_metadata["cache_hit"] is True
    llm_string = one._get_llm_string()
    assert llm_string == other._get_llm_string()
    for key in KEYS:
        assert key not in llm_string
        assert key[-4:] not in llm_string


def test_cache_entries_hold_no_key_text(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    pool = make_pool(emulator(), cache=cache)
    for i in range(5):
        pool.invoke(f"prompt {i}")
    for stream_prompt in ("s1", "s2"):
        list(pool.stream(stream_prompt))
    blob = b"".join(p.read_bytes() for p in cache.directory.rglob("*") if p.is_file())
    assert blob  # something was written
    for key in KEYS:
        assert key.encode() not in blob


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_completed_stream_is_stored_and_served_as_chunks(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache, use_async: bool
) -> None:
    server = emulator()
    pool = make_pool(server, cache=cache)

    async def stream(prompt: str) -> list[str]:
        chunks = [c async for c in pool.astream(prompt)] if use_async else list(pool.stream(prompt))
        stream.last = chunks[-1]  # type: ignore[attr-defined]
        return [str(c.content) for c in chunks]

    live = await stream("tell me a story about keys")
    assert requests_seen(server) == 1
    replayed = await stream("tell me a story about keys")
    assert requests_seen(server) == 1  # served from the cache
    assert "".join(replayed) == "".join(live)
    assert len(replayed) > 1  # replayed as chunks, not one blob
    assert stream.last.response_metadata["cache_hit"] is True  # type: ignore[attr-defined]
    assert stream.last.usage_metadata is not None  # type: ignore[attr-defined]
    # invoke finds what the stream stored
    assert pool.invoke("tell me a story about keys").response_metadata["cache_hit"] is True
    assert requests_seen(server) == 1


def test_a_broken_stream_is_not_stored(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator(faults=Faults(stream_cut_after=1))
    pool = make_pool(server, cache=cache, clock=ManualClock())
    with pytest.raises(GoogleAPIError):
        list(pool.stream("a long story"))
    server.faults = None
    list(pool.stream("a long story"))
    assert requests_seen(server) == 2  # the first, broken, stream left nothing to hit
    assert cache.stats()["entries"] == 1


def test_a_stream_does_not_count_a_hit_twice(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    pool = make_pool(emulator(), cache=cache)
    pool.invoke("count me once")
    list(pool.stream("count me once"))
    assert cache.stats()["hits"] == 1


def test_global_cache_is_used_and_counted_as_cached_usage(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator()
    pool = make_pool(server)
    set_llm_cache(cache)
    try:
        with get_gemini_usage_callback() as usage:
            pool.invoke("hello", config={"metadata": {"user_id": "alice"}})
            pool.invoke("hello", config={"metadata": {"user_id": "alice"}})
            list(pool.stream("hello", config={"metadata": {"user_id": "bob"}}))
    finally:
        set_llm_cache(None)
    assert requests_seen(server) == 1
    assert usage.total.requests == 3
    assert usage.total.cached_requests == 2
    assert usage.total.attempts == 1
    assert usage.by_user["bob"].cached_requests == 1
    assert sum(t.requests for t in usage.by_key.values()) == 1


def test_cache_false_skips_the_global_cache(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator()
    pool = make_pool(server, cache=False)
    set_llm_cache(cache)
    try:
        pool.invoke("x")
        pool.invoke("x")
        list(pool.stream("x"))
    finally:
        set_llm_cache(None)
    assert requests_seen(server) == 3


def test_stream_without_streaming_support_still_hits_the_cache(
    emulator: Emulator, make_pool: MakePool, cache: GeminiDiskCache
) -> None:
    server = emulator()
    pool = make_pool(server, cache=cache, disable_streaming=True)
    list(pool.stream("same", config={"metadata": {"user_id": "bob"}}))  # a miss: stored
    message = pool.invoke("same", config={"metadata": {"user_id": "alice"}})
    assert message.response_metadata["cache_hit"] is True  # the user is not in the cache key
    assert requests_seen(server) == 1

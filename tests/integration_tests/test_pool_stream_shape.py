"""A pool stream is the bare model's stream, chunk for chunk, plus the pool's metadata.

``ChatGoogleGenerativeAI.stream`` ends with an empty ``chunk_position="last"`` chunk; the
pool yields the same chunks and puts its metadata (key, project, attempts) on that one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_google_genai import ChatGoogleGenerativeAI

from langchain_gemini_pool import ChatGeminiPool
from langchain_gemini_pool.testing import FakeGeminiServer

from .conftest import KEYS, MODEL

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]
PROMPTS = ["hi", "tell me about the weather in Paris in spring, at some length please"]
POOL_KEYS = ("key_index", "key_fingerprint", "project", "attempts")


def shape(chunks: list[AIMessageChunk]) -> list[tuple[Any, ...]]:
    return [(c.content, c.chunk_position, c.usage_metadata, c.tool_call_chunks) for c in chunks]


def bare(server: FakeGeminiServer) -> ChatGoogleGenerativeAI:
    return ChatGoogleGenerativeAI(
        model=MODEL, base_url=server.base_url, google_api_key=KEYS[0], max_retries=1
    )


def check(pool_chunks: list[AIMessageChunk], bare_chunks: list[AIMessageChunk]) -> None:
    assert len(pool_chunks) >= 2
    assert shape(pool_chunks) == shape(bare_chunks)
    last = pool_chunks[-1]
    assert (last.content, last.chunk_position) == ("", "last")
    assert last.response_metadata["key_index"] == 0
    assert last.response_metadata["attempts"] == [
        {"key_index": 0, "project": last.response_metadata["project"], "outcome": "ok"}
    ]
    for chunk in pool_chunks[:-1]:  # the text chunks are the member's, untouched
        assert not set(POOL_KEYS) & set(chunk.response_metadata)
    merged = pool_chunks[0]
    for chunk in pool_chunks[1:]:
        merged = merged + chunk
    assert merged.response_metadata["finish_reason"] == "STOP"
    assert merged.response_metadata["key_index"] == 0


@pytest.mark.parametrize("prompt", PROMPTS)
def test_stream_yields_the_bare_models_chunks(
    emulator: Emulator, make_pool: MakePool, prompt: str
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=KEYS[:1])
    check(list(pool.stream(prompt)), list(bare(server).stream(prompt)))


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_astream_yields_the_bare_models_chunks(
    emulator: Emulator, make_pool: MakePool, prompt: str
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=KEYS[:1])
    ours = [c async for c in pool.astream(prompt)]
    theirs = [c async for c in bare(server).astream(prompt)]
    check(ours, theirs)


async def test_astream_events_have_the_bare_models_shape(
    emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    pool = make_pool(server, api_keys=KEYS[:1])

    async def events(model: Any) -> list[tuple[str, Any]]:
        out = []
        async for event in model.astream_events(PROMPTS[1], version="v2"):
            chunk = event["data"].get("chunk")
            out.append((event["event"], getattr(chunk, "content", None)))
        return out

    assert await events(pool) == await events(bare(server))

"""Every client-level and per-call setting reaches the wire for every key (issue 10, cause 1),
checked against what the emulator received; the pool sends what the bare class sends.

Also: after ``remove_key`` the pool's own key and client follow the first remaining key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.genai.errors import ClientError
from google.genai.types import Content, Part
from langchain_google_genai import ChatGoogleGenerativeAI

from langchain_gemini_pool import ChatGeminiPool, mask_key
from langchain_gemini_pool.testing import FakeGeminiServer

from .conftest import KEYS, MODEL

Emulator = Callable[..., FakeGeminiServer]

SETTINGS: dict[str, Any] = {
    "additional_headers": {"x-team": "search"},
    "safety_settings": {"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE"},
    "thinking_budget": 64,
    "include_thoughts": True,
    "response_modalities": ["TEXT"],
    "timeout": 30,
    "temperature": 0.3,
    "max_output_tokens": 50,
    "labels": {"team": "search"},
}
PER_CALL: dict[str, Any] = {"http_options": {"headers": {"x-request-id": "r-1"}, "timeout": 9000}}
SKIP = {"host", "content-length"}  # differ by socket and body only


def headers_of(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(n, v) for n, v in record["headers"] if n not in SKIP]


def key_lines(record: dict[str, Any]) -> list[str]:
    return [v for n, v in record["headers"] if n == "x-goog-api-key"]


def test_pool_sends_what_the_bare_class_sends_with_each_key(emulator: Emulator) -> None:
    server = emulator()
    endpoint = {"api_endpoint": server.base_url}
    bare = ChatGoogleGenerativeAI(
        model=MODEL, google_api_key=KEYS[2], client_options=endpoint, **SETTINGS
    )
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS[:3], client_options=endpoint, **SETTINGS)
    bare.invoke("hello", **PER_CALL)
    server_bare = server.received()[-1]
    server.reset_stats()
    for _ in range(3):
        pool.invoke("hello", **PER_CALL)
    sent = server.received()
    assert [r["key"] for r in sent] == [mask_key(k) for k in KEYS[:3]]
    for record in sent:
        assert key_lines(record) == [record["key"]]  # the client's own key replaced, not added
        assert record["body"] == server_bare["body"]
        assert record["path"] == server_bare["path"]
    assert headers_of(sent[2]) == headers_of(server_bare)  # same key: identical header lines
    names = dict(headers_of(sent[0]))
    assert names["x-team"] == "search"
    assert names["x-request-id"] == "r-1"
    assert names["x-server-timeout"] == "9"
    body = sent[0]["body"]
    assert body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}
    ]
    assert body["generationConfig"]["responseModalities"] == ["TEXT"]
    assert body["generationConfig"]["maxOutputTokens"] == 50


async def test_async_and_streams_carry_the_key_and_client_headers(emulator: Emulator) -> None:
    server = emulator()
    pool = ChatGeminiPool(
        model=MODEL, api_keys=KEYS[:3], base_url=server.base_url, **SETTINGS, api_version="v1beta"
    )
    await pool.ainvoke("a")
    [c async for c in pool.astream("b")]
    list(pool.stream("c"))
    pool.get_num_tokens("d")
    await pool.aclose()
    sent = server.received()
    assert [r["key"] for r in sent] == [mask_key(k) for k in (*KEYS[:3], KEYS[0])]
    assert [r["path"].rsplit(":", 1)[1] for r in sent] == [
        "generateContent",
        "streamGenerateContent",
        "streamGenerateContent",
        "countTokens",
    ]
    for record in sent:
        assert record["path"].startswith("/v1beta/")
        assert key_lines(record) == [record["key"]]
        assert dict(headers_of(record))["x-team"] == "search"
    for record in sent[:3]:
        assert record["body"]["generationConfig"]["thinkingConfig"]


def test_remove_key_moves_the_pools_own_key_and_client_on(emulator: Emulator) -> None:
    server = emulator()
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS[:3], base_url=server.base_url)
    assert pool.google_api_key is not None
    assert pool.google_api_key.get_secret_value() == KEYS[0]
    pool.remove_key(0)
    assert pool.google_api_key is not None
    assert pool.google_api_key.get_secret_value() == KEYS[1]
    pool.client.models.generate_content(  # code that uses llm.client directly
        model=MODEL, contents=[Content(role="user", parts=[Part(text="direct")])]
    )
    pool.remove_key(KEYS[2])  # not the pool's own key: it stays
    assert pool.google_api_key.get_secret_value() == KEYS[1]
    pool.remove_key(1)  # the last one: the pool holds no key text at all
    assert pool.google_api_key is None
    with pytest.raises(ClientError, match="unregistered callers") as raised:
        pool.client.models.generate_content(model=MODEL, contents="again")
    assert raised.value.code == 403
    assert [r["key"] for r in server.received()] == [mask_key(KEYS[1]), None]
    pool.add_keys([KEYS[3]])
    assert pool.google_api_key is not None
    assert pool.google_api_key.get_secret_value() == KEYS[3]
    assert pool.invoke("back").response_metadata["key_index"] == 3


def test_dropping_the_pool_closes_its_connections() -> None:
    """As for the bare class: no reference cycle keeps a dropped pool's client open."""
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS[:3])
    transport = pool.client._api_client._httpx_client
    assert transport is not None and not transport.is_closed
    del pool
    assert transport.is_closed

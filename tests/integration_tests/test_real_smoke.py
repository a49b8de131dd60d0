"""A short smoke test against Google's real Gemini API.

Runs only when ``GEMINI_API_KEY`` holds a real key (``pytest -m real``); skipped otherwise,
and never counted as passing then. It spends a handful of requests of that key's quota.
``GEMINI_SMOKE_MODEL`` picks the model (default gemini-2.5-flash).
"""

from __future__ import annotations

import os

import pytest
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleInvalidRequestError

from langchain_gemini_pool import ChatGeminiPool, NoValidKeysError
from langchain_gemini_pool._errors import FailureKind, classify

KEY = os.environ.get("GEMINI_API_KEY", "")
MODEL = os.environ.get("GEMINI_SMOKE_MODEL", "gemini-2.5-flash")
NOT_A_KEY = "fake-key-not-valid-0000"

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not KEY, reason="needs a real Gemini API key in GEMINI_API_KEY"),
]


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"It is sunny in {city}."


def pool() -> ChatGeminiPool:
    return ChatGeminiPool(model=MODEL, api_keys=[KEY], temperature=0, max_wait=90)


def test_invoke() -> None:
    answer = pool().invoke("Reply with exactly one word: pong")
    assert "pong" in answer.text.lower()
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] > 0
    assert answer.response_metadata["key_index"] == 0


def test_stream() -> None:
    chunks = list(pool().stream("Count from 1 to 5, digits separated by spaces."))
    text = "".join(c.text for c in chunks)
    assert "3" in text
    assert chunks[-1].usage_metadata is not None


def test_tool_call() -> None:
    bound = pool().bind_tools([get_weather])
    answer = bound.invoke("Use the get_weather tool to get the weather in Paris.")
    assert answer.tool_calls
    assert answer.tool_calls[0]["name"] == "get_weather"
    assert "paris" in str(answer.tool_calls[0]["args"]).lower()


def test_a_bad_key_is_a_400_and_is_quarantined() -> None:
    plain = ChatGoogleGenerativeAI(model=MODEL, google_api_key=NOT_A_KEY, max_retries=1)
    with pytest.raises(GoogleInvalidRequestError) as info:
        plain.invoke("hi")
    sdk_error = info.value.__cause__
    assert getattr(sdk_error, "code", None) == 400
    assert classify(info.value).kind is FailureKind.BAD_KEY
    bad_pool = ChatGeminiPool(model=MODEL, api_keys=[NOT_A_KEY])
    with pytest.raises(NoValidKeysError, match="API_KEY_INVALID"):
        bad_pool.invoke("hi")

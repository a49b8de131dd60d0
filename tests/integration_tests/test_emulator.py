"""The emulator through the real SDK: a plain ChatGoogleGenerativeAI cannot tell it from Google.

Everything goes over real loopback HTTP, sync through httpx2 and async through both aiohttp
(the SDK's default when importable) and httpx2 (forced with a custom async transport).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import Enum
from typing import Any

import httpx2
import jsonschema
import pytest
from google import genai
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import BaseModel, Field

from langchain_gemini_pool.testing import FakeGeminiServer, count_tokens, prompt_tokens

MODEL = "gemini-2.5-flash"
KEY = "fake-key-0001"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer() as running:
        yield running


def make_llm(
    server: FakeGeminiServer, transport: str = "aiohttp", **kwargs: Any
) -> ChatGoogleGenerativeAI:
    """A plain model on the emulator; ``transport="httpx2"`` forces the SDK's httpx2 async path."""
    if transport == "httpx2":
        kwargs["client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    kwargs.setdefault("google_api_key", KEY)
    llm = ChatGoogleGenerativeAI(model=MODEL, base_url=server.base_url, max_retries=1, **kwargs)
    assert llm.client._api_client._use_aiohttp() is (transport == "aiohttp")
    return llm


def test_invoke_and_stream_agree_on_text_and_usage(server: FakeGeminiServer) -> None:
    llm = make_llm(server)
    reply = llm.invoke("Hello emulator, how are you today?")
    assert reply.text == "Echo: Hello emulator, how are you today?"
    assert reply.response_metadata["model_name"] == MODEL
    assert reply.response_metadata["finish_reason"] == "STOP"
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] == count_tokens("Hello emulator, how are you today?") == 9
    assert usage["output_tokens"] == count_tokens(reply.text) == 10
    assert usage["total_tokens"] == 19

    chunks = list(llm.stream("Hello emulator, how are you today?"))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 3
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.text == reply.text
    assert full.usage_metadata is not None
    assert full.usage_metadata["output_tokens"] == 10
    assert full.usage_metadata["input_tokens"] == 9
    assert full.response_metadata.get("finish_reason") == "STOP"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx2"])
async def test_ainvoke_and_astream_over_both_async_transports(
    server: FakeGeminiServer, transport: str
) -> None:
    llm = make_llm(server, transport)
    reply = await llm.ainvoke("Async hello there")
    assert reply.text == "Echo: Async hello there"
    pieces = [chunk.text async for chunk in llm.astream("Async hello there")]
    assert len([p for p in pieces if p]) >= 3
    assert "".join(pieces) == reply.text


def test_max_output_tokens_and_stop_sequences_cut_the_reply(server: FakeGeminiServer) -> None:
    short = make_llm(server, max_output_tokens=2).invoke("one two three four five six")
    assert short.text == "Echo: on"
    assert short.response_metadata["finish_reason"] == "MAX_TOKENS"
    stopped = make_llm(server).invoke("alpha beta gamma", stop=["beta"])
    assert stopped.text == "Echo: alpha "


def test_thinking_bills_thought_tokens(server: FakeGeminiServer) -> None:
    reply = make_llm(server, thinking_budget=100).invoke("Think about this")
    usage = reply.usage_metadata
    assert usage is not None
    assert usage.get("output_token_details", {}).get("reasoning") == 24
    assert usage["output_tokens"] == 24 + count_tokens("Echo: Think about this")
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Forecast(BaseModel):
    """Ask for a weather forecast."""

    city: str = Field(description="The city")
    days: int = Field(ge=1, le=10)
    unit: Unit
    hours: list[int]


@pytest.mark.parametrize("transport", ["sync", "aiohttp", "httpx2"])
async def test_tool_call_then_text_after_the_tool_answers(
    server: FakeGeminiServer, transport: str
) -> None:
    llm = make_llm(server, "aiohttp" if transport == "sync" else transport)
    bound = llm.bind_tools([Forecast], tool_choice="Forecast")
    question = HumanMessage("Forecast for 'Zürich' over 3 days please")
    if transport == "sync":
        call = bound.invoke([question])
    else:
        call = await bound.ainvoke([question])
    assert isinstance(call, AIMessage)
    assert len(call.tool_calls) == 1
    args = call.tool_calls[0]["args"]
    jsonschema.validate(args, Forecast.model_json_schema())
    assert args["city"] == "Zürich"
    assert args["days"] == 3
    answer = ToolMessage("Sunny, 21 degrees", tool_call_id=call.tool_calls[0]["id"])
    history = [question, call, answer]
    final = bound.invoke(history) if transport == "sync" else await bound.ainvoke(history)
    assert final.tool_calls == []
    assert "Sunny, 21 degrees" in final.text


def test_a_tool_named_in_the_text_is_called_without_tool_choice(server: FakeGeminiServer) -> None:
    @tool
    def get_weather(location: str) -> str:
        """Get the weather at a location."""
        return "It's sunny."

    llm = make_llm(server).bind_tools([get_weather])
    assert llm.invoke("What is the weather in Paris?").tool_calls[0]["name"] == "get_weather"
    assert llm.invoke("Say hello").tool_calls == []


class Pet(BaseModel):
    name: str
    legs: int


class Household(BaseModel):
    """A household."""

    owner: str
    pets: list[Pet]
    unit: Unit
    nickname: str | None = None


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_validates(server: FakeGeminiServer, method: str) -> None:
    structured = make_llm(server).with_structured_output(Household, method=method)
    result = structured.invoke("Describe the household of 'Ada' with 4 pets")
    assert isinstance(result, Household)
    assert result.owner == "Ada"
    assert result.pets[0].legs == 4


def test_openapi_response_schema_gets_valid_json() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "title": {"type": "STRING"},
            "score": {"type": "NUMBER", "minimum": 10},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
            "note": {"type": "STRING", "nullable": True},
        },
        "required": ["title", "score", "tags"],
    }
    body = {
        "contents": [{"role": "user", "parts": [{"text": "rate it 3"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    lowered = json.loads(json.dumps(schema).replace('"OBJECT"', '"object"'))
    lowered = json.loads(
        json.dumps(lowered)
        .replace('"STRING"', '"string"')
        .replace('"NUMBER"', '"number"')
        .replace('"ARRAY"', '"array"')
    )
    lowered["properties"]["note"]["type"] = ["string", "null"]
    del lowered["properties"]["note"]["nullable"]
    with FakeGeminiServer() as server, httpx2.Client(base_url=server.base_url) as http:
        response = http.post(
            f"/v1beta/models/{MODEL}:generateContent",
            headers={"x-goog-api-key": KEY},
            json=body,
        )
    assert response.status_code == 200
    text = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    value = json.loads(text)
    jsonschema.validate(value, lowered)
    assert value["score"] == 10


def test_count_tokens_and_model_listing_through_the_sdk(server: FakeGeminiServer) -> None:
    client = genai.Client(api_key=KEY, http_options={"base_url": server.base_url})
    counted = client.models.count_tokens(model=MODEL, contents="twelve chars")
    body = {"contents": [{"role": "user", "parts": [{"text": "twelve chars"}]}]}
    assert counted.total_tokens == prompt_tokens(body) == 3
    names = [m.name for m in client.models.list(config={"page_size": 2})]
    assert len(names) == len(set(names)) >= 5
    assert "models/gemini-2.5-flash" in names
    one = client.models.get(model="gemini-2.5-pro")
    assert one.name == "models/gemini-2.5-pro"
    assert one.input_token_limit == 1_048_576


def test_script_then_callable_then_default() -> None:
    seen: list[str] = []

    def reply(request: dict[str, Any]) -> str:
        seen.append(request["contents"][-1]["parts"][0]["text"])
        return "from the callable"

    with FakeGeminiServer(reply=reply) as server:
        server.script("first", {"text": "second"})
        llm = make_llm(server)
        assert [llm.invoke(f"q{i}").text for i in range(3)] == [
            "first",
            "second",
            "from the callable",
        ]
        assert seen == ["q2"]
        server.script({"name": "lookup", "args": {"q": "x"}})
        assert llm.invoke("q3").tool_calls[0]["args"] == {"q": "x"}


def test_public_names() -> None:
    import langchain_gemini_pool.testing as testing

    assert sorted(testing.__all__) == [
        "FakeGeminiServer",
        "Faults",
        "Quota",
        "count_tokens",
        "prompt_tokens",
    ]
    assert count_tokens("") == 0
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2

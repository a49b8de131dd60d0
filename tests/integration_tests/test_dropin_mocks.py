"""Users' mocks reach the pool (issue 10, cause 1).

Written the way a user's own tests of LangChain code are: either patch
``langchain_google_genai.chat_models.Client`` before building the model ("style A"), or
replace ``llm.client.models.generate_content`` (and the ``aio`` / ``_stream`` variants) on a
built model ("style B"). Mocks are the point here (the house rule's one exception); the wire
itself is checked against the emulator in ``test_dropin_settings.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import AsyncMock, Mock, patch

import pytest
from google.genai.errors import ClientError, ServerError
from google.genai.types import (
    Candidate,
    Content,
    CountTokensResponse,
    FunctionCall,
    GenerateContentResponse,
    GenerateContentResponseUsageMetadata,
    HarmBlockThreshold,
    HarmCategory,
    HttpOptions,
    HttpRetryOptions,
    Part,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_gemini_pool import ChatGeminiPool, ManualClock

MODEL = "gemini-2.5-flash"
KEYS = ["fake-mock-key-0001", "fake-mock-key-0002", "fake-mock-key-0003"]
KEY_HEADER = "x-goog-api-key"


def reply(text: str = "mocked reply") -> GenerateContentResponse:
    return GenerateContentResponse(
        candidates=[Candidate(content=Content(role="model", parts=[Part(text=text)]))],
        usage_metadata=GenerateContentResponseUsageMetadata(
            prompt_token_count=3, candidates_token_count=2, total_token_count=5
        ),
    )


def chunks() -> list[GenerateContentResponse]:
    return [reply("mocked "), reply("stream")]


async def agen(items: list[GenerateContentResponse]) -> AsyncIterator[GenerateContentResponse]:
    for item in items:
        yield item


def key_of(call: Any) -> str:
    """The key a mocked ``generate_content`` call was sent with."""
    headers = call.kwargs["config"].http_options.headers
    assert [h for h in headers if h.lower() == KEY_HEADER] == [KEY_HEADER]  # one, not two
    return str(headers[KEY_HEADER])


def patched_client() -> Mock:
    """``Client`` as LangChain's own unit tests mock it."""
    client_cls = Mock()
    instance = client_cls.return_value
    instance.models.generate_content = Mock(side_effect=lambda **_: reply())
    instance.models.generate_content_stream = Mock(side_effect=lambda **_: iter(chunks()))
    instance.aio.models.generate_content = AsyncMock(side_effect=lambda **_: reply())
    instance.aio.models.generate_content_stream = AsyncMock(side_effect=lambda **_: agen(chunks()))
    return client_cls


def build(client_cls: Mock, **kwargs: Any) -> ChatGeminiPool:
    with patch("langchain_google_genai.chat_models.Client", client_cls):
        return ChatGeminiPool(model=MODEL, api_keys=KEYS, **kwargs)


# --- style A: Client patched before the model is built ------------------------------------


def test_patched_client_builds_the_pool_client_once_with_client_settings() -> None:
    client_cls = patched_client()
    pool = build(
        client_cls,
        additional_headers={"x-team": "search"},
        client_options={"api_endpoint": "https://gemini.internal.example"},
    )
    assert pool.client is client_cls.return_value
    client_cls.assert_called_once()  # one client for every key
    options: HttpOptions = client_cls.call_args.kwargs["http_options"]
    assert options.headers is not None and options.headers["x-team"] == "search"
    assert options.base_url == "https://gemini.internal.example"
    assert client_cls.call_args.kwargs["api_key"] == KEYS[0]


def test_patched_client_invoke_rotates_keys_and_sends_every_setting() -> None:
    client_cls = patched_client()
    safety = {HarmCategory.HARM_CATEGORY_HARASSMENT: HarmBlockThreshold.BLOCK_LOW_AND_ABOVE}
    pool = build(
        client_cls, safety_settings=safety, thinking_budget=128, include_thoughts=True, timeout=30
    )
    answers = [pool.invoke(f"q{i}") for i in range(3)]
    assert [a.content for a in answers] == ["mocked reply"] * 3
    calls = client_cls.return_value.models.generate_content.call_args_list
    assert [key_of(c) for c in calls] == KEYS
    config = calls[0].kwargs["config"]
    assert {s.category: s.threshold for s in config.safety_settings} == safety
    assert config.thinking_config.thinking_budget == 128
    assert config.thinking_config.include_thoughts is True
    assert config.http_options.timeout == 30_000
    assert config.http_options.retry_options.attempts == 1  # SDK retries off: the pool decides
    assert answers[2].response_metadata["key_index"] == 2


async def test_patched_client_ainvoke_and_astream_use_the_aio_mocks() -> None:
    client_cls = patched_client()
    pool = build(client_cls, response_modalities=["TEXT"])
    answer = await pool.ainvoke("hello")
    streamed = [c.content async for c in pool.astream("hello")]
    aio = client_cls.return_value.aio.models
    assert answer.content == "mocked reply"
    assert "".join(str(c) for c in streamed) == "mocked stream"
    assert key_of(aio.generate_content.call_args) == KEYS[0]
    assert key_of(aio.generate_content_stream.call_args) == KEYS[1]
    config = aio.generate_content.call_args.kwargs["config"]
    assert [str(m) for m in config.response_modalities] == ["TEXT"]
    client_cls.return_value.models.generate_content.assert_not_called()


def test_patched_client_stream_uses_the_stream_mock() -> None:
    client_cls = patched_client()
    pool = build(client_cls)
    text = "".join(str(c.content) for c in pool.stream("hello"))
    mock = client_cls.return_value.models.generate_content_stream
    assert text == "mocked stream"
    assert key_of(mock.call_args) == KEYS[0]


def test_a_mocked_429_fails_over_to_the_next_key() -> None:
    client_cls = patched_client()
    quota = {"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}
    client_cls.return_value.models.generate_content = Mock(
        side_effect=[ClientError(429, quota), reply("from the second key")]
    )
    pool = build(client_cls, clock=ManualClock())
    assert pool.invoke("hi").content == "from the second key"
    calls = client_cls.return_value.models.generate_content.call_args_list
    assert [key_of(c) for c in calls] == KEYS[:2]


def test_remove_key_with_a_mocked_client() -> None:
    client_cls = patched_client()
    pool = build(client_cls)
    pool.remove_key(0)
    assert pool.google_api_key is not None
    assert pool.google_api_key.get_secret_value() == KEYS[1]
    assert pool.client is client_cls.return_value  # a mock is left as it is
    pool.invoke("hi")
    assert key_of(client_cls.return_value.models.generate_content.call_args) == KEYS[1]


# --- style B: methods of llm.client replaced after construction ----------------------------


@pytest.fixture
def pool() -> ChatGeminiPool:
    return ChatGeminiPool(model=MODEL, api_keys=KEYS, additional_headers={"x-team": "search"})


def test_replaced_generate_content_sees_per_request_http_options(pool: ChatGeminiPool) -> None:
    with patch.object(pool.client.models, "generate_content", return_value=reply()) as mock:
        pool.invoke(
            "hi",
            http_options=HttpOptions(
                headers={"x-request-id": "r-1"},
                timeout=5_000,
                retry_options=HttpRetryOptions(attempts=4),
            ),
        )
        pool.invoke("again", http_options={"headers": {"X-Goog-Api-Key": "not-this-one"}})
    first, second = mock.call_args_list
    options = first.kwargs["config"].http_options
    assert options.headers["x-request-id"] == "r-1"
    assert options.timeout == 5_000
    assert options.retry_options.attempts == 4  # the caller asked for SDK retries this once
    assert key_of(first) == KEYS[0]
    assert key_of(second) == KEYS[1]  # the pool's key wins over a caller's header


def test_replaced_stream_and_count_tokens(pool: ChatGeminiPool) -> None:
    models = pool.client.models
    with (
        patch.object(models, "generate_content_stream", side_effect=lambda **_: iter(chunks())),
        patch.object(
            models, "count_tokens", return_value=CountTokensResponse(total_tokens=7)
        ) as count,
    ):
        assert "".join(str(c.content) for c in pool.stream("hi")) == "mocked stream"
        assert pool.get_num_tokens("hello there") == 7
        stream_call = models.generate_content_stream.call_args
    assert key_of(stream_call) == KEYS[0]
    assert count.call_args.kwargs["config"].http_options.headers[KEY_HEADER] == KEYS[1]


async def test_replaced_aio_methods(pool: ChatGeminiPool) -> None:
    aio = pool.client.aio.models
    with (
        patch.object(aio, "generate_content", new=AsyncMock(return_value=reply())) as gen,
        patch.object(
            aio, "generate_content_stream", new=AsyncMock(side_effect=lambda **_: agen(chunks()))
        ) as stream,
    ):
        assert (await pool.ainvoke("hi")).content == "mocked reply"
        assert "".join([str(c.content) async for c in pool.astream("hi")]) == "mocked stream"
    assert key_of(gen.call_args) == KEYS[0]
    assert key_of(stream.call_args) == KEYS[1]


def test_a_client_replaced_after_construction_is_used(pool: ChatGeminiPool) -> None:
    replacement = patched_client().return_value
    pool.client = replacement
    pool.temperature = 0.25  # and settings changed after construction reach the request
    pool.invoke("hi")
    config = replacement.models.generate_content.call_args.kwargs["config"]
    assert config.temperature == 0.25


def test_a_copy_of_the_pool_sends_with_its_own_settings() -> None:
    copy = ChatGeminiPool(model=MODEL, api_keys=KEYS).model_copy(update={"temperature": 0.9})
    with patch.object(copy.client.models, "generate_content", return_value=reply()) as mock:
        copy.invoke("hi")  # the original is gone: the copy still sends
    assert mock.call_args.kwargs["config"].temperature == 0.9
    assert key_of(mock.call_args) == KEYS[0]


def test_thought_signatures_go_back_with_the_next_turn(pool: ChatGeminiPool) -> None:
    call = Part(
        function_call=FunctionCall(name="get_weather", args={"city": "Paris"}),
        thought_signature=b"sig-123",
    )
    first = GenerateContentResponse(
        candidates=[Candidate(content=Content(role="model", parts=[call]))]
    )
    with patch.object(
        pool.client.models, "generate_content", side_effect=[first, reply("sunny")]
    ) as mock:
        ai = pool.invoke("weather in Paris?")
        assert isinstance(ai, AIMessage) and ai.tool_calls
        tool = ToolMessage("sunny", tool_call_id=ai.tool_calls[0]["id"] or "")
        pool.invoke([HumanMessage("weather in Paris?"), ai, tool])
    sent = mock.call_args_list[1].kwargs["contents"][1].parts[0]
    assert sent.function_call.name == "get_weather"
    assert sent.thought_signature == b"sig-123"


# --- max_retries (cause 2) -------------------------------------------------------------------


def server_fault(**_: Any) -> GenerateContentResponse:
    body = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    raise ServerError(503, body)


@pytest.mark.parametrize(("settings", "attempts"), [({}, 3), ({"max_retries": 2}, 2)])
def test_explicit_max_retries_is_the_pool_attempts_on_server_faults(
    settings: dict[str, Any], attempts: int
) -> None:
    client_cls = patched_client()
    client_cls.return_value.models.generate_content = Mock(side_effect=server_fault)
    pool = build(client_cls, clock=ManualClock(), **settings)
    with pytest.raises(ServerError):
        pool.invoke("hi")
    calls = client_cls.return_value.models.generate_content.call_args_list
    assert len(calls) == attempts
    assert [key_of(c) for c in calls] == KEYS[:attempts]  # each on the next key
    assert all(c.kwargs["config"].http_options.retry_options.attempts == 1 for c in calls)


async def afault(**_: Any) -> GenerateContentResponse:
    return server_fault()


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_max_retries_counts_on_every_call_path(how: str) -> None:
    client_cls = patched_client()
    instance = client_cls.return_value
    instance.models.generate_content = Mock(side_effect=server_fault)
    instance.models.generate_content_stream = Mock(side_effect=server_fault)
    instance.aio.models.generate_content = AsyncMock(side_effect=afault)
    instance.aio.models.generate_content_stream = AsyncMock(side_effect=afault)
    pool = build(client_cls, clock=ManualClock(), max_retries=2)
    with pytest.raises(ServerError):
        if how == "invoke":
            pool.invoke("hi")
        elif how == "ainvoke":
            await pool.ainvoke("hi")
        elif how == "stream":
            list(pool.stream("hi"))
        else:
            [c async for c in pool.astream("hi")]
    mocks = {
        "invoke": instance.models.generate_content,
        "ainvoke": instance.aio.models.generate_content,
        "stream": instance.models.generate_content_stream,
        "astream": instance.aio.models.generate_content_stream,
    }
    assert [key_of(c) for c in mocks[how].call_args_list] == KEYS[:2]


def test_max_attempts_wins_over_max_retries() -> None:
    client_cls = patched_client()
    client_cls.return_value.models.generate_content = Mock(side_effect=server_fault)
    pool = build(client_cls, clock=ManualClock(), max_retries=5, max_attempts=1)
    with pytest.raises(ServerError):
        pool.invoke("hi")
    assert client_cls.return_value.models.generate_content.call_count == 1

"""One sender per key, all over the pool's own client.

The pool is a ``ChatGoogleGenerativeAI`` and builds its ``client`` exactly as the parent does
(through the ``Client`` name in ``langchain_google_genai.chat_models``, so a user's patch of
it is what builds the pool's client). Every request goes through that one client, read
afresh on each call, so ``llm.client.models.generate_content`` mocks, a replaced
``llm.client`` and every client-level setting (``additional_headers``, ``base_url``,
``client_args``) reach every key. The request is built by ``ChatGoogleGenerativeAI``'s own
code on the pool; the member passes its key under a private keyword that
``ChatGeminiPool._build_request_config`` turns into the config's per-request
``x-goog-api-key`` header, which the SDK merges over the client's own (a dict merge on the
same lowercase name: the client's header is replaced, never duplicated). So per-call settings
(``safety_settings``, thinking config, modalities, ``timeout``, ``http_options``) are what
the bare class would send. One client means one connection pool for any number of keys.

The SDK's own retries stay off (one attempt per key: the pool decides what follows a
failure) unless the caller passes ``http_options`` with ``retry_options`` for one call.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from google.genai.client import Client as GenaiClient
from google.genai.types import (
    Content,
    CountTokensConfig,
    GenerateContentConfig,
    HttpOptions,
    Part,
)
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import SecretStr

KEY_HEADER = "x-goog-api-key"
MODEL_KWARG = "_gemini_pool_model"
"""The private keyword a ladder model travels under, from the member to the request."""
KEY_KWARG = "_gemini_pool_key"
"""The private keyword a member's key travels under, from the member to the request config."""


def key_options(key: SecretStr) -> HttpOptions:
    """Per-request options that carry only the key (built without validation: one field)."""
    return HttpOptions.model_construct(headers={KEY_HEADER: key.get_secret_value()})


def put_key(config: GenerateContentConfig, key: SecretStr, caller_options: object) -> None:
    """Set the key header on a request config built by ``ChatGoogleGenerativeAI``.

    Args:
        config: The config of one request.
        key: The key to send it with.
        caller_options: The per-call ``http_options`` the caller passed (if any): an options
            object that is the caller's own is copied, never changed in place (members always
            pass ``max_retries``, so the config normally holds options built for this request,
            changed in place at no cost).
    """
    options = config.http_options
    if options is None:
        config.http_options = key_options(key)
        return
    old = options.headers
    headers = {k: v for k, v in old.items() if k.lower() != KEY_HEADER} if old else {}
    headers[KEY_HEADER] = key.get_secret_value()
    if options is caller_options:
        config.http_options = options.model_copy(update={"headers": headers})
    else:
        options.headers = headers


class Member:
    """Sends one request of the pool with one key.

    Made per request by ``ChatGeminiPool._rotated`` and holding no settings of its own: it
    reads the pool's fields and ``client`` as they are at that moment, so a setting changed
    (or a client mocked) after construction is used, and a ``model_copy`` of the pool sends
    with the copy's settings. Nothing long-lived refers back to the pool, so a dropped pool
    closes its client at once, as the bare class does.
    """

    __slots__ = ("_model", "_pool", "_secret")

    def __init__(
        self, pool: ChatGoogleGenerativeAI, secret: SecretStr, model: str | None = None
    ) -> None:
        self._pool = pool
        self._secret = secret
        self._model = model  # a model of the pool's ladder other than ``pool.model``

    def __repr__(self) -> str:
        return "Member(<key hidden>)"

    def _keyed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` (a call's own dict) with this key and one SDK attempt."""
        kwargs[KEY_KWARG] = self._secret  # put on the request by ChatGeminiPool
        kwargs["max_retries"] = 1  # one attempt per key; the pool retries across keys
        if self._model is not None:
            kwargs[MODEL_KWARG] = self._model  # put on the request by ChatGeminiPool
        return kwargs

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatGoogleGenerativeAI._generate(
            self._pool, messages, stop, run_manager, **self._keyed(kwargs)
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await ChatGoogleGenerativeAI._agenerate(
            self._pool, messages, stop, run_manager, **self._keyed(kwargs)
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        return ChatGoogleGenerativeAI._stream(
            self._pool, messages, stop, run_manager, **self._keyed(kwargs)
        )

    def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        return ChatGoogleGenerativeAI._astream(
            self._pool, messages, stop, run_manager, **self._keyed(kwargs)
        )

    def get_num_tokens(self, text: str) -> int:
        """``ChatGoogleGenerativeAI.get_num_tokens`` with this key."""
        pool = self._pool
        if pool.client is None:
            raise ValueError("Client not initialized.")
        options = key_options(self._secret)
        result = pool.client.models.count_tokens(
            model=self._model or pool.model,
            contents=[Content(parts=[Part(text=text)])],
            config=CountTokensConfig(http_options=options),
        )
        return result.total_tokens if result and result.total_tokens is not None else 0


class Members:
    """The keys of one pool, by index."""

    def __init__(self) -> None:
        self._secrets: dict[int, SecretStr] = {}
        self._lock = threading.Lock()

    def add(self, index: int, secret: SecretStr) -> None:
        with self._lock:
            self._secrets[index] = secret

    def remove(self, index: int) -> None:
        with self._lock:
            self._secrets.pop(index, None)

    def secret_texts(self) -> set[str]:
        with self._lock:
            return {s.get_secret_value() for s in self._secrets.values()}

    def secret_of(self, index: int) -> SecretStr | None:
        with self._lock:
            return self._secrets.get(index)

    def first(self) -> SecretStr | None:
        """The key with the smallest index, if any key is left."""
        with self._lock:
            return self._secrets[min(self._secrets)] if self._secrets else None

    def index_of_text(self, text: str) -> int | None:
        with self._lock:
            for index, secret in self._secrets.items():
                if secret.get_secret_value() == text:
                    return index
        return None

    def sender(self, pool: ChatGoogleGenerativeAI, index: int, model: str | None = None) -> Member:
        """A sender for key ``index`` on ``pool``'s settings and client (and ``model``)."""
        return Member(pool, self._secrets[index], model)


def set_client_key(client: object, secret: SecretStr | None) -> None:
    """Make a real SDK client's default key ``secret`` (or none); leave a mock alone.

    The pool sends every request with a per-request key header, so the client's default only
    matters to code that calls ``llm.client`` directly; it must still never hold a removed key.
    """
    if not isinstance(client, GenaiClient):
        return
    api_client = client._api_client
    headers = api_client._http_options.headers
    if secret is None:
        api_client.api_key = None
        if headers is not None:
            headers.pop(KEY_HEADER, None)
        return
    text = secret.get_secret_value()
    api_client.api_key = text
    if headers is not None:
        headers[KEY_HEADER] = text

"""One ``ChatGoogleGenerativeAI`` per key, built lazily and cheaply.

A member is a copy of the pool's own settings with its key's ``google.genai.Client`` and the
SDK's retries off (``max_retries=1``: the pool decides what follows a failure). Members are
built on first use with ``model_construct`` (no re-validation) and one shared SSL context,
so a pool of 100 keys costs about what one model costs to construct.
"""

from __future__ import annotations

import functools
import os
import ssl
import threading
from typing import Any

import certifi
from google.genai import Client
from google.genai.types import HttpOptions
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai._common import get_user_agent
from langchain_google_genai.chat_models import _ClientCleanup
from pydantic import SecretStr

_MEMBER_FIELDS = tuple(ChatGoogleGenerativeAI.model_fields)


@functools.lru_cache(maxsize=1)
def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context for every member (loading the CA bundle is the costly part)."""
    return ssl.create_default_context(
        cafile=os.environ.get("SSL_CERT_FILE", certifi.where()),
        capath=os.environ.get("SSL_CERT_DIR"),
    )


def _base_url(template: ChatGoogleGenerativeAI) -> str | None:
    base = template.base_url
    if isinstance(base, dict):
        return str(base["api_endpoint"])
    return base


def build_client(template: ChatGoogleGenerativeAI, key: SecretStr) -> Client:
    """A ``google.genai.Client`` for one key with the template's HTTP settings."""
    _, user_agent = get_user_agent("ChatGoogleGenerativeAI")
    headers = {"user-agent": user_agent, **(template.additional_headers or {})}
    ctx = shared_ssl_context()
    client_args: dict[str, Any] = {"verify": ctx, **(template.client_args or {})}
    async_args: dict[str, Any] = {"verify": ctx, "ssl": ctx, **(template.client_args or {})}
    options = HttpOptions(
        base_url=_base_url(template),
        api_version=template.api_version,
        headers=headers,
        client_args=client_args,
        async_client_args=async_args,
    )
    return Client(api_key=key.get_secret_value(), http_options=options)


class Members:
    """The per-key models of one pool, keyed by key index."""

    def __init__(self, template: ChatGoogleGenerativeAI) -> None:
        self._template = template
        self._secrets: dict[int, SecretStr] = {}
        self._models: dict[int, ChatGoogleGenerativeAI] = {}
        self._lock = threading.Lock()

    def add(self, index: int, secret: SecretStr) -> None:
        with self._lock:
            self._secrets[index] = secret

    def remove(self, index: int) -> None:
        with self._lock:
            self._secrets.pop(index, None)
            self._models.pop(index, None)

    def secret_texts(self) -> set[str]:
        with self._lock:
            return {s.get_secret_value() for s in self._secrets.values()}

    def index_of_text(self, text: str) -> int | None:
        with self._lock:
            for index, secret in self._secrets.items():
                if secret.get_secret_value() == text:
                    return index
        return None

    def get(self, index: int) -> ChatGoogleGenerativeAI:
        """The member for key ``index``, built on first use."""
        model = self._models.get(index)
        if model is not None:
            return model
        with self._lock:
            model = self._models.get(index)
            if model is None:
                model = self._build(self._secrets[index])
                self._models[index] = model
            return model

    def _build(self, secret: SecretStr) -> ChatGoogleGenerativeAI:
        template = self._template
        client = build_client(template, secret)
        values = {name: getattr(template, name) for name in _MEMBER_FIELDS}
        values.update(google_api_key=secret, max_retries=1, client=client, cache=False)
        member = ChatGoogleGenerativeAI.model_construct(
            _fields_set=set(template.model_fields_set) | {"max_retries"}, **values
        )
        object.__setattr__(member, "_use_vertexai", False)
        member._client_cleanup = _ClientCleanup(client)
        return member

    async def aclose(self) -> None:
        with self._lock:
            models = list(self._models.values())
        for model in models:
            await model.aclose()

"""LangChain's standard integration suite for ChatGeminiPool: against the emulator always,
and against real Gemini when GEMINI_API_KEY is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel

from langchain_gemini_pool import ChatGeminiPool
from langchain_gemini_pool.testing import FakeGeminiServer

from . import test_standard_emulator as bare

_POOL_KEYS = ["emulator-key-0001", "emulator-key-0002", "emulator-key-0003"]


@pytest.fixture(scope="module")
def pool_emulator() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer() as server:
        yield server


class TestChatGeminiPoolOnEmulator(bare.TestChatGoogleGenerativeAIOnEmulator):
    """The same suite (and the same marked exceptions) as the bare model, through the pool."""

    @pytest.fixture(autouse=True)
    def _base_url(self, pool_emulator: FakeGeminiServer) -> None:
        self._url = pool_emulator.base_url

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatGeminiPool

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "gemini-2.5-flash", "base_url": self._url, "api_keys": _POOL_KEYS}


@pytest.mark.skipif(not os.environ.get("GEMINI_API_KEY"), reason="needs GEMINI_API_KEY")
class TestChatGeminiPoolOnGemini(bare.TestChatGoogleGenerativeAIOnEmulator):
    """The suite against Google itself, with the keys of the environment."""

    @pytest.fixture(autouse=True)
    def _base_url(self) -> None:
        self._url = ""

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatGeminiPool

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "gemini-2.5-flash"}

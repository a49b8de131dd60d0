"""``ChatGeminiPool`` and the cache: hits marked as such, ladder fallbacks asked again, and
streams served from and stored in the cache (LangChain's ``stream()`` bypasses it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import LanguageModelInput
from langchain_core.load import dumps
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableConfig, ensure_config

from langchain_gemini_pool._ladder import from_fallback
from langchain_gemini_pool._pool_parts import PoolParts
from langchain_gemini_pool._pool_request import CALL, POOL_METADATA, USER_KW, Call, caller, user_of
from langchain_gemini_pool._streams import StreamCache, replay

logger = logging.getLogger("langchain_gemini_pool")


class PoolCache(PoolParts):
    """The pool's face to LangChain's cache."""

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = Call(caller(run_manager, kwargs))
        token = CALL.set(call)
        try:
            result = super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            if not call.sent and from_fallback(result):  # never served: ask the ladder again
                result = self._generate(messages, stop, run_manager, **kwargs)
                self._recache(messages, stop, kwargs, result)
        finally:
            CALL.reset(token)
        return result if call.sent else self._cache_hit(result, call.user)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = Call(caller(run_manager, kwargs))
        token = CALL.set(call)
        try:
            result = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            if not call.sent and from_fallback(result):  # never served: ask the ladder again
                result = await self._agenerate(messages, stop, run_manager, **kwargs)
                await asyncio.to_thread(self._recache, messages, stop, kwargs, result)
        finally:
            CALL.reset(token)
        if call.sent:
            return result
        if self._ledger is None:
            return self._cache_hit(result, call.user)
        return await asyncio.to_thread(self._cache_hit, result, call.user)  # the ledger writes

    def _recache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        result: ChatResult,
    ) -> None:
        """Replace a cached fallback answer with the answer the ladder gave now."""
        cache = self._stream_cache(messages, stop, kwargs)
        if cache is not None:
            try:
                cache.put(result.generations)
            except Exception:
                logger.warning("Could not store an answer in the cache.", exc_info=True)

    def _cache_hit(self, result: ChatResult, user: str) -> ChatResult:
        """Mark a result served from the cache: no key served it, nothing was billed."""
        for generation in result.generations:
            metadata = {
                k: v
                for k, v in generation.message.response_metadata.items()
                if k not in POOL_METADATA
            }
            metadata["cache_hit"] = True
            generation.message = generation.message.model_copy(
                update={"response_metadata": metadata}
            )
        if result.generations:
            self._record(user, result.generations[0].message, None, cached=True)
        return result

    def _stream_cache(
        self, input: LanguageModelInput, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> StreamCache | None:
        """The cache a stream may be served from, at the address ``invoke`` would use."""
        if self.cache is False:
            return None
        cache = self.cache if isinstance(self.cache, BaseCache) else get_llm_cache()
        if cache is None:
            return None
        messages = self._convert_input(input).to_messages()
        normalized = [
            m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m
            for m in messages
        ]
        return StreamCache(cache, dumps(normalized), self._get_llm_string(stop=stop, **kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream as ``ChatGoogleGenerativeAI`` does, but served from and stored in the cache."""
        config = ensure_config(config)
        cache = self._stream_cache(input, stop, kwargs)
        if cache is not None and cache.hit():
            yield from replay(self.invoke(input, config, stop=stop, **kwargs))
            return
        user = user_of(config.get("metadata"))
        collected: list[AIMessageChunk] = []
        for chunk in super().stream(input, config, stop=stop, **{**kwargs, USER_KW: user}):
            collected.append(chunk)
            yield chunk
        if cache is not None and collected:
            cache.store(collected)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async ``stream``, served from and stored in the cache (off the event loop)."""
        config = ensure_config(config)
        cache = self._stream_cache(input, stop, kwargs)
        if cache is not None and await cache.ahit():
            for chunk in replay(await self.ainvoke(input, config, stop=stop, **kwargs)):
                yield chunk
            return
        user = user_of(config.get("metadata"))
        collected: list[AIMessageChunk] = []
        async for chunk in super().astream(input, config, stop=stop, **{**kwargs, USER_KW: user}):
            collected.append(chunk)
            yield chunk
        if cache is not None and collected:
            await cache.astore(collected)

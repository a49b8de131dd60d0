"""Streams: following one through the pool, and serving one from (or into) the cache.

LangChain's ``stream()`` bypasses the cache (langchain #23701); the pool serves a stream from
the cache on a hit, replaying the message as chunks, and stores a stream that completed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator

from langchain_core.caches import BaseCache
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk

from langchain_gemini_pool._driver import IoSteps
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._scheduler import Pick

logger = logging.getLogger("langchain_gemini_pool")

USAGE_ATTR = "gemini_pool_usage"
"""Set on an error that broke a stream after output: the usage streamed (and billed) so far."""


class StreamTally:
    """Follows one stream after its first chunk: totals usage, and makes the final chunk.

    The pool yields the member's chunks unchanged, then one empty chunk with
    ``chunk_position="last"`` carrying the pool's metadata: the same chunks, in the same
    shape, as the bare ``ChatGoogleGenerativeAI.stream`` (whose last chunk LangChain adds).
    """

    def __init__(self, plan: RequestPlan, step: Pick, stamp: Callable[[BaseMessage], None]) -> None:
        self._plan, self._step, self._stamp = plan, step, stamp
        self._usage: UsageMetadata | None = None
        self._model_name: str | None = None
        self._list_content = False

    def see(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk:
        message = chunk.message
        usage = getattr(message, "usage_metadata", None)
        if usage:
            self._usage = usage if self._usage is None else add_usage(self._usage, usage)
        name = message.response_metadata.get("model_name")
        if isinstance(name, str):
            self._model_name = name
        self._list_content = not isinstance(message.content, str)
        return chunk

    def _input_tokens(self) -> int | None:
        return self._usage["input_tokens"] if self._usage else None

    def failed_steps(self, exc: BaseException) -> IoSteps[None]:
        """The stream broke after output: record the attempt; the exception carries the usage
        already streamed (``gemini_pool_usage``), which Google bills."""
        yield from self._plan.failed_after_output_steps(self._step, exc)
        with contextlib.suppress(AttributeError):
            setattr(exc, USAGE_ATTR, self._usage)

    def abandoned_steps(self) -> IoSteps[None]:
        """The caller stopped reading, or was cancelled or interrupted: give the key back."""
        return self._plan.cancelled_steps(self._step, prompt_tokens=self._input_tokens())

    def done_steps(self) -> IoSteps[tuple[ChatGenerationChunk, AIMessage]]:
        """Close the stream's books: the final empty chunk, stamped with the pool's
        metadata, and a message summing the stream's usage for the ledger."""
        yield from self._plan.succeeded_steps(self._step, self._input_tokens())
        last = ChatGenerationChunk(
            message=AIMessageChunk(content=[] if self._list_content else "", chunk_position="last")
        )
        self._stamp(last.message)
        summary = AIMessage(
            content="",
            usage_metadata=self._usage,
            response_metadata={"model_name": self._model_name},
        )
        self._stamp(summary)
        return last, summary


def replay(message: BaseMessage) -> Iterator[AIMessageChunk]:
    """A cached message as chunks: its text in pieces, then a last chunk with the rest."""
    content = message.content
    pieces: list[str] = []
    if isinstance(content, str) and content:
        words = content.split(" ")
        step = max(1, math.ceil(len(words) / 4))
        pieces = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
        pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
    for piece in pieces:
        yield AIMessageChunk(content=piece, id=message.id)
    ai = message if isinstance(message, AIMessage) else AIMessage(content=message.content)
    yield AIMessageChunk(
        content="" if pieces or isinstance(content, str) else content,
        id=message.id,
        tool_call_chunks=[
            {
                "name": c["name"],
                "args": json.dumps(c["args"]),
                "id": c.get("id"),
                "index": i,
                "type": "tool_call_chunk",
            }
            for i, c in enumerate(ai.tool_calls)
        ],
        usage_metadata=ai.usage_metadata,
        response_metadata=dict(message.response_metadata),
        chunk_position="last",
    )


class StreamCache:
    """One stream's place in the cache: is it there (without counting a hit), store it."""

    def __init__(self, cache: BaseCache, prompt: str, llm_string: str) -> None:
        self._cache, self._prompt, self._llm_string = cache, prompt, llm_string

    def hit(self) -> bool:
        peek = getattr(self._cache, "peek", self._cache.lookup)  # peek counts no hit
        found = peek(self._prompt, self._llm_string)
        return isinstance(found, list) and bool(found)

    async def ahit(self) -> bool:
        apeek = getattr(self._cache, "apeek", self._cache.alookup)
        found = await apeek(self._prompt, self._llm_string)
        return isinstance(found, list) and bool(found)

    def put(self, generations: list[ChatGeneration]) -> None:
        """Store ``generations`` (an answer the cache would not serve) at this address."""
        self._cache.update(self._prompt, self._llm_string, generations)

    def store(self, chunks: list[AIMessageChunk]) -> None:
        try:
            self._cache.update(self._prompt, self._llm_string, [merged(chunks)])
        except Exception:
            logger.warning("Could not store a completed stream in the cache.", exc_info=True)

    async def astore(self, chunks: list[AIMessageChunk]) -> None:
        try:
            await self._cache.aupdate(self._prompt, self._llm_string, [merged(chunks)])
        except Exception:
            logger.warning("Could not store a completed stream in the cache.", exc_info=True)


def merged(chunks: list[AIMessageChunk]) -> ChatGeneration:
    """A completed stream as the one message ``invoke`` would have returned."""
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return ChatGeneration(
        message=AIMessage(
            content=merged.content,
            tool_calls=merged.tool_calls,
            usage_metadata=merged.usage_metadata,
            response_metadata=dict(merged.response_metadata),
            additional_kwargs=dict(merged.additional_kwargs),
            id=merged.id,
        )
    )

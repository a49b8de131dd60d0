"""Usage accounting: prices, per-request records, totals, and the callback handler."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import RunnableConfig
from pydantic import Field

from langchain_gemini_pool import (
    DEFAULT_PRICES,
    GeminiUsageCallbackHandler,
    ModelPrice,
    UsageLimitExceededError,
    UsageTotals,
    estimate_cost,
    get_gemini_usage_callback,
)
from langchain_gemini_pool._usage_record import usage_record

# -- factories ----------------------------------------------------------------------------------


def usage(inp: int = 100, out: int = 20, reasoning: int = 0, cache_read: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "total_tokens": inp + out,
        "input_token_details": {"cache_read": cache_read},
        "output_token_details": {"reasoning": reasoning},
    }


def attempt(key: int, project: str, outcome: str = "ok") -> dict[str, Any]:
    return {"key_index": key, "project": project, "outcome": outcome}


def served(
    key: int = 0,
    project: str = "p0",
    *,
    before: list[dict[str, Any]] | None = None,
    model: str = "gemini-2.5-flash",
    **tokens: int,
) -> AIMessage:
    """A final message as the pool returns it: served by ``key`` after the ``before`` attempts."""
    return AIMessage(
        content="hi",
        usage_metadata=usage(**tokens),
        response_metadata={
            "model_name": model,
            "key_index": key,
            "key_fingerprint": "…abcd",
            "project": project,
            "attempts": [*(before or []), attempt(key, project)],
        },
    )


def failure(*attempts: dict[str, Any]) -> RuntimeError:
    exc = RuntimeError("all keys failed")
    exc.gemini_pool_attempts = list(attempts)  # type: ignore[attr-defined]
    return exc


# -- prices -------------------------------------------------------------------------------------


def test_cost_of_flash_counts_cached_and_thinking_tokens() -> None:
    # 1000 prompt tokens of which 400 cached; 300 output of which 200 thinking.
    tokens = usage(inp=1000, out=300, reasoning=200, cache_read=400)
    cost = estimate_cost("gemini-2.5-flash", tokens)
    assert cost == pytest.approx((600 * 0.30 + 400 * 0.03 + 300 * 2.50) / 1e6)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-001", "gemini-2.5-flash"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("Gemini-2.0-Flash-Latest", "gemini-2.0-flash"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-lite-001", "gemini-2.0-flash-lite"),
    ],
)
def test_model_names_match_their_base_entry(model: str, expected: str) -> None:
    price = DEFAULT_PRICES[expected]
    assert estimate_cost(model, usage(inp=1_000_000, out=0)) == pytest.approx(price.input)


@pytest.mark.parametrize(
    "model", ["gemini-3-pro", "gemini-2.5-flash-image", "gpt-4o", "", "gemini-2.5-flashy"]
)
def test_unknown_models_are_never_priced(model: str) -> None:
    assert estimate_cost(model, usage()) is None


def test_a_prefix_is_not_a_version() -> None:
    # A table that only knows flash must not price flash-lite as flash.
    prices = {"gemini-2.5-flash": ModelPrice(1.0, 1.0)}
    assert estimate_cost("gemini-2.5-flash-lite", usage(), prices) is None
    assert estimate_cost("gemini-2.5-flash-002", usage(), prices) is not None


def test_pro_long_prompts_use_the_long_context_price() -> None:
    short = estimate_cost("gemini-2.5-pro", usage(inp=200_000, out=0))
    long = estimate_cost("gemini-2.5-pro", usage(inp=200_001, out=0))
    assert short == pytest.approx(200_000 * 1.25 / 1e6)
    assert long == pytest.approx(200_001 * 2.50 / 1e6)


def test_cached_tokens_without_a_cached_price_cost_full_input() -> None:
    assert estimate_cost("gemini-2.0-flash-lite", usage(inp=1000, out=0, cache_read=500)) == (
        pytest.approx(1000 * 0.075 / 1e6)
    )


def test_bad_price_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"ModelPrice.input must be a non-negative"):
        ModelPrice(-1, 2)


# -- totals -------------------------------------------------------------------------------------


def test_unknown_cost_is_none_only_when_nothing_was_priced() -> None:
    unknown = usage_record(served(model="mystery-model"), user="u").usage
    known = usage_record(served(), user="u").usage
    assert unknown.cost_usd is None
    assert unknown.unknown_cost_requests == 1
    assert (UsageTotals() + unknown).cost_usd is None
    mixed = unknown + known
    assert mixed.cost_usd == pytest.approx(known.cost_usd)
    assert (mixed.priced_requests, mixed.unknown_cost_requests) == (1, 1)
    assert (known + unknown).cost_usd == pytest.approx(known.cost_usd)
    assert UsageTotals().cost_usd == 0.0


def test_totals_round_trip_through_dict() -> None:
    t = usage_record(served(inp=7, out=3, reasoning=1, cache_read=2), user="u").usage
    assert UsageTotals.from_dict(t.to_dict()) == t
    assert t.to_dict()["reasoning_tokens"] == 1
    assert t.to_dict()["cache_read_tokens"] == 2


# -- records ------------------------------------------------------------------------------------


def deltas(msg: BaseMessage | None, err: BaseException | None = None) -> dict[tuple[str, str], Any]:
    rec = usage_record(msg, err, user="alice", model="gemini-2.5-flash")
    return {(d, n): t for d, n, t in rec.deltas()}


def test_failover_attempts_count_per_key_but_tokens_only_on_the_serving_key() -> None:
    msg = served(
        2, "pB", before=[attempt(0, "pA", "rate_limited"), attempt(1, "pA", "server_fault")]
    )
    d = deltas(msg)
    assert d[("total", "")].attempts == 3
    assert d[("total", "")].requests == 1
    assert (d[("key", "0")].attempts, d[("key", "0")].total_tokens) == (1, 0)
    assert d[("key", "0")].requests == 0
    assert (d[("key", "2")].attempts, d[("key", "2")].successful_requests) == (1, 1)
    assert d[("key", "2")].total_tokens == 120
    assert (d[("project", "pA")].attempts, d[("project", "pA")].total_tokens) == (2, 0)
    assert d[("project", "pB")].cost_usd == pytest.approx(d[("total", "")].cost_usd)
    assert d[("user", "alice")] == d[("model", "gemini-2.5-flash")] == d[("total", "")]


def test_cache_hit_counts_only_under_total_user_and_model() -> None:
    msg = served(inp=50, out=5)
    msg.response_metadata = {"cache_hit": True, "model_name": "gemini-2.5-flash"}
    d = deltas(msg)
    assert set(d) == {("total", ""), ("user", "alice"), ("model", "gemini-2.5-flash")}
    t = d[("total", "")]
    assert (t.requests, t.cached_requests, t.attempts, t.successful_requests) == (1, 1, 0, 0)
    assert (t.total_tokens, t.cost_usd) == (0, 0.0)


def test_langchain_cache_marker_is_a_cache_hit_too() -> None:
    msg = served()
    msg.usage_metadata = {**usage(), "total_cost": 0}  # type: ignore[assignment]
    assert usage_record(msg, user="u").outcome == "cached"


def test_failed_request_counts_attempts_and_no_tokens() -> None:
    err = failure(attempt(0, "pA", "rate_limited"), attempt(1, "pB", "bad_key"))
    d = deltas(None, err)
    t = d[("total", "")]
    assert (t.requests, t.failed_requests, t.attempts, t.total_tokens) == (1, 1, 2, 0)
    assert d[("key", "1")].failed_requests == 1  # the last key it failed on
    assert d[("key", "0")].failed_requests == 0
    assert t.cost_usd == 0.0


def test_stream_cut_after_output_bills_what_was_streamed() -> None:
    err = failure(attempt(3, "pA", "server_fault"))
    err.gemini_pool_usage = usage(inp=40, out=10)  # type: ignore[attr-defined]
    d = deltas(None, err)
    t = d[("total", "")]
    assert (t.failed_requests, t.successful_requests, t.total_tokens) == (1, 0, 50)
    assert t.cost_usd == pytest.approx((40 * 0.30 + 10 * 2.50) / 1e6)
    assert d[("key", "3")].total_tokens == 50


def test_error_without_attempts_and_refusal() -> None:
    plain = usage_record(None, ValueError("boom"), user="u")
    assert (plain.usage.failed_requests, plain.usage.attempts, plain.deltas()[3:]) == (1, 0, [])
    refused = usage_record(
        None, UsageLimitExceededError(limit_name="tokens_per_day", current=5, limit=5, user="u")
    )
    assert (refused.outcome, refused.usage.refused_requests, refused.usage.failed_requests) == (
        "refused",
        1,
        0,
    )


def test_usage_record_needs_something() -> None:
    with pytest.raises(ValueError, match="final message or the error"):
        usage_record(None, None)


def test_model_prefers_the_requested_name_and_prices_by_the_served_one() -> None:
    msg = served(model="gemini-2.5-flash-preview-05-20")
    rec = usage_record(msg, user="u", model="my-alias")
    assert rec.model == "my-alias"
    assert rec.usage.cost_usd is not None  # priced from response_metadata["model_name"]
    assert usage_record(msg, user="u").model == "gemini-2.5-flash-preview-05-20"


# -- the handler through LangChain's callback machinery ------------------------------------------


class FakePool(BaseChatModel):
    """A chat model answering like ChatGeminiPool: final message carries usage and attempts."""

    model: str = "gemini-2.5-flash"
    script: list[Any] = Field(default_factory=list)
    """Per call: a (key, project) pair to serve from, or an exception to raise."""
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "fake-gemini-pool"

    def _next(self) -> tuple[int, str]:
        item = self.script[self.calls % len(self.script)] if self.script else (0, "p0")
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return item

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        key, project = self._next()
        return ChatResult(generations=[ChatGeneration(message=served(key, project))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        key, project = self._next()
        final = served(key, project)
        yield ChatGenerationChunk(message=AIMessageChunk(content="h"))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="i",
                usage_metadata=final.usage_metadata,
                response_metadata=final.response_metadata,
            )
        )


def alice() -> RunnableConfig:
    return {"metadata": {"user_id": "alice"}}


def test_context_manager_sees_invoke_stream_and_batch() -> None:
    pool = FakePool(script=[(0, "p0"), (1, "p1")])
    with get_gemini_usage_callback() as cb:
        pool.invoke("hi", config=alice())
        "".join(str(c.content) for c in pool.stream("hi"))
        pool.batch(["a", "b"], config=alice())
    after = FakePool().invoke("outside")
    assert after.content == "hi"
    assert cb.total.requests == 4
    assert cb.total.total_tokens == 4 * 120
    assert cb.by_user["alice"].requests == 3
    assert cb.by_user["anonymous"].requests == 1  # the stream
    assert cb.by_user["anonymous"].total_tokens == 120  # counted once, from the merged message
    assert cb.by_key[0].successful_requests + cb.by_key[1].successful_requests == 4
    assert set(cb.by_project) == {"p0", "p1"}
    assert cb.by_model["gemini-2.5-flash"].cost_usd == pytest.approx(cb.total.cost_usd)


async def test_context_manager_sees_async_calls_and_errors() -> None:
    boom = failure(attempt(0, "p0", "rate_limited"), attempt(1, "p1", "server_fault"))
    pool = FakePool(script=[(0, "p0"), boom])
    with get_gemini_usage_callback() as cb:
        await pool.ainvoke("hi", config=alice())
        with pytest.raises(RuntimeError):
            await pool.ainvoke("hi", config=alice())
        pool.script = [(1, "p1")]
        pool.calls = 0
        async for _ in pool.astream("hi", config={"metadata": {"user_id": "bob"}}):
            pass
    assert (cb.total.requests, cb.total.failed_requests, cb.total.attempts) == (3, 1, 4)
    assert cb.by_key[0].attempts == 2
    assert cb.by_key[1].attempts == 2
    assert cb.by_user["bob"].successful_requests == 1
    assert cb.by_user["alice"].failed_requests == 1


def test_nested_blocks_each_see_their_own_calls() -> None:
    pool = FakePool()
    with get_gemini_usage_callback() as outer:
        pool.invoke("1")
        with get_gemini_usage_callback() as inner:
            pool.invoke("2")
        pool.invoke("3")
    assert (outer.total.requests, inner.total.requests) == (3, 1)


def test_langchain_cache_hits_count_as_cached() -> None:
    pool = FakePool(cache=InMemoryCache())
    with get_gemini_usage_callback() as cb:
        pool.invoke("same", config=alice())
        pool.invoke("same", config=alice())
    assert pool.calls == 1
    assert (cb.total.requests, cb.total.cached_requests, cb.total.successful_requests) == (2, 1, 1)
    assert cb.total.total_tokens == 120
    assert cb.by_key[0].requests == 1


def test_explicit_handler_and_a_handler_attached_twice_counts_once() -> None:
    cb = GeminiUsageCallbackHandler()
    FakePool().invoke("x", config={"callbacks": [cb, cb]})
    with get_gemini_usage_callback() as ctx:
        FakePool().invoke("y", config={"callbacks": [cb]})
    assert cb.total.requests == 2
    assert ctx.total.requests == 1
    snap = cb.snapshot()
    assert snap["total"]["requests"] == 2
    assert snap["by_key"][0]["attempts"] == 2
    cb.reset()
    assert cb.total == UsageTotals()
    assert cb.by_key == {}


def _end(cb: GeminiUsageCallbackHandler, key: int, user: str) -> None:
    run_id = uuid.uuid4()
    cb.on_chat_model_start({}, [[]], run_id=run_id, metadata={"user_id": user})
    result = LLMResult(generations=[[ChatGeneration(message=served(key, f"p{key % 2}"))]])
    cb.on_llm_end(result, run_id=run_id)


def test_handler_is_exact_under_16_threads() -> None:
    cb = GeminiUsageCallbackHandler()
    barrier = threading.Barrier(16)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(200):
            _end(cb, key=i % 4, user=f"u{n % 3}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cb.total.requests == 3200
    assert cb.total.total_tokens == 3200 * 120
    assert sum(t.requests for t in cb.by_key.values()) == 3200
    assert cb.by_key[3].attempts == 800
    assert cb.by_project["p0"].requests == 1600
    assert sum(t.requests for t in cb.by_user.values()) == 3200
    assert cb.total.cost_usd == pytest.approx(3200 * (100 * 0.30 + 20 * 2.50) / 1e6)
    assert cb._runs == {}


async def test_handler_is_exact_under_asyncio_concurrency() -> None:
    pool = FakePool(script=[(0, "p0"), (1, "p1"), (2, "p0")])
    with get_gemini_usage_callback() as cb:
        await asyncio.gather(
            *(
                pool.ainvoke(str(i), config={"metadata": {"user_id": f"u{i % 5}"}})
                for i in range(300)
            ),
        )
    assert cb.total.requests == 300
    assert {k: v.requests for k, v in cb.by_key.items()} == {0: 100, 1: 100, 2: 100}
    assert cb.by_user["u4"].requests == 60
    assert cb.by_project["p0"].successful_requests == 200

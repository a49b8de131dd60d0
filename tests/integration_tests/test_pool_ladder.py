"""The model ladder (issue 12) against the emulator, through the real SDK over loopback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, SystemMessage
from pydantic import BaseModel

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    GeminiDiskCache,
    ManualClock,
    QuotaLimits,
    UsageLedger,
)
from langchain_gemini_pool.testing import FakeGeminiServer, Quota

Emulator = Callable[..., FakeGeminiServer]

PRO, FLASH, LITE = "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"
KEYS = {"p1": ["fake-key-aaaa"], "p2": ["fake-key-bbbb"]}


def ladder(server: FakeGeminiServer, clock: ManualClock, **kwargs: Any) -> ChatGeminiPool:
    kwargs.setdefault("fallback_models", [FLASH, LITE])
    return ChatGeminiPool(model=PRO, api_keys=KEYS, base_url=server.base_url, clock=clock, **kwargs)


def sent(server: FakeGeminiServer, model: str) -> dict[str, int]:
    """Generate requests the emulator received for ``model``, per project."""
    rows = server.stats()["models"].get(model, {})
    return {project: row["requests"] for project, row in rows.items()}


def test_ladder_order_and_no_request_to_a_pair_known_out(
    emulator: Emulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # pro: one request a day per project; flash: one; flash-lite: unlimited
    quotas = {"*": {PRO: Quota(rpd=1), FLASH: Quota(rpd=1), "*": Quota()}}
    server = emulator(keys=KEYS, quotas=quotas, clock=clock)
    pool = ladder(server, clock)
    with caplog.at_level(logging.INFO, logger="langchain_gemini_pool"):
        served = [pool.invoke(f"question {i}").response_metadata for i in range(10)]
    names = [m["model_name"] for m in served]
    assert names == [PRO, PRO, FLASH, FLASH] + [LITE] * 6
    assert [m.get("fallback_from") for m in served] == [None, None] + [PRO] * 8
    # each pair earned exactly one 429 and was never asked again that day
    assert sent(server, PRO) == {"p1": 2, "p2": 2}
    assert sent(server, FLASH) == {"p1": 2, "p2": 2}
    assert sent(server, LITE) == {"p1": 3, "p2": 3}
    out_lines = [r for r in caplog.records if "until midnight Pacific" in r.getMessage()]
    assert len(out_lines) == 4  # one INFO per (project, model) and day
    assert all(r.levelno == logging.INFO for r in out_lines)
    assert pool.pool_status()[0]["models"] == {PRO: "cooling", FLASH: "cooling", LITE: "ready"}
    # the next Pacific day pro is back first
    clock.advance(24 * 3600)
    assert pool.invoke("tomorrow").response_metadata["model_name"] == PRO


def test_quota_zero_never_cools_the_projects_other_models(
    emulator: Emulator, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH])
    first = pool.invoke("hello").response_metadata
    # pro refused on both projects; flash served on the first key at once (no cooldown)
    assert first["model_name"] == FLASH
    assert [(a["model"], a["outcome"]) for a in first["attempts"]] == [
        (PRO, "rate_limited"),
        (PRO, "rate_limited"),
        (FLASH, "ok"),
    ]
    assert first["attempts"][-1]["key_index"] == 0
    for _ in range(5):
        assert pool.invoke("again").response_metadata["model_name"] == FLASH
    assert sent(server, PRO) == {"p1": 1, "p2": 1}
    assert sum(sent(server, FLASH).values()) == 6


def test_a_404_model_leaves_the_ladder_with_one_warning(
    emulator: Emulator, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = emulator(keys=KEYS, unknown_models=["gemini-9-ultra"], clock=clock)
    pool = ChatGeminiPool(
        model="gemini-9-ultra",
        fallback_models=[FLASH],
        api_keys=KEYS,
        base_url=server.base_url,
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="langchain_gemini_pool"):
        names = [pool.invoke(f"q{i}").response_metadata["model_name"] for i in range(4)]
    assert names == [FLASH] * 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gemini-9-ultra" in warnings[0].getMessage()
    assert sum(sent(server, "gemini-9-ultra").values()) == 1
    assert pool.pool_status()[0]["models"]["gemini-9-ultra"] == "unavailable"


def test_a_404_on_the_last_model_is_raised(emulator: Emulator, clock: ManualClock) -> None:
    server = emulator(keys=KEYS, unknown_models=[FLASH], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH])
    assert pool.invoke("pro first").response_metadata["model_name"] == PRO
    server2 = emulator(keys=KEYS, unknown_models=[PRO, FLASH], clock=clock)
    pool2 = ladder(server2, clock, fallback_models=[FLASH])
    with pytest.raises(Exception, match="not found"):
        pool2.invoke("nothing serves this")


def test_all_rate_limited_only_when_no_model_can_take_it(
    emulator: Emulator, clock: ManualClock
) -> None:
    server = emulator(keys={"p1": ["fake-key-aaaa"]}, clock=clock)
    limits = {
        "p1": {
            PRO: QuotaLimits(rpm=1, window_s=60),
            FLASH: QuotaLimits(rpm=1, window_s=10),
        }
    }
    pool = ChatGeminiPool(
        model=PRO,
        fallback_models=[FLASH],
        api_keys={"p1": ["fake-key-aaaa"]},
        base_url=server.base_url,
        clock=clock,
        limits=limits,
        max_wait=0,
    )
    assert pool.invoke("a").response_metadata["model_name"] == PRO
    assert pool.invoke("b").response_metadata["model_name"] == FLASH
    with pytest.raises(AllKeysRateLimitedError) as info:
        pool.invoke("c")
    assert 10.0 <= info.value.retry_after < 11.0  # flash frees first, not pro (60 s)
    assert server.stats()["total"]["requests"] == 2  # the refusal cost no HTTP call


def test_prefer_wait_waits_for_the_first_model(emulator: Emulator, clock: ManualClock) -> None:
    server = emulator(keys={"p1": ["fake-key-aaaa"]}, clock=clock)
    limits = {"p1": {PRO: QuotaLimits(rpm=1, window_s=10)}}

    def make(prefer: str) -> ChatGeminiPool:
        return ChatGeminiPool(
            model=PRO,
            fallback_models=[FLASH],
            prefer=prefer,
            api_keys={"p1": ["fake-key-aaaa"]},
            base_url=server.base_url,
            clock=clock,
            limits=limits,
            max_wait=30,
        )

    eager, patient = make("fallback"), make("wait")
    assert eager.invoke("a").response_metadata["model_name"] == PRO
    start = clock.now()
    assert eager.invoke("b").response_metadata["model_name"] == FLASH
    assert clock.now() == start  # fell back at once
    assert patient.invoke("a").response_metadata["model_name"] == PRO
    assert patient.invoke("b").response_metadata["model_name"] == PRO
    assert clock.now() - start >= 10  # waited for pro's window


class Person(BaseModel):
    name: str
    age: int


def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return f"It is sunny in {city}."


def test_tools_schema_system_and_settings_go_with_a_fallback(
    emulator: Emulator, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH], temperature=0.3, max_output_tokens=99)
    bound = pool.bind_tools([get_weather], tool_choice="any")
    message = bound.invoke([SystemMessage("Be brief."), ("human", "Weather in 'Paris'?")])
    assert isinstance(message, AIMessage)
    assert message.tool_calls[0]["name"] == "get_weather"
    assert message.response_metadata["fallback_from"] == PRO
    person = pool.with_structured_output(Person).invoke("Make up a person called 'Ada'.")
    assert isinstance(person, Person)
    bodies = {
        r["path"].rsplit("/", 1)[-1].split(":")[0]: r["body"]
        for r in server.received()
        if r["path"].endswith(":generateContent") and "tools" in r["body"]
    }
    pro_body, flash_body = bodies[PRO], bodies[FLASH]
    for field in ("tools", "toolConfig", "systemInstruction", "generationConfig"):
        assert flash_body[field] == pro_body[field]
    assert flash_body["generationConfig"]["temperature"] == 0.3
    schema_bodies = [
        r["body"]
        for r in server.received()
        if r["path"].endswith(f"{FLASH}:generateContent")
        and "responseJsonSchema" in r["body"].get("generationConfig", {})
    ]
    assert schema_bodies  # the schema went to flash


def test_a_model_without_thinking_gets_no_thinking_config(
    emulator: Emulator, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=["gemini-2.0-flash"], thinking_budget=512)
    assert pool.invoke("hi").response_metadata["model_name"] == "gemini-2.0-flash"
    configs = {
        r["path"].rsplit("/", 1)[-1].split(":")[0]: r["body"]["generationConfig"]
        for r in server.received()
        if r["path"].endswith(":generateContent")
    }
    assert configs[PRO]["thinkingConfig"]  # pro got it (the SDK sends it as written)
    assert "thinkingConfig" not in configs["gemini-2.0-flash"]


def test_usage_is_accounted_to_the_model_that_served(
    emulator: Emulator, clock: ManualClock
) -> None:
    quotas = {"*": {PRO: Quota(rpd=1), "*": Quota()}}
    server = emulator(keys=KEYS, quotas=quotas, clock=clock)
    ledger = UsageLedger.in_memory(clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH], ledger=ledger)
    for i in range(5):
        pool.invoke(f"count me {i}")
    stats = server.stats()["models"]
    pro, flash = ledger.totals(model=PRO), ledger.totals(model=FLASH)
    assert pro.requests == 2 and flash.requests == 3
    assert pro.total_tokens == sum(r["total_tokens"] for r in stats[PRO].values())
    assert flash.total_tokens == sum(r["total_tokens"] for r in stats[FLASH].values())


def test_a_stream_moves_down_the_ladder_before_its_first_chunk(
    emulator: Emulator, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH])
    chunks = list(pool.stream("stream this please"))
    text = "".join(str(c.content) for c in chunks)
    assert text == pool.invoke("stream this please").content
    assert chunks[-1].response_metadata["fallback_from"] == PRO
    assert chunks[-1].response_metadata["attempts"][-1]["model"] == FLASH


async def test_async_paths_use_the_ladder(emulator: Emulator, clock: ManualClock) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH])
    message = await pool.ainvoke("async hello")
    assert message.response_metadata["model_name"] == FLASH
    last = [c async for c in pool.astream("async stream")][-1]
    assert last.response_metadata["fallback_from"] == PRO
    assert sent(server, PRO) == {"p1": 1, "p2": 1}


def test_a_bad_key_is_quarantined_for_every_model(emulator: Emulator, clock: ManualClock) -> None:
    server = emulator(
        keys=KEYS, bad_keys={"fake-key-aaaa": "leaked"}, zero_quota_models=[PRO], clock=clock
    )
    pool = ladder(server, clock, fallback_models=[FLASH])
    for _ in range(4):
        assert pool.invoke("x").response_metadata["model_name"] == FLASH
    # the leaked key was sent once (on pro); flash never tried it
    assert server.stats()["keys"]["…aaaa"]["requests"] == 1
    assert pool.pool_status()[0]["models"] == {PRO: "invalid", FLASH: "invalid"}


def test_the_cache_never_serves_a_fallback_answer(
    emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    quotas = {"*": {PRO: Quota(rpd=1), "*": Quota()}}
    server = emulator(keys={"p1": ["fake-key-aaaa"]}, quotas=quotas, clock=clock)
    cache = GeminiDiskCache(tmp_path / "cache")
    pool = ChatGeminiPool(
        model=PRO,
        fallback_models=[FLASH],
        api_keys={"p1": ["fake-key-aaaa"]},
        base_url=server.base_url,
        clock=clock,
        cache=cache,
    )
    assert pool.invoke("pro answers").response_metadata["model_name"] == PRO
    again = pool.invoke("pro answers").response_metadata
    assert again.get("cache_hit") is True and again["model_name"] == PRO  # pro's is served
    first = pool.invoke("flash answers").response_metadata
    assert first["model_name"] == FLASH
    before = server.stats()["total"]["requests"]
    second = pool.invoke("flash answers").response_metadata
    assert "cache_hit" not in second  # asked the ladder again, not served from the cache
    assert server.stats()["total"]["requests"] == before + 1
    clock.advance(24 * 3600)  # pro has room again: the entry becomes pro's
    third = pool.invoke("flash answers").response_metadata
    assert third["model_name"] == PRO and "cache_hit" not in third
    fourth = pool.invoke("flash answers").response_metadata
    assert fourth.get("cache_hit") is True and fourth["model_name"] == PRO
    streamed = list(pool.stream("flash answers"))
    assert streamed[-1].response_metadata["model_name"] == PRO


async def test_the_async_cache_never_serves_a_fallback_answer(
    emulator: Emulator, clock: ManualClock, tmp_path: Path
) -> None:
    server = emulator(keys=KEYS, zero_quota_models=[PRO], clock=clock)
    pool = ladder(server, clock, fallback_models=[FLASH], cache=GeminiDiskCache(tmp_path / "c"))
    await pool.ainvoke("same question")
    before = server.stats()["total"]["ok"]
    again = await pool.ainvoke("same question")
    assert "cache_hit" not in again.response_metadata
    assert server.stats()["total"]["ok"] == before + 1

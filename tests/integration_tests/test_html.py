"""What a notebook shows: the pool, the usage handler and the ledger as HTML tables; watch()."""

from __future__ import annotations

import io
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from langchain_gemini_pool import (
    ChatGeminiPool,
    GeminiUsageCallbackHandler,
    ManualClock,
    QuotaLimits,
    UsageLedger,
)
from langchain_gemini_pool.testing import Quota

KEYS = {"team": ["html-key-team-0001", "html-key-team-0002"], "solo": ["html-key-solo-0003"]}
BAD = "html-key-solo-0004"


def no_key_text(page: str) -> None:
    for key in [*KEYS["team"], *KEYS["solo"], BAD]:
        assert key not in page and key[:-4] not in page


def test_pool_html_shows_states_in_colour_with_cooldowns_and_room(
    emulator: Any, clock: ManualClock
) -> None:
    server = emulator(
        keys={**KEYS, "solo": [*KEYS["solo"], BAD]},
        quotas={"team": Quota(rpm=1)},
        bad_keys={BAD: "invalid"},
        clock=clock,
    )
    keys = {"team": KEYS["team"], "solo": [*KEYS["solo"], BAD]}
    pool = ChatGeminiPool(
        model="gemini-2.5-flash",
        api_keys=keys,
        base_url=server.base_url,
        clock=clock,
        max_wait=0,
        limits={"solo": QuotaLimits(rpm=5)},
    )
    for _ in range(3):  # team: 1 ok then a 429 cools the project; solo: the bad key is quarantined
        pool.invoke("hello")
    page = pool._repr_html_()
    assert "<table" in page
    assert "#c62828" in page and "invalid" in page and "API_KEY_INVALID" in page
    assert "#b26a00" in page and "cooling" in page
    assert "#2e7d32" in page and "ready" in page
    assert " s</td>" in page  # a cooldown countdown
    assert "rpm " in page  # window room of the project with QuotaLimits
    assert "…0001" in page
    no_key_text(page)


def test_handler_and_ledger_html_show_usage_by_every_grouping(
    emulator: Any, clock: ManualClock
) -> None:
    server = emulator(keys=KEYS, clock=clock)
    ledger = UsageLedger.in_memory(clock=clock)
    assert "Nothing recorded yet" in ledger._repr_html_()
    pool = ChatGeminiPool(
        model="gemini-2.5-flash", api_keys=KEYS, base_url=server.base_url, ledger=ledger
    )
    handler = GeminiUsageCallbackHandler()
    for user in ("alice", "bob", "alice"):
        pool.invoke("hi", config={"callbacks": [handler], "metadata": {"user_id": user}})
    for page in (handler._repr_html_(), ledger._repr_html_()):
        for heading in ("by key", "by project", "by model", "by user"):
            assert heading in page
        assert "alice" in page and "bob" in page and "team" in page and "gemini-2.5-flash" in page
        no_key_text(page)
    assert "3 requests" in handler._repr_html_()
    assert "UsageLedger (in memory), this month: 3 requests" in ledger._repr_html_()


def test_html_escapes_what_it_shows() -> None:
    ledger = UsageLedger.in_memory()
    ledger.record(
        message=AIMessage(content="x", usage_metadata={"input_tokens": 1, "output_tokens": 1,
                                                       "total_tokens": 2}),
        user="<script>alert(1)</script>",
    )  # fmt: skip
    page = ledger._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_watch_prints_a_plain_table_outside_notebooks(emulator: Any) -> None:
    server = emulator(keys=KEYS)
    pool = ChatGeminiPool(model="gemini-2.5-flash", api_keys=KEYS, base_url=server.base_url)
    out = io.StringIO()
    with pool.watch(interval=0.05, out=out) as view:
        pool.batch(["one", "two", "three"])
    text = out.getvalue()
    assert view.refreshes >= 2  # on entry and on exit at least
    assert "…0001" in text and "ready" in text
    last = text.strip().split("\n\n")[-1]
    assert sum(int(line.split()[-3]) for line in last.splitlines()[2:]) == 3  # requests column
    no_key_text(text)


def test_watch_refuses_a_bad_interval(emulator: Any) -> None:
    server = emulator(keys=KEYS)
    pool = ChatGeminiPool(model="gemini-2.5-flash", api_keys=KEYS, base_url=server.base_url)
    with pytest.raises(ValueError, match="interval"):
        pool.watch(interval=0)

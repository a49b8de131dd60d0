"""Scheduler edges the mutation run found open (``benchmarks/mutation.sh _scheduler``)."""

from __future__ import annotations

import logging

import pytest

from langchain_gemini_pool import QuotaLimits
from langchain_gemini_pool._scheduler import Pick, Scheduler

T = 1_760_000_000.0


def test_the_daily_80_percent_warning_comes_once_with_exact_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = Scheduler(limits=QuotaLimits(rpd=7))
    scheduler.add_key("p", "…aaaa")
    with caplog.at_level(logging.WARNING):
        picks = [scheduler.choose(T + i) for i in range(7)]
    assert all(isinstance(p, Pick) for p in picks)
    warnings = [p.quota_warning for p in picks if isinstance(p, Pick)]
    assert warnings == [None] * 5 + [{"project": "p", "used": 0.857, "rpd": 7}, None]
    assert [r.getMessage() for r in caplog.records] == [
        "Project p has used 85% of its daily request quota (7 requests)."
    ]


def test_a_pick_holds_its_key_once_until_released() -> None:
    scheduler = Scheduler()
    scheduler.add_key("p", "…aaaa")
    pick = scheduler.choose(T)
    assert isinstance(pick, Pick)
    assert scheduler._keys[0].in_flight == 1
    scheduler.release(pick)
    assert scheduler._keys[0].in_flight == 0


def test_a_pick_without_reservation_books_nothing() -> None:
    scheduler = Scheduler(limits=QuotaLimits(rpm=1, tpm=100))
    scheduler.add_key("p", "…aaaa")
    pick = scheduler.choose(T, tokens=50, reserve=False)
    assert isinstance(pick, Pick)
    assert pick.ticket == [T, 0.0]
    assert scheduler.status(T)[0]["room"] == {"rpm": 1, "tpm": 100, "rpd": None}

"""Waiters book quota slots first come, first served (no race for each slot on waking)."""

from __future__ import annotations

import random

import pytest

from langchain_gemini_pool import ManualClock, QuotaLimits
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._scheduler import Pick, Scheduler, Wait

T = 1_000_000.0
SPAN = 10.1  # window 10 s + margin min(0.25, 1%)


def full_scheduler(rpm: int = 2) -> Scheduler:
    scheduler = Scheduler(limits=QuotaLimits(rpm=rpm, window_s=10))
    scheduler.add_key("p", "…aaaa")
    for i in range(rpm):
        assert isinstance(scheduler.choose(T + i), Pick)
    return scheduler


def test_without_book_until_a_full_window_means_wait() -> None:
    decision = full_scheduler().choose(T + 2)
    assert isinstance(decision, Wait)
    assert decision.until == pytest.approx(T + SPAN, abs=1e-6)


def test_waiters_get_successive_slots_in_arrival_order() -> None:
    scheduler = full_scheduler()
    booked = [scheduler.choose(T + 2 + i / 10, book_until=T + 100) for i in range(3)]
    assert all(isinstance(b, Pick) for b in booked)
    ats = [b.at for b in booked if isinstance(b, Pick)]
    assert ats == pytest.approx([T + SPAN, T + 1 + SPAN, T + 2 * SPAN], abs=1e-6)


def test_booked_slots_are_not_given_to_a_later_caller() -> None:
    scheduler = full_scheduler()
    first = scheduler.choose(T + 2, book_until=T + 100)
    assert isinstance(first, Pick)
    later = scheduler.choose(first.at + 0.01)  # the slot has freed, but it is booked
    assert isinstance(later, Wait)


def test_no_booking_past_the_deadline() -> None:
    decision = full_scheduler().choose(T + 2, book_until=T + 5)
    assert isinstance(decision, Wait)


def test_no_booking_without_limits() -> None:
    scheduler = Scheduler()
    index = scheduler.add_key("p", "…aaaa")
    scheduler._keys[index].cooling_until = T + 30  # reactive cooldown after a 429
    assert isinstance(scheduler.choose(T, book_until=T + 100), Wait)


def test_plan_sleeps_until_its_booked_slot_then_uses_it() -> None:
    scheduler = full_scheduler()
    clock = ManualClock(T + 2)
    plan = RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=30)
    pause = plan.next()
    assert pause == pytest.approx(SPAN - 2)
    assert isinstance(pause, float)
    clock.advance(pause / 2)
    assert plan.next() == pytest.approx(pause / 2)  # still waiting for the same slot
    clock.advance(pause / 2)
    step = plan.next()
    assert isinstance(step, Pick)
    assert step.at == pytest.approx(T + SPAN, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_sends_never_exceed_the_limit_in_any_window(seed: int) -> None:
    rng = random.Random(seed)
    rpm, window = 3, 10.0
    scheduler = Scheduler(limits=QuotaLimits(rpm=rpm, window_s=window))
    for project in ("p", "q"):
        scheduler.add_key(project, f"…{project * 4}")
    sends: dict[int, list[float]] = {0: [], 1: []}
    now = T
    for _ in range(60):
        now += rng.uniform(0, 2)
        decision = scheduler.choose(now, book_until=now + 60)
        if isinstance(decision, Pick):
            sends[decision.index].append(max(now, decision.at))
    for times in sends.values():
        times.sort()
        assert all(b - a >= window for a, b in zip(times, times[rpm:], strict=False))

"""A request that is never sent leaves no trace: room and in-flight as if it never existed.

Pure logic on a moved clock. The property test drives random interleavings of start (now,
or booking a future slot), cancel before the send, cancel after the send, finish, and time
passing, and checks every project's room and every key's in-flight count against an
independent model that simply never saw the requests cancelled before their send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_gemini_pool import ManualClock, QuotaLimits
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._quota import WINDOW_MARGIN_S, ProjectWindow
from langchain_gemini_pool._scheduler import Pick, Scheduler, Wait

from .test_scheduler import NOON, make, pick


def span(limits: QuotaLimits) -> float:
    return limits.window_s + min(WINDOW_MARGIN_S, 0.01 * limits.window_s)


@dataclass
class Books:
    """What the pool must count: only requests that were (or may have been) sent."""

    entries: dict[str, list[list[float]]] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)

    def room(self, limits: QuotaLimits | None, project: str, now: float) -> dict[str, int | None]:
        if limits is None:
            return {"rpm": None, "tpm": None, "rpd": None}
        entries = self.entries.get(project, [])
        inside = [e for e in entries if e[0] > now - span(limits)]
        return {
            "rpm": None if limits.rpm is None else max(0, limits.rpm - len(inside)),
            "tpm": None
            if limits.tpm is None
            else max(0, int(limits.tpm - sum(e[1] for e in inside))),
            "rpd": None if limits.rpd is None else max(0, limits.rpd - len(entries)),
        }


limits_strategy = st.one_of(
    st.none(),
    st.builds(
        QuotaLimits,
        rpm=st.one_of(st.none(), st.integers(1, 4)),
        tpm=st.one_of(st.none(), st.integers(50, 300)),
        rpd=st.one_of(st.none(), st.integers(5, 40)),
        window_s=st.sampled_from([1.0, 2.0, 10.0, 60.0]),
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    strategy=st.sampled_from(["round_robin", "least_used"]),
    layout=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    limits=st.lists(limits_strategy, min_size=3, max_size=3),
    data=st.data(),
)
def test_cancelled_requests_leave_room_and_in_flight_as_if_they_never_existed(
    strategy: str, layout: list[int], limits: list[QuotaLimits | None], data: st.DataObject
) -> None:
    names = [f"p{i}" for i in range(len(layout))]
    by_project = {n: lim for n, lim in zip(names, limits, strict=False) if lim is not None}
    scheduler = make(dict(zip(names, layout, strict=True)), strategy, by_project)
    project_of = [name for name, n in zip(names, layout, strict=True) for _ in range(n)]
    clock = ManualClock(NOON)  # noon Pacific: hours from any daily reset
    books = Books()
    open_: list[tuple[Pick, list[float]]] = []

    for _ in range(data.draw(st.integers(5, 80), label="steps")):
        now = clock.now()
        op = data.draw(
            st.sampled_from(["start", "start", "book", "cancel", "cancel_sent", "finish", "wait"]),
            label="op",
        )
        if op in ("start", "book"):
            tokens = float(data.draw(st.integers(0, 120), label="tokens"))
            until = now + 600 if op == "book" else None
            decision = scheduler.choose(now, tokens, book_until=until)
            if isinstance(decision, Pick):
                project = project_of[decision.index]
                entry = [decision.at if decision.at > now else now, tokens]
                if project in by_project:
                    books.entries.setdefault(project, []).append(entry)
                books.in_flight[decision.index] = books.in_flight.get(decision.index, 0) + 1
                open_.append((decision, entry))
        elif op == "wait":
            clock.advance(data.draw(st.sampled_from([0.01, 0.5, 1.0, 2.5, 11.0, 61.0])))
        elif open_:
            chosen, entry = open_.pop(data.draw(st.integers(0, len(open_) - 1), label="which"))
            books.in_flight[chosen.index] -= 1
            project = project_of[chosen.index]
            if op == "cancel":  # never sent: gone from the books
                scheduler.release(chosen)
                if project in by_project:
                    kept = books.entries[project]
                    del kept[next(i for i, e in enumerate(kept) if e is entry)]
            elif op == "cancel_sent":  # may have reached the server: it counts
                scheduler.release(chosen, sent=True)
            else:
                actual = float(data.draw(st.integers(0, 120), label="actual"))
                scheduler.on_success(chosen, actual)
                entry[1] = actual

        now = clock.now()
        for row in scheduler.status(now):
            project = project_of[row["index"]]
            assert row["in_flight"] == books.in_flight.get(row["index"], 0), row
            assert row["room"] == books.room(by_project.get(project), project, now), (row, now)


T = 1_000_000.0


def test_the_issues_case_ten_cancelled_waiters_leave_no_phantom_slots() -> None:
    """rpm=2, window_s=2: ten waiters book slots five windows deep, then are cancelled; the
    next request gets the first slot after the two real requests, not the twelfth."""
    limits = QuotaLimits(rpm=2, rpd=100, window_s=2)
    scheduler = Scheduler(limits=limits)
    scheduler.add_key("p", "…aaaa")
    clock = ManualClock(T)
    for _ in range(2):
        scheduler.on_success(pick(scheduler, clock.now()))
    plans = [RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=60) for _ in range(10)]
    pauses = [plan.next() for plan in plans]
    assert all(isinstance(p, float) for p in pauses)
    assert max(pauses) == pytest.approx(5 * span(limits))  # booked five windows deep
    assert scheduler.status(clock.now())[0]["in_flight"] == 10
    for plan in plans:  # cancelled while waiting: the plan is closed unused
        plan.close()
    row = scheduler.status(clock.now())[0]
    assert row["in_flight"] == 0
    assert row["room"] == {"rpm": 0, "tpm": None, "rpd": 98}
    assert row["requests"] == 2
    late = scheduler.choose(clock.now(), book_until=clock.now() + 60)
    assert isinstance(late, Pick)
    assert late.at == pytest.approx(T + span(limits))  # the first real slot, no phantoms


def test_a_give_back_is_by_identity_and_only_once() -> None:
    window = ProjectWindow(QuotaLimits(rpm=3, tpm=100, rpd=10))
    a, b = window.reserve(T, 5), window.reserve(T, 5)  # equal entries, distinct requests
    assert window.give_back(b)
    assert not window.give_back(b)  # twice gives back nothing more
    assert window.room(T) == {"rpm": 2, "tpm": 95, "rpd": 9}
    window.correct(a, 20)
    assert window.room(T) == {"rpm": 2, "tpm": 80, "rpd": 9}
    assert not ProjectWindow(None).give_back([T, 1.0])


def test_a_sent_then_cancelled_request_keeps_its_slot_with_the_servers_tokens() -> None:
    scheduler = Scheduler(limits=QuotaLimits(rpm=5, tpm=1000))
    scheduler.add_key("p", "…aaaa")
    p = pick(scheduler, T, tokens=100)
    scheduler.release(p, sent=True, prompt_tokens=40)
    row = scheduler.status(T)[0]
    assert (row["in_flight"], row["requests"]) == (0, 1)
    assert row["room"] == {"rpm": 4, "tpm": 960, "rpd": None}


def test_a_plan_that_fails_over_never_keeps_a_booked_slot() -> None:
    scheduler = Scheduler(limits=QuotaLimits(rpm=1, window_s=10))
    scheduler.add_key("p", "…aaaa")
    scheduler.on_success(pick(scheduler, T))
    clock = ManualClock(T)
    plan = RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=60)
    assert isinstance(plan.next(), float)  # booked the next window's slot
    plan.close()
    assert isinstance(scheduler.choose(T + 1), Wait)
    booked = scheduler.choose(T + 1, book_until=T + 60)
    assert isinstance(booked, Pick)
    assert booked.at == pytest.approx(T + span(QuotaLimits(rpm=1, window_s=10)))


# -- cooldowns: an example beside the property tests --------------------------------------------


def rate_limited(retry_after: float) -> Failure:
    return Failure(FailureKind.RATE_LIMITED, f"rate limited {retry_after:g}s", retry_after)


def test_a_cooldown_is_extended_by_a_later_longer_429_and_never_shortened() -> None:
    scheduler = make({"a": 2})
    clock = ManualClock(NOON)
    first, second, third = (pick(scheduler, clock.now()) for _ in range(3))
    scheduler.on_failure(first, rate_limited(10), clock.now())  # until +10
    clock.advance(2)
    scheduler.on_failure(second, rate_limited(60), clock.now())  # later and longer: +62
    clock.advance(1)
    scheduler.on_failure(third, rate_limited(5), clock.now())  # shorter: changes nothing
    rows = scheduler.status(clock.now())
    assert [r["ready_in_s"] for r in rows] == [pytest.approx(59), pytest.approx(59)]
    assert {r["reason"] for r in rows} == {"rate limited 60s"}
    clock.advance(58.5)
    assert {r["state"] for r in scheduler.status(clock.now())} == {"cooling"}
    clock.advance(0.5)
    assert {r["state"] for r in scheduler.status(clock.now())} == {"ready"}


def test_a_key_cooldown_is_extended_by_a_later_fault() -> None:
    scheduler = make({"a": 1}, fault_cooldown_s=5.0)
    clock = ManualClock(NOON)
    fault = Failure(FailureKind.SERVER_FAULT, "503 UNAVAILABLE")
    first, second = pick(scheduler, clock.now()), pick(scheduler, clock.now())
    scheduler.on_failure(first, fault, clock.now())  # until +5
    clock.advance(3)
    scheduler.on_failure(second, fault, clock.now())  # until +8
    clock.advance(4)
    assert scheduler.status(clock.now())[0]["ready_in_s"] == pytest.approx(1)

"""Scheduler, quota windows and the failover plan: pure decisions on a moved clock.

Nothing here sleeps: a ``ManualClock`` is advanced. The property-based tests drive random
interleavings of choose / success / failure / advance and check the promises the pool makes:
no key is chosen while it (or its project) cools or while it is quarantined, no window ever
holds more than its limit, a cooldown never shortens, and a ``Wait`` tells the truth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from google.genai import errors as genai_errors
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from langchain_gemini_pool import AllKeysRateLimitedError, ManualClock, NoValidKeysError
from langchain_gemini_pool._clock import PACIFIC, next_pacific_midnight, pacific_day
from langchain_gemini_pool._errors import Failure, FailureKind, QuotaViolation
from langchain_gemini_pool._failover import ATTEMPTS_ATTR, RequestPlan
from langchain_gemini_pool._quota import ProjectWindow, QuotaLimits
from langchain_gemini_pool._scheduler import NoKeys, Pick, Scheduler, Wait

RPM_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
TPM_ID = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
RPD_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"

NOON = datetime(2026, 6, 10, 12, 0, tzinfo=PACIFIC).timestamp()
"""A Wednesday at noon, Pacific."""


def rate_limited(
    retry_after: float | None = 30.0, *violations: QuotaViolation, reason: str = "rate limited"
) -> Failure:
    return Failure(FailureKind.RATE_LIMITED, reason, retry_after, tuple(violations))


PER_DAY = rate_limited(50.0, QuotaViolation(RPD_ID, None), reason="rate limited (per day)")
BAD_KEY = Failure(FailureKind.BAD_KEY, "400 API_KEY_INVALID")
SERVER = Failure(FailureKind.SERVER_FAULT, "503 UNAVAILABLE")
BAD_REQUEST = Failure(FailureKind.BAD_REQUEST, "400 INVALID_ARGUMENT")


def make(
    projects: dict[str, int],
    strategy: str = "round_robin",
    limits: QuotaLimits | dict[str, QuotaLimits] | None = None,
    **kwargs: float,
) -> Scheduler:
    """A scheduler with ``projects[name]`` keys in each project, indices in order."""
    scheduler = Scheduler(strategy, limits, **kwargs)  # type: ignore[arg-type]
    n = 0
    for project, count in projects.items():
        for _ in range(count):
            scheduler.add_key(project, f"…{n:04d}")
            n += 1
    return scheduler


def pick(scheduler: Scheduler, now: float, tokens: float = 0.0, **kwargs: object) -> Pick:
    decision = scheduler.choose(now, tokens, **kwargs)  # type: ignore[arg-type]
    assert isinstance(decision, Pick), decision
    return decision


def picks(scheduler: Scheduler, now: float, n: int, tokens: float = 0.0) -> list[int]:
    """Choose ``n`` times, each attempt succeeding at once."""
    chosen = []
    for _ in range(n):
        p = pick(scheduler, now, tokens)
        scheduler.on_success(p)
        chosen.append(p.index)
    return chosen


def state(scheduler: Scheduler, now: float) -> dict[int, str]:
    return {row["index"]: row["state"] for row in scheduler.status(now)}


# -- strategies ---------------------------------------------------------------------------------


def test_round_robin_starts_at_index_zero_and_cycles() -> None:
    scheduler = make({"a": 1, "b": 1, "c": 1})
    assert picks(scheduler, NOON, 7) == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_skips_a_cooling_key_and_takes_it_back_after() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1, "b": 1, "c": 1})
    scheduler.on_failure(pick(scheduler, clock.now()), rate_limited(10), clock.now())
    assert picks(scheduler, clock.now(), 4) == [1, 2, 1, 2]
    clock.advance(10)
    assert sorted(picks(scheduler, clock.now(), 3)) == [0, 1, 2]


def test_least_used_picks_the_key_with_the_fewest_requests_and_in_flight() -> None:
    scheduler = make({"a": 1, "b": 1, "c": 1}, "least_used")
    first = pick(scheduler, NOON)  # 0, left in flight
    second = pick(scheduler, NOON)  # 1, left in flight
    assert (first.index, second.index) == (0, 1)
    assert pick(scheduler, NOON).index == 2
    scheduler.on_success(first)
    scheduler.on_success(second)
    # loads now: 0 -> 1, 1 -> 1, 2 -> 2 (still in flight): the next two go to 0 and 1
    assert sorted([pick(scheduler, NOON).index, pick(scheduler, NOON).index]) == [0, 1]


def test_least_used_spreads_evenly_over_time() -> None:
    scheduler = make({f"p{i}": 1 for i in range(5)}, "least_used")
    chosen = picks(scheduler, NOON, 50)
    assert [chosen.count(i) for i in range(5)] == [10] * 5


def test_an_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'round_robin' or 'least_used', not 'random'"):
        Scheduler("random")  # type: ignore[arg-type]


def test_avoided_keys_are_used_only_when_no_other_is_ready() -> None:
    scheduler = make({"a": 1, "b": 1, "c": 1})
    assert pick(scheduler, NOON, avoid={0, 1}).index == 2
    scheduler.on_failure(Pick(2, [NOON, 0.0]), rate_limited(60), NOON)
    assert pick(scheduler, NOON, avoid={0, 1}).index in (0, 1)


@pytest.mark.parametrize("strategy", ["round_robin", "least_used"])
def test_a_tried_key_of_the_first_tier_still_comes_before_the_next_tier(strategy: str) -> None:
    limits = {"paid": QuotaLimits(priority=0), "free": QuotaLimits(priority=1)}
    scheduler = make({"paid": 1, "free": 1}, strategy, limits)
    assert pick(scheduler, NOON, avoid={0}).index == 0


def test_an_empty_scheduler_has_no_keys() -> None:
    assert Scheduler().choose(NOON) == NoKeys({})


# -- cooldowns ----------------------------------------------------------------------------------


def test_a_429_cools_the_key_and_every_key_of_its_project() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"shared": 3, "other": 1})
    p = pick(scheduler, clock.now())
    scheduler.on_failure(p, rate_limited(33.27), clock.now())
    assert state(scheduler, clock.now()) == {0: "cooling", 1: "cooling", 2: "cooling", 3: "ready"}
    assert picks(scheduler, clock.now(), 3) == [3, 3, 3]
    clock.advance(33.2)
    assert picks(scheduler, clock.now(), 1) == [3]
    clock.advance(0.1)
    assert set(picks(scheduler, clock.now(), 4)) == {0, 1, 2, 3}


def test_a_429_without_retry_info_cools_for_the_default() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1}, default_cooldown_s=45.0)
    scheduler.on_failure(pick(scheduler, clock.now()), rate_limited(None), clock.now())
    assert scheduler.status(clock.now())[0]["ready_in_s"] == 45.0
    decision = scheduler.choose(clock.now())
    assert isinstance(decision, Wait)
    assert decision.until == clock.now() + 45.0
    clock.advance(45.0)
    assert isinstance(scheduler.choose(clock.now()), Pick)


def test_a_new_cooldown_never_shortens_an_existing_one() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 2})
    first, second = pick(scheduler, clock.now()), pick(scheduler, clock.now())
    scheduler.on_failure(first, rate_limited(100), clock.now())
    clock.advance(10)
    scheduler.on_failure(second, rate_limited(5), clock.now())
    clock.advance(80)
    assert set(state(scheduler, clock.now()).values()) == {"cooling"}
    clock.advance(10)
    assert set(state(scheduler, clock.now()).values()) == {"ready"}


def test_a_per_day_429_cools_the_project_until_midnight_pacific() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"free": 2, "paid": 1})
    scheduler.on_failure(pick(scheduler, clock.now()), PER_DAY, clock.now())
    midnight = datetime(2026, 6, 11, 0, 0, tzinfo=PACIFIC).timestamp()
    rows = scheduler.status(clock.now())
    assert rows[0]["ready_in_s"] == rows[1]["ready_in_s"] == midnight - clock.now()
    assert rows[0]["reason"] == "daily quota exhausted until midnight Pacific"
    assert rows[2]["state"] == "ready"
    clock.set(midnight - 1)
    assert picks(scheduler, clock.now(), 2) == [2, 2]
    clock.set(midnight)
    assert set(picks(scheduler, clock.now(), 3)) == {0, 1, 2}


@pytest.mark.parametrize(
    ("local", "midnight"),
    [
        # the night clocks spring forward (the day has 23 hours) ...
        (datetime(2026, 3, 8, 1, 30, tzinfo=PACIFIC), datetime(2026, 3, 9, tzinfo=PACIFIC)),
        # ... and fall back (25 hours)
        (datetime(2026, 11, 1, 23, 59, tzinfo=PACIFIC), datetime(2026, 11, 2, tzinfo=PACIFIC)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=PACIFIC), datetime(2027, 1, 1, tzinfo=PACIFIC)),
    ],
)
def test_per_day_cooldown_ends_at_local_midnight_across_dst(
    local: datetime, midnight: datetime
) -> None:
    scheduler = make({"a": 1})
    now = local.timestamp()
    scheduler.on_failure(pick(scheduler, now), PER_DAY, now)
    wait = scheduler.choose(now)
    assert isinstance(wait, Wait)
    assert wait.until == midnight.timestamp() == next_pacific_midnight(now)
    assert isinstance(scheduler.choose(midnight.timestamp()), Pick)


def test_a_wait_names_why() -> None:
    scheduler = make({"a": 1, "b": 1})
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(20, reason="rate limited (X)"), NOON)
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(10, reason="rate limited (Y)"), NOON)
    decision = scheduler.choose(NOON)
    assert decision == Wait(NOON + 10, "rate limited (X); rate limited (Y)")


# -- bad keys and faults ------------------------------------------------------------------------


def test_a_bad_key_is_quarantined_for_the_pools_life(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1, "b": 1})
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        scheduler.on_failure(pick(scheduler, clock.now()), BAD_KEY, clock.now())
    assert "Quarantined Gemini API key …0000 (index 0): 400 API_KEY_INVALID" in caplog.text
    clock.advance(400 * 86400)
    assert picks(scheduler, clock.now(), 3) == [1, 1, 1]
    row = scheduler.status(clock.now())[0]
    assert (row["state"], row["ready_in_s"], row["reason"]) == (
        "invalid",
        None,
        "400 API_KEY_INVALID",
    )
    scheduler.reset(0)
    assert set(picks(scheduler, clock.now(), 2)) == {0, 1}


def test_a_second_bad_key_report_keeps_the_first_reason() -> None:
    scheduler = make({"a": 1, "b": 1})
    p = pick(scheduler, NOON)
    scheduler.on_failure(p, BAD_KEY, NOON)
    scheduler.on_failure(p, Failure(FailureKind.BAD_KEY, "403 leaked"), NOON)
    assert scheduler.status(NOON)[0]["reason"] == "400 API_KEY_INVALID"
    assert scheduler.status(NOON)[0]["errors"] == 2


def test_when_every_key_is_quarantined_there_are_no_keys() -> None:
    scheduler = make({"a": 1, "b": 1})
    scheduler.on_failure(pick(scheduler, NOON), BAD_KEY, NOON)
    scheduler.on_failure(pick(scheduler, NOON), Failure(FailureKind.BAD_KEY, "403 leaked"), NOON)
    assert scheduler.choose(NOON) == NoKeys(
        {"#0 …0000": "400 API_KEY_INVALID", "#1 …0001": "403 leaked"}
    )


def test_server_faults_and_bad_requests_never_quarantine_or_cool_by_default() -> None:
    scheduler = make({"a": 1})
    for _ in range(50):
        scheduler.on_failure(pick(scheduler, NOON), SERVER, NOON)
        scheduler.on_failure(pick(scheduler, NOON), BAD_REQUEST, NOON)
    row = scheduler.status(NOON)[0]
    assert (row["state"], row["errors"], row["requests"]) == ("ready", 100, 100)


def test_a_fault_cooldown_cools_only_that_key() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 2}, fault_cooldown_s=5.0)
    scheduler.on_failure(pick(scheduler, clock.now()), SERVER, clock.now())
    assert state(scheduler, clock.now()) == {0: "cooling", 1: "ready"}
    assert scheduler.status(clock.now())[0]["reason"] == "503 UNAVAILABLE"
    clock.advance(5)
    assert state(scheduler, clock.now()) == {0: "ready", 1: "ready"}


def test_reset_lifts_a_cooldown_of_the_key_and_its_project() -> None:
    scheduler = make({"a": 3})
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(600), NOON)
    scheduler.reset(1)
    # the project's cooldown is lifted; key 0 keeps the cooldown of its own 429
    assert state(scheduler, NOON) == {0: "cooling", 1: "ready", 2: "ready"}
    scheduler.reset(0)
    assert state(scheduler, NOON) == {0: "ready", 1: "ready", 2: "ready"}


def test_removed_keys_are_never_chosen_and_unknown_indices_are_clear_errors() -> None:
    scheduler = make({"a": 1, "b": 1, "c": 1})
    scheduler.remove_key(1)
    assert scheduler.active_indices() == [0, 2]
    assert picks(scheduler, NOON, 4) == [0, 2, 0, 2]
    assert [row["index"] for row in scheduler.status(NOON)] == [0, 2]
    with pytest.raises(KeyError, match="No key with index 1"):
        scheduler.reset(1)
    with pytest.raises(KeyError, match="No key with index 7"):
        scheduler.remove_key(7)


def test_an_outcome_always_releases_the_in_flight_count() -> None:
    scheduler = make({"a": 1, "b": 1}, "least_used")
    a = pick(scheduler, NOON)
    scheduler.release(a, sent=True)  # sent, then cancelled: still a request of key 0
    scheduler.release(a, sent=True)  # twice must not go negative
    b = pick(scheduler, NOON)
    assert b.index == 1
    scheduler.on_failure(b, SERVER, NOON)
    # both keys have one request and nothing in flight: the tie goes to index 0
    assert pick(scheduler, NOON).index == 0


# -- windows ------------------------------------------------------------------------------------


def test_rpm_window_slides() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1}, limits=QuotaLimits(rpm=3))
    for step in (0, 20, 40):
        clock.set(NOON + step)
        pick(scheduler, clock.now())
    clock.set(NOON + 59)
    decision = scheduler.choose(clock.now())
    assert isinstance(decision, Wait)
    assert 60 < decision.until - NOON <= 60.25
    assert decision.reason == "no project has quota room"
    clock.set(decision.until)
    pick(scheduler, clock.now())
    # the second request (t=20) leaves the window only after t=80
    wait = scheduler.choose(clock.now())
    assert isinstance(wait, Wait)
    assert 80 < wait.until - NOON <= 80.25


def test_tpm_window_counts_estimates_and_takes_corrections() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1}, limits=QuotaLimits(tpm=1000, window_s=10))
    first = pick(scheduler, clock.now(), tokens=600)
    assert isinstance(scheduler.choose(clock.now(), tokens=500), Wait)
    scheduler.on_success(first, prompt_tokens=400)  # the server counted fewer
    assert scheduler.status(clock.now())[0]["room"] == {"rpm": None, "tpm": 600, "rpd": None}
    second = pick(scheduler, clock.now(), tokens=500)
    scheduler.on_success(second, prompt_tokens=500)
    assert isinstance(scheduler.choose(clock.now(), tokens=200), Wait)
    assert isinstance(scheduler.choose(clock.now(), tokens=100), Pick)


def test_a_full_tpm_window_is_refused_despite_float_drift() -> None:
    """Found by the property test: a correction leaves the running token sum a hair above
    the events' own sum (1.1396310356182866 vs ...857); a request that overfills the window
    must still wait rather than slip through."""
    window = ProjectWindow(QuotaLimits(tpm=50, window_s=1.0))
    entry = window.reserve(NOON, 10)
    window.reserve(NOON, 0)
    window.correct(entry, 1.1396310356182857)
    for _ in range(5):
        window.reserve(NOON, 0)
    assert window.ready_at(NOON, 48) == NOON  # 1.14 + 48 fits
    assert window.ready_at(NOON, 50) == NOON + 1.01  # 1.14 + 50 does not: wait for the span


def test_a_correction_after_the_window_slid_changes_nothing() -> None:
    window = ProjectWindow(QuotaLimits(tpm=1000, window_s=10))
    old = window.reserve(NOON, 600)
    window.reserve(NOON + 11, 100)  # slides the first one out
    window.correct(old, 5)  # its response arrived late: no longer in the window
    assert window.room(NOON + 11)["tpm"] == 900
    fresh = window.reserve(NOON + 12, 300)
    window.correct(fresh, 50)
    assert window.room(NOON + 12)["tpm"] == 850


def test_a_request_larger_than_tpm_goes_alone_when_the_window_is_empty() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1}, limits=QuotaLimits(tpm=100, window_s=10))
    pick(scheduler, clock.now(), tokens=10)
    wait = scheduler.choose(clock.now(), tokens=500)
    assert isinstance(wait, Wait)
    clock.set(wait.until)
    pick(scheduler, clock.now(), tokens=500)


def test_rpd_resets_at_pacific_midnight_and_warns_at_80_percent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(datetime(2026, 6, 10, 23, 0, tzinfo=PACIFIC))
    scheduler = make({"free": 1}, limits=QuotaLimits(rpd=5))
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        picks(scheduler, clock.now(), 3)
        assert "daily request quota" not in caplog.text
        picks(scheduler, clock.now(), 1)
        assert "Project free has used 80% of its daily request quota (5 requests)" in caplog.text
        picks(scheduler, clock.now(), 1)
        assert caplog.text.count("daily request quota") == 1
    assert scheduler.status(clock.now())[0]["room"] == {"rpm": None, "tpm": None, "rpd": 0}
    wait = scheduler.choose(clock.now())
    assert wait == Wait(next_pacific_midnight(clock.now()), "no project has quota room")
    clock.set(wait.until)
    assert scheduler.status(clock.now())[0]["room"]["rpd"] == 5
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        picks(scheduler, clock.now(), 4)
    assert caplog.text.count("daily request quota") == 1  # once again, the new day


@pytest.mark.parametrize("limits", [QuotaLimits(rpm=0), QuotaLimits(tpm=0), QuotaLimits(rpd=0)])
def test_a_zero_limit_means_never(limits: QuotaLimits) -> None:
    scheduler = make({"none": 1}, limits=limits)
    decision = scheduler.choose(NOON, tokens=10)
    assert isinstance(decision, Wait)
    assert math.isinf(decision.until)


def test_quota_limits_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=r"QuotaLimits\.rpm must be a whole number >= 0"):
        QuotaLimits(rpm=-1)
    with pytest.raises(ValueError, match=r"QuotaLimits\.tpm"):
        QuotaLimits(tpm=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"window_s must be a positive"):
        QuotaLimits(window_s=0)


def test_status_rows_hold_masked_keys_counts_and_room() -> None:
    limits = {"a": QuotaLimits(rpm=10, rpd=100), "b": QuotaLimits(tpm=5000)}
    scheduler = make({"a": 1, "b": 1}, limits=limits)
    p = pick(scheduler, NOON, tokens=300)
    scheduler.on_failure(p, rate_limited(12.5), NOON)
    assert scheduler.status(NOON + 2.5) == [
        {
            "index": 0,
            "fingerprint": "…0000",
            "project": "a",
            "state": "cooling",
            "ready_in_s": 10.0,
            "requests": 1,
            "successes": 0,
            "rate_limited": 1,
            "errors": 0,
            "reason": "rate limited",
            "in_flight": 0,
            "room": {"rpm": 9, "tpm": None, "rpd": 99},
            "shared": False,
        },
        {
            "index": 1,
            "fingerprint": "…0001",
            "project": "b",
            "state": "ready",
            "ready_in_s": 0.0,
            "requests": 0,
            "successes": 0,
            "rate_limited": 0,
            "errors": 0,
            "reason": None,
            "in_flight": 0,
            "room": {"rpm": None, "tpm": 5000, "rpd": None},
            "shared": False,
        },
    ]


def test_reserve_false_ignores_windows_but_not_cooldowns() -> None:
    scheduler = make({"a": 1}, limits=QuotaLimits(rpm=1))
    pick(scheduler, NOON)
    assert isinstance(scheduler.choose(NOON), Wait)
    assert isinstance(scheduler.choose(NOON, reserve=False), Pick)
    scheduler.on_failure(Pick(0, [NOON, 0.0]), rate_limited(5), NOON)
    assert isinstance(scheduler.choose(NOON, reserve=False), Wait)


# -- priority tiers and learned limits ----------------------------------------------------------


def test_lower_priority_projects_are_used_only_when_the_first_is_out_of_room() -> None:
    clock = ManualClock(NOON)
    limits = {
        "paid": QuotaLimits(rpm=2, priority=0),
        "free-1": QuotaLimits(rpm=10, priority=1),
        "free-2": QuotaLimits(rpm=10, priority=1),
    }
    scheduler = make({"free-1": 1, "paid": 2, "free-2": 1}, limits=limits)
    # index 0 free-1, 1 and 2 paid, 3 free-2
    assert picks(scheduler, clock.now(), 2) == [1, 2]
    assert picks(scheduler, clock.now(), 4) == [0, 3, 0, 3]
    clock.advance(61)
    assert picks(scheduler, clock.now(), 3) == [1, 2, 0]


def test_a_cooling_first_tier_overflows_into_the_next() -> None:
    limits = {"paid": QuotaLimits(priority=0), "free": QuotaLimits(priority=5)}
    scheduler = make({"paid": 1, "free": 1}, limits=limits)
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(30), NOON)
    assert picks(scheduler, NOON, 2) == [1, 1]
    assert picks(scheduler, NOON + 30, 2) == [0, 0]


def test_a_lower_quota_value_from_the_server_lowers_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1}, limits=QuotaLimits(rpm=10, tpm=100_000, rpd=500))
    p = pick(scheduler, clock.now())
    failure = rate_limited(1.0, QuotaViolation(RPM_ID, 2), QuotaViolation(TPM_ID, 250_000))
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        scheduler.on_failure(p, failure, clock.now())
    assert "server's rpm limit is 2, below the configured 10; lowering it" in caplog.text
    assert "tpm" not in caplog.text  # 250,000 is above the configured 100,000: kept
    clock.advance(1.0)
    room = scheduler.status(clock.now())[0]["room"]
    assert room == {"rpm": 1, "tpm": 100_000, "rpd": 499}
    pick(scheduler, clock.now())
    assert isinstance(scheduler.choose(clock.now()), Wait)


def test_a_learned_limit_stays_with_its_project() -> None:
    shared = QuotaLimits(rpm=10)
    scheduler = make({"a": 1, "b": 1}, limits=shared)
    failure = rate_limited(0.0, QuotaViolation(RPM_ID, 1))
    scheduler.on_failure(pick(scheduler, NOON), failure, NOON)
    rooms = [row["room"]["rpm"] for row in scheduler.status(NOON)]
    assert rooms == [0, 10]
    assert shared.rpm == 10


def test_no_configured_limit_is_never_invented() -> None:
    scheduler = make({"a": 1}, limits=QuotaLimits(rpd=100))
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(0, QuotaViolation(RPM_ID, 1)), NOON)
    assert scheduler.status(NOON)[0]["room"]["rpm"] is None


# -- the failover plan --------------------------------------------------------------------------


def test_plan_fails_over_on_rate_limits_and_bad_keys_without_waiting() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1, "b": 1, "c": 1})
    plan = RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=0)
    first = plan.next()
    assert isinstance(first, Pick)
    assert plan.failed(first, RuntimeError("x")) is None  # bad request: raise at once
    plan = RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=0)
    a = plan.next()
    assert isinstance(a, Pick)
    too_many = genai_errors.ClientError(429, {"error": {"code": 429, "message": "slow down"}})
    assert plan.failed(a, too_many) == 0.0
    b = plan.next()
    assert isinstance(b, Pick)
    assert b.index != a.index
    plan.succeeded(b, 10)
    assert [x["outcome"] for x in plan.attempts] == ["rate_limited", "ok"]
    assert getattr(too_many, ATTEMPTS_ATTR)[0]["key_index"] == a.index


def test_plan_backs_off_on_server_faults_and_stops_after_max_attempts() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 2})
    plan = RequestPlan(scheduler, clock.now, max_attempts=3, max_wait=60)
    pauses = []
    for _ in range(3):
        p = plan.next()
        assert isinstance(p, Pick)
        pauses.append(plan.failed(p, TimeoutError()))
    assert pauses[2] is None
    assert 0.25 <= pauses[0] <= 0.5  # type: ignore[operator]
    assert 0.5 <= pauses[1] <= 0.75  # type: ignore[operator]


def test_plan_raises_when_every_key_is_bad_or_cooling_too_long() -> None:
    clock = ManualClock(NOON)
    scheduler = make({"a": 1})
    scheduler.on_failure(pick(scheduler, NOON), rate_limited(30), NOON)
    assert RequestPlan(scheduler, clock.now, max_attempts=1, max_wait=30).next() == 30.0
    with pytest.raises(AllKeysRateLimitedError) as info:
        RequestPlan(scheduler, clock.now, max_attempts=1, max_wait=29).next()
    assert info.value.retry_after == 30.0
    scheduler.on_failure(Pick(0, [NOON, 0.0]), BAD_KEY, NOON)
    with pytest.raises(NoValidKeysError, match="…0000"):
        RequestPlan(scheduler, clock.now, max_attempts=1, max_wait=30).next()


# -- property-based: random interleavings on a moved clock --------------------------------------


@dataclass
class Model:
    """What the scheduler must have done, tracked independently of it."""

    key_until: dict[int, float] = field(default_factory=dict)
    project_until: dict[str, float] = field(default_factory=dict)
    quarantined: set[int] = field(default_factory=set)
    sent: dict[str, list[list[float]]] = field(default_factory=dict)
    """project -> [time, tokens] of every reserved request (tokens corrected on success)."""

    def until(self, index: int, project: str) -> float:
        return max(self.key_until.get(index, 0.0), self.project_until.get(project, 0.0))


def check_windows(limits: QuotaLimits, sent: list[list[float]]) -> None:
    """No closed interval of ``window_s`` holds more than rpm requests or tpm tokens, and no
    Pacific day more than rpd requests."""
    times = sorted(sent)
    for i, (t, _) in enumerate(times):
        inside = [tok for (u, tok) in times[: i + 1] if u >= t - limits.window_s]
        if limits.rpm is not None:
            assert len(inside) <= limits.rpm, (t, len(inside))
        if limits.tpm is not None and len(inside) > 1:
            assert sum(inside) <= limits.tpm + 1e-6, (t, sum(inside))
    if limits.rpd is not None:
        days: dict[str, int] = {}
        for t, _ in times:
            days[pacific_day(t)] = days.get(pacific_day(t), 0) + 1
        assert max(days.values(), default=0) <= limits.rpd


limits_strategy = st.builds(
    QuotaLimits,
    rpm=st.one_of(st.none(), st.integers(1, 4)),
    tpm=st.one_of(st.none(), st.integers(50, 300)),
    rpd=st.one_of(st.none(), st.integers(1, 8)),
    window_s=st.sampled_from([1.0, 10.0, 60.0]),
    priority=st.integers(0, 1),
)

STARTS = [
    NOON,
    datetime(2026, 3, 7, 23, 58, tzinfo=PACIFIC).timestamp(),  # into the DST night
    datetime(2026, 10, 31, 23, 59, 30, tzinfo=PACIFIC).timestamp(),
]
STEPS = [0.0, 0.01, 0.3, 1.0, 1.01, 5.0, 10.0, 30.0, 60.0, 61.0, 3600.0, 43_200.0]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    strategy=st.sampled_from(["round_robin", "least_used"]),
    layout=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    limits=st.lists(limits_strategy, min_size=3, max_size=3),
    default_cooldown=st.sampled_from([1.0, 30.0, 60.0]),
    fault_cooldown=st.sampled_from([0.0, 5.0]),
    start=st.sampled_from(STARTS),
    data=st.data(),
)
def test_random_interleavings_keep_every_promise(
    strategy: str,
    layout: list[int],
    limits: list[QuotaLimits],
    default_cooldown: float,
    fault_cooldown: float,
    start: float,
    data: st.DataObject,
) -> None:
    names = [f"p{i}" for i in range(len(layout))]
    by_project = dict(zip(names, limits, strict=False))
    scheduler = make(
        dict(zip(names, layout, strict=True)),
        strategy,
        by_project,
        default_cooldown_s=default_cooldown,
        fault_cooldown_s=fault_cooldown,
    )
    project_of = [name for name, n in zip(names, layout, strict=True) for _ in range(n)]
    clock = ManualClock(start)
    model = Model()
    in_flight: list[tuple[Pick, list[float]]] = []
    max_tpm = min((lim.tpm for lim in limits if lim.tpm is not None), default=300)

    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        now = clock.now()
        op = data.draw(st.sampled_from(["choose", "choose", "finish", "advance"]), label="op")
        if op == "advance":
            clock.advance(data.draw(st.sampled_from(STEPS), label="dt"))
        elif op == "choose":
            tokens = float(data.draw(st.integers(0, max_tpm), label="tokens"))
            avoid = data.draw(st.sets(st.integers(0, len(project_of) - 1), max_size=2))
            decision = scheduler.choose(now, tokens, avoid)
            usable = [i for i in range(len(project_of)) if i not in model.quarantined]
            if isinstance(decision, Pick):
                i = decision.index
                assert i not in model.quarantined, "chose a quarantined key"
                assert now >= model.until(i, project_of[i]), "chose a cooling key"
                record = [now, tokens]
                model.sent.setdefault(project_of[i], []).append(record)
                in_flight.append((decision, record))
            elif isinstance(decision, NoKeys):
                assert not usable
            else:
                assert usable
                assert decision.until > now
                if not math.isinf(decision.until):
                    # a Wait tells the truth: at that time this request fits somewhere
                    clock.set(decision.until)
                    again = scheduler.choose(clock.now(), tokens, avoid)
                    assert isinstance(again, Pick), (decision, again)
                    j = again.index
                    assert clock.now() >= model.until(j, project_of[j])
                    record = [clock.now(), tokens]
                    model.sent.setdefault(project_of[j], []).append(record)
                    in_flight.append((again, record))
        elif in_flight:
            chosen, record = in_flight.pop(data.draw(st.integers(0, len(in_flight) - 1)))
            i, project = chosen.index, project_of[chosen.index]
            outcome = data.draw(
                st.sampled_from(
                    ["ok", "ok", "429", "429-day", "bad_key", "fault", "bad", "gone", "unsent"]
                )
            )
            if outcome == "ok":
                corrected = data.draw(st.one_of(st.none(), st.floats(0, record[1])))
                scheduler.on_success(chosen, corrected)
                if corrected is not None:
                    record[1] = corrected
            elif outcome == "gone":  # sent, then cancelled: the server counted it
                scheduler.release(chosen, sent=True)
            elif outcome == "unsent":  # cancelled before the send: as if it never existed
                scheduler.release(chosen)
                sent = model.sent[project]
                del sent[next(k for k, r in enumerate(sent) if r is record)]
            elif outcome in ("429", "429-day"):
                retry = data.draw(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 7.0, 33.27])))
                if outcome == "429":
                    failure = rate_limited(retry)
                    until = now + max(1.0, default_cooldown if retry is None else retry)
                else:
                    failure = rate_limited(retry, QuotaViolation(RPD_ID, None))
                    until = next_pacific_midnight(now)
                scheduler.on_failure(chosen, failure, now)
                model.key_until[i] = max(model.key_until.get(i, 0.0), until)
                model.project_until[project] = max(model.project_until.get(project, 0.0), until)
            elif outcome == "bad_key":
                scheduler.on_failure(chosen, BAD_KEY, now)
                model.quarantined.add(i)
            elif outcome == "fault":
                scheduler.on_failure(chosen, SERVER, now)
                if fault_cooldown:
                    model.key_until[i] = max(model.key_until.get(i, 0.0), now + fault_cooldown)
            else:
                scheduler.on_failure(chosen, BAD_REQUEST, now)

        # status agrees with the model: cooling exactly until the latest cooldown asked for
        now = clock.now()
        for row in scheduler.status(now):
            i = row["index"]
            until = model.until(i, project_of[i])
            if i in model.quarantined:
                assert row["state"] == "invalid"
            elif until > now:
                assert row["state"] == "cooling"
                assert row["ready_in_s"] == pytest.approx(until - now, abs=1e-3)
            else:
                assert row["state"] == "ready"

    for project, sent in model.sent.items():
        check_windows(by_project[project], sent)


@settings(max_examples=100, deadline=None)
@given(
    layout=st.sampled_from([{"a": 3}, {"a": 2, "b": 1}, {"a": 1, "b": 2}]),
    events=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.sampled_from(["429", "429-none", "429-day", "fault"]),
            st.sampled_from([0.0, 0.5, 3.0, 33.27, 600.0]),
            st.sampled_from([0.0, 0.2, 2.0, 40.0, 7200.0]),
        ),
        max_size=30,
    ),
    start=st.sampled_from(STARTS),
)
def test_a_cooldown_never_shortens(
    layout: dict[str, int], events: list[tuple[int, str, float, float]], start: float
) -> None:
    """Whatever failures arrive, each key stays cooling until the latest end asked of it
    (by its own cooldowns and its project's) and not a moment longer."""
    scheduler = make(layout, default_cooldown_s=20.0, fault_cooldown_s=4.0)
    project_of = [name for name, n in layout.items() for _ in range(n)]
    clock = ManualClock(start)
    model = Model()
    for index, kind, delay, gap in events:
        now = clock.now()
        project = project_of[index]
        failure = {
            "429": rate_limited(delay),
            "429-none": rate_limited(None),
            "429-day": rate_limited(delay, QuotaViolation(RPD_ID, None)),
            "fault": SERVER,
        }[kind]
        scheduler.on_failure(Pick(index, [now, 0.0]), failure, now)
        if kind == "fault":
            model.key_until[index] = max(model.key_until.get(index, 0.0), now + 4.0)
        else:
            until = {
                "429": now + max(1.0, delay),  # the floor: MIN_RATE_LIMIT_COOLDOWN_S
                "429-none": now + 20.0,
                "429-day": next_pacific_midnight(now),
            }[kind]
            model.key_until[index] = max(model.key_until.get(index, 0.0), until)
            model.project_until[project] = max(model.project_until.get(project, 0.0), until)
        for probe in (now, now + gap / 2, now + gap):
            for row in scheduler.status(probe):
                until = model.until(row["index"], row["project"])
                assert row["state"] == ("cooling" if until > probe else "ready")
                expected = max(0.0, until - probe) if until > probe else 0.0
                assert row["ready_in_s"] == pytest.approx(expected, abs=1e-3)
        clock.advance(gap)


@settings(max_examples=100, deadline=None)
@given(
    rpm=st.integers(1, 6),
    window_s=st.sampled_from([1.0, 60.0]),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.1, 0.5, 1.0, 7.5, 59.9, 60.0]), max_size=40),
)
def test_a_window_admits_exactly_up_to_its_limit(
    rpm: int, window_s: float, gaps: list[float]
) -> None:
    """Greedy use never exceeds rpm in any window, and a full window is refused only when
    it really holds rpm requests within its span."""
    window = ProjectWindow(QuotaLimits(rpm=rpm, window_s=window_s))
    now = NOON
    sent: list[list[float]] = []
    for gap in gaps:
        now += gap
        at = window.ready_at(now, 0)
        recent = [t for t, _ in sent if t > now - window_s - 0.25]
        if at <= now:
            window.reserve(now, 0)
            sent.append([now, 0.0])
        else:
            assert len(recent) >= rpm
            assert at <= max(recent) + window_s + 0.25
    check_windows(QuotaLimits(rpm=rpm, window_s=window_s), sent)


@settings(max_examples=100, deadline=None)
@given(
    priorities=st.lists(st.integers(0, 2), min_size=1, max_size=8),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["choose", "choose", "ok", "429", "bad_key", "reset", "advance"]),
            st.integers(0, 7),
            st.frozensets(st.integers(0, 7), max_size=3),
        ),
        max_size=80,
    ),
)
@example(  # a key whose request finished must be preferred to one still in flight
    priorities=[0, 0],
    ops=[
        ("choose", 0, frozenset()),
        ("choose", 0, frozenset()),
        ("ok", 1, frozenset()),
        ("choose", 0, frozenset()),
    ],
)
@example(  # a key back from its cooldown is a candidate again
    priorities=[0, 0],
    ops=[
        ("choose", 0, frozenset()),
        ("429", 0, frozenset()),
        ("advance", 1, frozenset()),
        *[("choose", 0, frozenset())] * 3,
    ],
)
def test_least_used_always_takes_the_least_loaded_ready_key(
    priorities: list[int], ops: list[tuple[str, int, frozenset[int]]]
) -> None:
    """Against a brute-force reference: the first priority level with a ready key, the
    ready key of least load (requests + in flight) there, ties to the lowest index; an
    avoided key only when no other key of that level is ready."""
    limits = {f"p{i}": QuotaLimits(priority=prio) for i, prio in enumerate(priorities)}
    scheduler = make({f"p{i}": 1 for i in range(len(priorities))}, "least_used", limits)
    clock = ManualClock(NOON)
    in_flight: list[Pick] = []
    for op, n, avoid in ops:
        now = clock.now()
        if op == "advance":
            clock.advance(n * 7.0)
        elif op == "reset":
            scheduler.reset(n % len(priorities))
        elif op == "choose":
            rows = scheduler.status(now)
            flying = [p.index for p in in_flight]
            ready = [r for r in rows if r["state"] == "ready"]
            expected: int | None = None
            for level in sorted({priorities[r["index"]] for r in ready}):
                here = [r for r in ready if priorities[r["index"]] == level]
                preferred = [r for r in here if r["index"] not in avoid] or here
                best = min(
                    preferred,
                    key=lambda r: (r["requests"] + flying.count(r["index"]), r["index"]),
                )
                expected = best["index"]
                break
            decision = scheduler.choose(now, 0.0, avoid)
            if expected is None:
                assert not isinstance(decision, Pick)
            else:
                assert isinstance(decision, Pick)
                assert decision.index == expected
                in_flight.append(decision)
        elif in_flight:
            done = in_flight.pop(n % len(in_flight))
            if op == "ok":
                scheduler.on_success(done)
            elif op == "429":
                scheduler.on_failure(done, rate_limited(float(n)), now)
            else:
                scheduler.on_failure(done, BAD_KEY, now)


def test_round_robin_is_fair_over_many_keys() -> None:
    scheduler = make({f"p{i}": 1 for i in range(10)})
    chosen = picks(scheduler, NOON, 100)
    assert [chosen.count(i) for i in range(10)] == [10] * 10
    assert chosen[:10] == list(range(10))

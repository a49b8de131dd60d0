"""Usage limits at the edges the mutation run found open (``mutation.sh _usage_limits``)."""

from __future__ import annotations

import pickle
from datetime import datetime, timezone

import pytest

from langchain_gemini_pool import (
    ManualClock,
    UsageLedger,
    UsageLimitExceededError,
    UsageLimits,
    compute_overage,
    resolve_limits,
)
from tests.unit_tests.test_usage_ledger import served


def test_the_refusal_says_which_period_and_what_to_do() -> None:
    daily = UsageLimitExceededError(
        limit_name="requests_per_day", current=1234567, limit=1000, user="alice"
    )
    assert str(daily) == (
        "User 'alice' reached the usage limit requests_per_day: 1,234,567 used today, limit "
        "1,000. The request was not sent. Wait for the next day, raise the limit in "
        "usage_limits=, or make it soft (UsageLimits(..., hard=False)) to let requests "
        "through and report the overage."
    )
    monthly = UsageLimitExceededError(
        limit_name="cost_per_month", current=1.25, limit=1.2, user="bob", resets_at=42.0
    )
    assert str(monthly).startswith(
        "User 'bob' reached the usage limit cost_per_month: 1.25 used this month, limit 1.2. "
        "The request was not sent. Wait for the next month, raise"
    )
    again = pickle.loads(pickle.dumps(monthly))  # noqa: S301 - our own object
    assert (again.limit_name, again.current, again.limit, again.user, again.resets_at) == (
        "cost_per_month",
        1.25,
        1.2,
        "bob",
        datetime.fromtimestamp(42.0, timezone.utc),  # an epoch given is kept as an aware UTC time
    )
    assert str(again) == str(monthly)
    summed = UsageLimitExceededError(  # a float sum of costs prints as money, not as noise
        limit_name="cost_per_month", current=0.1 + 0.2, limit=0.3, user="bob"
    )
    assert "cost_per_month: 0.3 used this month, limit 0.3." in str(summed)


def test_a_zero_limit_is_allowed_and_hard_must_be_a_bool() -> None:
    assert UsageLimits(requests_per_day=0).requests_per_day == 0
    with pytest.raises(ValueError, match=r"^UsageLimits\.hard must be True or False, got 'y'"):
        UsageLimits(hard="y")  # type: ignore[arg-type]


def test_overage_is_the_users_own() -> None:
    ledger = UsageLedger.in_memory(clock=ManualClock(datetime(2026, 1, 10, tzinfo=timezone.utc)))
    ledger.record(served(tokens=300), user="alice")
    ledger.record(served(tokens=900), user="bob")
    limits = UsageLimits(tokens_per_day=200, hard=False)
    assert compute_overage(ledger, "alice", limits) == {"tokens_per_day": 100}
    assert compute_overage(ledger, "carol", limits) == {}


def test_a_wrong_limits_value_names_its_type() -> None:
    with pytest.raises(TypeError, match=r"usage_limits\['alice'\] must be a UsageLimits, not int"):
        resolve_limits({"alice": 3}, "alice")  # type: ignore[dict-item]
    with pytest.raises(
        TypeError, match=r"^usage_limits must be a UsageLimits \(for every user\).* got str\.$"
    ):
        resolve_limits("lots", "alice")  # type: ignore[arg-type]

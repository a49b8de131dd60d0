"""Pacific day numbers: the key-name part of per-day counters, right across DST changes."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from langchain_gemini_pool._clock import PACIFIC, next_pacific_midnight, pacific_day
from langchain_gemini_pool._state_types import day_number, pacific_offset


@pytest.mark.parametrize(
    "day",
    [
        "2026-03-07",
        "2026-03-08",
        "2026-03-09",
        "2026-10-31",
        "2026-11-01",
        "2026-11-02",
        "2026-06-15",
    ],
)
def test_day_numbers_change_at_pacific_midnight(day: str) -> None:
    start = datetime.fromisoformat(day).replace(tzinfo=PACIFIC).timestamp()
    for t in (start - 1, start, start + 3 * 3600, next_pacific_midnight(start) - 1):
        expected = datetime.fromisoformat(pacific_day(t)).toordinal()
        assert day_number(t, pacific_offset(t)) - day_number(start, pacific_offset(start)) == (
            expected - datetime.fromisoformat(day).toordinal()
        )


def test_offsets_follow_daylight_saving() -> None:
    winter = datetime(2026, 1, 10, 12, tzinfo=PACIFIC).timestamp()
    summer = winter + timedelta(days=180).total_seconds()
    assert pacific_offset(winter) == -8 * 3600
    assert pacific_offset(summer) == -7 * 3600


def test_pacific_day_kept_between_calls_is_always_the_day_of_the_time_asked() -> None:
    """``pacific_day`` keeps the last day it computed; asked in any order (forward, back, across
    both daylight-saving changes and midnights) it must still give each time's own day."""
    start = datetime(2026, 3, 7, 20, 0, tzinfo=PACIFIC).timestamp()
    times = [start + i * 1_799.5 for i in range(200)]  # 100 h: past the March change
    autumn = datetime(2026, 10, 31, 20, 0, tzinfo=PACIFIC).timestamp()
    times += [autumn + i * 1_799.5 for i in range(200)]  # past the November change
    times += [t - 1e-6 for t in times[::7]] + times[::-3]  # just before, and backwards
    for t in times:
        assert pacific_day(t) == datetime.fromtimestamp(t, PACIFIC).date().isoformat(), t

"""Injectable time: every cooldown, window and daily reset reads a clock.

The pool, the scheduler, the ledger and the emulator all take a ``Clock``. Production code
uses :class:`SystemClock`; tests use :class:`ManualClock` and move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time in epoch seconds, and ways to wait on it."""

    def now(self) -> float:
        """Seconds since the epoch, like ``time.time()``."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` of this clock's time."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time without blocking the event loop."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.sleep`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to: ``advance`` it, or let a wait advance it.

    ``sleep`` and ``asleep`` advance the clock by the time asked for and return at once
    (``asleep`` still yields to the event loop once), so code that waits for a cooldown
    finishes instantly in tests while seeing exactly the time it asked for pass.

    Args:
        start: The starting time in epoch seconds, or an aware ``datetime``. Defaults to
            the current wall-clock time.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        if start is None:
            start = time.time()
        elif isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("ManualClock needs an aware datetime (one with a tzinfo).")
            start = start.timestamp()
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []
        """Every wait asked of this clock, in order, in seconds."""

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backward)."""
        if seconds < 0:
            raise ValueError("A clock only moves forward; got a negative advance.")
        with self._lock:
            self._now += seconds

    def set(self, when: float | datetime) -> None:
        """Jump to ``when`` (epoch seconds or an aware datetime); it must not be earlier."""
        target = when.timestamp() if isinstance(when, datetime) else float(when)
        with self._lock:
            if target < self._now:
                raise ValueError("A clock only moves forward; that time is earlier than now.")
            self._now = target

    def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.slept.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock({self.now():.3f})"


def next_pacific_midnight(now: float) -> float:
    """The epoch time of the next midnight in America/Los_Angeles after ``now``.

    Google's per-day quotas reset then, whatever the daylight-saving state.
    """
    local = datetime.fromtimestamp(now, PACIFIC)
    next_day = (local + timedelta(days=1)).date()
    midnight = datetime(next_day.year, next_day.month, next_day.day, tzinfo=PACIFIC)
    return midnight.timestamp()


_day_seen: tuple[float, float, str] = (0.0, 0.0, "")
"""The last Pacific day asked for: its start, its end (epoch seconds) and its name."""


def pacific_day(now: float) -> str:
    """The date in America/Los_Angeles at ``now``, as ``YYYY-MM-DD`` (a per-day quota's bucket).

    Asked several times per request: the day last asked for is kept with its bounds, so
    the time-zone arithmetic runs once a day, not once a call (one tuple: thread-safe).
    """
    global _day_seen
    start, end, day = _day_seen
    if start <= now < end:
        return day
    local = datetime.fromtimestamp(now, PACIFIC)
    day = local.date().isoformat()
    start = datetime(local.year, local.month, local.day, tzinfo=PACIFIC).timestamp()
    _day_seen = (start, next_pacific_midnight(now), day)
    return day

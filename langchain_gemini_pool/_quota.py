"""Client-side quota: sliding windows per project, and the limits users configure.

Pure arithmetic on timestamps; the caller passes ``now``. Nothing here does I/O or sleeps.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, replace

from langchain_gemini_pool._clock import next_pacific_midnight, pacific_day

WINDOW_MARGIN_S = 0.25
"""Most a window is stretched to absorb the time a request takes to reach the server."""


@dataclass(frozen=True)
class QuotaLimits:
    """The limits of one Google Cloud project for the pool's model.

    Google applies limits per project, not per key. Example values (from Google's rate-limit
    page, which changes them — check https://ai.google.dev/gemini-api/docs/rate-limits):
    free tier gemini-2.5-flash ``QuotaLimits(rpm=10, tpm=250_000, rpd=250)``; a paid tier 1
    project ``QuotaLimits(rpm=1_000, tpm=1_000_000, rpd=10_000, priority=0)``.

    Args:
        rpm: Requests per window (per minute at Google).
        tpm: Input tokens per window.
        rpd: Requests per day, resetting at midnight America/Los_Angeles.
        window_s: Length of the per-minute window: 60 for Google; smaller only to match a
            scaled-down emulator in tests and benchmarks.
        priority: Projects with the smallest number are used first; a larger number only
            when every smaller one is out of room (e.g. paid 0, free overflow 1).
    """

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None
    window_s: float = 60.0
    priority: int = 0

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "rpd"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"QuotaLimits.{name} must be a whole number >= 0 or None.")
        if not self.window_s > 0:
            raise ValueError("QuotaLimits.window_s must be a positive number of seconds.")

    def lowered(self, dimension: str, value: int) -> QuotaLimits:
        """A copy with one limit lowered to ``value``."""
        return replace(self, **{dimension: value})


class ProjectWindow:
    """What one project has used: a sliding window of requests and tokens, and today's count.

    Windows slide: a request is admitted only if, counting it, no interval of ``window_s``
    holds more than ``rpm`` requests or ``tpm`` input tokens — so the pool stays under the
    server's limit however the server aligns its own windows. A small margin is added to the
    window to absorb the time a request takes to reach the server.
    """

    def __init__(self, limits: QuotaLimits | None) -> None:
        self.limits = limits
        self._events: deque[list[float]] = deque()  # entries [time, tokens, in today's count]
        self._live: set[int] = set()  # id() of each entry in _events: O(1) "still counted?"
        self._tokens = 0.0
        self._day = ""
        self._day_count = 0
        self.warned_day = ""

    @property
    def _span(self) -> float:
        window = self.limits.window_s if self.limits else 60.0
        return window + min(WINDOW_MARGIN_S, 0.01 * window)

    def _prune(self, now: float) -> None:
        horizon = now - self._span
        events = self._events
        while events and events[0][0] <= horizon:
            gone = events.popleft()
            self._tokens -= gone[1]
            self._live.discard(id(gone))
        if not events:
            self._tokens = 0.0

    def _roll_day(self, now: float) -> None:
        day = pacific_day(now)
        if day != self._day:
            self._day, self._day_count = day, 0

    def ready_at(self, now: float, tokens: float) -> float:
        """The earliest time at or after ``now`` when a request of ``tokens`` fits every limit."""
        limits = self.limits
        if limits is None:
            return now
        self._prune(now)
        self._roll_day(now)
        at = now
        if limits.rpd is not None and self._day_count >= limits.rpd:
            at = max(at, next_pacific_midnight(now)) if limits.rpd > 0 else math.inf
        if limits.rpm is not None:
            if limits.rpm == 0:
                return math.inf
            excess = len(self._events) - limits.rpm
            if excess >= 0:
                at = max(at, self._events[excess][0] + self._span)
        if limits.tpm == 0:
            return math.inf  # checked before the window: an empty window must not admit
        if limits.tpm is not None and self._events:
            need = self._tokens + tokens - limits.tpm
            if need > 1e-9:
                freed = 0.0
                for event in self._events:
                    freed += event[1]
                    if freed >= need:
                        at = max(at, event[0] + self._span)
                        break
                else:
                    # Only an empty window admits it. (``_tokens`` is a running sum, so it
                    # can drift a hair above the events' own sum: never trust it to stop.)
                    at = max(at, self._events[-1][0] + self._span)
        return at

    def reserve(self, now: float, tokens: float) -> list[float]:
        """Count a request sent at ``now``; returns its entry so its tokens can be corrected."""
        if self.limits is None:  # purely reactive: nothing to count
            return [now, float(tokens), 0.0]
        entry = [now, float(tokens), 1.0]
        self._roll_day(now)
        self._day_count += 1
        # ``now`` may be a booked future slot: never prune with it (events that expire by
        # then still count for requests sent before it), and keep the events in time order.
        events = self._events
        if not events or events[-1][0] <= now:
            events.append(entry)
        else:
            events.insert(bisect.bisect_right([e[0] for e in events], now), entry)
        self._live.add(id(entry))
        self._tokens += entry[1]
        return entry

    def correct(self, entry: list[float], tokens: float) -> None:
        """Replace a reservation's estimated tokens with what the server reported."""
        if self.limits is None:
            return
        delta = float(tokens) - entry[1]
        entry[1] = float(tokens)
        # The caller holds ``entry``, so no other live object shares its id().
        if id(entry) in self._live:
            self._tokens += delta

    def give_back(self, entry: list[float]) -> bool:
        """Forget a reservation whose request was never sent (cancelled, interrupted, failed
        before the send): the window and today's count are as if it never existed.

        Returns False when there was nothing to give back (no limits, or given back already).
        """
        if len(entry) < 3 or not entry[2]:
            return False
        entry[2] = 0.0
        if pacific_day(entry[0]) == self._day and self._day_count > 0:
            self._day_count -= 1
        if id(entry) in self._live:  # still in the window (not slid out of it yet)
            events = self._events
            for i, event in enumerate(events):  # by identity: equal entries are two requests
                if event is entry:
                    del events[i]
                    break
            self._live.discard(id(entry))
            self._tokens = max(0.0, self._tokens - entry[1]) if events else 0.0
        return True

    def room(self, now: float) -> dict[str, int | None]:
        """What is left now in each window (None where no limit is set)."""
        limits = self.limits
        if limits is None:
            return {"rpm": None, "tpm": None, "rpd": None}
        self._prune(now)
        self._roll_day(now)
        return {
            "rpm": None if limits.rpm is None else max(0, limits.rpm - len(self._events)),
            "tpm": None if limits.tpm is None else max(0, int(limits.tpm - self._tokens)),
            "rpd": None if limits.rpd is None else max(0, limits.rpd - self._day_count),
        }

    def day_fraction(self, now: float) -> float:
        """Share of today's request quota used (0 when there is no daily limit)."""
        if self.limits is None or not self.limits.rpd:
            return 0.0
        self._roll_day(now)
        return self._day_count / self.limits.rpd

"""What ``InMemoryState`` keeps per key and per (project, model): its window entries in
stamp order, the day counts, the cooldown and learned limits (no locking here: the state's
lock is held around every use)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._state_decide import KeyView, ScopeView
from langchain_gemini_pool._state_types import INFLIGHT_TTL_S, effective_limits


@dataclass
class KeyRecord:
    view: KeyView = field(default_factory=KeyView)
    quarantined_at: float = 0.0
    flights: dict[str, float] = field(default_factory=dict)


@dataclass
class ScopeRecord:
    # entries [stamp, tokens, id, in flight]: settled ones in ``events``, those in flight in
    # ``flying``, each list in stamp order
    events: list[list[Any]] = field(default_factory=list)
    flying: list[list[Any]] = field(default_factory=list)
    by_id: dict[str, list[Any]] = field(default_factory=dict)
    token_sum: int = 0
    days: dict[int, int] = field(default_factory=dict)  # Pacific day number -> requests
    warned: set[int] = field(default_factory=set)  # days the 80% warning was given
    cool_until: float = 0.0
    cool_reason: str | None = None
    learned: dict[str, int] = field(default_factory=dict)
    limited: tuple[QuotaLimits | None, QuotaLimits | None] | None = None
    """(configured, effective) limits last asked for: ``effective_limits`` once per scope
    until ``learned`` changes (a settle that learns resets it)."""

    def limits_for(self, configured: QuotaLimits | None) -> QuotaLimits | None:
        """``effective_limits(configured, self.learned)``, kept until ``learned`` changes."""
        known = self.limited
        if known is not None and known[0] is configured:
            return known[1]
        limits = effective_limits(configured, self.learned)
        self.limited = (configured, limits)
        return limits

    def prune(self, horizon: float, now: float) -> None:
        """Drop settled entries stamped at or before ``horizon``, and flights never settled."""
        events, flying = self.events, self.flying
        if (not events or events[0][0] > horizon) and (
            not flying or flying[0][0] > now - INFLIGHT_TTL_S
        ):
            return  # nothing to drop (the common case)
        for entries, cut_at in ((self.events, horizon), (self.flying, now - INFLIGHT_TTL_S)):
            cut = 0
            while cut < len(entries) and entries[cut][0] <= cut_at:
                gone = entries[cut]
                self.token_sum -= gone[1]
                del self.by_id[gone[2]]
                cut += 1
            if cut:
                del entries[:cut]

    def add(self, at: float, tokens: int, rid: str) -> None:
        entry = [at, tokens, rid, True]
        _insert(self.flying, entry)
        self.by_id[rid] = entry
        self.token_sum += tokens

    def land(self, entry: list[Any], now: float) -> None:
        """A flight ends: its entry counts ``span`` from now (or from its stamp, if later)."""
        self.flying.remove(entry)
        entry[0], entry[3] = max(entry[0], now), False
        _insert(self.events, entry)

    def view(self, day: int) -> ScopeView:
        return ScopeView(
            events=self.events,
            flying=self.flying,
            token_sum=self.token_sum,
            day_count=self.days.get(day, 0),
            cool_until=self.cool_until,
            cool_reason=self.cool_reason,
            learned=self.learned,
        )


def _insert(entries: list[list[Any]], entry: list[Any]) -> None:
    if not entries or entries[-1][0] <= entry[0]:
        entries.append(entry)
    else:  # a booked future slot, then an earlier one: keep stamp order
        entries.insert(bisect.bisect_right([e[0] for e in entries], entry[0]), entry)

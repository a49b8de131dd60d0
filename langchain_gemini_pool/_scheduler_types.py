"""What the schedulers decide and report: key and project records, the three decisions
(``Pick``, ``Wait``, ``NoKeys``), the rate-limit cooldown rule and the ``pool_status()`` row.

Shared by the in-process ``Scheduler`` and the ``SharedScheduler``; no logic with state here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool._errors import Failure
from langchain_gemini_pool._quota import ProjectWindow, QuotaLimits

Strategy = Literal["round_robin", "least_used"]
LimitsArg = QuotaLimits | Mapping[str, QuotaLimits] | None

MIN_RATE_LIMIT_COOLDOWN_S = 1.0
"""Floor on a rate-limit cooldown. A 429 sent in the last milliseconds of a window carries a
RetryInfo that rounds to ``"0s"``; retrying at once draws 429 after 429 until the attempt cap
raises ``GoogleRateLimitError`` although ``max_wait`` had time to spare."""


def rate_limit_cooldown_s(failure: Failure, default_s: float, now: float) -> tuple[float, str]:
    """How long a 429 cools its (project, model), and why: until Pacific midnight for a
    per-day violation, else the server's hint (or ``default_s``), never under the floor."""
    if failure.per_day:
        return next_pacific_midnight(now) - now, "daily quota exhausted until midnight Pacific"
    delay = default_s if failure.retry_after_s is None else failure.retry_after_s
    return max(MIN_RATE_LIMIT_COOLDOWN_S, delay), failure.reason


@dataclass
class KeyRecord:
    """One key as both schedulers keep it: who it is, and this process's counts of its use."""

    index: int
    project: str
    fingerprint: str
    """Masked (``…`` + last 4), for people."""
    _: KW_ONLY
    removed: bool = False
    requests: int = 0
    successes: int = 0
    rate_limited: int = 0
    errors: int = 0
    in_flight: int = 0


@dataclass
class KeyState(KeyRecord):
    """What the scheduler knows of one key."""

    cooling_until: float = 0.0
    cool_reason: str | None = None
    invalid_reason: str | None = None


@dataclass
class ProjectState:
    """What the scheduler knows of one project (keys of a project share its quota)."""

    name: str
    window: ProjectWindow
    cooling_until: float = 0.0
    cool_reason: str | None = None

    @property
    def priority(self) -> int:
        limits = self.window.limits
        return limits.priority if limits else 0


@dataclass(frozen=True)
class Pick:
    """Use key ``index``; ``ticket`` lets the outcome correct the quota reservation."""

    index: int
    ticket: list[float] = field(compare=False)
    at: float = field(default=0.0, compare=False)
    """When to send: later than ``now`` for a slot booked by ``choose(book_until=...)``."""
    quota_warning: dict[str, Any] | None = field(default=None, compare=False)
    """Set on the pick that took its project to 80% of its daily quota (once a day)."""
    reservation: Any = field(default=None, compare=False)
    """The shared-state backend's ``Reservation`` (``SharedScheduler`` only)."""


@dataclass(frozen=True)
class Wait:
    """No key can take the request before ``until`` (epoch seconds; ``inf`` = never)."""

    until: float
    reason: str


@dataclass(frozen=True)
class NoKeys:
    """Every key is quarantined (or removed)."""

    reasons: dict[str, str]


def status_row(
    key: KeyRecord,
    now: float,
    *,
    quarantine: str | None,
    cooling: tuple[float, str | None],
    scope_cooling: tuple[float, str | None],
    in_flight: int,
    room: Mapping[str, int | None],
    shared: bool,
) -> dict[str, Any]:
    """One ``pool_status()`` row: ``key`` gives its identity and this process's counters; the
    rest is what the scheduler (or the shared state) knows of the key and its scope now.

    The state is ``invalid`` (quarantined), ``cooling`` (until the later of the key's and its
    scope's cooldowns, with the reason of the later) or ``ready``.
    """
    (key_until, key_reason), (scope_until, scope_reason) = cooling, scope_cooling
    until = max(key_until, scope_until)
    reason: str | None
    if quarantine is not None:
        state, ready_in, reason = "invalid", None, quarantine
    elif until > now:
        state, ready_in = "cooling", round(until - now, 3)
        reason = scope_reason if scope_until >= key_until else key_reason
    else:
        state, ready_in, reason = "ready", 0.0, None
    return {
        "index": key.index,
        "fingerprint": key.fingerprint,
        "project": key.project,
        "state": state,
        "ready_in_s": ready_in,
        "requests": key.requests,
        "successes": key.successes,
        "rate_limited": key.rate_limited,
        "errors": key.errors,
        "reason": reason,
        "in_flight": in_flight,
        "room": dict(room),
        "shared": shared,
    }

"""The seam between the pool's decisions and where their state lives.

A backend answers two questions per attempt, each in ONE round trip: ``admit`` (before the
call: which candidate key may send now, taking a slot in every window of its
(project, model) or in none) and ``settle`` (after the call: correct or give back the
reservation, cool, quarantine, learn a limit). ``snapshot`` feeds ``pool_status()``.

Only fingerprints (HMAC-SHA256 of the key text with a per-deployment salt kept in the
backend), project and model names, counts and reason codes are stored: never key text,
never exception text.

How a pool drives it, per attempt (the chat model keeps the member models, the HTTP
clients and the round-robin cursor; everything else is here):

1. Order the keys as the strategy would try them (priority level first; within a level
   the cursor's order, keys already tried for this request last) and make one
   ``Candidate(state.fingerprint(key), Scope(project, model), limits)`` each.
2. ``admit(candidates, estimated_tokens, book_until_s=time_left)``: ``Admit`` -> wait
   ``delay`` (a booked slot) and send with ``candidates[index]``; ``WaitUntil`` -> wait
   ``delay`` and ask again, or raise ``AllKeysRateLimitedError`` past ``max_wait``;
   ``AllQuarantined`` -> raise ``NoValidKeysError`` with its reasons.
3. ``settle(Settle(fp, scope, reservation, ...))`` once the attempt ends (it restamps the
   slot at the backend's now: see ``span_of``): success -> ``prompt_tokens``; never sent ->
   ``cancel=True``; 429 -> ``cool_scope_s`` and
   ``cool_key_s`` (RetryInfo, or until Pacific midnight for a per-day violation) and
   ``learned`` (quotaValue); bad key -> ``quarantine=reason``; server fault ->
   ``cool_key_s`` when the pool has a fault cooldown.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from langchain_gemini_pool._clock import PACIFIC
from langchain_gemini_pool._quota import QuotaLimits

QUARANTINE_TTL_S = 30 * 86400
"""How long a quarantine is remembered without the key being offered again."""
INFLIGHT_TTL_S = 600.0
"""An in-flight reservation never settled (its process died) stops counting after this."""
LEARNED_TTL_S = 7 * 86400
"""How long a limit learned from the server (``quotaValue``) lowers the configured one."""
WARN_FRACTION = 0.8
"""Share of the daily request quota that triggers the once-a-day warning."""

_REASON_OK = re.compile(r"[^A-Za-z0-9 _.,:;()%/+=-]")


@dataclass(frozen=True)
class Scope:
    """What Google's quotas apply to: one project and one model."""

    project: str
    model: str


@dataclass(frozen=True)
class Candidate:
    """A key the caller would send with, in the caller's order of preference."""

    fingerprint: str
    scope: Scope
    limits: QuotaLimits | None = None
    """The configured limits of ``scope`` (the backend lowers them by learned limits)."""


@dataclass(frozen=True)
class Reservation:
    """A slot taken by ``admit``; hand it back to ``settle``."""

    fingerprint: str
    scope: Scope
    id: str
    at: float
    """When the slot is (backend time): after ``Admit.now`` for a booked future slot."""
    tokens: int
    day: int
    counted: bool
    """Whether the slot counts in the scope's windows (False: the scope has no limits)."""
    home: str = "backend"
    """``"backend"``, ``"local"`` (taken in the outage fallback) or ``"open"`` (no limits)."""


@dataclass(frozen=True)
class Admit:
    """``candidates[index]`` may send at ``reservation.at``."""

    index: int
    reservation: Reservation
    now: float
    warning: dict[str, Any] | None = None
    """Set once per (project, model, Pacific day), deployment-wide, at 80% of ``rpd``."""

    @property
    def delay(self) -> float:
        """Seconds to wait before sending (0 unless a future slot was booked)."""
        return max(0.0, self.reservation.at - self.now)


@dataclass(frozen=True)
class WaitUntil:
    """No candidate can send before ``until`` (backend time; ``inf`` = never)."""

    until: float
    now: float
    reason: str

    @property
    def delay(self) -> float:
        return max(0.0, self.until - self.now)


@dataclass(frozen=True)
class AllQuarantined:
    """Every candidate is quarantined: ``{fingerprint: reason code}``."""

    reasons: dict[str, str]
    now: float


Decision = Admit | WaitUntil | AllQuarantined


@dataclass(frozen=True)
class Settle:
    """What one attempt's outcome changes; every part optional, all applied in one go.

    Cooldowns are durations from the backend's now, and only ever extend an existing one.
    """

    fingerprint: str
    scope: Scope
    reservation: Reservation | None = None
    """Ends the reservation's flight: its window entry (request and tokens) is stamped at
    the backend's now if that is later (the request reached the server before this), and
    counts ``window_s`` from there; ``prompt_tokens`` corrects it, ``cancel`` gives it back."""
    prompt_tokens: int | None = None
    cancel: bool = False
    """The request was never sent: its request, tokens and daily count are given back."""
    cool_scope_s: float | None = None
    cool_key_s: float | None = None
    cool_reason: str | None = None
    quarantine: str | None = None
    """Reason code (e.g. ``"400 API_KEY_INVALID"``): the key is skipped everywhere."""
    learned: Mapping[str, int] = field(default_factory=dict)
    """``{"rpm"|"tpm"|"rpd": quotaValue}`` the server reported for ``scope``."""


@dataclass(frozen=True)
class KeyStatus:
    fingerprint: str
    quarantine: str | None
    cooling_until: float
    cool_reason: str | None
    in_flight: int


@dataclass(frozen=True)
class ScopeStatus:
    scope: Scope
    cooling_until: float
    cool_reason: str | None
    room: dict[str, int | None]
    limits: QuotaLimits | None
    """The limits in force: configured, lowered by learned ones."""


@dataclass(frozen=True)
class Snapshot:
    now: float
    keys: dict[str, KeyStatus]
    scopes: dict[Scope, ScopeStatus]
    shared: bool
    """True when these counters are deployment-wide (disk, Redis), False when per process."""
    backend: str


@runtime_checkable
class StateBackend(Protocol):
    """Where cooldowns, quarantines and quota windows live (see module docstring)."""

    shared: bool

    def fingerprint(self, secret: str) -> str: ...

    def admit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision: ...

    def settle(self, outcome: Settle) -> None: ...

    async def aadmit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision: ...

    async def asettle(self, outcome: Settle) -> None: ...

    def snapshot(self, candidates: Sequence[Candidate]) -> Snapshot: ...

    def reset(self, fingerprint: str, scope: Scope) -> None: ...

    def close(self) -> None: ...


def fingerprint_with(salt: bytes, secret: str) -> str:
    """``k:`` + 24 hex digits of HMAC-SHA256(salt, key text): stable per deployment."""
    digest = hmac.new(salt, secret.encode(), hashlib.sha256).hexdigest()
    return "k:" + digest[:24]


def reason_code(text: str | None) -> str | None:
    """A reason safe to store: short, and only characters a code needs."""
    if text is None:
        return None
    return _REASON_OK.sub("?", text)[:80]


def span_of(limits: QuotaLimits) -> float:
    """How long a settled request counts after its stamp: ``window_s``, no margin.

    Google counts a request when it arrives, some time between its admit and its answer.
    So a request's window entry counts with no end while it is in flight (until
    ``INFLIGHT_TTL_S``), and its settle moves its stamp to the backend's now (never
    earlier), which is after its arrival. Then no interval of ``window_s`` at the server
    holds more than the limit, whatever the transit delay: take R, of the requests arriving
    in one such interval, the one admitted last (at ``d``, stamped ``s >= d``, arriving at
    or after ``s``). Every other one arriving there was admitted before ``d`` and was then
    either in flight (counted) or settled, stamped at or after its arrival, so later than
    ``s - window_s`` (counted). R's admit saw all of them and found room for one more. A
    server that counts per aligned window (Google) counts in some of these intervals only.
    """
    return limits.window_s


def pacific_offset(now: float) -> int:
    """Seconds east of UTC in America/Los_Angeles at ``now`` (-28800 or -25200)."""
    return _offset_in_hour(int(now // 3600))


@functools.lru_cache(maxsize=64)
def _offset_in_hour(hour: int) -> int:
    # DST starts and ends on whole UTC hours, so one offset holds for a whole hour
    offset = datetime.fromtimestamp(hour * 3600 + 1800, PACIFIC).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def day_number(now: float, offset: int) -> int:
    """The Pacific day at ``now`` as a whole number (a key name part, never a date string).

    DST moves the offset at 2 am, never at midnight, so an offset read a few seconds off
    (e.g. from a client clock) still gives the right day.
    """
    return math.floor((now + offset) / 86400)


def effective_limits(limits: QuotaLimits | None, learned: Mapping[str, int]) -> QuotaLimits | None:
    """Configured limits, each lowered to what the server reported (never raised)."""
    if limits is None:
        return None
    for dim, value in learned.items():
        configured = getattr(limits, dim, None)
        if configured is not None and value < configured:
            limits = limits.lowered(dim, int(value))
    return limits


OutagePolicy = Literal["local", "closed", "open"]

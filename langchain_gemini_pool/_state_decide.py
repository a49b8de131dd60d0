"""The admission decision, pure: views of the stored state in, a decision out.

``InMemoryState`` and ``DiskState`` both run this (the disk one inside one SQLite
transaction); ``RedisState`` runs its Lua twin (``_state_lua.py``) inside Redis. A sliding
window of ``window_s``: requests in flight count whatever their stamp, settled ones for
``window_s`` after theirs (``span_of`` says why that is never more than the limit in any
such interval at the server).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._state_types import (
    WARN_FRACTION,
    AllQuarantined,
    Candidate,
    Scope,
    WaitUntil,
    effective_limits,
    span_of,
)


@dataclass
class KeyView:
    quarantine: str | None = None
    cool_until: float = 0.0
    cool_reason: str | None = None


@dataclass
class ScopeView:
    events: Sequence[Any] = ()
    """Every settled request still in the window, in time order: ``e[0]`` its stamp,
    ``e[1]`` its tokens. Backends may pass a lazy sequence: only ``len`` and the item at
    the RPM limit are read unless the TPM limit is reached."""
    flying: Sequence[Any] = ()
    """The requests in flight (admitted, not settled), as ``events``, in stamp order: they
    count whatever their stamp, and free a window ``span`` after their settle."""
    token_sum: int = 0
    """The tokens of ``events`` and ``flying``, summed."""
    day_count: int = 0
    """Requests counted today (Pacific)."""
    cool_until: float = 0.0
    cool_reason: str | None = None
    learned: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Take:
    """Admit ``candidates[index]`` at ``at`` (later than now: a booked slot)."""

    index: int
    at: float
    limits: QuotaLimits | None


def ready_at(
    view: ScopeView, limits: QuotaLimits | None, now: float, tokens: int
) -> tuple[float, bool]:
    """The earliest time at or after ``now`` when ``tokens`` fit every window of ``view``,
    and whether it is sure. Not sure: a request in flight must free first, and it frees a
    window after its settle, which nobody knows yet; the time is then the earliest it can
    (were it settled now): a time to ask again, never one to book."""
    if limits is None:
        return now, True
    span = span_of(limits)
    settled, flying = view.events, view.flying
    at, sure = now, True

    def frees(i: int) -> None:  # the i-th entry (settled first, then in flight) expires
        nonlocal at, sure
        if i < len(settled):
            at = max(at, settled[i][0] + span)
        else:
            at = max(at, flying[i - len(settled)][0] + span, now + span)
            sure = False

    if limits.rpd is not None and view.day_count >= limits.rpd:
        if limits.rpd == 0:
            return math.inf, True
        at = max(at, next_pacific_midnight(now))
    if limits.rpm is not None:
        if limits.rpm == 0:
            return math.inf, True
        excess = len(settled) + len(flying) - limits.rpm
        if excess >= 0:
            frees(excess)
    if limits.tpm == 0:
        return math.inf, True
    count = len(settled) + len(flying)
    if limits.tpm is not None and count:
        need = view.token_sum + tokens - limits.tpm
        if need > 0:
            freed = 0
            for i, event in enumerate(itertools.chain(settled, flying)):
                freed += event[1]
                if freed >= need:
                    frees(i)
                    break
            else:
                frees(count - 1)
    return at, sure


def fits_now(
    limits: QuotaLimits | None, count: int, token_sum: int, day_count: int, tokens: int
) -> bool:
    """Whether ``tokens`` fit now in windows holding ``count`` requests (settled and in
    flight), ``token_sum`` tokens and ``day_count`` requests today: when True, ``ready_at``
    answers ``(now, True)``. False says nothing (ask ``ready_at``)."""
    if limits is None:
        return True
    rpm, tpm, rpd = limits.rpm, limits.tpm, limits.rpd
    return (
        (rpm is None or count < rpm)
        and (rpd is None or day_count < rpd)
        and (tpm is None or (tpm > 0 and token_sum + tokens <= tpm))
    )


def decide(
    candidates: Sequence[Candidate],
    keys: Mapping[str, KeyView],
    scope_view: Callable[[Candidate], ScopeView],
    tokens: int,
    now: float,
    book_until_s: float | None,
) -> Take | WaitUntil | AllQuarantined:
    """The first candidate that may send now; else the earliest bookable slot; else why not.

    ``scope_view`` is asked only for the candidates looked at (the first that fits wins).
    """
    earliest = math.inf
    best: Take | None = None
    reasons: dict[str, str] = {}
    cool_reasons: set[str] = set()
    usable = False
    for index, cand in enumerate(candidates):
        key = keys.get(cand.fingerprint, KeyView())
        if key.quarantine is not None:
            reasons[cand.fingerprint] = key.quarantine
            continue
        usable = True
        view = scope_view(cand)
        limits = effective_limits(cand.limits, view.learned)
        cooling = max(key.cool_until, view.cool_until)
        ready, sure = ready_at(view, limits, now, tokens)
        at = max(now, cooling, ready)
        if at <= now:
            return Take(index, now, limits)
        if cooling > now:
            reason = view.cool_reason if view.cool_until >= key.cool_until else key.cool_reason
            if reason:
                cool_reasons.add(reason)
        earliest = min(earliest, at)
        if limits is not None and sure and (best is None or at < best.at):
            best = Take(index, at, limits)
    if not usable:
        return AllQuarantined(reasons, now)
    if (
        book_until_s is not None
        and best is not None
        and not math.isinf(best.at)
        and best.at <= now + book_until_s
    ):
        return best
    reason = "; ".join(sorted(cool_reasons)) or "no project has quota room"
    return WaitUntil(earliest, now, reason)


def warning_of(scope: Scope, day_count: int, limits: QuotaLimits | None) -> dict[str, Any] | None:
    """The 80% warning, if ``day_count`` requests (this one counted) reach it."""
    if limits is None or not limits.rpd or day_count / limits.rpd < WARN_FRACTION:
        return None
    return {
        "project": scope.project,
        "model": scope.model,
        "used": round(day_count / limits.rpd, 3),
        "rpd": limits.rpd,
    }


def room_of(
    limits: QuotaLimits | None, requests: int, tokens: int, today: int
) -> dict[str, int | None]:
    """What is left now in each window (None where no limit is set)."""
    if limits is None:
        return {"rpm": None, "tpm": None, "rpd": None}
    return {
        "rpm": None if limits.rpm is None else max(0, limits.rpm - requests),
        "tpm": None if limits.tpm is None else max(0, limits.tpm - tokens),
        "rpd": None if limits.rpd is None else max(0, limits.rpd - today),
    }

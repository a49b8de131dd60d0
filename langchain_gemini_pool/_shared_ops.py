"""What a ``SharedScheduler`` asks of its backend, as ops for ``_driver``: the ``admit``
before a call and the ``settle`` after it, each with its awaitable twin (``aadmit``,
``asettle``: ``redis.asyncio`` for Redis), and the pure verdict a failure settles with."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_gemini_pool._driver import Io
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._scheduler_types import rate_limit_cooldown_s, status_row
from langchain_gemini_pool._state_types import (
    Candidate,
    Decision,
    Reservation,
    Settle,
    StateBackend,
)

if TYPE_CHECKING:
    from langchain_gemini_pool._shared_scheduler import SharedScheduler, _Key

logger = logging.getLogger("langchain_gemini_pool")


def booking(now: float, reserve: bool, book_until: float | None) -> float | None:
    """How far ahead (seconds) an ``admit`` may book a slot: none when nothing is reserved."""
    return None if book_until is None or not reserve else max(0.0, book_until - now)


def _admit(
    state: StateBackend, candidates: Sequence[Candidate], tokens: float, book_s: float | None
) -> Decision:
    return state.admit(candidates, tokens, book_until_s=book_s)


async def _aadmit(
    state: StateBackend, candidates: Sequence[Candidate], tokens: float, book_s: float | None
) -> Decision:
    return await state.aadmit(candidates, tokens, book_until_s=book_s)


def admit_io(
    state: StateBackend,
    blocking: bool,
    candidates: Sequence[Candidate],
    tokens: float,
    book_s: float | None,
) -> Io:
    """One ``admit`` of ``candidates`` (sync: ``state.admit``; async: ``state.aadmit``)."""
    return Io(_admit, (state, candidates, tokens, book_s), blocking, True, _aadmit)


def settle_io(state: StateBackend, blocking: bool, outcome: Settle) -> Io:
    """One ``settle`` of ``outcome`` (sync: ``state.settle``; async: ``state.asettle``)."""
    return Io(state.settle, (outcome,), blocking, True, state.asettle)


def failure_settle(
    sched: SharedScheduler,
    key: _Key,
    reservation: Reservation | None,
    failure: Failure,
    now: float,
) -> Settle:
    """What a failed attempt on ``key`` settles: a cooldown of its (project, model) after a
    429 (and what the server said its limits are), a quarantine of a bad key, a cooldown of
    the key after a server fault (if ``fault_cooldown_s``), else only the reservation.
    Counts the failure on ``key`` (this process's counters)."""
    scope = key.candidate.scope
    if failure.kind is FailureKind.RATE_LIMITED:
        key.rate_limited += 1
        delay, reason = rate_limit_cooldown_s(failure, sched.default_cooldown_s, now)
        learned = {
            v.dimension: v.quota_value
            for v in failure.violations
            if v.dimension is not None and v.quota_value is not None
        }
        _log_learned(sched, key, learned)
        return Settle(
            key.shared_id,
            scope,
            reservation,
            cool_scope_s=delay,  # Google's quotas are per (project, model), not per key
            cool_reason=reason,
            learned=learned,
        )
    key.errors += 1
    if failure.kind is FailureKind.BAD_KEY:
        logger.warning(
            "Quarantined Gemini API key %s (index %d) for every process: %s",
            key.fingerprint,
            key.index,
            failure.reason,
        )
        return Settle(key.shared_id, scope, reservation, quarantine=failure.reason)
    if failure.kind is FailureKind.SERVER_FAULT and sched.fault_cooldown_s > 0:
        return Settle(
            key.shared_id,
            scope,
            reservation,
            cool_key_s=sched.fault_cooldown_s,
            cool_reason=failure.reason,
        )
    return Settle(key.shared_id, scope, reservation)


def _log_learned(sched: SharedScheduler, key: _Key, learned: dict[str, int]) -> None:
    limits = sched.limits_for(key.project)
    for dim, value in learned.items():
        configured = getattr(limits, dim, None) if limits else None
        if configured is not None and value < configured:
            logger.warning(
                "Project %s (%s): the server's %s limit is %d, below the configured %d; "
                "lowering it for every process.",
                key.project,
                sched.model,
                dim,
                value,
                configured,
            )


def status_rows(state: StateBackend, keys: Sequence[_Key]) -> list[dict[str, Any]]:
    """``pool_status()`` rows of ``keys`` from one backend ``snapshot``."""
    snap = state.snapshot([k.candidate for k in keys])
    rows = []
    for key in keys:
        ks = snap.keys[key.shared_id]
        ss = snap.scopes[key.candidate.scope]
        rows.append(
            status_row(
                key,
                snap.now,
                quarantine=ks.quarantine,
                cooling=(ks.cooling_until, ks.cool_reason),
                scope_cooling=(ss.cooling_until, ss.cool_reason),
                in_flight=ks.in_flight,
                room=ss.room,
                shared=snap.shared,
            )
        )
    return rows

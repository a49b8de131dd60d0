"""``InMemoryState``: the default backend, one process, no I/O.

Also the outage fallback of ``RedisState``. Thread-safe (one lock, no method waits on
anything but it); the async methods are the sync ones (they never block).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Sequence

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._state_decide import (
    KeyView,
    ScopeView,
    Take,
    decide,
    fits_now,
    room_of,
    warning_of,
)
from langchain_gemini_pool._state_memory_window import KeyRecord as _Key
from langchain_gemini_pool._state_memory_window import ScopeRecord as _Scope
from langchain_gemini_pool._state_types import (
    INFLIGHT_TTL_S,
    QUARANTINE_TTL_S,
    Admit,
    Candidate,
    Decision,
    KeyStatus,
    Reservation,
    Scope,
    ScopeStatus,
    Settle,
    Snapshot,
    day_number,
    effective_limits,
    fingerprint_with,
    pacific_offset,
    reason_code,
    span_of,
)


class InMemoryState:
    """Cooldowns, quarantines and quota windows in this process (the default).

    Args:
        clock: Where time comes from (tests pass a ``ManualClock``).
    """

    shared = False
    name = "memory"
    inline = True
    """``admit`` and ``settle`` do no I/O and never wait but for the lock: a scheduler may
    call them in its steps, sync and async alike, instead of yielding them as I/O ops."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._salt = os.urandom(32)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._keys: dict[str, _Key] = {}
        self._scopes: dict[Scope, _Scope] = {}
        self._ids = itertools.count()
        self._hour, self._day = math.nan, 0  # see _day_of

    def __repr__(self) -> str:
        return "InMemoryState()"

    def _guard(self) -> threading.Lock:
        if os.getpid() != self._pid:  # forked: the parent's threads (and their lock) are gone
            self._pid, self._lock = os.getpid(), threading.Lock()
        return self._lock

    def fingerprint(self, secret: str) -> str:
        return fingerprint_with(self._salt, secret)

    # --- admit ------------------------------------------------------------------------------

    def admit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        if not candidates:
            raise ValueError("admit needs at least one candidate key.")
        with self._guard():
            return self._admit(candidates, tokens, book_until_s)

    async def aadmit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        return self.admit(candidates, tokens, book_until_s=book_until_s)

    def _admit(
        self, candidates: Sequence[Candidate], tokens: float, book_until_s: float | None
    ) -> Decision:
        now = self._clock.now()
        day = self._day_of(now)
        need = max(0, int(-(-tokens // 1)))
        first = candidates[0]
        free, limits = self._free(first, need, now, day)
        if free:  # what ``decide`` answers when its first candidate may send now
            return self._take(first, 0, now, limits, need, now, day)
        keys: dict[str, KeyView] = {}
        for cand in candidates:
            rec = self._keys.get(cand.fingerprint)
            if rec is not None:
                if rec.view.quarantine and now - rec.quarantined_at > QUARANTINE_TTL_S:
                    rec.view.quarantine = None
                keys[cand.fingerprint] = rec.view

        def view(cand: Candidate) -> ScopeView:
            scope = self._scopes.get(cand.scope)
            if scope is None:
                return _EMPTY
            limits = scope.limits_for(cand.limits)
            if limits is not None:
                scope.prune(now - span_of(limits), now)
            return scope.view(day)

        decision = decide(candidates, keys, view, need, now, book_until_s)
        if not isinstance(decision, Take):
            return decision
        cand = candidates[decision.index]
        return self._take(cand, decision.index, decision.at, decision.limits, need, now, day)

    def _free(
        self, cand: Candidate, tokens: int, now: float, day: int
    ) -> tuple[bool, QuotaLimits | None]:
        """Whether ``cand`` may send now (its key neither quarantined nor cooling, nor its
        scope, and ``tokens`` fit every window: ``decide`` would take it first), and its
        limits. False says nothing: ``decide`` then looks at every candidate."""
        rec = self._keys.get(cand.fingerprint)
        if rec is not None and (rec.view.quarantine is not None or rec.view.cool_until > now):
            return False, None
        scope = self._scopes.get(cand.scope)
        if scope is None:
            return fits_now(cand.limits, 0, 0, 0, tokens), cand.limits
        if scope.cool_until > now:
            return False, None
        limits = scope.limits_for(cand.limits)
        if limits is None:
            return True, None
        scope.prune(now - span_of(limits), now)
        count = len(scope.events) + len(scope.flying)
        day_count = scope.days.get(day, 0)
        return fits_now(limits, count, scope.token_sum, day_count, tokens), limits

    def _day_of(self, now: float) -> int:
        """``day_number`` at ``now`` (Pacific midnight falls on a whole UTC hour, so one
        day holds for a whole UTC hour: kept per hour; under the lock)."""
        hour = now // 3600
        if hour != self._hour:
            self._hour, self._day = hour, day_number(now, pacific_offset(now))
        return self._day

    def _take(
        self,
        cand: Candidate,
        index: int,
        at: float,
        limits: QuotaLimits | None,
        tokens: int,
        now: float,
        day: int,
    ) -> Admit:
        rid = f"m{next(self._ids)}"
        key = self._keys.get(cand.fingerprint)
        if key is None:
            key = self._keys[cand.fingerprint] = _Key()
        key.flights[rid] = now
        if len(key.flights) > 64:  # drop flights a lost caller never settled
            for old, t in list(key.flights.items()):
                if now - t > INFLIGHT_TTL_S:
                    del key.flights[old]
        at_day = day if at == now else day_number(at, pacific_offset(at))
        counted = limits is not None
        warning = None
        if counted:
            scope = self._scopes.get(cand.scope)
            if scope is None:
                scope = self._scopes[cand.scope] = _Scope()
            scope.add(at, tokens, rid)
            if at_day not in scope.days and len(scope.days) > 2:  # forget past days
                for past in [d for d in scope.days if d < at_day - 1]:
                    del scope.days[past]
                    scope.warned.discard(past)
            count = scope.days[at_day] = scope.days.get(at_day, 0) + 1
            if at_day not in scope.warned:
                warning = warning_of(cand.scope, count, limits)
                if warning is not None:
                    scope.warned.add(at_day)
        reservation = Reservation(cand.fingerprint, cand.scope, rid, at, tokens, at_day, counted)
        return Admit(index, reservation, now, warning)

    # --- settle -----------------------------------------------------------------------------

    def settle(self, outcome: Settle) -> None:
        with self._guard():
            self._settle(outcome, self._clock.now())

    async def asettle(self, outcome: Settle) -> None:
        self.settle(outcome)

    def landed(
        self,
        fingerprint: str,
        scope: Scope,
        reservation: Reservation | None,
        prompt_tokens: int | None,
    ) -> None:
        """``settle(Settle(fingerprint, scope, reservation, prompt_tokens=...))`` without
        building the ``Settle``: a success, the common end (``SharedScheduler`` calls it
        inline, see ``inline``)."""
        with self._guard():
            self._end(fingerprint, scope, reservation, False, prompt_tokens, self._clock.now())

    def _end(
        self,
        fingerprint: str,
        scope_id: Scope,
        res: Reservation | None,
        cancel: bool,
        prompt_tokens: int | None,
        now: float,
    ) -> _Key:
        """The reservation part of a settle: the flight ends, its entry is corrected."""
        key = self._keys.get(fingerprint)
        if key is None:
            key = self._keys[fingerprint] = _Key()
        if res is not None:
            key.flights.pop(res.id, None)
            if res.counted:
                scope = self._scopes.get(scope_id)
                if scope is not None:
                    self._correct(scope, res, cancel, prompt_tokens, now)
        return key

    def _settle(self, o: Settle, now: float) -> None:
        key = self._end(o.fingerprint, o.scope, o.reservation, o.cancel, o.prompt_tokens, now)
        if o.cool_scope_s is not None:
            scope = self._scopes.setdefault(o.scope, _Scope())
            until = now + o.cool_scope_s
            if until > scope.cool_until:
                scope.cool_until = until
                scope.cool_reason = reason_code(o.cool_reason) or "cooling down"
        if o.cool_key_s is not None:
            until = now + o.cool_key_s
            if until > key.view.cool_until:
                key.view.cool_until = until
                key.view.cool_reason = reason_code(o.cool_reason) or "cooling down"
        if o.quarantine is not None:
            key.view.quarantine = reason_code(o.quarantine)
            key.quarantined_at = now
        if o.learned:
            scope = self._scopes.setdefault(o.scope, _Scope())
            for dim, value in o.learned.items():
                if dim in ("rpm", "tpm", "rpd"):
                    scope.learned[dim] = min(int(value), scope.learned.get(dim, int(value)))
            scope.limited = None

    @staticmethod
    def _correct(
        scope: _Scope, res: Reservation, cancel: bool, prompt_tokens: int | None, now: float
    ) -> None:
        entry = scope.by_id.get(res.id)
        if entry is None:  # expired, or already given back
            return
        if cancel:
            (scope.flying if entry[3] else scope.events).remove(entry)
            del scope.by_id[res.id]
            scope.token_sum -= entry[1]
            if scope.days.get(res.day, 0) > 0:
                scope.days[res.day] -= 1
            return
        if entry[3]:
            scope.land(entry, now)
        if prompt_tokens is not None:
            tokens = max(0, int(prompt_tokens))
            scope.token_sum += tokens - entry[1]
            entry[1] = tokens

    # --- reporting --------------------------------------------------------------------------

    def snapshot(self, candidates: Sequence[Candidate]) -> Snapshot:
        with self._guard():
            now = self._clock.now()
            day = day_number(now, pacific_offset(now))
            keys: dict[str, KeyStatus] = {}
            scopes: dict[Scope, ScopeStatus] = {}
            for cand in candidates:
                rec = self._keys.get(cand.fingerprint, _Key())
                v = rec.view
                if v.quarantine and now - rec.quarantined_at > QUARANTINE_TTL_S:
                    v.quarantine = None  # as an admit would (it may not have looked)
                keys[cand.fingerprint] = KeyStatus(
                    cand.fingerprint, v.quarantine, v.cool_until, v.cool_reason, len(rec.flights)
                )
                scope = self._scopes.get(cand.scope, _Scope())
                limits = effective_limits(cand.limits, scope.learned)
                if limits is not None:
                    scope.prune(now - span_of(limits), now)
                scopes[cand.scope] = ScopeStatus(
                    cand.scope,
                    scope.cool_until,
                    scope.cool_reason,
                    room_of(
                        limits,
                        len(scope.events) + len(scope.flying),
                        scope.token_sum,
                        scope.days.get(day, 0),
                    ),
                    limits,
                )
            return Snapshot(now, keys, scopes, self.shared, self.name)

    def reset(self, fingerprint: str, scope: Scope) -> None:
        with self._guard():
            self._keys.pop(fingerprint, None)
            rec = self._scopes.get(scope)
            if rec is not None:
                rec.cool_until, rec.cool_reason = 0.0, None

    def close(self) -> None:
        """Nothing to close (kept for the protocol)."""


_EMPTY = ScopeView()

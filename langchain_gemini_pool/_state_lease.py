"""Slot leases: a busy process takes a few slots ahead in one ``admit`` and sends with them
later without asking the backend again.

A backend round trip before every call is most of what a shared backend costs per request
(on loopback Redis, about two thirds). So when this process sends often with one key of one
(project, model), an ``admit`` that takes a slot for it may take up to ``LEASE_MAX`` more in
the same atomic decision: the backend checks room for all of them at once and counts each as
a request in flight, exactly as if it had been admitted alone. This process then claims them
one by one, each in place of an ``admit`` whose first candidate is that key.

Why the windows stay exact: a leased slot is in the backend's windows from its admit until
its settle, like any flight, and a batch is admitted only if every window has room for all
of it. In ``span_of``'s proof, the request admitted last of those arriving in an interval
saw every other one counted, or was admitted in the same batch, which had room for them all.

What a lease costs, and its bounds:

- Staleness. A lease is claimed only within ``LEASE_S`` (1 s) of sending the admit that took
  it, so a cooldown or quarantine set by another process is honoured within 1 s, and a
  lease never outlives what the backend said. Sooner, where the backend keeps a change
  counter (Redis's ``T:gen``): every admit and settle reply carries it, and when it moved
  every lease taken before ends (``news``): in a busy process, a call or so after the
  change. This process's own 429, fault or bad key gives its leases of that
  (project, model) or key back at once.
- Slots held unused. Leasing starts at ``LEASE_FROM`` admits in a second on one key, a
  lease asks for what the last second used (at most ``LEASE_MAX``), and the backend grants
  at most ``1/LEASE_SHARE`` of what each window has left (none near a limit, none for
  limits below 64 per window). Unclaimed slots go back when their lease ends (a thread of
  this process does it), when the process exits, or at ``close``; a process killed with
  leases holds them until the in-flight TTL.
- ``snapshot`` adds this process's unclaimed slots back, so its own ``pool_status()`` shows
  room as if they were never taken.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._state_types import (
    Admit,
    Candidate,
    KeyStatus,
    Reservation,
    Scope,
    ScopeStatus,
    Settle,
    Snapshot,
)

logger = logging.getLogger("langchain_gemini_pool")

LEASE_S = 1.0
"""A leased slot is claimed within this long of sending the admit that took it, or given back."""
LEASE_MAX = 16
"""Extra slots one admit may take."""
LEASE_FROM = 2
"""Admits in the last ``LEASE_S`` on one (key, project, model) before this process leases."""
LEASE_SHARE = 64
"""The backend grants at most this share of what any window has left (``_state_lua``)."""
IDLE_S = 5.0
"""The give-back thread ends after this long with no slot held."""

Pair = tuple[str, Scope]


def lease_count(
    limits: QuotaLimits, want: int, requests: int, today: int, token_sum: int, tokens: int
) -> int:
    """Extra slots an admit may lease (at most ``want``): 1/``LEASE_SHARE`` of what each
    window has left once ``requests`` (today: ``today``) and ``token_sum`` tokens count,
    this request's included; each slot reserves ``tokens``. The Lua admit's twin."""
    extra = want
    for limit, used, each in (
        (limits.rpm, requests, 1),
        (limits.rpd, today, 1),
        (limits.tpm, token_sum + tokens, tokens),
    ):
        if limit is not None and each > 0:
            extra = min(extra, (limit - used) // (LEASE_SHARE * each))
    return max(0, extra)


class Leases:
    """This process's unclaimed leased slots, per (key fingerprint, scope).

    Args:
        give_back: Settles a slot never sent (``cancel=True``): the backend's ``settle``.
        clock: Monotonic seconds (tests pass a ``ManualClock``'s ``now``).
    """

    def __init__(
        self, give_back: Callable[[Settle], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._give_back = give_back
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._returning = threading.RLock()  # see ``steady``
        self._slots: dict[Pair, collections.deque[tuple[float, Reservation]]] = {}
        self._recent: dict[Pair, collections.deque[float]] = {}
        self._thread: threading.Thread | None = None
        self._at_exit = False
        self._gen = 0  # the backend's change counter, as last seen (see ``news``)

    def _guard(self) -> None:
        if os.getpid() != self._pid:  # forked: the parent's slots are the parent's to use
            self._reset()

    # --- the hot path: no I/O ---------------------------------------------------------------

    def claim(self, cand: Candidate, tokens: int) -> Admit | None:
        """A leased slot for ``cand`` that covers ``tokens``, as ``admit`` would answer with
        ``cand`` first; None: ask the backend (which may lease, see ``want``)."""
        self._guard()
        pair = (cand.fingerprint, cand.scope)
        now = self.clock()
        with self._lock:
            self._note(pair, now)
            slots = self._slots.get(pair)
            while slots:
                until, res = slots[0]
                if until <= now:
                    break  # expired: the give-back thread takes it
                slots.popleft()
                if res.tokens >= tokens:
                    return Admit(0, res, res.at)
                self._wake.notify()  # too small for this request: give it back now
                slots.appendleft((now, res))
                break
        return None

    def want(self, cand: Candidate) -> int:
        """Extra slots to ask for with an admit led by ``cand``: what the last second used,
        once that is ``LEASE_FROM`` (the backend grants less near a limit)."""
        if cand.limits is None:
            return 0
        recent = self._recent.get((cand.fingerprint, cand.scope))
        if recent is None or len(recent) < LEASE_FROM:
            return 0
        return min(LEASE_MAX, len(recent))

    def _note(self, pair: Pair, now: float) -> None:
        recent = self._recent.get(pair)
        if recent is None:
            if len(self._recent) > 4096:  # keys long gone
                self._recent.clear()
            recent = self._recent[pair] = collections.deque()
        recent.append(now)
        while recent and recent[0] <= now - LEASE_S:
            recent.popleft()

    def add(self, extras: Iterable[Reservation], sent_at: float, gen: int | None = None) -> None:
        """Slots an admit sent at ``sent_at`` (this clock) took ahead; ``gen``: the backend's
        change counter as that admit saw it (see ``news``)."""
        extras = list(extras)
        if gen is not None:
            self.news(gen)
        if not extras:
            return
        self._guard()
        until = sent_at + LEASE_S
        with self._lock:
            if gen is not None and gen < self._gen:  # a change came in meanwhile
                until = self.clock()
            for res in extras:
                pair = (res.fingerprint, res.scope)
                self._slots.setdefault(pair, collections.deque()).append((until, res))
            if self._thread is None:
                self._start()
            self._wake.notify()

    # --- ending leases ----------------------------------------------------------------------

    def news(self, gen: int) -> None:
        """The backend's change counter (it grows whenever any process sets or lifts a
        quarantine or cooldown) as a reply just showed it: when it moved, every lease taken
        before ends now, so a verdict from elsewhere holds here from this process's next
        reply on (a settle's, usually a call after), not only once the lease's second is up."""
        self._guard()
        with self._lock:
            if gen <= self._gen:
                return
            first = self._gen == 0 and not self._slots
            self._gen = gen
            if first:
                return
            now = self.clock()
            for slots in self._slots.values():
                for i, (_, res) in enumerate(slots):
                    slots[i] = (now, res)
            self._wake.notify()

    def drop(self, fingerprint: str | None = None, scope: Scope | None = None) -> None:
        """End the leases of a key (any scope) or of a scope (any key) now: this process
        saw a verdict on it."""
        self._guard()
        now = self.clock()
        with self._lock:
            for (fp, sc), slots in self._slots.items():
                if fp == fingerprint or sc == scope:
                    for i, (_, res) in enumerate(slots):
                        slots[i] = (now, res)
            self._wake.notify()

    def verdict(self, outcome: Settle) -> bool:
        """Whether ``outcome`` carries a verdict (a cooldown, a quarantine, a learned limit:
        every process must see it once its settle returns); the leases it concerns end now."""
        if outcome.cool_scope_s is not None or outcome.learned:
            self.drop(scope=outcome.scope)
        if outcome.cool_key_s is not None or outcome.quarantine:
            self.drop(fingerprint=outcome.fingerprint)
        return bool(
            outcome.cool_scope_s is not None
            or outcome.cool_key_s is not None
            or outcome.quarantine
            or outcome.learned
        )

    def close(self) -> None:
        """Give every unclaimed slot back now (at ``close`` and at exit)."""
        self._guard()
        with self._returning, self._lock:
            gone = [res for slots in self._slots.values() for _, res in slots]
            self._slots.clear()
            self._wake.notify()
        with self._returning:
            self._return(gone)

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """While a ``snapshot`` is read and corrected with ``unclaimed``: no slot is between
        this process's table and its give-back (each is in one or the other, not neither)."""
        self._guard()
        with self._returning:
            yield

    def _expired(self, now: float) -> tuple[list[Reservation], float | None]:
        """Under the lock: take the slots whose lease ended; and when the next one ends."""
        gone: list[Reservation] = []
        soonest: float | None = None
        for pair in list(self._slots):
            slots = self._slots[pair]
            kept = collections.deque(s for s in slots if s[0] > now)
            gone += [res for until, res in slots if until <= now]
            if kept:
                self._slots[pair] = kept
                first = min(until for until, _ in kept)
                soonest = first if soonest is None else min(soonest, first)
            else:
                del self._slots[pair]
        return gone, soonest

    def return_ended(self) -> float | None:
        """Give back the slots whose lease has ended (the thread does this as they end);
        returns when the next one ends (this clock), None when none is held."""
        self._guard()
        with self._returning:
            with self._lock:
                gone, soonest = self._expired(self.clock())
            self._return(gone)  # handed to the backend's settle (written behind) under it
        return soonest

    def _start(self) -> None:
        ref = weakref.ref(self)
        thread = threading.Thread(
            target=_give_back_loop, args=(ref,), daemon=True, name="gemini-pool-leases"
        )
        self._thread = thread
        thread.start()
        if not self._at_exit:
            self._at_exit = True
            atexit.register(_close_at_exit, ref)

    def _return(self, gone: list[Reservation]) -> None:
        failed: Exception | None = None
        for res in gone:
            try:
                self._give_back(Settle(res.fingerprint, res.scope, res, cancel=True))
            except Exception as exc:  # the backend's outage policy had its say; keep going
                failed = exc
        if failed is not None:
            logger.warning(
                "Could not give leased slots back (%s); they count until the backend takes "
                "them back.",
                type(failed).__name__,
            )

    # --- reporting --------------------------------------------------------------------------

    def unclaimed(self, snap: Snapshot) -> Snapshot:
        """``snap`` with this process's unclaimed slots counted as room, not as in flight."""
        self._guard()
        with self._lock:
            held = [res for slots in self._slots.values() for _, res in slots]
        if not held:
            return snap
        keys = dict(snap.keys)
        scopes = dict(snap.scopes)
        for res in held:
            key = keys.get(res.fingerprint)
            if key is not None:
                keys[res.fingerprint] = _fewer_flights(key)
            scope = scopes.get(res.scope)
            if scope is not None and res.counted:
                scopes[res.scope] = _more_room(scope, res.tokens)
        return Snapshot(snap.now, keys, scopes, snap.shared, snap.backend)


def _fewer_flights(key: KeyStatus) -> KeyStatus:
    return KeyStatus(
        key.fingerprint,
        key.quarantine,
        key.cooling_until,
        key.cool_reason,
        max(0, key.in_flight - 1),
    )


def _more_room(scope: ScopeStatus, tokens: int) -> ScopeStatus:
    room: dict[str, int | None] = dict(scope.room)
    for dim, back in (("rpm", 1), ("rpd", 1), ("tpm", tokens)):
        value = room.get(dim)
        if value is not None:
            room[dim] = value + back
    return ScopeStatus(scope.scope, scope.cooling_until, scope.cool_reason, room, scope.limits)


def _give_back_loop(ref: weakref.ref[Leases]) -> None:
    """Give leased slots back as their leases end; ends after ``IDLE_S`` with none held
    (``add`` starts another). Holds its ``Leases`` only while awake."""
    idle_since: float | None = None
    while True:
        leases = ref()
        if leases is None or leases._pid != os.getpid():
            return
        soonest = leases.return_ended()
        with leases._lock:
            now = leases.clock()
            if soonest is None and not leases._slots:
                idle_since = now if idle_since is None else idle_since
                if now - idle_since >= IDLE_S:
                    leases._thread = None
                    return
            else:
                idle_since = None
            wait = 0.25 if soonest is None else soonest - now
            leases._wake.wait(min(max(wait, 0.001), 0.25))
        del leases


def _close_at_exit(ref: weakref.ref[Leases]) -> None:
    leases = ref()
    if leases is not None and leases._pid == os.getpid():
        leases.close()

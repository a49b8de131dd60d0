"""What a ``RedisState`` does while Redis does not answer: its outage policy, the backoff
before it tries Redis again, the in-process fallback, and the verdicts (cooldowns,
quarantines, learned limits) decided meanwhile that Redis must learn once it is back."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from langchain_gemini_pool._state_memory import InMemoryState
from langchain_gemini_pool._state_redis_codec import safe_url, scope_base, settle_args
from langchain_gemini_pool._state_redis_seen import Seen
from langchain_gemini_pool._state_types import (
    Admit,
    Candidate,
    Decision,
    OutagePolicy,
    Reservation,
    Settle,
    Snapshot,
)

logger = logging.getLogger("langchain_gemini_pool")

PENDING_MAX = 1000
"""Verdicts kept for Redis during one outage (the oldest are kept; more are only local)."""


class Outage:
    """One ``RedisState``'s outage state. ``policy``: ``"local"``, ``"closed"`` or ``"open"``
    (see ``RedisState``); ``seen``: the quarantines and cooldowns last read from Redis, which
    a local fallback starts from."""

    def __init__(self, url: str, prefix: str, policy: OutagePolicy, seen: Seen) -> None:
        self.url, self.prefix, self.policy, self.seen = url, prefix, policy, seen
        self.down = False
        self.local: InMemoryState | None = None
        """The in-process fallback, while (and after) Redis was down."""
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._backoff = 0.5
        self._pending: list[tuple[float, Settle]] = []

    def skip(self) -> bool:
        """Whether to decide without trying Redis (down, and not yet time to retry)."""
        return self.down and time.monotonic() < self._retry_at

    def went_down(self, exc: BaseException) -> None:
        """Redis failed ``exc``: back off (0.5 s doubling to 30 s); warn once per outage."""
        with self._lock:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(30.0, self._backoff * 2)
            if self.down:
                return
            self.down = True
            self.local = None  # the fallback starts afresh, from what was last seen
        if self.policy == "closed":
            return
        logger.warning(
            "Shared state at %s is unreachable (%s); %s until it is back.",
            safe_url(self.url),
            type(exc).__name__,
            "deciding in this process" if self.policy == "local" else "sending without limits",
        )

    def came_back(self) -> list[list[Any]]:
        """Redis answered again: warn once, and return the settle scripts' arguments of the
        verdicts decided meanwhile."""
        with self._lock:
            was_down, self.down, self._backoff = self.down, False, 0.5
        if not was_down:
            return []
        logger.warning("Shared state at %s is back.", safe_url(self.url))
        return self._replay()

    def closed_error(self) -> ConnectionError:
        return ConnectionError(
            f"Shared state at {safe_url(self.url)} is unreachable and on_outage='closed': "
            "not sending without the deployment's limits. Restore Redis, or choose "
            "on_outage='local'."
        )

    def fallback(self) -> InMemoryState:
        local = self.local
        if local is None:
            with self._lock:
                if self.local is None:
                    self.local = self.seen.seed(InMemoryState())
                local = self.local
        return local

    # --- deciding without Redis -------------------------------------------------------------

    def admit(
        self, candidates: Sequence[Candidate], tokens: float, book_until_s: float | None
    ) -> Decision:
        if self.policy == "closed":
            raise self.closed_error()
        if self.policy == "open":
            now = time.time()
            c = candidates[0]
            res = Reservation(c.fingerprint, c.scope, "open", now, 0, 0, False, home="open")
            return Admit(0, res, now)
        decision = self.fallback().admit(candidates, tokens, book_until_s=book_until_s)
        if isinstance(decision, Admit):
            res = decision.reservation
            local = dataclasses.replace(res, home="local")
            return Admit(decision.index, local, decision.now, decision.warning)
        return decision

    def settle(self, outcome: Settle) -> None:
        """A settle Redis did not take. The end of a flight Redis admitted is kept for Redis
        whatever the policy (else its slot would stay taken until the in-flight TTL); with
        ``"local"``, so are the verdicts, which the fallback also applies now."""
        kept = outcome if self.policy == "local" else _flight_end(outcome)
        if kept is not None and (kept.reservation is not None or _verdict(kept)):
            with self._lock:
                if len(self._pending) < PENDING_MAX:
                    self._pending.append((time.monotonic(), kept))
        if self.policy == "closed":
            raise self.closed_error()
        if self.policy == "local":
            self.fallback().settle(dataclasses.replace(outcome, reservation=None))

    def snapshot(self, candidates: Sequence[Candidate]) -> Snapshot:
        if self.policy == "closed":
            raise self.closed_error()
        snap = self.fallback().snapshot(candidates)
        return Snapshot(snap.now, snap.keys, snap.scopes, False, "redis (offline: local)")

    def _replay(self) -> list[list[Any]]:
        """Cooldowns, quarantines and learned limits decided during the outage, for Redis
        (so the other processes learn them too); cooldowns shortened by the time passed."""
        with self._lock:
            pending, self._pending = self._pending, []
        out = []
        for when, o in pending:
            passed = time.monotonic() - when
            cool_scope = None if o.cool_scope_s is None else o.cool_scope_s - passed
            cool_key = None if o.cool_key_s is None else o.cool_key_s - passed
            o = dataclasses.replace(
                o,
                cool_scope_s=cool_scope if cool_scope and cool_scope > 0 else None,
                cool_key_s=cool_key if cool_key and cool_key > 0 else None,
            )
            if o.reservation is not None or _verdict(o):  # a flight's end stamps it now
                out.append(settle_args(o, scope_base(self.prefix, o.scope), self.prefix))
        return out


def _verdict(o: Settle) -> bool:
    return bool(o.cool_scope_s or o.cool_key_s or o.quarantine or o.learned)


def _flight_end(o: Settle) -> Settle | None:
    """Only the end of ``o``'s flight (no verdict), or None when it ends none."""
    if o.reservation is None:
        return None
    return Settle(
        o.fingerprint, o.scope, o.reservation, prompt_tokens=o.prompt_tokens, cancel=o.cancel
    )

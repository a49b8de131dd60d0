"""What a ``RedisState`` last saw of the deployment's quarantines and cooldowns.

When Redis is lost mid-run with ``on_outage="local"``, the in-process fallback starts from
this, not from nothing: a key another process found bad stays skipped, a (project, model)
another process saw rate-limited stays cooled for what is left of its cooldown.

It costs no round trip. Redis keeps ``{prefix}:gen``, a number that grows whenever any
process sets or lifts a quarantine or cooldown; each admit sends the value this process last
saw for its set of candidates, and when Redis holds another one the admit's reply carries
the quarantines and cooldowns of all those candidates (one scan inside Redis, only after a
change). ``pool_status()`` reads, ``AllQuarantined`` answers and this process's own verdicts
are kept too. Cooldown ends are kept on this process's monotonic clock (Redis time is only
compared with Redis time), so a skewed client clock shifts nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from langchain_gemini_pool._state_memory import InMemoryState
from langchain_gemini_pool._state_types import (
    AllQuarantined,
    Candidate,
    Decision,
    Scope,
    Settle,
    Snapshot,
    reason_code,
)

UNSEEN = "?"
"""Never a value of ``{prefix}:gen``: the first admit of a candidate set always learns."""
_MAX_SETS = 256
"""Candidate sets remembered (then forgotten all at once, so each learns again: a bound)."""

SetKey = frozenset[tuple[str, str]]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Seen:
    """Quarantines and cooldowns last seen in Redis (see the module text). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[SetKey, str] = {}
        self.quarantines: dict[str, tuple[Scope, str]] = {}
        self.key_cool: dict[str, tuple[Scope, float, str]] = {}
        """fingerprint -> (a scope, monotonic end, reason)"""
        self.scope_cool: dict[Scope, tuple[str, float, str]] = {}
        """scope -> (a fingerprint, monotonic end, reason)"""

    def known(self, candidates: Sequence[Candidate]) -> tuple[SetKey, str]:
        """The candidate set's identity, and the ``gen`` this process last saw for it."""
        key = frozenset([(c.fingerprint, c.scope.model) for c in candidates])
        return key, self._known.get(key, UNSEEN)

    def admitted(
        self, key: SetKey, candidates: Sequence[Candidate], raw: list[Any], decision: Decision
    ) -> None:
        """Learn from an admit's reply: its last item, and an ``AllQuarantined``'s reasons."""
        if isinstance(decision, AllQuarantined):
            scopes = {c.fingerprint: c.scope for c in candidates}
            with self._lock:
                for fp, reason in decision.reasons.items():
                    self.quarantines[fp] = (scopes[fp], reason)
        seen = raw[-1]
        if not seen:
            return
        items = [_s(x) for x in seen]
        mono = time.monotonic()
        with self._lock:
            for i, c in enumerate(candidates):
                q, cu, cr, su, sr = items[1 + 5 * i : 6 + 5 * i]
                self._one(c, q or None, mono + float(cu or 0) - decision.now, cr)
                self._scope(c, mono + float(su or 0) - decision.now, sr, mono)
            if len(self._known) >= _MAX_SETS:
                self._known.clear()
            self._known[key] = items[0]

    def snapshot(self, snap: Snapshot, candidates: Sequence[Candidate]) -> None:
        """Learn from a ``pool_status()`` read (every key it shows, every scope)."""
        mono = time.monotonic()
        with self._lock:
            for c in candidates:
                k = snap.keys.get(c.fingerprint)
                if k is not None:
                    until = mono + k.cooling_until - snap.now
                    self._one(c, k.quarantine, until, k.cool_reason or "")
                s = snap.scopes.get(c.scope)
                if s is not None:
                    self._scope(c, mono + s.cooling_until - snap.now, s.cool_reason or "", mono)

    def settled(self, o: Settle) -> None:
        """This process's own verdict (kept at once: Redis may be gone before the next admit)."""
        mono = time.monotonic()
        reason = reason_code(o.cool_reason) or "cooling down"
        with self._lock:
            if o.quarantine is not None:
                self.quarantines[o.fingerprint] = (o.scope, reason_code(o.quarantine) or "")
            if o.cool_key_s is not None:
                old = self.key_cool.get(o.fingerprint)
                if old is None or old[1] < mono + o.cool_key_s:
                    self.key_cool[o.fingerprint] = (o.scope, mono + o.cool_key_s, reason)
            if o.cool_scope_s is not None:
                olds = self.scope_cool.get(o.scope)
                if olds is None or olds[1] < mono + o.cool_scope_s:
                    self.scope_cool[o.scope] = (o.fingerprint, mono + o.cool_scope_s, reason)

    def forget(self, fingerprint: str, scope: Scope) -> None:
        """``reset``: the key's quarantine and cooldown and the scope's cooldown are lifted."""
        with self._lock:
            self.quarantines.pop(fingerprint, None)
            self.key_cool.pop(fingerprint, None)
            self.scope_cool.pop(scope, None)

    def seed(self, local: InMemoryState) -> InMemoryState:
        """``local`` (a fresh fallback) told every quarantine and cooldown still in force."""
        mono = time.monotonic()
        with self._lock:
            verdicts = [Settle(fp, s, quarantine=r) for fp, (s, r) in self.quarantines.items()]
            verdicts += [
                Settle(fp, s, cool_key_s=end - mono, cool_reason=r)
                for fp, (s, end, r) in self.key_cool.items()
                if end > mono
            ]
            verdicts += [
                Settle(fp, s, cool_scope_s=end - mono, cool_reason=r)
                for s, (fp, end, r) in self.scope_cool.items()
                if end > mono
            ]
        for verdict in verdicts:
            local.settle(verdict)
        return local

    # --- under the lock -------------------------------------------------------------------

    def _one(self, c: Candidate, quarantine: str | None, cool_end: float, reason: str) -> None:
        if quarantine:
            self.quarantines[c.fingerprint] = (c.scope, quarantine)
        else:
            self.quarantines.pop(c.fingerprint, None)
        if cool_end > time.monotonic():
            self.key_cool[c.fingerprint] = (c.scope, cool_end, reason or "cooling down")
        else:
            self.key_cool.pop(c.fingerprint, None)

    def _scope(self, c: Candidate, cool_end: float, reason: str, mono: float) -> None:
        if cool_end > mono:
            self.scope_cool[c.scope] = (c.fingerprint, cool_end, reason or "cooling down")
        else:
            self.scope_cool.pop(c.scope, None)

"""``SharedScheduler``: the ``Scheduler`` interface over a shared-state backend.

What ``RequestPlan`` and the chat model ask of a scheduler (``choose``, ``on_success``,
``on_failure``, ``release``, ``status``, membership), answered with one backend ``admit``
before a call and one ``settle`` after it. The backend holds what the whole deployment
shares: cooldowns and quota windows per (project, model), quarantines per key, learned
limits, in-flight reservations and the 80% daily warning. This process keeps the key
order (priority levels, the round-robin cursor) and its own request counters.

``choose``, ``on_success``, ``on_failure`` and ``release`` each have a ``*_steps`` form that
decides with no I/O and yields its one backend call as an ``Io`` op carrying the backend's
awaitable twin (``aadmit``, ``asettle``: ``redis.asyncio`` for Redis), so an async request
awaits the backend on its own loop; the plain methods run those steps with blocking I/O.
``InMemoryState`` does no I/O: its calls are made inline and the steps yield nothing.

Times: the backend answers in its own clock (Redis reads the server's ``TIME``); only
durations cross over, so the pool's clock and the backend's need not agree.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_gemini_pool._driver import IoSteps, run_blocking
from langchain_gemini_pool._errors import Failure
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._scheduler_types import (
    KeyRecord,
    LimitsArg,
    NoKeys,
    Pick,
    Strategy,
    Wait,
)
from langchain_gemini_pool._shared_ops import (
    admit_io,
    booking,
    failure_settle,
    settle_io,
    status_rows,
)
from langchain_gemini_pool._state_memory import InMemoryState
from langchain_gemini_pool._state_types import (
    Admit,
    AllQuarantined,
    Candidate,
    Decision,
    Scope,
    Settle,
    StateBackend,
)

logger = logging.getLogger("langchain_gemini_pool")

_KEPT_TURNS = 64
"""Levels of up to this many keys keep each rotation (so n * n entries at most)."""

LOCAL_COUNTERS = ("requests", "successes", "rate_limited", "errors")
"""``pool_status()`` fields counted by this process only (everything else is the backend's)."""


@dataclass
class _Key(KeyRecord):
    shared_id: str
    """The backend's keyed hash of the key text, for the backend."""
    priority: int
    candidate: Candidate
    """How the backend sees this key (fixed for its life: built once, not per decision)."""


class SharedScheduler:
    """Chooses keys through a ``StateBackend`` and records outcomes in it.

    Args:
        state: Where shared state lives (``InMemoryState``, ``DiskState``, ``RedisState``).
        model: The pool's model: windows and rate-limit cooldowns are per (project, model).
        strategy: ``"round_robin"`` or ``"least_used"`` (by this process's load).
        limits: One ``QuotaLimits`` for every project, or ``{project: QuotaLimits}``.
        default_cooldown_s: Cooldown after a 429 that carries no RetryInfo.
        fault_cooldown_s: Cooldown of a key after a server fault (0: none).
    """

    def __init__(
        self,
        state: StateBackend,
        model: str,
        strategy: Strategy = "round_robin",
        limits: LimitsArg = None,
        default_cooldown_s: float = 60.0,
        fault_cooldown_s: float = 0.0,
    ) -> None:
        if strategy not in ("round_robin", "least_used"):
            raise ValueError(f"strategy must be 'round_robin' or 'least_used', not {strategy!r}.")
        self.state = state
        self.model = model.removeprefix("models/")
        self.strategy: Strategy = strategy
        self._limits = limits
        self.default_cooldown_s = default_cooldown_s
        self.fault_cooldown_s = fault_cooldown_s
        self.blocking = bool(getattr(state, "shared", True))
        """Whether a decision does I/O (disk, network): async awaits the backend's async
        form, and a give-back it does not wait for runs in a thread."""
        self._inline = state if isinstance(state, InMemoryState) and state.inline else None
        """The backend's admit and settle are plain calls with no I/O (``InMemoryState``):
        the steps make them at once, sync and async alike, and yield no op."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._keys: list[_Key] = []
        self._levels: dict[int, list[_Key]] | None = None  # see _by_level
        self._cursor: dict[int, int] = {}
        self._turns: dict[tuple[int, int], tuple[list[_Key], list[Candidate]]] = {}
        """Each level's keys rotated to start at the cursor, and their candidates (kept
        with ``_levels``)."""
        self._size = 0

    def _guard(self) -> threading.Lock:
        if os.getpid() != self._pid:  # forked: the parent's threads (and their lock) are gone
            self._pid, self._lock = os.getpid(), threading.Lock()
        return self._lock

    # --- membership -------------------------------------------------------------------------

    def limits_for(self, project: str) -> QuotaLimits | None:
        if isinstance(self._limits, QuotaLimits) or self._limits is None:
            return self._limits
        return self._limits.get(project)

    def add_entries(self, entries: Sequence[Any]) -> list[int]:
        """Add ``KeyEntry`` items; returns their indices (stable for the pool's life)."""
        made = []
        for e in entries:  # the keyed hash is computed outside the lock
            limits = self.limits_for(e.project)
            priority = limits.priority if limits else 0
            secret = e.secret.get_secret_value()
            shared_id = self.state.fingerprint(secret)
            candidate = Candidate(shared_id, Scope(e.project, self.model), limits)
            made.append((e.project, e.fingerprint, shared_id, priority, candidate))
        with self._guard():
            indices = []
            for project, masked, shared_id, priority, candidate in made:
                key = _Key(len(self._keys), project, masked, shared_id, priority, candidate)
                self._keys.append(key)
                self._levels = None
                self._size += 1
                indices.append(key.index)
            return indices

    def remove_key(self, index: int) -> None:
        with self._guard():
            self._key(index).removed = True
            self._levels = None
            self._size -= 1

    def _key(self, index: int) -> _Key:
        if not 0 <= index < len(self._keys) or self._keys[index].removed:
            raise KeyError(f"No key with index {index} in the pool.")
        return self._keys[index]

    @property
    def size(self) -> int:
        return self._size

    def active_indices(self) -> list[int]:
        with self._guard():
            return [k.index for k in self._keys if not k.removed]

    def project_of(self, index: int) -> str:
        return self._keys[index].project

    def fingerprint_of(self, index: int) -> str:
        return self._keys[index].fingerprint

    @staticmethod
    def _scope(key: _Key) -> Scope:
        return key.candidate.scope

    @staticmethod
    def _candidate(key: _Key, reserve: bool = True) -> Candidate:
        if reserve:
            return key.candidate
        return Candidate(key.shared_id, key.candidate.scope, None)

    # --- choosing ---------------------------------------------------------------------------

    def _by_level(self) -> dict[int, list[_Key]]:
        """The keys in use by priority level, levels ascending (kept until keys change;
        under the lock)."""
        levels = self._levels
        if levels is None:
            found: dict[int, list[_Key]] = {}
            for key in self._keys:
                if not key.removed:
                    found.setdefault(key.priority, []).append(key)
            levels = self._levels = {p: found[p] for p in sorted(found)}
            self._turns.clear()
        return levels

    def _order(self, avoid: Collection[int]) -> tuple[list[_Key], list[Candidate]]:
        """Keys as the strategy would try them, and their candidates: priority levels
        ascending; within a level the cursor's order (or least load first), keys already
        tried last. The lists may be kept ones: read them, never change them."""
        order: list[_Key] = []
        levels = self._by_level()
        for priority, keys in levels.items():
            if self.strategy == "least_used":
                keys = sorted(keys, key=lambda k: (k.requests + k.in_flight, k.index))
            else:  # the cursor moves now, so concurrent callers start at different keys
                start = self._cursor.get(priority, 0) % len(keys)
                self._cursor[priority] = start + 1
                turn = self._turns.get((priority, start))
                if turn is None:
                    rotated = keys[start:] + keys[:start]
                    turn = (rotated, [k.candidate for k in rotated])
                    if len(keys) <= _KEPT_TURNS:
                        self._turns[priority, start] = turn
                if len(levels) == 1 and not avoid:
                    return turn
                keys = turn[0]
            if avoid:
                order += [k for k in keys if k.index not in avoid]
                order += [k for k in keys if k.index in avoid]
            else:
                order += keys
        return order, [k.candidate for k in order]

    def choose(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> Pick | Wait | NoKeys:
        """As ``Scheduler.choose``; the decision is one backend ``admit``."""
        return run_blocking(self.choose_steps(now, tokens, avoid, reserve, book_until))

    def choose_steps(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> IoSteps[Pick | Wait | NoKeys]:
        """``choose`` as steps: the pure order, one ``admit`` op, the pure conclusion."""
        order, candidates = self.candidates(avoid, reserve)
        if not order:
            return NoKeys({})
        book_s = booking(now, reserve, book_until)
        need = tokens if reserve else 0
        if self._inline is not None:
            decision = self.state.admit(candidates, need, book_until_s=book_s)
        else:
            decision = yield admit_io(self.state, self.blocking, candidates, need, book_s)
        return self.concluded(order, decision, now, tokens)

    def candidates(
        self, avoid: Collection[int], reserve: bool
    ) -> tuple[list[_Key], list[Candidate]]:
        """The keys in the order they would be tried (the cursor moves: see ``concluded``),
        and how the backend sees each. A ladder puts several rungs' in one ``admit``."""
        with self._guard():
            order, candidates = self._order(avoid)
        if reserve:
            return order, candidates
        return order, [self._candidate(k, reserve) for k in order]

    def concluded(
        self, order: list[_Key], decision: Decision, now: float, tokens: float
    ) -> Pick | Wait | NoKeys:
        """The backend's ``decision`` on ``order`` as a ``Pick``, ``Wait`` or ``NoKeys``; a
        decision that picked none of this scheduler's keys moves its cursor back."""
        if isinstance(decision, Admit) and 0 <= decision.index < len(order):
            return self._picked(order, decision, now, tokens)
        self._rewind(order)
        if isinstance(decision, AllQuarantined):
            by_id = {k.shared_id: k for k in order}
            return NoKeys(
                {
                    f"#{by_id[fp].index} {by_id[fp].fingerprint}": reason
                    for fp, reason in decision.reasons.items()
                    if fp in by_id
                }
            )
        if isinstance(decision, Admit):  # another rung's key was picked
            return NoKeys({})
        until = math.inf if math.isinf(decision.until) else now + decision.delay
        return Wait(until, decision.reason)

    def _rewind(self, order: list[_Key]) -> None:
        """Nothing was picked: move the cursors ``_order`` moved back, unless others moved
        them since."""
        if self.strategy != "round_robin":
            return
        with self._guard():
            for priority in {k.priority for k in order}:
                level = self._by_level().get(priority, [])
                first = next(k for k in order if k.priority == priority)
                if first in level and self._cursor.get(priority) == level.index(first) + 1:
                    self._cursor[priority] = level.index(first)

    def _picked(self, order: list[_Key], admit: Admit, now: float, tokens: float) -> Pick:
        key = order[admit.index]
        with self._guard():
            key.requests += 1
            key.in_flight += 1
            first = order[0]
            if first.priority != key.priority:
                first = next(k for k in order if k.priority == key.priority)
            if self.strategy == "round_robin" and first is not key:  # it skipped keys
                level = self._by_level().get(key.priority, [])
                if key in level:  # (not removed meanwhile)
                    self._cursor[key.priority] = level.index(key) + 1
        if admit.warning is not None:
            logger.warning(
                "Project %s (%s) has used %d%% of its daily request quota (%d requests).",
                key.project,
                self.model,
                int(100 * admit.warning["used"]),
                admit.warning["rpd"],
            )
        delay = admit.delay
        return Pick(
            key.index,
            [now + delay, float(tokens)],
            at=now + delay if delay > 0 else 0.0,
            quota_warning=admit.warning,
            reservation=admit.reservation,
        )

    # --- outcomes: each one settle, yielded as an op (``run_blocking`` for the sync form) ---

    def _ended(self, pick: Pick) -> _Key:
        key = self._keys[pick.index]
        with self._guard():
            key.in_flight = max(0, key.in_flight - 1)
        return key

    def on_success(self, pick: Pick, prompt_tokens: float | None = None) -> None:
        run_blocking(self.on_success_steps(pick, prompt_tokens))

    def on_success_steps(self, pick: Pick, prompt_tokens: float | None = None) -> IoSteps[None]:
        key = self._ended(pick)
        key.successes += 1
        tokens = None if prompt_tokens is None else int(prompt_tokens)
        if self._inline is not None:  # settle(Settle(...)), no Settle built: see ``landed``
            self._inline.landed(key.shared_id, key.candidate.scope, pick.reservation, tokens)
            return
        outcome = Settle(key.shared_id, self._scope(key), pick.reservation, prompt_tokens=tokens)
        yield settle_io(self.state, self.blocking, outcome)

    def on_failure(self, pick: Pick, failure: Failure, now: float) -> None:
        """Record a failed attempt in the backend: cool, quarantine, learn, or nothing."""
        run_blocking(self.on_failure_steps(pick, failure, now))

    def on_failure_steps(self, pick: Pick, failure: Failure, now: float) -> IoSteps[None]:
        key = self._ended(pick)
        outcome = failure_settle(self, key, pick.reservation, failure, now)
        if self._inline is not None:
            self.state.settle(outcome)
        else:
            yield settle_io(self.state, self.blocking, outcome)

    def release(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> None:
        """As ``Scheduler.release``: a never-sent request gives its slot back everywhere."""
        run_blocking(self.release_steps(pick, sent=sent, prompt_tokens=prompt_tokens))

    def release_steps(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> IoSteps[None]:
        key = self._ended(pick)
        if not sent:
            with self._guard():
                key.requests = max(0, key.requests - 1)
        tokens = None if prompt_tokens is None or not sent else int(prompt_tokens)
        outcome = Settle(
            key.shared_id, self._scope(key), pick.reservation, prompt_tokens=tokens, cancel=not sent
        )
        if self._inline is not None:
            self.state.settle(outcome)
        else:
            yield settle_io(self.state, self.blocking, outcome)

    def reset(self, index: int) -> None:
        """Lift a key's quarantine and cooldown, and its (project, model)'s, everywhere."""
        key = self._key(index)
        self.state.reset(key.shared_id, self._scope(key))

    # --- reporting --------------------------------------------------------------------------

    def status(self, now: float) -> list[dict[str, Any]]:
        """``Scheduler.status`` rows read from the backend (``shared`` says whether state,
        reason, ready_in_s, in_flight and room are deployment-wide)."""
        with self._guard():
            keys = [k for k in self._keys if not k.removed]
        return status_rows(self.state, keys) if keys else []

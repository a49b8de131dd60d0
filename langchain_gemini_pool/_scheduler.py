"""Pure decisions: which key next, cooldowns, quarantine, quota windows.

The scheduler knows nothing of LangChain or HTTP. Every method takes ``now`` (epoch seconds)
from the caller's clock and returns a decision; the chat model does the calling. One lock
makes it safe from threads and from many asyncio tasks (no method awaits or does I/O).

Its parts: ``_scheduler_types`` (records, decisions, status rows), ``_scheduler_keys`` (the
key book), ``_scheduler_choose`` (choosing a key); here, outcomes and reporting.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from langchain_gemini_pool._driver import IoSteps, done
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._scheduler_choose import Chooser
from langchain_gemini_pool._scheduler_types import (
    MIN_RATE_LIMIT_COOLDOWN_S,
    KeyState,
    LimitsArg,
    NoKeys,
    Pick,
    ProjectState,
    Strategy,
    Wait,
    rate_limit_cooldown_s,
    status_row,
)

__all__ = [  # what other modules import from here, wherever it now lives
    "MIN_RATE_LIMIT_COOLDOWN_S",
    "KeyState",
    "LimitsArg",
    "NoKeys",
    "Pick",
    "ProjectState",
    "Scheduler",
    "Strategy",
    "Wait",
    "rate_limit_cooldown_s",
    "status_row",
]

logger = logging.getLogger("langchain_gemini_pool")


class Scheduler(Chooser):
    """Chooses keys and records outcomes.

    Args:
        strategy: ``"round_robin"`` (starting at index 0) or ``"least_used"`` (the ready key
            with the fewest requests plus requests in flight; ties go to the lowest index).
        limits: One ``QuotaLimits`` for every project, or ``{project: QuotaLimits}``.
        default_cooldown_s: Cooldown after a 429 that carries no RetryInfo.
        fault_cooldown_s: Cooldown of a key after a server fault (0: none).
    """

    blocking = False
    """Whether a decision does I/O (see ``SharedScheduler.blocking``): never here."""

    def __init__(
        self,
        strategy: Strategy = "round_robin",
        limits: LimitsArg = None,
        default_cooldown_s: float = 60.0,
        fault_cooldown_s: float = 0.0,
    ) -> None:
        super().__init__(strategy, limits)
        self.default_cooldown_s = default_cooldown_s
        self.fault_cooldown_s = fault_cooldown_s

    # --- as steps: a scheduler with a backend yields its I/O (see ``SharedScheduler``); this
    # one has none, so each is its method's result at once ------------------------------------

    def choose_steps(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> IoSteps[Pick | Wait | NoKeys]:
        return done(self.choose(now, tokens, avoid, reserve, book_until))

    def on_success_steps(self, pick: Pick, prompt_tokens: float | None = None) -> IoSteps[None]:
        self.on_success(pick, prompt_tokens)
        return done(None)

    def on_failure_steps(self, pick: Pick, failure: Failure, now: float) -> IoSteps[None]:
        self.on_failure(pick, failure, now)
        return done(None)

    def release_steps(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> IoSteps[None]:
        self.release(pick, sent=sent, prompt_tokens=prompt_tokens)
        return done(None)

    # --- outcomes ---------------------------------------------------------------------------

    def on_success(self, pick: Pick, prompt_tokens: float | None = None) -> None:
        with self._lock:
            key = self._keys[pick.index]
            key.in_flight = max(0, key.in_flight - 1)
            key.successes += 1
            self._requeue(key)
            if prompt_tokens is not None:
                self._projects[key.project].window.correct(pick.ticket, prompt_tokens)

    def on_failure(self, pick: Pick, failure: Failure, now: float) -> None:
        """Record a failed attempt and act on its kind (cool, quarantine, or nothing)."""
        with self._lock:
            key = self._keys[pick.index]
            key.in_flight = max(0, key.in_flight - 1)
            if failure.kind is FailureKind.RATE_LIMITED:
                key.rate_limited += 1
                self._cool_project(key, failure, now)
                self._learn(key, failure)
            elif failure.kind is FailureKind.BAD_KEY:
                key.errors += 1
                if key.invalid_reason is None:
                    key.invalid_reason = failure.reason
                    logger.warning(
                        "Quarantined Gemini API key %s (index %d): %s",
                        key.fingerprint,
                        key.index,
                        failure.reason,
                    )
            else:
                key.errors += 1
                if failure.kind is FailureKind.SERVER_FAULT and self.fault_cooldown_s > 0:
                    self._cool(key, now + self.fault_cooldown_s, failure.reason)
            self._requeue(key)

    def release(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> None:
        """The attempt ended without an outcome (cancelled, interrupted, abandoned).

        The key's in-flight count is given back either way. A request that was never
        ``sent`` (a booked slot it never used, a cancel before the call) also gives back its
        window reservation and its request count: room is as if it never existed. One that
        may have reached the server keeps its place in the window, as the server counts it
        (with ``prompt_tokens`` replacing the estimate when the server already reported them).
        """
        with self._lock:
            key = self._keys[pick.index]
            key.in_flight = max(0, key.in_flight - 1)
            window = self._projects[key.project].window
            if not sent:
                key.requests = max(0, key.requests - 1)
                window.give_back(pick.ticket)
            elif prompt_tokens is not None:
                window.correct(pick.ticket, prompt_tokens)
            self._requeue(key)

    @staticmethod
    def _cool(key: KeyState, until: float, reason: str) -> None:
        if until > key.cooling_until:
            key.cooling_until, key.cool_reason = until, reason

    def _cool_project(self, key: KeyState, failure: Failure, now: float) -> None:
        delay, reason = rate_limit_cooldown_s(failure, self.default_cooldown_s, now)
        self._cool_with_project(key, now + delay, reason)

    def _cool_with_project(self, key: KeyState, until: float, reason: str) -> None:
        """Cool ``key`` and its project until ``until`` (never shortening a cooldown)."""
        self._cool(key, until, reason)
        project = self._projects[key.project]
        if until > project.cooling_until:
            project.cooling_until, project.cool_reason = until, reason

    def _learn(self, key: KeyState, failure: Failure) -> None:
        project = self._projects[key.project]
        limits = project.window.limits
        if limits is None:
            return
        for violation in failure.violations:
            dim, value = violation.dimension, violation.quota_value
            if dim is None or value is None:
                continue
            configured = getattr(limits, dim)
            if configured is not None and value < configured:
                logger.warning(
                    "Project %s: the server's %s limit is %d, below the configured %d; "
                    "lowering it.",
                    project.name,
                    dim,
                    value,
                    configured,
                )
                limits = limits.lowered(dim, value)
        project.window.limits = limits

    def quarantine(self, index: int, reason: str) -> None:
        """Quarantine a key found bad elsewhere (another model's scheduler), quietly."""
        with self._lock:
            key = self._keys[index]
            if key.invalid_reason is None and not key.removed:
                key.invalid_reason = reason
                self._requeue(key)

    def cool_project(self, index: int, until: float, reason: str) -> None:
        """Cool key ``index`` and its project until ``until`` (never shortening a cooldown)."""
        with self._lock:
            self._cool_with_project(self._keys[index], until, reason)

    def reset(self, index: int) -> None:
        """Lift a quarantine or cooldown of one key (and its project's cooldown)."""
        with self._lock:
            key = self._key(index)
            key.invalid_reason = None
            key.cooling_until, key.cool_reason = 0.0, None
            project = self._projects[key.project]
            project.cooling_until, project.cool_reason = 0.0, None
            for other in self._keys:  # their parked entries wait for a cooldown now lifted
                if other.project == key.project:
                    self._requeue(other)

    # --- reporting --------------------------------------------------------------------------

    def status(self, now: float) -> list[dict[str, Any]]:
        """One dict per key, in index order (removed keys left out)."""
        rows = []
        with self._lock:
            for key in self._keys:
                if key.removed:
                    continue
                project = self._projects[key.project]
                rows.append(
                    status_row(
                        key,
                        now,
                        quarantine=key.invalid_reason,
                        cooling=(key.cooling_until, key.cool_reason),
                        scope_cooling=(project.cooling_until, project.cool_reason),
                        in_flight=key.in_flight,
                        room=project.window.room(now),
                        shared=False,
                    )
                )
        return rows

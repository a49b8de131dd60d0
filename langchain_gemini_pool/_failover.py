"""One caller request's way through the pool: which key, what after a failure, when to stop.

``RequestPlan`` holds no I/O: the chat model asks it for the next key, makes the call, and
tells it the outcome; the plan answers with a pause before the next try or tells the
caller to raise. Sync and async paths differ only in how they call and sleep. Each method
that reaches the scheduler has a ``*_steps`` form, which yields the scheduler's backend I/O
(if any) for ``_driver`` to perform; a plain method of the same name (kept for callers that
want a blocking answer) runs it with blocking I/O.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, wait_exponential_jitter

from langchain_gemini_pool._driver import IoSteps, run_blocking
from langchain_gemini_pool._errors import (
    AllKeysRateLimitedError,
    Failure,
    FailureKind,
    NoValidKeysError,
    classify,
)
from langchain_gemini_pool._quota import WINDOW_MARGIN_S
from langchain_gemini_pool._redact import redact_exception
from langchain_gemini_pool._scheduler import NoKeys, Pick, Scheduler, Wait

if TYPE_CHECKING:
    from langchain_gemini_pool._ladder import LadderScheduler
    from langchain_gemini_pool._shared_scheduler import SharedScheduler

ATTEMPTS_ATTR = "gemini_pool_attempts"
"""Attribute set on an exception the pool raises: the attempts made for that request."""

_BACKOFF = wait_exponential_jitter(initial=0.25, max=8.0, exp_base=2, jitter=0.25)


def backoff_delay(fault_number: int) -> float:
    """Seconds to wait before the retry that follows server fault number ``fault_number``."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = fault_number
    return float(_BACKOFF(state))


class RequestPlan:
    """Decisions for one caller request.

    Args:
        scheduler: The pool's scheduler.
        now: The pool's clock function.
        max_attempts: Bound on attempts that end in a server fault (rate-limit and bad-key
            failovers never retry the same key and do not count).
        max_wait: Longest total wait, in seconds, for a key to come free.
        tokens: Estimated input tokens, reserved against the project's windows.
        reserve: Whether this request counts against generate quotas.
    """

    def __init__(
        self,
        scheduler: Scheduler | SharedScheduler | LadderScheduler,
        now: Callable[[], float],
        *,
        max_attempts: int,
        max_wait: float,
        tokens: float = 0.0,
        reserve: bool = True,
    ) -> None:
        self.scheduler = scheduler
        """The scheduler the plan decides with (the pool's)."""
        self._now = now
        self._max_attempts = max_attempts
        # the windows' own safety margin is not the caller's wait: a burst one over a full
        # window waits window + margin, and max_wait = window must still cover it
        self._deadline = now() + max_wait + WINDOW_MARGIN_S
        self._tokens = tokens
        self._reserve = reserve
        self._faults = 0
        self._tried: set[int] = set()
        self._booked: Pick | None = None
        self._pause = 0.0
        self._cap = max_attempts + 4 * max(1, scheduler.size)
        self.attempts: list[dict[str, Any]] = []
        self.quota_warnings: list[dict[str, Any]] = []
        """Projects this request took to 80% of their daily quota (see ``Pick.quota_warning``)."""

    def next(self) -> Pick | float:
        """The key to try next, or seconds to wait before asking again.

        Raises:
            NoValidKeysError: Every key is quarantined.
            AllKeysRateLimitedError: No key frees before the wait budget runs out.
        """
        return run_blocking(self.next_steps())

    def next_steps(self) -> IoSteps[Pick | float]:
        """``next`` as steps: the scheduler's ``admit`` (if it has a backend) is yielded."""
        if self._pause > 0:  # the backoff a failed attempt asked for comes first
            pause, self._pause = self._pause, 0.0
            return pause
        now = self._now()
        booked = self._booked
        if booked is not None:  # a slot booked earlier: wait for it, then use it
            if booked.at > now:
                return booked.at - now
            self._booked = None
            return booked
        decision = yield from self.scheduler.choose_steps(
            now, self._tokens, self._tried, self._reserve, book_until=self._deadline
        )
        if isinstance(decision, Pick):
            self._tried.add(decision.index)
            if decision.quota_warning is not None:
                self.quota_warnings.append(decision.quota_warning)
            if decision.at > now:
                self._booked = decision
                return decision.at - now
            return decision
        if isinstance(decision, NoKeys):
            raise self._tag(NoValidKeysError(decision.reasons))
        assert isinstance(decision, Wait)
        if decision.until > self._deadline:
            raise self._tag(AllKeysRateLimitedError(decision.until - now, decision.reason))
        return max(0.0, decision.until - now)

    def failed(self, pick: Pick, exc: BaseException) -> float | None:
        """Record a failed attempt. Returns seconds to pause before the next try, or None
        when the caller must raise ``exc`` (already tagged with the attempts)."""
        return run_blocking(self.failed_steps(pick, exc))

    def failed_steps(self, pick: Pick, exc: BaseException) -> IoSteps[float | None]:
        failure = yield from self.failed_after_output_steps(pick, exc)
        if failure.kind is FailureKind.BAD_REQUEST or len(self.attempts) >= self._cap:
            return None
        if failure.kind is FailureKind.SERVER_FAULT:
            self._faults += 1
            if self._faults >= self._max_attempts:
                return None
            return backoff_delay(self._faults)
        return 0.0

    def retry_steps(self, pick: Pick, exc: BaseException) -> IoSteps[bool]:
        """Record a failed attempt (see ``failed``); True when the caller should try again,
        after any pause ``next`` returns first."""
        pause = yield from self.failed_steps(pick, exc)
        if pause is None:
            return False
        self._pause = pause
        return True

    def failed_after_output_steps(self, pick: Pick, exc: BaseException) -> IoSteps[Failure]:
        """An attempt failed after output reached the caller: record it, never retry.
        (``failed`` records every failure this way, then decides whether to retry.)"""
        failure = classify(exc)
        yield from self.scheduler.on_failure_steps(pick, failure, self._now())
        self._record(pick, failure.kind.value)
        self._tag(exc)
        return failure

    def succeeded(self, pick: Pick, prompt_tokens: float | None) -> None:
        run_blocking(self.succeeded_steps(pick, prompt_tokens))

    def succeeded_steps(self, pick: Pick, prompt_tokens: float | None) -> IoSteps[None]:
        yield from self.scheduler.on_success_steps(pick, prompt_tokens)
        self._record(pick, "ok")

    def cancelled(
        self, pick: Pick, *, sent: bool = True, prompt_tokens: float | None = None
    ) -> None:
        """The attempt on ``pick`` ended without an outcome: cancelled, interrupted, or a
        stream the caller stopped reading. Its key is given back; its window slot too when
        the request was never ``sent``. ``prompt_tokens``, if the server reported them before
        the end, correct the estimate of a sent request."""
        run_blocking(self.cancelled_steps(pick, sent=sent, prompt_tokens=prompt_tokens))

    def cancelled_steps(
        self, pick: Pick, *, sent: bool = True, prompt_tokens: float | None = None
    ) -> IoSteps[None]:
        return self.scheduler.release_steps(pick, sent=sent, prompt_tokens=prompt_tokens)

    @property
    def booked(self) -> bool:
        """Whether a slot is booked for this request and not yet used (see ``close``)."""
        return self._booked is not None

    def close(self) -> None:
        """The request is over: a slot it booked and never used is given back in full."""
        run_blocking(self.close_steps())

    def close_steps(self) -> IoSteps[None]:
        booked, self._booked = self._booked, None
        if booked is not None:
            yield from self.scheduler.release_steps(booked, sent=False)

    def _record(self, pick: Pick, outcome: str) -> None:
        self.attempts.append(
            {
                "key_index": pick.index,
                "project": self.scheduler.project_of(pick.index),
                "outcome": outcome,
            }
        )

    def _tag(self, exc: BaseException) -> BaseException:
        redact_exception(exc)  # every failure the pool may let out passes here
        with contextlib.suppress(AttributeError):  # exceptions with __slots__
            setattr(exc, ATTEMPTS_ATTR, list(self.attempts))
        return exc

"""How ``ChatGeminiPool`` makes one request: its plan, the steps ``_driver`` performs for
every entry point, who asked, and what is recorded and stamped on the answer."""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.genai.types import GenerateContentConfig
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

from langchain_gemini_pool._clock import Clock
from langchain_gemini_pool._driver import (
    Close,
    Emit,
    Io,
    IoSteps,
    Op,
    Pull,
    Send,
    Sleep,
    Steps,
    detached,
)
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._ladder import LadderPick, LadderScheduler, adapt_config, served_model
from langchain_gemini_pool._ladder_plan import LadderPlan
from langchain_gemini_pool._members import KEY_KWARG, MODEL_KWARG, Member, Members, put_key
from langchain_gemini_pool._pool_parts import PoolParts
from langchain_gemini_pool._scheduler import Pick, Scheduler
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool._streams import StreamTally
from langchain_gemini_pool._usage_limits import check_usage, resolve_limits

logger = logging.getLogger("langchain_gemini_pool")

AnyScheduler = Scheduler | SharedScheduler | LadderScheduler

USER_KW = "_gemini_pool_user"
POOL_METADATA = ("key_index", "key_fingerprint", "project", "attempts")
DEFAULT_USER = "anonymous"


@dataclass
class Call:
    """What one pass through ``_generate_with_cache`` learned: who asked, whether we sent."""

    user: str
    sent: bool = False


CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("gemini_pool_call", default=None)


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A cheap local estimate of input tokens (about four characters a token)."""
    chars = 0
    for message in messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        else:
            for block in content:
                if isinstance(block, str):
                    chars += len(block)
                elif isinstance(block, dict) and isinstance(block.get("text"), str):
                    chars += len(block["text"])
    return max(1, math.ceil(chars / 4))


def user_of(metadata: Mapping[str, Any] | None) -> str:
    user = (metadata or {}).get("user_id")
    return str(user) if user not in (None, "") else DEFAULT_USER


def caller(run_manager: Any, kwargs: dict[str, Any], default: str = DEFAULT_USER) -> str:
    """Who asked: the user ``stream`` passed along (popped, so it never reaches the cache
    key), else the run's metadata, else ``default``."""
    passed = kwargs.pop(USER_KW, None)
    if passed:
        return str(passed)
    metadata = getattr(run_manager, "metadata", None)
    return user_of(metadata) if metadata else default


class PoolRequest(PoolParts):
    """One request's way through the pool, with no I/O of its own (see ``_driver``)."""

    def _plan(
        self, sched: AnyScheduler, clock: Clock, messages: Sequence[BaseMessage] | None
    ) -> RequestPlan:
        """The plan of one request on the pool's scheduler and clock."""
        reserve = messages is not None  # counting tokens spends no generate quota
        tokens = estimate_tokens(messages) if messages and self.limits is not None else 0
        kind: type[RequestPlan] = LadderPlan if isinstance(sched, LadderScheduler) else RequestPlan
        return kind(
            sched,
            clock.now,
            max_attempts=self._attempts_allowed(sched.size),
            max_wait=self.max_wait,
            tokens=tokens,
            reserve=reserve,
        )

    def _attempts_allowed(self, keys: int) -> int:
        """``max_attempts``; else an explicitly given ``max_retries`` (the bare class's
        attempts, here spread over keys); else each key once, at least 3."""
        if self.max_attempts is not None:
            return self.max_attempts
        if "max_retries" in self.model_fields_set:
            return max(1, self.max_retries)
        return max(3, keys)

    def _begin(self, user: str) -> None:
        """A request is about to be sent: mark it (not a cache hit) and check usage limits."""
        call = CALL.get()
        if call is not None:
            call.sent = True
        if self.usage_limits is not None and (ledger := self._ledger) is not None:
            limits = resolve_limits(self.usage_limits, user)
            if limits is not None:
                check_usage(ledger, user, limits)

    def _record(
        self,
        user: str,
        message: BaseMessage | None,
        error: BaseException | None,
        *,
        cached: bool = False,
    ) -> None:
        ledger = self._ledger
        if ledger is None:
            return
        try:
            ledger.record(
                message=message,
                error=error,
                user=user,
                model=served_model(message) or self.model,
                cached=cached,
            )
        except Exception:  # the ledger must never break a request
            logger.warning("Could not record usage in the ledger.", exc_info=True)

    def _stamp(self, message: BaseMessage, pick: Pick, plan: RequestPlan) -> None:
        """Say on the message which key served it, how, and any quota warning it caused."""
        sched = plan.scheduler
        attempts = list(plan.attempts)
        if (
            not attempts or attempts[-1]["outcome"] != "ok"
        ):  # a stream stamps before the books close
            attempts.append(
                {
                    "key_index": pick.index,
                    "project": sched.project_of(pick.index),
                    "outcome": "ok",
                    **({"model": pick.model} if isinstance(pick, LadderPick) else {}),
                }
            )
        if isinstance(pick, LadderPick) and pick.rung:
            message.response_metadata["fallback_from"] = self.model
        message.response_metadata.update(
            key_index=pick.index,
            key_fingerprint=sched.fingerprint_of(pick.index),
            project=sched.project_of(pick.index),
            attempts=attempts,
        )
        if plan.quota_warnings:
            message.response_metadata["quota_warnings"] = list(plan.quota_warnings)

    def _prepare_request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The bare class's request, sent to the ladder model a member passed (if any)."""
        model = kwargs.pop(MODEL_KWARG, None)
        request: dict[str, Any] = super()._prepare_request(*args, **kwargs)
        if model is not None:
            request["model"] = model
            adapt_config(model, request["config"])
        return request

    def _build_request_config(self, *args: Any, **kwargs: Any) -> GenerateContentConfig:
        """The bare class's request config, with the key a member passed as its header."""
        key = kwargs.pop(KEY_KWARG, None)
        caller_options = kwargs.get("http_options")
        config = super()._build_request_config(*args, **kwargs)
        if key is not None:
            put_key(config, key, caller_options)
        return config

    def _rotated(self, members: Members, pick: Pick) -> Member:
        logger.debug("Rotated to API key index %d", pick.index)
        model = pick.model if isinstance(pick, LadderPick) and pick.rung else None
        return members.sender(self, pick.index, model)

    @staticmethod
    def _user(run_manager: Any, kwargs: dict[str, Any]) -> str:
        call = CALL.get()  # set by _generate_with_cache, whose run manager knew the user
        return caller(run_manager, kwargs, call.user if call is not None else DEFAULT_USER)

    # --- one request, for every entry point -------------------------------------------------

    def _steps(self, messages: list[BaseMessage] | None, user: str, kind: str) -> Steps:
        """What one request does, in order, with no I/O of its own (see ``_driver``):
        ``kind`` is "call" (one result), "stream" (its chunks) or "count" (tokens). The
        scheduler's backend I/O comes as the ``Io`` ops of the plan's ``*_steps``."""
        # pydantic finds a private attribute by a slow path (about 1.5 us a lookup): one read
        private = cast("dict[str, Any]", self.__pydantic_private__)
        sched, clock, members = private["_scheduler"], private["_clock"], private["_members"]
        ledger = kind != "count" and private["_ledger"] is not None
        plan: RequestPlan | None = None
        try:
            if ledger and self.usage_limits is not None:  # the ledger may read from disk
                yield Io(self._begin, (user,), True)
            elif kind != "count":
                self._begin(user)
            plan = self._plan(sched, clock, messages)
            step, reply = yield from self._attempts(plan, members, stream=kind == "stream")
            if kind == "call":
                yield from self._finish_steps(plan, step, reply)
                if ledger:
                    yield Io(self._record, (user, reply.generations[0].message, None), True)
            elif kind == "count":
                yield from plan.succeeded_steps(step, None)
        except Exception as exc:
            if ledger:
                yield Io(self._record, (user, None, exc), True)
            raise
        finally:
            if plan is not None and plan.booked:  # a slot booked and never used: give it back
                yield from detached(plan.close_steps())
        if kind == "stream":
            yield from self._stream_steps(plan, step, reply, user, ledger)
        else:
            yield Emit(reply)

    def _attempts(
        self, plan: RequestPlan, members: Members, *, stream: bool
    ) -> Generator[Op, Any, tuple[Pick, Any]]:
        """Attempts until one succeeds (its pick and reply: for a stream, the stream and its
        first chunk); raises what the plan will not retry."""
        while True:
            step = yield from plan.next_steps()
            if not isinstance(step, Pick):
                yield Sleep(step)
                continue
            try:
                member = self._rotated(members, step)
            except BaseException:  # nothing was sent: give the slot back whole
                yield from detached(plan.cancelled_steps(step, sent=False))
                raise
            try:
                reply = yield Send(member)
                if stream:  # a stream's failures before its first chunk are retried
                    reply = (reply, (yield Pull(reply)))
            except Exception as exc:
                if not (yield from plan.retry_steps(step, exc)):
                    raise
                continue
            except BaseException:  # cancelled or interrupted mid-call: no outcome
                yield from detached(plan.cancelled_steps(step))
                raise
            return step, reply

    def _stream_steps(
        self, plan: RequestPlan, step: Pick, opened: Any, user: str, ledger: bool
    ) -> Steps:
        """A stream after its first chunk: hand on every chunk, then the pool's last one."""
        chunks, chunk = opened
        tally = StreamTally(plan, step, functools.partial(self._stamp, pick=step, plan=plan))
        try:
            while chunk is not None:
                yield Emit(tally.see(chunk))
                chunk = yield Pull(chunks)
        except Exception as exc:
            yield from tally.failed_steps(exc)
            if ledger:
                yield Io(self._record, (user, None, exc), True)
            raise
        except BaseException:  # abandoned (GeneratorExit), cancelled or interrupted
            yield from detached(tally.abandoned_steps())
            yield Close(chunks)  # a generator: let go of its connection
            raise
        last, summary = yield from tally.done_steps()
        if ledger:
            yield Io(self._record, (user, summary, None), True)
        yield Emit(last)

    def _finish_steps(self, plan: RequestPlan, step: Pick, result: ChatResult) -> IoSteps[None]:
        message = result.generations[0].message
        usage = getattr(message, "usage_metadata", None)
        yield from plan.succeeded_steps(step, usage["input_tokens"] if usage else None)
        for generation in result.generations:
            self._stamp(generation.message, step, plan)

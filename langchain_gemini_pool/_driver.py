"""One caller request's way through the pool, written once for sync and async.

A request's steps (see ``ChatGeminiPool._steps``) are a generator that does no I/O: it
yields what must be done next and is sent the result, or has the exception thrown in.
``drive`` performs the steps with blocking calls, ``adrive`` with awaits; they are the only
places where the four entry points (``_generate``, ``_agenerate``, ``_stream``,
``_astream``) differ. Both are generators of what the request hands its caller: the
chunks of a stream, or the one result of a call.

The ops:

- ``Io``: a call that may reach the state backend or the ledger. Sync calls ``fn``. Async
  awaits ``afn`` when given (the backend's own async I/O: ``redis.asyncio``, or DiskState's
  thread), else runs ``fn`` in a thread when ``blocking``, so the event loop never waits on a
  disk or on Redis. One with ``wait=False`` gives a key back while the request is torn down
  (cancelled, interrupted, abandoned): async does not wait for it, as a cancelled task must
  not be held up; it runs ``fn`` in a thread when ``blocking`` (else at once), which the
  loop's shutdown still waits for, so the key is given back even then (see ``detached``).
- ``Sleep``: wait on the pool's clock.
- ``Send``: make one attempt on a member (the entry point's own call).
- ``Pull``: the next chunk of a stream, or None at its end.
- ``Emit``: hand a chunk (or the call's result) to the caller.
- ``Close``: let go of a stream the caller abandoned (sync generators only; an async one
  is finalised by the event loop).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from langchain_gemini_pool._clock import Clock

logger = logging.getLogger("langchain_gemini_pool")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Io:
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    blocking: bool = False
    wait: bool = True
    afn: Callable[..., Awaitable[Any]] | None = None
    """The awaitable twin of ``fn`` (same arguments, same result), for ``adrive``."""


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Send:
    member: Any


@dataclass(frozen=True, slots=True)
class Pull:
    chunks: Any


@dataclass(frozen=True, slots=True)
class Emit:
    value: Any


@dataclass(frozen=True, slots=True)
class Close:
    chunks: Any


class Abandoned(BaseException):
    """The caller stopped reading a stream, as the steps see it. Runners throw this in
    instead of ``GeneratorExit``, which ``yield from`` would turn into closing the inner
    steps before they could give their key back."""


Op = Union[Io, Sleep, Send, Pull, Emit, Close]  # noqa: UP007 (a runtime alias)
Steps = Generator[Op, Any, None]
IoSteps = Generator[Io, Any, T]
"""Steps that only do ``Io`` and return a ``T``: a scheduler's, a plan's, a tally's."""


def run_blocking(steps: IoSteps[T]) -> T:
    """Perform ``steps`` with blocking I/O and return their result (the sync form of a
    ``*_steps`` method: ``plan.next()`` is ``run_blocking(plan.next_steps())``)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            value, error = op.fn(*op.args), None
        except BaseException as exc:  # the steps decide
            value, error = None, exc


def done(value: T) -> IoSteps[T]:
    """Steps that need no I/O: ``value`` at once (a scheduler with no backend)."""
    return value
    yield  # pragma: no cover - makes this a generator


def detached(steps: IoSteps[Any]) -> Generator[Io, Any, None]:
    """``steps`` with every ``Io`` marked ``wait=False``: a give-back while the request is
    torn down, which a cancelled async caller does not wait for (sync still does it)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.send(value) if error is None else steps.throw(error)
        except StopIteration:
            return
        try:
            value, error = (yield Io(op.fn, op.args, op.blocking, False, op.afn)), None
        except Exception as exc:
            value, error = None, exc


def drive(steps: Steps, call: Callable[[Any], Any], clock: Clock) -> Iterator[Any]:
    """Perform ``steps`` with blocking I/O; ``call(member)`` makes one attempt."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.send(value) if error is None else steps.throw(error)
        except StopIteration:
            return
        except Abandoned:
            raise GeneratorExit from None
        value, error = None, None
        try:
            if isinstance(op, Emit):
                yield op.value
            elif isinstance(op, Io):
                value = op.fn(*op.args)
            elif isinstance(op, Send):
                value = call(op.member)
            elif isinstance(op, Pull):
                value = next(op.chunks, None)
            elif isinstance(op, Sleep):
                clock.sleep(op.seconds)
            else:
                close = getattr(op.chunks, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # the steps decide, even on GeneratorExit
            error = Abandoned() if isinstance(exc, GeneratorExit) else exc


async def adrive(
    steps: Steps, call: Callable[[Any], Awaitable[Any]], clock: Clock
) -> AsyncGenerator[Any, None]:
    """Perform ``steps`` with awaits; ``call(member)`` makes one attempt."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = steps.send(value) if error is None else steps.throw(error)
        except StopIteration:
            return
        except Abandoned:
            raise GeneratorExit from None
        value, error = None, None
        try:
            if isinstance(op, Emit):
                yield op.value
            elif isinstance(op, Io):
                if op.wait and op.afn is not None:  # the backend's own async I/O
                    value = await op.afn(*op.args)
                elif not op.blocking:
                    value = op.fn(*op.args)
                elif op.wait:
                    value = await asyncio.to_thread(op.fn, *op.args)
                else:
                    _detach(op)
            elif isinstance(op, Send):
                value = await call(op.member)
            elif isinstance(op, Pull):
                value = await anext(op.chunks, None)
            elif isinstance(op, Sleep):
                await clock.asleep(op.seconds)
        except BaseException as exc:  # the steps decide, even on cancellation
            error = Abandoned() if isinstance(exc, GeneratorExit) else exc


def _detach(op: Io) -> None:
    """Run ``op`` in a thread without waiting for it (the loop's shutdown waits for its
    executor's threads, so it still happens)."""
    future = asyncio.get_running_loop().run_in_executor(None, op.fn, *op.args)
    future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning(
            "Could not give a key back to the shared state.", exc_info=future.exception()
        )


def result_of(values: Iterator[Any]) -> Any:
    """The one value a call's steps emit."""
    (value,) = values
    return value


async def aresult_of(values: AsyncIterator[Any]) -> Any:
    """The one value a call's steps emit (async)."""
    found = [value async for value in values]
    (value,) = found
    return value

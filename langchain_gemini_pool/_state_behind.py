"""Plain settles written behind the caller: a success or a slot given back, off the hot path.

After a call, a ``RedisState`` settle is a write the caller need not wait for: nothing
another process must see at once (a verdict, a 429, a bad key, still goes straight through
and waits). Even unwaited, building and writing the command costs 150 to 300 µs when the
process comes back from a 20 ms wait on the network and runs cold, so it is handed to one
thread of this process, which writes the settles in order while the caller goes on.
(``DiskState`` writes its own: a write from another SQLite connection would cost the
caller's connection its page cache, more than it saves.)

Nothing is lost or reordered where it matters:

- This process's next decision on a shared backend (an ``admit`` that asks the backend, a
  ``snapshot``), on any of its backends, first waits until every settle handed over before
  it is applied (``drain``): the process sees its own settles, as when it wrote them
  itself. While a settle waits behind, its slot still counts as in flight, which is never
  fewer than the truth.
- ``close`` and interpreter exit drain too; a forked child starts with nothing queued (its
  parent writes its own).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Callable

from langchain_gemini_pool._log_throttle import throttled_level
from langchain_gemini_pool._state_types import Settle

logger = logging.getLogger("langchain_gemini_pool")

IDLE_S = 5.0
"""The writer thread ends after this long with nothing to write (``put`` starts another)."""


class _Writer:
    """This process's queue of settles and the one thread that writes them, in order."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.more = threading.Condition(self.lock)
        self.done = threading.Condition(self.lock)
        self.queue: collections.deque[tuple[Callable[[Settle], None], Settle]] = collections.deque()
        self.busy = False  # the thread is writing one it took off the queue
        self.warned: dict[str, float] = {}
        self.thread: threading.Thread | None = None

    def loop(self) -> None:
        while True:
            with self.lock:
                if not self.queue:
                    self.more.wait(IDLE_S)
                    if not self.queue:
                        self.thread = None
                        return
                self.busy = True  # before the queue shrinks: ``drain`` reads both unlocked
                write, outcome = self.queue.popleft()
            try:
                write(outcome)
            except Exception as exc:  # the backend's outage policy has had its say
                level = throttled_level(self.warned, "write", time.monotonic())
                logger.log(
                    level,
                    "Could not record a request's end in the shared state (%s); its slot "
                    "counts until the backend takes it back.",
                    type(exc).__name__,
                )
            finally:
                with self.lock:
                    self.busy = False
                    self.done.notify_all()


_writer = _Writer()


def _current() -> _Writer:
    global _writer
    if _writer.pid != os.getpid():  # forked: the parent's queue is the parent's to write
        _writer = _Writer()
    return _writer


def put(write: Callable[[Settle], None], outcome: Settle) -> None:
    """Have ``write(outcome)`` done behind the caller, after those handed over before it."""
    w = _current()
    with w.lock:
        w.queue.append((write, outcome))
        if w.thread is None:
            w.thread = threading.Thread(target=w.loop, daemon=True, name="gemini-pool-settles")
            w.thread.start()
        w.more.notify()


def drain() -> None:
    """Wait until every settle handed over so far is written (at once when none is)."""
    w = _writer
    if (not w.queue and not w.busy) or w.pid != os.getpid():
        return
    if w.thread is threading.current_thread():  # a write that decides: never wait on itself
        return
    with w.lock:
        while w.queue or w.busy:
            w.done.wait(1.0)


atexit.register(drain)

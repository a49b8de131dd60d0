"""The keys of one priority level ordered by load, for the ``least_used`` strategy.

Scanning every key on every request costs O(n): at 1,000 keys a choice took ~90x what it
took at 10. This queue keeps ``(load, index)`` in a heap so the least-used ready key is found
in O(log n). Entries are never updated in place: a key whose load changes is pushed again
with a new stamp, and entries with an old stamp are dropped when they surface. Keys found
cooling are parked in a second heap until their cooldown ends, so they are not looked at
again on every choice.

The queue only orders candidates; the scheduler still decides whether each one is usable.
Not thread-safe on its own: the scheduler's lock guards it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator


class LoadQueue:
    """Key indices by ``(load, index)``, with lazy invalidation and parking.

    Every key in the queue has exactly one current entry: in the heap, parked, or handed
    out by ``candidates`` and not yet given back with ``restore``, ``park``, ``push`` or
    ``discard``.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, int]] = []  # (load, index, stamp)
        self._parked: list[tuple[float, int, int, int]] = []  # (until, index, stamp, load)
        self._stamps: dict[int, int] = {}
        self._next_stamp = 0

    def __contains__(self, index: object) -> bool:
        return index in self._stamps

    def push(self, index: int, load: int) -> None:
        """Insert a key, or move it to ``load`` (any earlier entry of it becomes stale)."""
        self._next_stamp += 1
        self._stamps[index] = self._next_stamp
        heapq.heappush(self._heap, (load, index, self._next_stamp))
        if len(self._heap) + len(self._parked) > 4 * len(self._stamps) + 64:
            self._compact()

    def discard(self, index: int) -> None:
        """Forget a key (quarantined or removed) until it is pushed again."""
        self._stamps.pop(index, None)

    def restore(self, index: int, load: int) -> None:
        """Give back, unchanged, an entry handed out by ``candidates``."""
        if (stamp := self._stamps.get(index)) is not None:
            heapq.heappush(self._heap, (load, index, stamp))

    def park(self, index: int, load: int, until: float) -> None:
        """Give back an entry handed out by ``candidates``, hidden until ``until``."""
        if (stamp := self._stamps.get(index)) is not None:
            heapq.heappush(self._parked, (until, index, stamp, load))

    def candidates(self, now: float) -> Iterator[tuple[int, int]]:
        """Hand out current ``(index, load)`` entries, least load first (ties: lowest index).

        Parked entries whose time has come (``until <= now``) return first. Each entry
        handed out leaves the queue until it is given back.
        """
        parked, heap, stamps = self._parked, self._heap, self._stamps
        while parked and parked[0][0] <= now:
            _, index, stamp, load = heapq.heappop(parked)
            if stamps.get(index) == stamp:
                heapq.heappush(heap, (load, index, stamp))
        while heap:
            load, index, stamp = heapq.heappop(heap)
            if stamps.get(index) == stamp:
                yield index, load

    def _compact(self) -> None:
        stamps = self._stamps
        self._heap = [e for e in self._heap if stamps.get(e[1]) == e[2]]
        self._parked = [e for e in self._parked if stamps.get(e[1]) == e[2]]
        heapq.heapify(self._heap)
        heapq.heapify(self._parked)

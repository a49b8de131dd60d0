"""The scheduler's key book: which keys and projects there are, and their priority levels.

Adding and removing keys, the levels (active keys by priority, in index order) that
selection walks, and the ``least_used`` load queues kept in step with each key's load.
The public methods here take the lock; the private ones run under it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_gemini_pool._load_queue import LoadQueue
from langchain_gemini_pool._quota import ProjectWindow, QuotaLimits
from langchain_gemini_pool._scheduler_types import KeyState, LimitsArg, ProjectState, Strategy


class KeyBook:
    """The keys and projects of one ``Scheduler``, by priority level (see ``Scheduler``)."""

    def __init__(
        self,
        strategy: Strategy = "round_robin",
        limits: LimitsArg = None,
    ) -> None:
        if strategy not in ("round_robin", "least_used"):
            raise ValueError(f"strategy must be 'round_robin' or 'least_used', not {strategy!r}.")
        self.strategy: Strategy = strategy
        self._limits = limits
        self._lock = threading.Lock()
        self._keys: list[KeyState] = []
        self._projects: dict[str, ProjectState] = {}
        # Active keys by priority level, levels in ascending priority, keys in index order.
        # Kept up to date one key at a time, so adding n keys costs O(n log n) in all.
        self._levels: list[tuple[int, list[KeyState]]] = []
        self._level_of: dict[int, list[KeyState]] = {}
        self._size = 0
        self._cursor: dict[int, int] = {}
        self._queues: dict[int, LoadQueue] = {}  # least_used only: one per priority level

    # --- membership -------------------------------------------------------------------------

    def _limits_for(self, project: str) -> QuotaLimits | None:
        if isinstance(self._limits, QuotaLimits) or self._limits is None:
            return self._limits
        return self._limits.get(project)

    def add_key(self, project: str, fingerprint: str) -> int:
        """Add a key; returns its index, stable for the scheduler's life."""
        return self.add_keys([(project, fingerprint)])[0]

    def add_keys(self, keys: Iterable[tuple[str, str]]) -> list[int]:
        """Add ``(project, fingerprint)`` pairs in one step; returns their indices in order.

        Each key costs O(log n) (its level is found in a dict, a new level is placed by
        bisection), so building a pool of n keys costs O(n log n), not O(n²).
        """
        with self._lock:
            indices = []
            for project, fingerprint in keys:
                if project not in self._projects:
                    window = ProjectWindow(self._limits_for(project))
                    self._projects[project] = ProjectState(project, window)
                state = KeyState(len(self._keys), project, fingerprint)
                self._keys.append(state)
                self._enter_level(state)
                indices.append(state.index)
            return indices

    def add_entries(self, entries: Sequence[Any]) -> list[int]:
        """Add keys given as ``KeyEntry`` (anything with ``project`` and ``fingerprint``)."""
        return self.add_keys((e.project, e.fingerprint) for e in entries)

    def remove_key(self, index: int) -> None:
        with self._lock:
            key = self._key(index)
            if self.strategy == "least_used":
                self._queues[self._projects[key.project].priority].discard(index)
            key.removed = True
            self._leave_level(key)

    def _key(self, index: int) -> KeyState:
        if not 0 <= index < len(self._keys) or self._keys[index].removed:
            raise KeyError(f"No key with index {index} in the pool.")
        return self._keys[index]

    def _enter_level(self, key: KeyState) -> None:
        """Put a new key (the highest index so far) at the end of its priority level."""
        priority = self._projects[key.project].priority
        level = self._level_of.get(priority)
        if level is None:
            level = self._level_of[priority] = []
            at = bisect.bisect_left([p for p, _ in self._levels], priority)
            self._levels.insert(at, (priority, level))
        level.append(key)
        self._size += 1
        if self.strategy == "least_used":
            self._queues.setdefault(priority, LoadQueue())
            if key.invalid_reason is None:
                self._requeue(key)

    def _leave_level(self, key: KeyState) -> None:
        """Take a removed key out of its level; an emptied level goes (O(level size))."""
        priority = self._projects[key.project].priority
        level = self._level_of[priority]
        level.remove(key)
        self._size -= 1
        if not level:
            del self._level_of[priority]
            self._levels = [(p, keys) for p, keys in self._levels if p != priority]
            self._cursor.pop(priority, None)

    def _requeue(self, key: KeyState) -> None:
        """least_used: (re)insert a key at its current load, or drop it if unusable."""
        if self.strategy != "least_used" or key.removed:
            return
        queue = self._queues[self._projects[key.project].priority]
        if key.invalid_reason is None:
            queue.push(key.index, self._load(key))
        else:
            queue.discard(key.index)

    @property
    def size(self) -> int:
        """How many keys are in the pool (removed keys not counted)."""
        return self._size

    def active_indices(self) -> list[int]:
        with self._lock:
            return [k.index for k in self._keys if not k.removed]

    @staticmethod
    def _load(key: KeyState) -> int:
        return key.requests + key.in_flight

    def project_of(self, index: int) -> str:
        return self._keys[index].project

    def fingerprint_of(self, index: int) -> str:
        return self._keys[index].fingerprint

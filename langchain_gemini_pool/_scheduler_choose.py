"""Choosing a key: a ready key of the lowest priority level, by strategy, within quota.

Pure decisions over the ``KeyBook``: no I/O, ``now`` from the caller; ``choose`` takes the
lock, the rest run under it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from typing import Any

from langchain_gemini_pool._load_queue import LoadQueue
from langchain_gemini_pool._scheduler_keys import KeyBook
from langchain_gemini_pool._scheduler_types import KeyState, NoKeys, Pick, Wait

logger = logging.getLogger("langchain_gemini_pool")


class Chooser(KeyBook):
    """``KeyBook`` plus the choice of the next key (see ``Scheduler.choose``)."""

    # --- choosing ---------------------------------------------------------------------------

    def _ready_at(self, key: KeyState, now: float, tokens: float, reserve: bool) -> float:
        project = self._projects[key.project]
        at = max(now, key.cooling_until, project.cooling_until)
        if reserve:
            at = max(at, project.window.ready_at(now, tokens))
        return at

    def choose(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> Pick | Wait | NoKeys:
        """Pick the next key for a request of ``tokens`` estimated input tokens.

        Keys in ``avoid`` (already tried for this request) are used only when no other key
        of their priority level is ready: a tried key of a lower number still comes before
        the keys of a higher one, which are for when the lower level is out of room. With
        ``reserve`` the request is counted against its project's windows.

        With ``book_until``, when no key is ready now but a project with limits frees a
        slot by then, that slot is booked (counted in the window at its future time) and
        returned with ``Pick.at`` set: waiters are then served first come, first served,
        instead of racing for each slot as they wake, where an unlucky one can lose window
        after window and run out of ``max_wait`` while the pool is at full throughput.
        """
        with self._lock:
            picked = self._choose(now, tokens, avoid, reserve)
            if isinstance(picked, Wait) and reserve and book_until is not None:
                return self._book(now, tokens, avoid, book_until) or picked
            return picked

    def _book(
        self, now: float, tokens: float, avoid: Collection[int], book_until: float
    ) -> Pick | None:
        """Book the earliest future slot of a project with limits, if it frees in time."""
        best: KeyState | None = None
        best_at = math.inf
        for _priority, keys in self._levels:
            for key in keys:
                project = self._projects[key.project]
                if key.invalid_reason is not None or project.window.limits is None:
                    continue
                at = self._ready_at(key, now, tokens, True)
                tried = best is not None and best.index in avoid and key.index not in avoid
                if at < best_at or (at == best_at and tried):
                    best, best_at = key, at
        if best is None or best_at > book_until or math.isinf(best_at):
            return None
        pick = self._take(best, best_at, tokens, True)
        return Pick(pick.index, pick.ticket, best_at)

    def _choose(
        self, now: float, tokens: float, avoid: Collection[int], reserve: bool
    ) -> Pick | Wait | NoKeys:
        """``choose`` without booking; the caller holds the lock."""
        if self.strategy == "least_used":
            for priority, _level in self._levels:
                found = self._least_used(self._queues[priority], now, tokens, avoid, reserve)
                if found is not None:
                    return self._take(found, now, tokens, reserve)
            return self._no_pick(
                min(
                    (
                        self._ready_at(key, now, tokens, reserve)
                        for _, keys in self._levels
                        for key in keys
                        if key.invalid_reason is None
                    ),
                    default=math.inf,
                )
            )
        earliest = math.inf
        for _priority, keys in self._levels:
            chosen: KeyState | None = None
            fallback: KeyState | None = None
            chosen_at = fallback_at = 0
            n = len(keys)
            start = self._cursor.get(_priority, 0) % n
            for offset in range(n):
                key = keys[(start + offset) % n]
                if key.invalid_reason is not None:
                    continue
                at = self._ready_at(key, now, tokens, reserve)
                if at > now:
                    earliest = min(earliest, at)
                    continue
                position = (start + offset) % n
                if key.index in avoid:
                    if fallback is None:
                        fallback, fallback_at = key, position
                    continue
                chosen, chosen_at = key, position
                break
            if chosen is None and fallback is not None:
                chosen, chosen_at = fallback, fallback_at
            if chosen is not None:
                self._cursor[_priority] = chosen_at + 1
                return self._take(chosen, now, tokens, reserve)
        return self._no_pick(earliest)

    def _no_pick(self, earliest: float) -> Wait | NoKeys:
        if math.isinf(earliest) and not self._any_usable():
            return NoKeys(self._invalid_reasons())
        return Wait(earliest, self._wait_reason())

    def _least_used(
        self,
        queue: LoadQueue,
        now: float,
        tokens: float,
        avoid: Collection[int],
        reserve: bool,
    ) -> KeyState | None:
        """The ready key of one level with the least load (ties: lowest index), in O(log n).

        Returns None when the level has no ready key (``choose`` then tries the next level,
        and after the last one scans every key for the time to wait).
        """
        held: list[tuple[int, int]] = []
        chosen: KeyState | None = None
        fallback: KeyState | None = None
        for index, load in queue.candidates(now):
            key = self._keys[index]
            if key.invalid_reason is not None or key.removed:
                queue.discard(index)
                continue
            project = self._projects[key.project]
            cooling = max(key.cooling_until, project.cooling_until)
            if cooling > now:
                queue.park(index, load, cooling)
                continue
            fits = not reserve or project.window.ready_at(now, tokens) <= now
            if fits and index not in avoid:
                chosen = key  # not given back: _take re-queues it at its new load
                break
            held.append((index, load))
            if fits and fallback is None:
                fallback = key
        for index, load in held:
            queue.restore(index, load)
        return chosen or fallback

    def _take(self, key: KeyState, now: float, tokens: float, reserve: bool) -> Pick:
        key.requests += 1
        key.in_flight += 1
        self._requeue(key)
        project = self._projects[key.project]
        ticket = project.window.reserve(now, tokens) if reserve else [now, 0.0]
        limits = project.window.limits
        warning: dict[str, Any] | None = None
        if reserve and limits and limits.rpd:
            day = project.window._day
            used = project.window.day_fraction(now)
            if used >= 0.8 and project.window.warned_day != day:
                project.window.warned_day = day
                warning = {"project": project.name, "used": round(used, 3), "rpd": limits.rpd}
                logger.warning(
                    "Project %s has used %d%% of its daily request quota (%d requests).",
                    project.name,
                    int(100 * used),
                    limits.rpd,
                )
        return Pick(key.index, ticket, quota_warning=warning)

    def _any_usable(self) -> bool:
        return any(k.invalid_reason is None for _, keys in self._levels for k in keys)

    def _invalid_reasons(self) -> dict[str, str]:
        return {
            f"#{k.index} {k.fingerprint}": k.invalid_reason or "removed"
            for k in self._keys
            if not k.removed
        }

    def _wait_reason(self) -> str:
        reasons = {
            self._projects[k.project].cool_reason or k.cool_reason
            for _, keys in self._levels
            for k in keys
            if k.invalid_reason is None
        }
        reasons.discard(None)
        return "; ".join(sorted(r for r in reasons if r)) or "no project has quota room"

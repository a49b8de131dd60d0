"""Pure decisions: which key next, cooldowns, quarantine, quota windows.

The scheduler knows nothing of LangChain or HTTP. Every method takes ``now`` (epoch seconds)
from the caller's clock and returns a decision; the chat model does the calling. One lock
makes it safe from threads and from many asyncio tasks (no method awaits or does I/O).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._load_queue import LoadQueue
from langchain_gemini_pool._quota import ProjectWindow, QuotaLimits

logger = logging.getLogger("langchain_gemini_pool")

Strategy = Literal["round_robin", "least_used"]
LimitsArg = QuotaLimits | Mapping[str, QuotaLimits] | None

MIN_RATE_LIMIT_COOLDOWN_S = 1.0
"""Floor on a rate-limit cooldown. A 429 sent in the last milliseconds of a window carries a
RetryInfo that rounds to ``"0s"``; retrying at once draws 429 after 429 until the attempt cap
raises ``GoogleRateLimitError`` although ``max_wait`` had time to spare."""


def rate_limit_cooldown_s(failure: Failure, default_s: float, now: float) -> tuple[float, str]:
    """How long a 429 cools its (project, model), and why: until Pacific midnight for a
    per-day violation, else the server's hint (or ``default_s``), never under the floor."""
    if failure.per_day:
        return next_pacific_midnight(now) - now, "daily quota exhausted until midnight Pacific"
    delay = default_s if failure.retry_after_s is None else failure.retry_after_s
    return max(MIN_RATE_LIMIT_COOLDOWN_S, delay), failure.reason


@dataclass
class KeyState:
    """What the scheduler knows of one key."""

    index: int
    project: str
    fingerprint: str
    cooling_until: float = 0.0
    cool_reason: str | None = None
    invalid_reason: str | None = None
    removed: bool = False
    requests: int = 0
    successes: int = 0
    rate_limited: int = 0
    errors: int = 0
    in_flight: int = 0


@dataclass
class ProjectState:
    """What the scheduler knows of one project (keys of a project share its quota)."""

    name: str
    window: ProjectWindow
    cooling_until: float = 0.0
    cool_reason: str | None = None

    @property
    def priority(self) -> int:
        limits = self.window.limits
        return limits.priority if limits else 0


@dataclass(frozen=True)
class Pick:
    """Use key ``index``; ``ticket`` lets the outcome correct the quota reservation."""

    index: int
    ticket: list[float] = field(compare=False)
    at: float = field(default=0.0, compare=False)
    """When to send: later than ``now`` for a slot booked by ``choose(book_until=...)``."""
    quota_warning: dict[str, Any] | None = field(default=None, compare=False)
    """Set on the pick that took its project to 80% of its daily quota (once a day)."""
    reservation: Any = field(default=None, compare=False)
    """The shared-state backend's ``Reservation`` (``SharedScheduler`` only)."""


@dataclass(frozen=True)
class Wait:
    """No key can take the request before ``until`` (epoch seconds; ``inf`` = never)."""

    until: float
    reason: str


@dataclass(frozen=True)
class NoKeys:
    """Every key is quarantined (or removed)."""

    reasons: dict[str, str]


class Scheduler:
    """Chooses keys and records outcomes.

    Args:
        strategy: ``"round_robin"`` (starting at index 0) or ``"least_used"`` (the ready key
            with the fewest requests plus requests in flight; ties go to the lowest index).
        limits: One ``QuotaLimits`` for every project, or ``{project: QuotaLimits}``.
        default_cooldown_s: Cooldown after a 429 that carries no RetryInfo.
        fault_cooldown_s: Cooldown of a key after a server fault (0: none).
    """

    blocking = False
    """Whether a decision does I/O (async paths then run it in a thread): never here."""

    def __init__(
        self,
        strategy: Strategy = "round_robin",
        limits: LimitsArg = None,
        default_cooldown_s: float = 60.0,
        fault_cooldown_s: float = 0.0,
    ) -> None:
        if strategy not in ("round_robin", "least_used"):
            raise ValueError(f"strategy must be 'round_robin' or 'least_used', not {strategy!r}.")
        self.strategy: Strategy = strategy
        self._limits = limits
        self.default_cooldown_s = default_cooldown_s
        self.fault_cooldown_s = fault_cooldown_s
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

    @staticmethod
    def _load(key: KeyState) -> int:
        return key.requests + key.in_flight

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
        until = now + delay
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
            key = self._keys[index]
            self._cool(key, until, reason)
            project = self._projects[key.project]
            if until > project.cooling_until:
                project.cooling_until, project.cool_reason = until, reason

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

    def project_of(self, index: int) -> str:
        return self._keys[index].project

    def fingerprint_of(self, index: int) -> str:
        return self._keys[index].fingerprint


def status_row(
    key: Any,
    now: float,
    *,
    quarantine: str | None,
    cooling: tuple[float, str | None],
    scope_cooling: tuple[float, str | None],
    in_flight: int,
    room: Mapping[str, int | None],
    shared: bool,
) -> dict[str, Any]:
    """One ``pool_status()`` row: ``key`` gives its identity and this process's counters; the
    rest is what the scheduler (or the shared state) knows of the key and its scope now.

    The state is ``invalid`` (quarantined), ``cooling`` (until the later of the key's and its
    scope's cooldowns, with the reason of the later) or ``ready``.
    """
    (key_until, key_reason), (scope_until, scope_reason) = cooling, scope_cooling
    until = max(key_until, scope_until)
    reason: str | None
    if quarantine is not None:
        state, ready_in, reason = "invalid", None, quarantine
    elif until > now:
        state, ready_in = "cooling", round(until - now, 3)
        reason = scope_reason if scope_until >= key_until else key_reason
    else:
        state, ready_in, reason = "ready", 0.0, None
    return {
        "index": key.index,
        "fingerprint": key.fingerprint,
        "project": key.project,
        "state": state,
        "ready_in_s": ready_in,
        "requests": key.requests,
        "successes": key.successes,
        "rate_limited": key.rate_limited,
        "errors": key.errors,
        "reason": reason,
        "in_flight": in_flight,
        "room": dict(room),
        "shared": shared,
    }

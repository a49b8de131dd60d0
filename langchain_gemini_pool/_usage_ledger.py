"""The usage ledger: totals per user, key, project and model, per day, month and all time.

Its entries live in a store (``_ledger_store``: a dict or a diskcache directory;
``_ledger_redis``: Redis hashes shared by every host).

On disk it is a diskcache (SQLite) directory whose entries are JSON text — keys like
``["day", "2026-11-29", "user", "alice"]`` and :meth:`UsageTotals.to_dict` values — updated in one
SQLite transaction per request, so several processes can share it (see ``_ledger_store``). It
stores key *indices*, project names, user ids and model names, never key text.

Each request is added under every single grouping (total, user, model, key, project), read back
in one lookup, and under its finest cells (user, model, key, project) for queries combining
filters, read back with one index range scan (of one user's cells when a user is given).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from langchain_core.messages import BaseMessage

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._ledger_store import DiskStore, MemoryStore, Store, check_directory
from langchain_gemini_pool._usage_prices import ModelPrice, normalize_model
from langchain_gemini_pool._usage_record import UsageRecord, UsageTotals, usage_record

if TYPE_CHECKING:
    from langchain_gemini_pool._state_types import StateBackend

__all__ = ["LEDGER_DIR_ENV", "Period", "UsageLedger", "default_ledger_dir"]

Period = Literal["day", "month", "all"]

LEDGER_DIR_ENV = "GEMINI_POOL_LEDGER_DIR"
"""Environment variable that overrides the default ledger directory."""


def default_ledger_dir() -> Path:
    """``$GEMINI_POOL_LEDGER_DIR``, else ``<user cache dir>/langchain-gemini-pool/usage``."""
    override = os.environ.get(LEDGER_DIR_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("langchain-gemini-pool")) / "usage"


def _resolve_tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return timezone.utc
    if isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"Unknown time zone {tz!r}. Pass an IANA name such as 'UTC', "
                "'Europe/Paris' or 'America/Los_Angeles', or a datetime.tzinfo."
            ) from None
    raise TypeError(f"tz must be a time-zone name or a datetime.tzinfo, not {type(tz).__name__}.")


class UsageLedger:
    """Persistent totals per user, key, project and model, per day, month and all time.

    Args:
        directory: A directory for the ledger's files; defaults to :func:`default_ledger_dir`.
            Ledgers opened on the same directory (in any process) share their totals.
        url: Keep the totals in Redis instead (``redis://[:password@]host:port/db``,
            ``rediss://…`` or ``unix:///path.sock``): every process of every host that uses
            this URL and ``prefix`` shares them, so ``UsageLimits`` hold deployment-wide.
            Needs the ``redis`` extra. Not with ``directory``.
        prefix: Start of every Redis key name (``<prefix>:ledger:…``); only with ``url``.
        tz: The time zone whose calendar days and months the periods follow; default UTC.
        clock: Where "now" comes from (a :class:`~langchain_gemini_pool.Clock`).
        prices: Price table for costs; defaults to ``DEFAULT_PRICES``.

    Raises:
        ValueError: If ``directory`` cannot be a directory (it is a file, its path runs
            through one, or it cannot be created), ``url`` is not a Redis URL, or both are given.
        ConnectionError: Redis at ``url`` cannot be reached or refuses the password (the
            message names the URL without its password).

    A directory that exists but cannot be used — a corrupt ``cache.db``, read-only, a full
    disk — never raises: a WARNING says what is wrong and how to recover, usage is kept in
    memory (totals stay exact in this process), and the directory is tried again every few
    seconds; what was kept is written there once it works. :attr:`problem` tells the state.

    In Redis, each record is one Lua script call (one round trip, atomic) adding to hashes
    ``<prefix>:ledger:day:2026-11-30:g`` (groups), ``…:c:<user>`` (that user's cells, for
    combined filters) and the set ``…:u`` (users with cells); month buckets are named
    ``…:month:2026-11:…`` and all-time ``…:all:…``. Every key has a TTL, refreshed by each
    write: day buckets 8 days, month buckets and all-time totals 400 days (so ``at=`` reaches
    back a week for days and a year for months). A Redis lost mid-run is handled like a
    failing directory: one WARNING, usage kept in memory (totals meanwhile count only what
    this process recorded since), Redis tried again every few seconds and what was kept
    written there once it answers; nothing is raised into a request. After ``fork`` the
    child opens its own connection. :meth:`from_state` puts the ledger in a pool's state
    backend.

    Example:
        >>> ledger = UsageLedger.in_memory()
        >>> record = ledger.record(message, user="alice")  # once per caller request
        >>> ledger.totals(user="alice", period="month").total_tokens
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        tz: str | tzinfo | None = None,
        clock: Clock | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        url: str | None = None,
        prefix: str = "gemini-pool",
        _store: Store | None = None,
    ) -> None:
        self._tz = _resolve_tz(tz)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._prices = prices
        self.directory: Path | None = None
        self.url: str | None = None
        if url is not None:
            if directory is not None:
                raise ValueError(
                    "Give UsageLedger a directory or a Redis url, not both: the totals live in "
                    "one place."
                )
            from langchain_gemini_pool._ledger_redis import RedisStore

            self._store: Store = RedisStore(url, prefix, self._clock)
            self.url = url
        elif _store is not None:
            self._store = _store
        else:
            path = Path(directory).expanduser() if directory is not None else default_ledger_dir()
            check_directory(path, LEDGER_DIR_ENV)
            self.directory = path
            self._store = DiskStore(path, self._clock)

    @classmethod
    def in_memory(
        cls,
        tz: str | tzinfo | None = None,
        clock: Clock | None = None,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> UsageLedger:
        """A ledger kept in this process's memory only (lost when it exits)."""
        return cls(tz=tz, clock=clock, prices=prices, _store=MemoryStore())

    @classmethod
    def from_state(
        cls,
        state: StateBackend,
        *,
        tz: str | tzinfo | None = None,
        clock: Clock | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> UsageLedger:
        """A ledger kept where a pool's shared state is, shared as widely as that state.

        ``RedisState`` → Redis at its URL and prefix; ``DiskState`` → a SQLite ledger in its
        directory's ``usage`` subdirectory; ``InMemoryState`` → this process's memory. The
        clock defaults to the state's own.

        Raises:
            TypeError: ``state`` is none of the three.
        """
        from langchain_gemini_pool._state_disk import DiskState
        from langchain_gemini_pool._state_memory import InMemoryState
        from langchain_gemini_pool._state_redis import RedisState

        own: Any = getattr(state, "_clock", None)
        clock = clock if clock is not None else own
        if isinstance(state, RedisState):
            return cls(url=state.url, prefix=state.prefix, tz=tz, clock=clock, prices=prices)
        if isinstance(state, DiskState):
            return cls(state.directory / "usage", tz=tz, clock=clock, prices=prices)
        if isinstance(state, InMemoryState):
            return cls.in_memory(tz=tz, clock=clock, prices=prices)
        raise TypeError(
            "UsageLedger.from_state needs an InMemoryState, DiskState or RedisState, not "
            f"{type(state).__name__}; build the ledger yourself (UsageLedger(directory) or "
            "UsageLedger(url=...))."
        )

    @property
    def location(self) -> str:
        """Where the totals live: the directory, the Redis URL (password masked), or
        ``"in memory"``."""
        if self.url is not None:
            from langchain_gemini_pool._state_redis_codec import safe_url

            return safe_url(self.url)
        return "in memory" if self.directory is None else str(self.directory)

    def __repr__(self) -> str:
        if self.url is not None:
            where = f"url={self.location!r}"
        else:
            where = "in_memory" if self.directory is None else repr(str(self.directory))
        return f"UsageLedger({where}, tz={self._tz!s})"

    def _repr_html_(self) -> str:
        """Jupyter: this month's totals by user, key, project and model."""
        from langchain_gemini_pool._html import ledger_html

        return ledger_html(self)

    # -- writing -----------------------------------------------------------------------------

    def record(
        self,
        message: BaseMessage | None = None,
        error: BaseException | None = None,
        *,
        user: str = "anonymous",
        model: str | None = None,
        cached: bool = False,
    ) -> UsageRecord:
        """Record one caller request: its final message, or the error it failed with.

        Returns:
            The :class:`UsageRecord` that was added.

        Raises:
            ValueError: If neither ``message`` nor ``error`` is given, or ``user`` is empty.
        """
        if not isinstance(user, str) or not user.strip():
            raise ValueError(f"user must be a non-empty string (a user id), got {user!r}.")
        rec = usage_record(
            message, error, user=user, model=model, cached=cached, prices=self._prices
        )
        self.add(rec)
        return rec

    def add(self, record: UsageRecord) -> None:
        """Add an already-read record under the current day, month and all time."""
        day, month = self._buckets(None)
        deltas: list[tuple[str, UsageTotals]] = []
        periods = (("day", day), ("month", month), ("all", ""))
        for dimension, name, delta in record.deltas():
            for period, bucket in periods:
                deltas.append((_key(period, bucket, dimension, name), delta))
        for user, model, key, project, delta in record.cells():
            for period, bucket in periods:
                deltas.append((_key(period, bucket, _CELL, user, model, key, project), delta))
        self._store.update(deltas)

    # -- reading -----------------------------------------------------------------------------

    def totals(
        self,
        user: str | None = None,
        key_index: int | None = None,
        project: str | None = None,
        model: str | None = None,
        period: Period = "all",
        *,
        at: float | datetime | None = None,
    ) -> UsageTotals:
        """Totals in one period of the requests matching every filter given (or of all).

        Filters combine: ``totals(user="alice", model="gemini-2.5-pro", period="month")`` is
        what alice spent on that model this month. Under a key or project, ``requests`` and
        tokens count the requests that ended there and ``attempts`` every attempt sent there.

        Args:
            user: Only this user's requests.
            key_index: Only what went through this key (its index in the pool).
            project: Only what went through this project's keys.
            model: Only this model (``models/`` prefix ignored).
            period: ``"day"`` (the current calendar day), ``"month"`` or ``"all"``.
            at: The moment whose day or month to read (epoch seconds or aware datetime);
                defaults to the clock's now.

        Raises:
            ValueError: If ``period`` is not one of the three, or ``key_index`` is not an int.
        """
        if period not in ("day", "month", "all"):
            raise ValueError(f"period must be 'day', 'month' or 'all', got {period!r}.")
        if key_index is not None and (
            isinstance(key_index, bool) or not isinstance(key_index, int)
        ):
            raise ValueError(f"key_index must be a key's index (an int), got {key_index!r}.")
        key = None if key_index is None else str(key_index)
        model = None if model is None else normalize_model(model)
        given = [
            (d, n)
            for d, n in (("user", user), ("key", key), ("project", project), ("model", model))
            if n is not None
        ]
        day, month = self._buckets(at)
        bucket = {"day": day, "month": month, "all": ""}[period]
        if len(given) <= 1:
            dimension, name = given[0] if given else ("total", "")
            return self._store.get(_key(period, bucket, dimension, name)) or UsageTotals()
        head = [period, bucket, _CELL] + ([user] if user is not None else [])
        prefix = json.dumps(head, ensure_ascii=False)[:-1] + ", "
        wanted = (user, model, key, project)
        out = UsageTotals()
        for raw_key, value in self._store.scan(prefix):
            cell = json.loads(raw_key)[3:]
            if all(w is None or w == c for w, c in zip(wanted, cell, strict=True)):
                out.add(value)
        return out

    def breakdown(
        self, period: Period = "all", *, at: float | datetime | None = None
    ) -> dict[str, dict[str, UsageTotals]]:
        """Every group of one period: ``{"total": {"": …}, "user": {...}, "key": {"0": …}, …}``."""
        day, month = self._buckets(at)
        bucket = {"day": day, "month": month, "all": ""}[period]
        out: dict[str, dict[str, UsageTotals]] = {}
        prefix = json.dumps([period, bucket], ensure_ascii=False)[:-1] + ", "
        for key, value in self._store.scan(prefix):
            parts = json.loads(key)
            if len(parts) == 4 and parts[2] != _CELL:
                out.setdefault(parts[2], {})[parts[3]] = value
        return out

    def period_end(self, period: Period, at: float | None = None) -> float | None:
        """Epoch seconds when the current ``"day"`` or ``"month"`` ends; ``None`` for ``"all"``."""
        now = datetime.fromtimestamp(self._clock.now() if at is None else at, self._tz)
        if period == "day":
            start = datetime(now.year, now.month, now.day, tzinfo=self._tz)
            nxt = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=self._tz)
            return nxt.timestamp()
        if period == "month":
            year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
            return datetime(year, month, 1, tzinfo=self._tz).timestamp()
        return None

    @property
    def problem(self) -> str | None:
        """``None`` while the ledger works; else what is wrong with its directory and how to
        recover (usage is meanwhile kept in memory, and written there once it works)."""
        return self._store.problem

    def close(self) -> None:
        """Save what is kept in memory if possible, and release the files (a closed disk
        ledger reopens them on next use)."""
        self._store.close()

    def __enter__(self) -> UsageLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _buckets(self, at: float | datetime | None) -> tuple[str, str]:
        if isinstance(at, datetime):
            moment = at.astimezone(self._tz)
        else:
            moment = datetime.fromtimestamp(self._clock.now() if at is None else at, self._tz)
        return moment.date().isoformat(), moment.strftime("%Y-%m")


_CELL = "cell"
"""The dimension of :meth:`UsageRecord.cells` entries: ``[period, bucket, "cell", user, model,
key, project]``, user first so that a user's cells are one index range."""


def _key(period: str, bucket: str, dimension: str, *names: str) -> str:
    return json.dumps([period, bucket, dimension, *names], ensure_ascii=False)

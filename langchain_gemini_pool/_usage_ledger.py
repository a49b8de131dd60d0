"""The usage ledger: totals per user, key, project and model, per day, month and all time.

On disk it is a diskcache (SQLite) directory whose entries are JSON text — keys like
``["day", "2026-11-29", "user", "alice"]`` and :meth:`UsageTotals.to_dict` values — updated in one
SQLite transaction per request, so several processes can share it. It stores key *indices*,
project names, user ids and model names, never key text.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import diskcache
import platformdirs
from langchain_core.messages import BaseMessage

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._usage_prices import ModelPrice, normalize_model
from langchain_gemini_pool._usage_record import UsageRecord, UsageTotals, usage_record

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


class _Store(Protocol):
    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None: ...
    def get(self, key: str) -> UsageTotals | None: ...
    def items(self) -> Iterable[tuple[str, UsageTotals]]: ...
    def close(self) -> None: ...


class _MemoryStore:
    """Entries in a dict behind a lock: one process, any number of threads."""

    def __init__(self) -> None:
        self._data: dict[str, UsageTotals] = {}
        self._lock = threading.Lock()

    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None:
        with self._lock:
            for key, delta in deltas:
                self._data.setdefault(key, UsageTotals()).add(delta)

    def get(self, key: str) -> UsageTotals | None:
        with self._lock:
            found = self._data.get(key)
            return found.copy() if found is not None else None

    def items(self) -> list[tuple[str, UsageTotals]]:
        with self._lock:
            return [(k, v.copy()) for k, v in self._data.items()]

    def close(self) -> None:
        """Nothing to release."""


class _DiskStore:
    """Entries in a diskcache directory; each update is one SQLite write transaction."""

    def __init__(self, directory: Path) -> None:
        try:
            self._cache = diskcache.Cache(
                str(directory), eviction_policy="none", statistics=False, tag_index=False
            )
        except OSError as exc:
            raise ValueError(
                f"Cannot open the usage ledger directory {str(directory)!r} "
                f"({type(exc).__name__}: {exc.strerror or exc}). Pass a writable directory, "
                f"set {LEDGER_DIR_ENV}, or use UsageLedger.in_memory()."
            ) from None

    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None:
        with self._cache.transact():
            for key, delta in deltas:
                current = self._read(self._cache.get(key))
                self._cache.set(key, json.dumps((current or UsageTotals()).add(delta).to_dict()))

    @staticmethod
    def _read(raw: object) -> UsageTotals | None:
        if not isinstance(raw, str):
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return UsageTotals.from_dict(data) if isinstance(data, dict) else None

    def get(self, key: str) -> UsageTotals | None:
        return self._read(self._cache.get(key))

    def items(self) -> list[tuple[str, UsageTotals]]:
        out: list[tuple[str, UsageTotals]] = []
        for key in list(self._cache.iterkeys()):
            if isinstance(key, str) and (value := self.get(key)) is not None:
                out.append((key, value))
        return out

    def close(self) -> None:
        self._cache.close()


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
        tz: The time zone whose calendar days and months the periods follow; default UTC.
        clock: Where "now" comes from (a :class:`~langchain_gemini_pool.Clock`).
        prices: Price table for costs; defaults to ``DEFAULT_PRICES``.

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
        _store: _Store | None = None,
    ) -> None:
        self._tz = _resolve_tz(tz)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._prices = prices
        if _store is not None:
            self.directory: Path | None = None
            self._store: _Store = _store
        else:
            self.directory = Path(directory) if directory is not None else default_ledger_dir()
            self._store = _DiskStore(self.directory)

    @classmethod
    def in_memory(
        cls,
        tz: str | tzinfo | None = None,
        clock: Clock | None = None,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> UsageLedger:
        """A ledger kept in this process's memory only (lost when it exits)."""
        return cls(tz=tz, clock=clock, prices=prices, _store=_MemoryStore())

    def __repr__(self) -> str:
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
        for dimension, name, delta in record.deltas():
            for period, bucket in (("day", day), ("month", month), ("all", "")):
                deltas.append((_key(period, bucket, dimension, name), delta))
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
        """Totals of one user, key, project or model (or everything) in one period.

        Args:
            user: Only this user's requests.
            key_index: Only what went through this key (its index in the pool).
            project: Only what went through this project's keys.
            model: Only this model (``models/`` prefix ignored).
            period: ``"day"`` (the current calendar day), ``"month"`` or ``"all"``.
            at: The moment whose day or month to read (epoch seconds or aware datetime);
                defaults to the clock's now.

        Raises:
            ValueError: If more than one of the filters is given (one grouping per query), or
                ``period`` is not one of the three.
        """
        if period not in ("day", "month", "all"):
            raise ValueError(f"period must be 'day', 'month' or 'all', got {period!r}.")
        given = {
            k: v
            for k, v in {
                "user": user,
                "key_index": key_index,
                "project": project,
                "model": model,
            }.items()
            if v is not None
        }
        if len(given) > 1:
            raise ValueError(
                f"Pass at most one of user, key_index, project, model (got {sorted(given)}); "
                "the ledger keeps one grouping at a time. Use breakdown() for all groups."
            )
        dimension, name = "total", ""
        if user is not None:
            dimension, name = "user", user
        elif key_index is not None:
            dimension, name = "key", str(int(key_index))
        elif project is not None:
            dimension, name = "project", project
        elif model is not None:
            dimension, name = "model", normalize_model(model)
        day, month = self._buckets(at)
        bucket = {"day": day, "month": month, "all": ""}[period]
        return self._store.get(_key(period, bucket, dimension, name)) or UsageTotals()

    def breakdown(
        self, period: Period = "all", *, at: float | datetime | None = None
    ) -> dict[str, dict[str, UsageTotals]]:
        """Every group of one period: ``{"total": {"": …}, "user": {...}, "key": {"0": …}, …}``."""
        day, month = self._buckets(at)
        bucket = {"day": day, "month": month, "all": ""}[period]
        out: dict[str, dict[str, UsageTotals]] = {}
        for key, value in self._store.items():
            try:
                p, b, dimension, name = json.loads(key)
            except (ValueError, TypeError):
                continue
            if p == period and b == bucket:
                out.setdefault(dimension, {})[name] = value
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

    def close(self) -> None:
        """Release the files (a closed disk ledger reopens them on next use)."""
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


def _key(period: str, bucket: str, dimension: str, name: str) -> str:
    return json.dumps([period, bucket, dimension, name], ensure_ascii=False)

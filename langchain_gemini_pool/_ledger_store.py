"""Where the usage ledger keeps its entries: a dict, or a diskcache directory that never fails.

Entries are JSON text keyed by JSON text (``["day", "2026-11-29", "user", "alice"]``). The disk
store is a diskcache (SQLite) directory shared by every process that opens it; each update is
one write transaction. Values are read back with plain SQL and only as text, so a row that
diskcache would unpickle is never revived.

A ledger must never break a request. A directory that cannot work at all (its path runs
through a file, or it cannot be created) is a ``ValueError`` at construction: a setting to fix.
Anything else — a corrupt ``cache.db``, a read-only directory, a full disk, a lock held too
long — is a WARNING (at most once a minute per kind): usage is kept in this process's memory,
the directory is tried again every ``RETRY_S`` seconds, and what was kept is written there
as soon as it works. A directory that cannot be written is still read (read-only) for totals.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import urllib.request
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import diskcache

from langchain_gemini_pool._clock import Clock
from langchain_gemini_pool._log_throttle import throttled_level
from langchain_gemini_pool._usage_record import UsageTotals

__all__ = ["RETRY_S", "DiskStore", "MemoryStore", "Store"]

logger = logging.getLogger("langchain_gemini_pool")

RETRY_S = 5.0
"""Seconds between attempts to reopen (or write to) a directory that failed."""
_LOCK_TIMEOUT_S = 5.0  # wait this long for another process's write before keeping it in memory
_STORAGE_ERRORS = (sqlite3.Error, OSError, diskcache.Timeout)

_SELECT_MANY = "SELECT key, value FROM Cache WHERE raw = 1 AND key IN ({})"

Rows = list[tuple[str, UsageTotals]]


class Store(Protocol):
    """What the ledger needs from a home for its entries."""

    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None:
        """Add every delta to its entry, all or none."""

    def get(self, key: str) -> UsageTotals | None:
        """One entry, or ``None``."""

    def scan(self, prefix: str) -> Rows:
        """Every entry whose key starts with ``prefix``."""

    def close(self) -> None:
        """Release files (reopened on next use)."""

    @property
    def problem(self) -> str | None:
        """``None`` while the store works; else what is wrong and how to recover."""


def parse(raw: object) -> UsageTotals | None:
    """An entry's stored text back to totals; anything else (or broken JSON) is no entry."""
    if not isinstance(raw, str):
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return UsageTotals.from_dict(data) if isinstance(data, dict) else None


def _merge(rows: Iterable[tuple[str, UsageTotals]], extra: dict[str, UsageTotals]) -> Rows:
    out: dict[str, UsageTotals] = {}
    for key, value in rows:
        out[key] = value
    for key, value in extra.items():
        out[key] = out[key] + value if key in out else value.copy()
    return sorted(out.items())


class MemoryStore:
    """Entries in a dict behind a lock: one process, any number of threads."""

    problem = None

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

    def scan(self, prefix: str) -> Rows:
        with self._lock:
            return sorted((k, v.copy()) for k, v in self._data.items() if k.startswith(prefix))

    def close(self) -> None:
        """Nothing to release."""


def check_directory(directory: Path, env_var: str) -> None:
    """Create ``directory``; a path that cannot be a directory is a clear ``ValueError``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            why = "it is a file, or its path runs through one"
        raise ValueError(
            f"Cannot use {str(directory)!r} as the usage ledger directory: {why}. "
            f"Pass directory= a writable folder, set {env_var}, or use UsageLedger.in_memory()."
        ) from None


class DiskStore:
    """Entries in a diskcache directory, with this process's unsaved entries kept in memory.

    ``_pending`` holds what could not be written yet; reads add it to what the directory
    holds, so totals stay exact in this process while the directory is out, and the next
    write that works saves it in the same transaction as its own entries (or ``close()``,
    or the interpreter's exit). A forked child starts with nothing pending: what the parent
    kept is the parent's to save, never saved twice.
    """

    def __init__(self, directory: Path, clock: Clock) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: Any = None  # diskcache.Cache once open
        self._reader: sqlite3.Connection | None = None  # read-only view while it cannot open
        self._reader_pid = 0
        self._pending: dict[str, UsageTotals] = {}
        self._retry_at = 0.0
        self._warned_at: dict[str, float] = {}
        self._problem: str | None = None
        LIVE_STORES.add(self)
        with self._lock:
            self._ensure_open(self._clock.now())

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._pending = {}

    # -- opening ----------------------------------------------------------------------------

    def _remedy(self) -> str:
        where = str(self.directory)
        return (
            f"Usage is kept in memory meanwhile and written there once it works (tried again "
            f"every {RETRY_S:.0f} s). To recover, make the directory writable, or move it aside "
            f"(e.g. mv {where!r} {where + '.broken'!r}) so a new ledger starts there."
        )

    def _fail(self, kind: str, what: str, exc: BaseException, note: str = "") -> None:
        """Note a storage failure: WARNING (once a minute per kind), retry later."""
        self._retry_at = self._clock.now() + RETRY_S
        self._problem = (
            f"The usage ledger at {str(self.directory)!r} {what} "
            f"({type(exc).__name__}: {exc}). {self._remedy()}{note}"
        )
        level = throttled_level(self._warned_at, kind, self._clock.now())
        logger.log(level, "UsageLedger: %s", self._problem)

    def _ensure_open(self, now: float) -> None:
        if self._cache is not None or now < self._retry_at:
            return
        try:
            self._cache = diskcache.Cache(
                str(self.directory),
                timeout=_LOCK_TIMEOUT_S,
                eviction_policy="none",
                statistics=False,
                tag_index=False,
            )
        except _STORAGE_ERRORS as exc:
            readable = self._open_reader() is not None
            note = " Totals are read from the directory as it is (read-only)." if readable else ""
            self._fail("open", "cannot be opened", exc, note)
            return
        self._close_reader()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _works(self) -> None:
        """A read or write on the open directory worked: any earlier problem is over."""
        if self._problem is not None:
            logger.warning("UsageLedger: %s works again.", self.directory)
            self._problem = None

    def _open_reader(self) -> sqlite3.Connection | None:
        """A read-only connection to ``cache.db``, for totals while it cannot be written."""
        if self._reader is not None and self._reader_pid == os.getpid():
            return self._reader
        self._reader = None
        path = urllib.request.pathname2url(str(self.directory / "cache.db"))
        # mode=ro needs a writable directory for a WAL database's -shm file; immutable=1
        # reads a database nobody can be writing through this read-only path.
        for options in ("mode=ro", "immutable=1"):
            try:
                con = sqlite3.connect(f"file:{path}?{options}", uri=True, check_same_thread=False)
            except sqlite3.Error:
                continue
            try:
                con.execute("SELECT key, raw, value FROM Cache LIMIT 1").fetchall()
            except sqlite3.Error:
                con.close()
                continue
            self._reader, self._reader_pid = con, os.getpid()
            return con
        return None

    def _drop(self) -> None:
        cache, self._cache = self._cache, None
        if cache is not None:
            try:
                cache.close()
            except _STORAGE_ERRORS:
                logger.debug("UsageLedger: closing %s failed", self.directory, exc_info=True)

    # -- writing ----------------------------------------------------------------------------

    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None:
        with self._lock:
            self._ensure_open(self._clock.now())
            if self._cache is not None and self._write(deltas):
                return
            for key, delta in deltas:
                self._pending.setdefault(key, UsageTotals()).add(delta)

    def _write(self, deltas: list[tuple[str, UsageTotals]]) -> bool:
        """Write the pending entries and ``deltas`` in one transaction; False if it failed."""
        combined: dict[str, UsageTotals] = {k: v.copy() for k, v in self._pending.items()}
        for key, delta in deltas:
            combined.setdefault(key, UsageTotals()).add(delta)
        cache = self._cache
        try:
            with cache.transact():
                execute = cache._sql  # diskcache's connection for this thread (in the transaction)
                keys = list(combined)
                current: dict[str, UsageTotals | None] = {}
                for start in range(0, len(keys), 500):  # under SQLite's variable limit
                    chunk = keys[start : start + 500]
                    query = _SELECT_MANY.format(", ".join("?" * len(chunk)))  # values bound
                    current.update((k, parse(v)) for k, v in execute(query, chunk))
                for key, delta in combined.items():
                    total = (current.get(key) or UsageTotals()).add(delta)
                    cache.set(key, json.dumps(total.to_dict()))
        except _STORAGE_ERRORS as exc:
            self._fail("write", "could not be written", exc)
            self._drop()
            return False
        if self._pending:
            logger.warning(
                "UsageLedger: wrote %d entries kept in memory to %s.",
                len(self._pending),
                self.directory,
            )
            self._pending.clear()
        self._works()
        return True

    # -- reading ----------------------------------------------------------------------------

    @staticmethod
    def _value(execute: Any, key: str) -> UsageTotals | None:
        row = execute("SELECT value FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone()
        return parse(row[0]) if row else None

    def _entry(self, execute: Any, key: str) -> Rows:
        value = self._value(execute, key)
        return [] if value is None else [(key, value)]

    def _source(self) -> Any:
        """Something that runs SQL on the ledger's database, or ``None``."""
        self._ensure_open(self._clock.now())
        if self._cache is not None:
            return self._cache._sql
        reader = self._open_reader()
        return reader.execute if reader is not None else None

    def _read(self, fetch: Any) -> Rows:
        execute = self._source()
        if execute is None:
            return []
        try:
            rows = list(fetch(execute))
        except _STORAGE_ERRORS as exc:
            note = " Totals show only what this process has not saved yet."
            self._fail("read", "could not be read", exc, note)
            self._drop()
            self._close_reader()
            return []
        if self._cache is not None:
            self._works()
        return rows

    def get(self, key: str) -> UsageTotals | None:
        with self._lock:
            found = self._read(lambda execute: self._entry(execute, key))
            rows = _merge(found, {key: self._pending[key]} if key in self._pending else {})
        return rows[0][1] if rows else None

    def scan(self, prefix: str) -> Rows:
        """Entries whose key starts with ``prefix``: one index range, not a full scan."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None

        def fetch(execute: Any) -> Iterable[tuple[str, UsageTotals]]:
            if upper is None:
                cursor = execute("SELECT key, value FROM Cache WHERE raw = 1")
            else:
                cursor = execute(
                    "SELECT key, value FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
                    (prefix, upper),
                )
            for key, raw in cursor:
                if isinstance(key, str) and (value := parse(raw)) is not None:
                    yield key, value

        with self._lock:
            found = self._read(fetch)
            pending = {k: v for k, v in self._pending.items() if k.startswith(prefix)}
            return _merge(found, pending)

    @property
    def problem(self) -> str | None:
        """``None`` while the directory works; else what is wrong and how to recover."""
        return self._problem

    def close(self) -> None:
        """Save what is kept in memory if the directory works now, and release the files."""
        with self._lock:
            if self._pending:
                self._retry_at = 0.0
                self._ensure_open(self._clock.now())
                if self._cache is None or not self._write([]):
                    logger.warning(
                        "UsageLedger: %d entries of usage could not be saved to %s and are "
                        "lost when this process exits. %s",
                        len(self._pending),
                        self.directory,
                        self._remedy(),
                    )
            if self._cache is not None:
                self._cache.close()
            self._close_reader()


LIVE_STORES: weakref.WeakSet[Any] = weakref.WeakSet()
"""Every store that may keep usage in memory (disk and Redis): saved at exit, and a forked
child forgets its parent's backlog so it is never written twice."""


def _save_all_at_exit() -> None:
    """Last chance for usage kept in memory: write it if the directory works by now."""
    for store in list(LIVE_STORES):
        if store._pending:
            store.close()


def _forget_pending_in_child() -> None:
    for store in list(LIVE_STORES):
        store._after_fork()


atexit.register(_save_all_at_exit)
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pending_in_child)

"""The diskcache store under ``GeminiDiskCache``: where it lives, text only, and its health.

``StoreKeeper`` opens the store (and, after a failure, reopens it at most every 5 s), turns
caching off on a database error (corrupt, read-only) until it can be reopened, and logs a
failure as a WARNING at most once a minute per kind, DEBUG in between.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Literal

import diskcache
import platformdirs

from langchain_gemini_pool._clock import Clock
from langchain_gemini_pool._log_throttle import throttled_level

logger = logging.getLogger("langchain_gemini_pool")

ENV_CACHE_DIR = "GEMINI_POOL_CACHE_DIR"
"""Environment variable that overrides the default cache directory."""

EvictionPolicy = Literal[
    "least-recently-stored", "least-recently-used", "least-frequently-used", "none"
]

_REOPEN_EVERY = 5.0  # seconds between attempts to reopen a cache that failed to open

# Failures of the storage layer that mean "no entry" or "write skipped".
STORAGE_ERRORS = (diskcache.Timeout, sqlite3.Error, OSError)


class _TextOnlyDisk(diskcache.Disk):  # type: ignore[misc]  # diskcache is untyped
    """A diskcache ``Disk`` that stores only text and refuses to pickle or unpickle."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"GeminiDiskCache stores text only, not {type(value).__name__}.")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            raise ValueError("refusing to unpickle a cache entry (not written by this cache)")
        return super().fetch(mode, filename, value, read)


def default_cache_directory() -> Path:
    """The directory used when none is given.

    ``$GEMINI_POOL_CACHE_DIR`` if set and not empty, else the platform's user cache
    directory (``platformdirs``) for ``langchain-gemini-pool``, plus ``responses``.
    """
    from_env = os.environ.get(ENV_CACHE_DIR, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return Path(platformdirs.user_cache_dir("langchain-gemini-pool")) / "responses"


class StoreKeeper:
    """The base of ``GeminiDiskCache``: keeps the store of one directory open, reports failures."""

    def __init__(
        self,
        directory: Path,
        size_limit: int,
        timeout: float,
        eviction_policy: EvictionPolicy,
        clock: Clock,
    ) -> None:
        self._directory = directory
        self._size_limit = size_limit
        self._timeout = timeout
        self._eviction_policy: EvictionPolicy = eviction_policy
        self._clock: Clock = clock
        self._lock = threading.Lock()
        self._errors = 0
        self._warned_at: dict[str, float] = {}
        self._store: diskcache.Cache | None = None
        self._next_open = 0.0
        self._open()

    def _open(self) -> diskcache.Cache | None:
        """The open diskcache, opening it now if needed; ``None`` while it cannot open."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._store is not None:
                return self._store
            now = self._clock.now()
            if now < self._next_open:
                return None
            try:
                self._store = diskcache.Cache(
                    str(self._directory),
                    timeout=self._timeout,
                    disk=_TextOnlyDisk,
                    size_limit=self._size_limit,
                    eviction_policy=self._eviction_policy,
                    statistics=False,
                )
            except STORAGE_ERRORS as exc:
                self._next_open = now + _REOPEN_EVERY
                self._errors += 1
                self._warn_locked(
                    "open",
                    "cache directory %s cannot be opened (%s: %s); caching is off until it "
                    "can be (retried every %.0f s). %s",
                    self._directory,
                    type(exc).__name__,
                    str(exc),
                    _REOPEN_EVERY,
                    self._remedy(),
                )
                return None
            return self._store

    def _remedy(self) -> str:
        where = str(self._directory)
        return (
            f"To recover, make the directory writable, or move it aside (e.g. mv {where!r} "
            f"{where + '.broken'!r}): a new cache starts there, and only cached answers are lost."
        )

    def _failed(self, kind: str, message: str, exc: BaseException) -> None:
        """A storage failure of an open cache. A database error (corrupt, read-only) turns
        caching off, to be reopened later; a lock timeout or a file error is passing."""
        args = (type(exc).__name__, str(exc))
        if not isinstance(exc, sqlite3.DatabaseError):
            self._warn(kind, message + " (%s: %s)", *args)
            return
        with self._lock:
            store, self._store = self._store, None
            self._next_open = self._clock.now() + _REOPEN_EVERY
            self._errors += 1
            self._warn_locked(
                kind,
                message + " (%s: %s); caching is off until %s can be reopened (retried every "
                "%.0f s). %s",
                *args,
                self._directory,
                _REOPEN_EVERY,
                self._remedy(),
            )
        if store is not None:
            try:
                store.close()
            except STORAGE_ERRORS:
                logger.debug("GeminiDiskCache: closing a failed store failed", exc_info=True)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        with self._lock:
            self._errors += 1
            self._warn_locked(kind, message, *args)

    def _warn_locked(self, kind: str, message: str, *args: object) -> None:
        """Log a WARNING, at most once a minute per kind (DEBUG in between)."""
        level = throttled_level(self._warned_at, kind, self._clock.now())
        logger.log(level, "GeminiDiskCache: " + message, *args)

"""``GeminiDiskCache``: a LangChain response cache on disk, safe across threads and processes.

An entry's key is the sha256 of the prompt and the ``llm_string`` (neither is stored), and
its value is the ``langchain_core.load.dumps`` text of the generations, read back with
``loads`` restricted to generation and message classes. Values are stored as text, so
diskcache never pickles them, and a ``pickle`` row planted in the directory is refused
rather than unpickled.

A cache must never break a model call: once the cache is open, a lock timeout, a corrupt
entry, a full disk or a read-only directory is a miss (or a skipped write) and a WARNING on
the ``langchain_gemini_pool`` logger. Only a directory that cannot be created at all is an
error, raised at construction, because that is a setting to fix, not a passing condition.

The parts: ``_cache_codec`` (entry keys, text in and out), ``_cache_store`` (the diskcache
store and its recovery); here, the LangChain ``BaseCache`` face.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import diskcache
from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.outputs import Generation

from langchain_gemini_pool._cache_codec import dump_generations, entry_key, load_generations
from langchain_gemini_pool._cache_store import (
    ENV_CACHE_DIR,
    STORAGE_ERRORS,
    EvictionPolicy,
    StoreKeeper,
    default_cache_directory,
)
from langchain_gemini_pool._clock import Clock, SystemClock

__all__ = [  # what other modules import from here, wherever it now lives
    "ENV_CACHE_DIR",
    "EvictionPolicy",
    "GeminiDiskCache",
    "default_cache_directory",
    "entry_key",
    "load_generations",
]

logger = logging.getLogger("langchain_gemini_pool")


def _positive_seconds(value: object) -> bool:
    """Whether ``value`` is a finite number of seconds above 0 (a bool is not a number here)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _check_settings(ttl: float | None, size_limit: int, timeout: float) -> None:
    """Raise a clear error for a setting that cannot work."""
    if ttl is not None and not _positive_seconds(ttl):
        raise ValueError(
            f"ttl must be a positive number of seconds, or None for no expiry; got {ttl!r}."
        )
    if isinstance(size_limit, bool) or not isinstance(size_limit, int) or size_limit <= 0:
        raise ValueError(
            f"size_limit must be a positive number of bytes (e.g. 2**30 for 1 GiB); "
            f"got {size_limit!r}."
        )
    if not _positive_seconds(timeout):
        raise ValueError(
            f"timeout must be a positive number of seconds to wait for the disk lock; "
            f"got {timeout!r}."
        )


class GeminiDiskCache(StoreKeeper, BaseCache):
    """A disk cache of model responses, for any LangChain chat model or LLM.

    Use it as ``ChatGeminiPool(cache=GeminiDiskCache())``, as any chat model's ``cache=``,
    or globally with ``langchain_core.globals.set_llm_cache(GeminiDiskCache())``.

    Thread-safe and process-safe (SQLite underneath, via ``diskcache``): several
    processes may share one directory. The async methods run the disk work in a thread
    and never block the event loop.

    Args:
        directory: Where entries live. Defaults to ``$GEMINI_POOL_CACHE_DIR``, else the
            platform's user cache directory plus ``responses``. Created if missing.
        ttl: Seconds an entry stays valid, or ``None`` to keep entries until evicted.
        size_limit: Bytes on disk before the oldest entries are evicted.
        timeout: Seconds to wait for the disk lock before giving up; a lookup that gives
            up is a miss, an update that gives up is skipped.
        eviction_policy: diskcache's eviction policy. The default,
            ``"least-recently-stored"``, lets a lookup read without writing.
        clock: Source of time for ``ttl``; tests pass a ``ManualClock``.

    Raises:
        ValueError: A setting is out of range, or the directory cannot be created (for
            instance, its path runs through a file).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        ttl: float | None = None,
        size_limit: int = 2**30,
        *,
        timeout: float = 1.0,
        eviction_policy: EvictionPolicy = "least-recently-stored",
        clock: Clock | None = None,
    ) -> None:
        _check_settings(ttl, size_limit, timeout)
        if eviction_policy not in diskcache.EVICTION_POLICY:
            raise ValueError(
                f"eviction_policy must be one of {sorted(diskcache.EVICTION_POLICY)}; "
                f"got {eviction_policy!r}."
            )
        path = default_cache_directory() if directory is None else Path(directory).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"GeminiDiskCache cannot create its directory {str(path)!r}: "
                f"{exc.strerror or exc}. Pass directory= a writable folder, set "
                f"{ENV_CACHE_DIR}, or give the model cache=False to run without a disk cache."
            ) from exc
        self._ttl = None if ttl is None else float(ttl)
        self._hits = 0
        self._misses = 0
        super().__init__(
            path.resolve(),
            size_limit,
            float(timeout),
            eviction_policy,
            clock if clock is not None else SystemClock(),
        )

    # -- reading -------------------------------------------------------------------------

    def _read(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        store = self._open()
        if store is None:
            return None
        key = entry_key(prompt, llm_string)
        try:
            text, expires_at = store.get(key, default=None, tag=True)
        except STORAGE_ERRORS as exc:
            self._failed("read", "lookup failed, treated as a miss", exc)
            return None
        except ValueError as exc:  # undecodable value file, or a pickle row refused
            text, expires_at = exc, None
        if text is None:
            return None
        if isinstance(expires_at, (int, float)) and self._clock.now() >= expires_at:
            return None
        try:
            if isinstance(text, ValueError):
                raise text
            if not isinstance(text, str):
                raise TypeError(f"entry holds {type(text).__name__}, not text")
            generations = load_generations(text)
        except Exception as exc:  # any failure to revive a stored value is a miss
            self._warn(
                "decode",
                "unreadable entry dropped, treated as a miss (%s: %s)",
                type(exc).__name__,
                str(exc),
            )
            self._delete(store, key)
            return None
        return generations

    def _delete(self, store: diskcache.Cache, key: str) -> None:
        try:
            store.delete(key)
        except STORAGE_ERRORS as exc:
            logger.debug("GeminiDiskCache: could not delete a bad entry (%s)", str(exc))

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """Look up a response, counting a hit or a miss.

        Args:
            prompt: The prompt as LangChain serialises it.
            llm_string: The model's settings as LangChain serialises them.

        Returns:
            The cached generations, or ``None`` on a miss (including an expired,
            unreadable or locked entry).
        """
        found = self._read(prompt, llm_string)
        with self._lock:
            if found is None:
                self._misses += 1
            else:
                self._hits += 1
        return found

    def peek(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """Look up a response without counting a hit or a miss.

        For the pool: it decides whether a stream can be served from the cache before
        LangChain itself looks the entry up, and that lookup is the one that counts.

        Returns:
            The cached generations, or ``None``.
        """
        found = self._read(prompt, llm_string)
        return None if found is None else list(found)

    # -- writing -------------------------------------------------------------------------

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """Store a response. A failure to write is logged and skipped, never raised.

        Args:
            prompt: The prompt as LangChain serialises it.
            llm_string: The model's settings as LangChain serialises them.
            return_val: The generations to store.
        """
        store = self._open()
        if store is None:
            return
        try:
            text = dump_generations(return_val)
        except Exception as exc:  # a value that cannot be serialised is simply not cached
            self._warn("encode", "response not cached (%s: %s)", type(exc).__name__, str(exc))
            return
        expires_at = None if self._ttl is None else self._clock.now() + self._ttl
        try:
            store.set(entry_key(prompt, llm_string), text, expire=self._ttl, tag=expires_at)
        except STORAGE_ERRORS as exc:
            self._failed("write", "response not cached", exc)

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry in the directory (for every process sharing it).

        A failure (e.g. the lock is held too long) is logged, not raised.
        """
        store = self._open()
        if store is None:
            return
        try:
            store.clear()
        except STORAGE_ERRORS as exc:
            self._failed("clear", "clear failed", exc)

    # -- async ---------------------------------------------------------------------------

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        """``lookup`` in a worker thread."""
        return await asyncio.to_thread(self.lookup, prompt, llm_string)

    async def apeek(self, prompt: str, llm_string: str) -> list[Generation] | None:
        """``peek`` in a worker thread."""
        return await asyncio.to_thread(self.peek, prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        """``update`` in a worker thread."""
        await asyncio.to_thread(self.update, prompt, llm_string, return_val)

    async def aclear(self, **kwargs: Any) -> None:
        """``clear`` in a worker thread."""
        await asyncio.to_thread(self.clear)

    # -- inspection ----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The cache directory (absolute)."""
        return self._directory

    def stats(self) -> dict[str, int]:
        """Counts for this object and the directory.

        Returns:
            ``hits`` and ``misses`` (lookups by this object in this process; ``peek`` is
            not counted), ``errors`` (storage or decoding failures seen by this object),
            ``entries`` (entries in the directory, expired ones not yet evicted included)
            and ``bytes`` (its size on disk). ``entries`` and ``bytes`` are 0 while the
            directory cannot be opened.
        """
        with self._lock:
            counts = {"hits": self._hits, "misses": self._misses, "errors": self._errors}
        entries = size = 0
        store = self._open()
        if store is not None:
            try:
                entries = len(store)
                size = int(store.volume())
            except STORAGE_ERRORS as exc:
                self._failed("stats", "stats unavailable", exc)
        return {**counts, "entries": entries, "bytes": size}

    def close(self) -> None:
        """Close this thread's database connection (reopened on next use)."""
        store = self._store
        if store is not None:
            store.close()

    def __repr__(self) -> str:
        state = "" if self._store is not None else ", unavailable=True"
        return (
            f"GeminiDiskCache(directory={str(self._directory)!r}, ttl={self._ttl!r}, "
            f"size_limit={self._size_limit!r}, timeout={self._timeout!r}, "
            f"eviction_policy={self._eviction_policy!r}{state})"
        )

    # -- pickling: a copy reopens the same directory -------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        clock: Clock | None = None if isinstance(self._clock, SystemClock) else self._clock
        if clock is not None:
            try:
                pickle.dumps(clock)
            except Exception as exc:
                raise TypeError(
                    f"GeminiDiskCache cannot be pickled with the clock {clock!r} ({exc}); "
                    "pickle one built with the default clock."
                ) from exc
        return {
            "directory": str(self._directory),
            "ttl": self._ttl,
            "size_limit": self._size_limit,
            "timeout": self._timeout,
            "eviction_policy": self._eviction_policy,
            "clock": clock,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

"""``ChatGeminiPool``'s keys while it serves: add, remove, reload, reset, and its status."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from pydantic import SecretStr

from langchain_gemini_pool._keys import KeyEntry, load_api_keys, mask_key, normalize_keys
from langchain_gemini_pool._members import set_client_key
from langchain_gemini_pool._pool_parts import PoolParts
from langchain_gemini_pool._pool_request import DEFAULT_USER
from langchain_gemini_pool._usage_limits import compute_overage, resolve_limits

logger = logging.getLogger("langchain_gemini_pool")


class PoolKeys(PoolParts):
    """Keys while serving, and what the pool says of them."""

    def _add_entries(self, entries: Sequence[KeyEntry]) -> list[int]:
        known = self._members.secret_texts()
        fresh = []
        for entry in entries:
            if entry.secret.get_secret_value() in known:
                logger.warning("Key %s is already in the pool; not added again.", entry.fingerprint)
                continue
            fresh.append(entry)
        indices = self._scheduler.add_entries(fresh)
        for index, entry in zip(indices, fresh, strict=True):
            self._members.add(index, entry.secret)
        return indices

    def add_keys(self, keys: Any) -> list[int]:
        """Add keys (a list, or a mapping project -> keys); returns their new indices."""
        indices = self._add_entries(normalize_keys(keys, "add_keys(keys)"))
        self._derived.clear()  # books rebuilt for other settings would miss the new keys
        self._follow_first_key()
        return indices

    def remove_key(self, key_or_index: int | str | SecretStr) -> None:
        """Remove a key, given by its index or its text. Its index is never reused.

        The pool's own ``google_api_key`` and ``client`` then hold the first remaining key
        (or none), never the removed one.
        """
        index = self._index_of(key_or_index)
        self._derived.clear()
        self._scheduler.remove_key(index)
        self._members.remove(index)
        self._follow_first_key()

    def _follow_first_key(self) -> None:
        first = self._members.first()
        if (
            first is None
            or self.google_api_key is None
            or (first.get_secret_value() != self.google_api_key.get_secret_value())
        ):
            object.__setattr__(self, "google_api_key", first)
            set_client_key(self.client, first)

    def reload_keys(self) -> dict[str, list[int]]:
        """Re-read keys from the environment and ``.env``: add new ones, remove gone ones.

        Keys that stay keep their index, counters and state.
        """
        fresh = {k.get_secret_value() for k in load_api_keys(self.env_file)}
        current = self._members.secret_texts()
        removed = []
        for text in current - fresh:
            index = self._members.index_of_text(text)
            if index is not None:
                self.remove_key(index)
                removed.append(index)
        added = self.add_keys([t for t in fresh if t not in current]) if fresh - current else []
        return {"added": added, "removed": sorted(removed)}

    def reset_key(self, key_or_index: int | str | SecretStr) -> None:
        """Lift a quarantine or cooldown."""
        self._scheduler.reset(self._index_of(key_or_index))

    def _index_of(self, key_or_index: int | str | SecretStr) -> int:
        if isinstance(key_or_index, bool):
            raise TypeError("Give a key index (int) or the key text.")
        if isinstance(key_or_index, int):
            if key_or_index not in self._scheduler.active_indices():
                raise KeyError(f"No key with index {key_or_index} in the pool.")
            return key_or_index
        text = (
            key_or_index.get_secret_value()
            if isinstance(key_or_index, SecretStr)
            else key_or_index.strip()
        )
        index = self._members.index_of_text(text)
        if index is None:
            raise KeyError(f"The key {mask_key(text)} is not in the pool.")
        return index

    def pool_status(self) -> list[dict[str, Any]]:
        """One dict per key: index, fingerprint, project, state, ready_in_s, requests,
        successes, rate_limited, errors, reason, in_flight (requests sent or waiting for a
        booked slot right now), room, shared.

        With a shared ``state`` (``shared`` is True) state, ready_in_s, reason, in_flight and
        room are read from the backend: deployment-wide, so a cooldown or quarantine another
        process set shows here with its reason. requests, successes, rate_limited and errors
        always count this process's attempts."""
        return self._scheduler.status(self._clock.now())

    def _repr_html_(self) -> str:
        """Jupyter: the keys as a table (states in colour, cooldowns, room); keys masked."""
        from langchain_gemini_pool._html import pool_html

        return pool_html(self)

    def watch(self, interval: float = 1.0, **kwargs: Any) -> Any:
        """A live view of the keys while a block runs: ``with pool.watch(): pool.batch(...)``.

        Refreshes an HTML table in place in a notebook, prints a plain-text table on change
        elsewhere (``out=`` a stream, default stdout; ``html=`` forces either).
        """
        from langchain_gemini_pool._html import PoolWatch

        return PoolWatch(self, interval, **kwargs)

    def overage(self, user_id: str = DEFAULT_USER) -> dict[str, float]:
        """For soft usage limits: each exceeded limit's name -> amount past it now."""
        limits = resolve_limits(self.usage_limits, user_id)
        if limits is None or self._ledger is None:
            return {}
        return compute_overage(self._ledger, user_id, limits)


class PoolKeySet(Mapping[str, list[SecretStr]]):
    """What a built pool's ``api_keys`` field holds: its keys by project, read live.

    LangChain rebuilds a model from its fields (``configurable_fields``,
    ``configurable_alternatives``): given this, the rebuilt pool gets the same keys in the
    same projects, not only ``google_api_key`` (the first). It shows no key text (``repr``
    names the projects and counts), and refuses pickling as the pool does.
    """

    __slots__ = ("_pool",)

    def __init__(self, pool: PoolKeys) -> None:
        self._pool = weakref.ref(pool)  # no cycle: a dropped pool closes its client at once

    @property
    def pool(self) -> PoolKeys:
        pool = self._pool()
        if pool is None:
            raise ValueError("The pool these keys belonged to is gone.")
        return pool

    def _by_project(self) -> dict[str, list[SecretStr]]:
        pool = self._pool()
        if pool is None:
            return {}
        found: dict[str, list[SecretStr]] = {}
        for index in pool._scheduler.active_indices():
            secret = pool._members.secret_of(index)
            if secret is not None:
                found.setdefault(pool._scheduler.project_of(index), []).append(secret)
        return found

    def __getitem__(self, project: str) -> list[SecretStr]:
        return self._by_project()[project]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_project())

    def __len__(self) -> int:
        return len(self._by_project())

    def __repr__(self) -> str:
        counts = {project: len(keys) for project, keys in self._by_project().items()}
        return f"PoolKeySet({counts})"

    def __reduce__(self) -> Any:
        raise TypeError("A pool's key set holds API keys and cannot be pickled.")


class KeysFrom(list[KeyEntry]):
    """Keys read from a built pool's ``PoolKeySet``, remembering that pool (see ``adopt``)."""

    def __init__(self, entries: Sequence[KeyEntry], pool: PoolKeys) -> None:
        super().__init__(entries)
        self.pool = pool


_BOOKS = ("model", "fallback_models", "prefer", "strategy", "rate_limit_cooldown", "limits")
_SAME_OBJECT = ("state", "clock", "ledger", "usage_limits")
_PARTS = ("_clock", "_state", "_scheduler", "_members", "_ledger")


def _books_of(pool: PoolKeys) -> str:
    """What a pool's books depend on, as a text (settings by value, objects by identity)."""
    return repr([getattr(pool, n) for n in _BOOKS] + [id(getattr(pool, n)) for n in _SAME_OBJECT])


def adopt(pool: PoolKeys, source: PoolKeys) -> bool:
    """Let ``pool``, rebuilt from ``source``'s fields, keep books instead of starting empty: a
    configured call then rotates, cools and counts as a call on ``source`` would.

    With the same settings ``pool`` shares ``source``'s books (as ``model_copy`` does); with
    other settings (another model, say) the books an earlier rebuild with those settings
    made (see ``remember``). Returns False when there are none yet: ``pool`` builds its own.
    """
    mine = cast("dict[str, Any]", pool.__pydantic_private__)
    theirs = cast("dict[str, Any]", source.__pydantic_private__)
    books = theirs if _books_of(pool) == _books_of(source) else None
    if books is None:
        books = theirs["_derived"].get(_books_of(pool))
    if books is None:
        return False
    mine.update({name: books[name] for name in _PARTS})
    return True


def remember(pool: PoolKeys, source: PoolKeys) -> None:
    """Keep the books ``pool`` (rebuilt from ``source`` with other settings) just made, for
    the next rebuild with the same settings. ``add_keys``/``remove_key`` on ``source`` forget
    them (they would miss its new keys)."""
    mine = cast("dict[str, Any]", pool.__pydantic_private__)
    theirs = cast("dict[str, Any]", source.__pydantic_private__)
    theirs["_derived"][_books_of(pool)] = {name: mine[name] for name in _PARTS}

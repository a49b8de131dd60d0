"""The usage ledger's entries in Redis: every process of every machine shares its totals.

Key layout (``P`` is the prefix, ``gemini-pool`` by default; ``B`` a period bucket:
``day:2026-11-30``, ``month:2026-11`` or ``all``)::

    {P}:ledger:B:g        hash  the single groupings: field "<total field> <JSON [dimension, name]>"
    {P}:ledger:B:c:USER   hash  one user's cells: field "<total field> <JSON [model, key, project]>"
    {P}:ledger:B:u        set   the users that have cells in B (for queries without a user)

Every name starts with the hash tag ``{P}`` (one record writes several of them in one script),
so on a Redis Cluster (found at construction, as for ``RedisState``) they share one slot.

Values are counts (``HINCRBY``) and dollars (``HINCRBYFLOAT``); only non-zero fields are sent
(``requests`` always, so an entry exists once touched). One record is one Lua script call:
one round trip, applied atomically. Every key gets a TTL on every write: day buckets
``DAY_TTL_S``, month buckets ``MONTH_TTL_S``, all-time ``ALL_TTL_S`` (refreshed by each write,
so totals idle that long are dropped). Names are key *indices*, projects, user ids and models:
never key text, never error text.

A Redis that is unreachable or refuses the password at construction is a ``ConnectionError``
naming the URL without its password. Lost mid-run: one WARNING, usage is kept in this
process's memory (reads add it to what Redis holds), Redis is tried again every ``RETRY_S``
seconds of the ledger's clock, and what was kept is written in the same script call as the
next record that gets through (or at ``close()``/exit). Nothing is raised into a request.
After ``fork`` the child opens its own connection and starts with nothing pending.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from langchain_gemini_pool._clock import Clock
from langchain_gemini_pool._ledger_store import LIVE_STORES, RETRY_S, Rows, _merge
from langchain_gemini_pool._state_redis_client import is_cluster, outage_errors, sync_client
from langchain_gemini_pool._state_redis_codec import check_prefix, safe_url, tag
from langchain_gemini_pool._usage_record import UsageTotals

__all__ = ["ALL_TTL_S", "DAY_TTL_S", "MONTH_TTL_S", "RedisStore"]

logger = logging.getLogger("langchain_gemini_pool")

DAY_TTL_S = 8 * 86400
"""A day bucket lives 8 days after its last write: ``at=`` reads the past week."""
MONTH_TTL_S = 400 * 86400
"""A month bucket lives 400 days after its last write: last year's months stay readable."""
ALL_TTL_S = 400 * 86400
"""All-time totals live 400 days after their last write (every key has a TTL)."""

_SEEN_MAX = 10_000
"""Reads remembered for an outage (then forgotten all at once: a bound, not a cache)."""
_FIELDS = tuple(f.name for f in fields(UsageTotals))
_INTS = tuple(n for n in _FIELDS if n != "cost_usd")
_CELL = "cell"

_RECORD = """
for _, o in ipairs(cjson.decode(ARGV[1])) do
  local k, op = KEYS[o[1]], o[2]
  if op == 'i' then
    redis.call('HINCRBY', k, o[3], o[4])
  elseif op == 'f' then
    redis.call('HINCRBYFLOAT', k, o[3], o[4])
  elseif op == 's' then
    redis.call('SADD', k, o[3])
  else
    redis.call('EXPIRE', k, o[4])
  end
end
return 1
"""
"""One record: ARGV[1] is a JSON list of ``[key number, op, field, amount]`` (``i`` HINCRBY,
``f`` HINCRBYFLOAT, ``s`` SADD, ``e`` EXPIRE), amounts as text so no digit is lost."""

_CELLS = """
local out = {redis.call('HGETALL', KEYS[1])}
local users = {}
if ARGV[1] == '' then
  return out
elseif ARGV[2] == '' then
  users = redis.call('SMEMBERS', KEYS[2])
else
  users = {ARGV[2]}
end
for _, user in ipairs(users) do
  table.insert(out, user)
  table.insert(out, redis.call('HGETALL', ARGV[1] .. user))
end
return out
"""
"""Read a bucket: KEYS[1] its groups (or a missing key), then (unless ARGV[1] is empty) every
cell hash of every user in KEYS[2], or of the one user ARGV[2]; cell hashes are ARGV[1] .. user."""


def _ttl(period: str) -> int:
    return {"day": DAY_TTL_S, "month": MONTH_TTL_S}.get(period, ALL_TTL_S)


def _totals(pairs: dict[str, str]) -> UsageTotals:
    """Totals from ``{field: number text}``; cost is ``None`` when nothing could be priced."""
    out = UsageTotals(**{n: int(pairs[n]) for n in _INTS if n in pairs})
    out.cost_usd = float(pairs.get("cost_usd", 0.0))
    if out.priced_requests == 0 and out.unknown_cost_requests > 0:
        out.cost_usd = None
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore:
    """Ledger entries in Redis at ``url`` under ``prefix`` (see the module text for the layout).

    Raises:
        ValueError: The URL is not ``redis://``, ``rediss://`` or ``unix://``.
        ConnectionError: Redis cannot be reached or refuses the password.
    """

    def __init__(self, url: str, prefix: str, clock: Clock, *, timeout: float = 1.0) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            shown = safe_url(url) if isinstance(url, str) else repr(url)
            raise ValueError(
                f"UsageLedger(url=...) needs a redis://, rediss:// or unix:// URL, not {shown!r}."
            )
        check_prefix(prefix)
        try:
            import redis  # noqa: F401 (optional extra: fail here, clearly)
        except ImportError:  # pragma: no cover - the test extra installs it
            raise ImportError(
                "UsageLedger(url=...) needs redis-py: pip install 'langchain-gemini-pool[redis]'."
            ) from None
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.cluster = False
        """True when ``url`` is a node of a Redis Cluster (found at construction)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = -1
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._pending: dict[str, UsageTotals] = {}
        self._seen: dict[str, Rows] = {}  # the last rows read, per key or prefix
        self._retry_at = 0.0
        self._problem: str | None = None
        self._connect()
        LIVE_STORES.add(self)  # saved at exit; a forked child forgets the backlog

    def __repr__(self) -> str:
        return f"RedisStore({safe_url(self.url)!r}, prefix={self.prefix!r})"

    # -- connections -------------------------------------------------------------------------

    def _sync(self) -> tuple[Any, dict[str, Any]]:
        if self._pid != os.getpid():  # first use, or a forked child: its own socket
            client = sync_client(self.url, self.timeout, self.cluster)
            self._scripts = {
                "record": client.register_script(_RECORD),
                "cells": client.register_script(_CELLS),
            }
            self._client, self._pid = client, os.getpid()
        return self._client, self._scripts

    def _connect(self) -> None:
        import redis

        refused = (
            f"Redis at {safe_url(self.url)} refused the password (or needs one): check the "
            "URL's user and password."
        )
        try:
            self.cluster = is_cluster(self.url, self.timeout)
            self._sync()[0].ping()
        except redis.AuthenticationError:
            raise ConnectionError(refused) from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ConnectionError(refused) from None
            raise ConnectionError(
                f"Redis at {safe_url(self.url)} cannot hold the usage ledger "
                f"({type(exc).__name__})."
            ) from None
        except outage_errors(OSError) as exc:
            raise ConnectionError(
                f"Cannot reach Redis at {safe_url(self.url)} for the usage ledger "
                f"({type(exc).__name__}): is it running, and is the address right?"
            ) from None

    def _errors(self) -> tuple[type[BaseException], ...]:
        import redis

        return outage_errors(redis.RedisError, OSError)

    def _down(self) -> bool:
        return self._problem is not None and self._clock.now() < self._retry_at

    def _fail(self, exc: BaseException) -> None:
        self._retry_at = self._clock.now() + RETRY_S
        if self._problem is None:
            self._problem = (
                f"The usage ledger at Redis {safe_url(self.url)} is unreachable "
                f"({type(exc).__name__}). Usage is kept in this process's memory meanwhile and "
                f"written there once it answers (tried again every {RETRY_S:.0f} s); totals "
                "meanwhile are the figures last read from Redis plus what this process "
                "recorded since. Restore Redis (or check its address and password)."
            )
            logger.warning("UsageLedger: %s", self._problem)

    def _works(self) -> None:
        if self._problem is not None:
            self._problem = None
            logger.warning("UsageLedger: Redis at %s answers again.", safe_url(self.url))

    # -- names -------------------------------------------------------------------------------

    def _bucket(self, period: str, bucket: str) -> str:
        where = period if not bucket else f"{period}:{bucket}"
        return f"{tag(self.prefix)}:ledger:{where}"

    def _place(self, key: str) -> tuple[str, str, str | None, str, str]:
        """(hash name, field suffix, cell user or None, users-set name, period) of an entry."""
        period, bucket, dimension, *names = json.loads(key)
        base = self._bucket(period, bucket)
        if dimension == _CELL:
            user, *rest = names
            suffix = json.dumps(rest, ensure_ascii=False)
            return f"{base}:c:{user}", suffix, user, f"{base}:u", period
        return f"{base}:g", json.dumps([dimension, *names], ensure_ascii=False), None, "", period

    # -- writing -----------------------------------------------------------------------------

    def _argv(self, combined: dict[str, UsageTotals]) -> tuple[list[str], list[Any]]:
        keys: dict[str, int] = {}
        ops: list[Any] = []
        expire: list[Any] = []  # after the writes: EXPIRE on a missing key does nothing

        def index(name: str, period: str) -> int:
            if name not in keys:
                keys[name] = len(keys) + 1
                expire.append((keys[name], "e", "", str(_ttl(period))))
            return keys[name]

        for key, delta in combined.items():
            name, suffix, user, users, period = self._place(key)
            at = index(name, period)
            for field in _INTS:
                amount = getattr(delta, field)
                if amount or field == "requests":
                    ops.append((at, "i", f"{field} {suffix}", str(int(amount))))
            if delta.cost_usd:
                ops.append((at, "f", f"cost_usd {suffix}", repr(float(delta.cost_usd))))
            if user is not None:
                ops.append((index(users, period), "s", user, ""))
        return list(keys), [json.dumps(ops + expire, ensure_ascii=False)]

    def update(self, deltas: list[tuple[str, UsageTotals]]) -> None:
        with self._lock:
            if self._down() or not self._write(deltas):
                for key, delta in deltas:
                    self._pending.setdefault(key, UsageTotals()).add(delta)

    def _write(self, deltas: list[tuple[str, UsageTotals]]) -> bool:
        """The pending entries and ``deltas`` in one script call; False if Redis failed."""
        combined: dict[str, UsageTotals] = {}
        for key, delta in [*self._pending.items(), *deltas]:  # summed without touching either
            combined[key] = combined[key] + delta if key in combined else delta
        if not combined:
            return True
        keys, ops = self._argv(combined)
        try:
            self._sync()[1]["record"](keys=keys, args=ops)
        except self._errors() as exc:
            self._fail(exc)
            return False
        if self._pending:
            logger.warning(
                "UsageLedger: wrote %d entries kept in memory to Redis at %s.",
                len(self._pending),
                safe_url(self.url),
            )
            self._pending.clear()
        self._works()
        return True

    # -- reading -----------------------------------------------------------------------------

    def _read(self, what: str, call: Any) -> Rows:
        """Rows from Redis; while it is out, the rows last read for ``what`` (a key or a
        prefix), so limits keep counting what other processes had recorded until then."""
        if not self._down():
            try:
                if not self._pending or self._write([]):  # Redis is back: backlog first
                    rows: Rows = call()
                    self._works()
                    if len(self._seen) >= _SEEN_MAX:
                        self._seen.clear()
                    self._seen[what] = rows
                    return rows
            except self._errors() as exc:
                self._fail(exc)
        return self._seen.get(what, [])

    def get(self, key: str) -> UsageTotals | None:
        name, suffix, *_ = self._place(key)
        with self._lock:

            def fetch() -> Rows:
                raw = self._sync()[0].hmget(name, [f"{f} {suffix}" for f in _FIELDS])
                if raw[0] is None:  # "requests" is written with every entry
                    return []
                pairs = {f: _text(v) for f, v in zip(_FIELDS, raw, strict=True) if v is not None}
                return [(key, _totals(pairs))]

            found = self._read(key, fetch)
            pending = {key: self._pending[key]} if key in self._pending else {}
            rows = _merge(found, pending)
        return rows[0][1] if rows else None

    def scan(self, prefix: str) -> Rows:
        """Entries whose key starts with ``prefix`` (a JSON list's opening, as the ledger
        builds them: ``[period, bucket, …``): one script call per bucket."""
        head = json.loads(prefix.rstrip().rstrip(",") + "]")
        if not isinstance(head, list) or len(head) < 2:
            raise ValueError("RedisStore.scan needs a prefix naming a period and bucket.")
        period, bucket = head[0], head[1]
        base = self._bucket(period, bucket)
        groups = len(head) < 3 or head[2] != _CELL
        cells = len(head) < 3 or head[2] == _CELL
        user = head[3] if cells and len(head) > 3 else ""

        def fetch() -> Rows:
            out: dict[str, dict[str, str]] = {}
            raw = self._sync()[1]["cells"](
                keys=[f"{base}:g" if groups else f"{base}:-", f"{base}:u"],
                args=[f"{base}:c:" if cells else "", user],
            )
            group_pairs, rest = raw[0], raw[1:]
            self._collect(out, group_pairs, [period, bucket])
            if cells:
                for i in range(0, len(rest), 2):
                    self._collect(out, rest[i + 1], [period, bucket, _CELL, _text(rest[i])])
            return [(k, _totals(v)) for k, v in out.items()]

        with self._lock:
            found = [(k, v) for k, v in self._read(prefix, fetch) if k.startswith(prefix)]
            pending = {k: v for k, v in self._pending.items() if k.startswith(prefix)}
            return _merge(found, pending)

    @staticmethod
    def _collect(out: dict[str, dict[str, str]], flat: list[Any], head: list[str]) -> None:
        for i in range(0, len(flat), 2):
            field, _, suffix = _text(flat[i]).partition(" ")
            key = json.dumps([*head, *json.loads(suffix)], ensure_ascii=False)
            out.setdefault(key, {})[field] = _text(flat[i + 1])

    @property
    def problem(self) -> str | None:
        """``None`` while Redis answers; else what is wrong and how to recover."""
        return self._problem

    def close(self) -> None:
        """Save what is kept in memory if Redis answers now, and release the connection."""
        with self._lock:
            if self._pending:
                self._retry_at = 0.0
                if not self._write([]):
                    logger.warning(
                        "UsageLedger: %d entries of usage could not be saved to Redis at %s and "
                        "are lost when this process exits.",
                        len(self._pending),
                        safe_url(self.url),
                    )
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._pid = -1

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._pending = {}  # the parent's to save, never saved twice
        self._pid = -1

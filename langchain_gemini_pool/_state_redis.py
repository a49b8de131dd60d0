"""``RedisState``: one pool across every process of every machine.

Each decision is one Lua script (``_state_lua.py``) run atomically in Redis with the
server's clock. redis-py is an optional extra, imported when a ``RedisState`` is built.
Sync methods run the scripts over one connection per thread (``_state_redis_wire.py``);
async ones use ``redis.asyncio`` (one client per event loop), so the event loop never blocks
on Redis. Clients are rebuilt after ``fork``. A Redis Cluster is found at construction and
gets redis-py's cluster clients (``_state_redis_client.py``); every key shares the hash tag
``{prefix}``, so one script never spans two slots. What happens while Redis does not
answer (the ``on_outage`` policy, backoff, the local fallback) is ``_state_redis_outage.py``.
A busy key's admits lease slots ahead (``_state_lease``), and plain sync settles are written
behind the caller (``_state_behind``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from langchain_gemini_pool import _state_behind as behind
from langchain_gemini_pool._state_lease import Leases
from langchain_gemini_pool._state_lua import ADMIT, RESET, SETTLE, SNAPSHOT
from langchain_gemini_pool._state_redis_client import (
    async_client,
    is_cluster,
    outage_errors,
    sync_client,
)
from langchain_gemini_pool._state_redis_codec import (
    admit_args,
    cand_args,
    check_prefix,
    decode_admit,
    decode_extras,
    decode_snapshot,
    gen_key,
    gen_of,
    key_base,
    safe_url,
    salt_key,
    scope_base,
    settle_args,
    tag,
)
from langchain_gemini_pool._state_redis_outage import Outage
from langchain_gemini_pool._state_redis_seen import Seen
from langchain_gemini_pool._state_redis_wire import Wire
from langchain_gemini_pool._state_types import (
    INFLIGHT_TTL_S,
    Candidate,
    Decision,
    OutagePolicy,
    Scope,
    Settle,
    Snapshot,
    fingerprint_with,
    pacific_offset,
)

logger = logging.getLogger("langchain_gemini_pool")

SALT_TTL_S = 90 * 86400
"""The salt outlives every quarantine; each process refreshes it hourly while it runs."""

T = TypeVar("T")


class RedisState:
    """Cooldowns, quarantines and quota windows shared by every process that uses ``url``.

    Args:
        url: ``redis://[:password@]host:port/db``, ``rediss://…`` (TLS) or
            ``unix:///path/to/redis.sock``; for a Redis Cluster, any one of its nodes
            (found at construction; every key then lives in the one slot of ``{prefix}``).
        prefix: Start of every key name, as the hash tag ``{prefix}`` (several deployments
            can share one Redis); no ``{`` or ``}`` in it.
        on_outage: What to do when Redis stops answering mid-run: ``"local"`` (default)
            decide in this process until it is back (one WARNING each way), starting from
            the quarantines and cooldowns this process last saw in Redis; ``"closed"``
            raise ``ConnectionError``; ``"open"`` send without limits.
        timeout: Connect and socket timeout, seconds (a hung Redis must not hang requests).

    Raises:
        ValueError: ``on_outage``, ``prefix`` or the URL is not valid.
        ConnectionError: Redis cannot be reached, or refuses the password (the message
            names the URL without its password).
    """

    shared = True
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gemini-pool",
        on_outage: OutagePolicy = "local",
        timeout: float = 1.0,
    ) -> None:
        if on_outage not in ("local", "closed", "open"):
            raise ValueError(f"on_outage must be 'local', 'closed' or 'open', not {on_outage!r}.")
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"RedisState needs a redis://, rediss:// or unix:// URL, not {safe_url(url)!r}."
            )
        try:
            import redis  # noqa: F401 (optional extra: fail here, clearly)
        except ImportError:  # pragma: no cover - the test extra installs it
            raise ImportError(
                "RedisState needs redis-py: pip install 'langchain-gemini-pool[redis]'."
            ) from None
        self.url = url
        self.prefix = check_prefix(prefix)
        self.cluster = False
        """True when ``url`` is a node of a Redis Cluster (found at construction)."""
        self._keys = [salt_key(prefix)]  # the key scripts are routed by (one slot: {prefix})
        self._seen = Seen()
        self._outage = Outage(url, self.prefix, on_outage, self._seen)
        self.timeout = timeout
        self._pid = -1
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._hot: Wire | None = None
        self._aclients: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self._salt_refreshed = 0.0
        self._salt = self._connect_and_salt()
        self._leases = Leases(self.settle)

    @property
    def on_outage(self) -> OutagePolicy:
        """What this state does while Redis does not answer (see the class)."""
        return self._outage.policy

    def __repr__(self) -> str:
        return f"RedisState({safe_url(self.url)!r}, prefix={self.prefix!r})"

    # --- connections ------------------------------------------------------------------------

    def _sync(self) -> tuple[Any, dict[str, Any]]:
        if self._pid != os.getpid():  # first use, or a forked child: new sockets
            client = sync_client(self.url, self.timeout, self.cluster)
            scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            self._client, self._scripts, self._pid = client, scripts, os.getpid()
            self._hot = Wire.of(client, _SCRIPTS)
            self._aclients = weakref.WeakKeyDictionary()
        return self._client, self._scripts

    def _script(self, name: str, argv: list[Any]) -> Any:
        """Run a script over this thread's own connection (``_state_redis_wire``)."""
        scripts = self._sync()[1]
        if self._hot is None:  # a client the wire does not speak for
            return scripts[name](keys=self._keys, args=argv)  # keys: a Cluster's routing
        return self._hot.call(name, argv)

    def _async(self) -> dict[str, Any]:
        import asyncio

        self._sync()  # fork check
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is None:
            client = async_client(self.url, self.timeout, self.cluster)
            scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            entry = (client, scripts)
            self._aclients[loop] = entry
        return entry[1]

    def _connect_and_salt(self) -> bytes:
        import redis

        key = salt_key(self.prefix)
        try:
            self.cluster = is_cluster(self.url, self.timeout)
            client, _ = self._sync()
            client.set(key, os.urandom(32), nx=True, ex=SALT_TTL_S)
            client.expire(key, SALT_TTL_S)
            salt = client.get(key)
        except redis.AuthenticationError:
            raise ConnectionError(
                f"Redis at {safe_url(self.url)} refused the password (or needs one): "
                "check the URL's user and password."
            ) from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ConnectionError(
                    f"Redis at {safe_url(self.url)} refused the password (or needs one): "
                    "check the URL's user and password."
                ) from None
            raise
        except outage_errors(OSError) as exc:
            raise ConnectionError(
                f"Cannot reach Redis at {safe_url(self.url)} ({type(exc).__name__}): is it "
                "running, and is the address right?"
            ) from None
        self._salt_refreshed = time.monotonic()
        return bytes(salt)

    def fingerprint(self, secret: str) -> str:
        return fingerprint_with(self._salt, secret)

    def _salt_due(self) -> str:
        if time.monotonic() - self._salt_refreshed < 3600:
            return ""
        self._salt_refreshed = time.monotonic()
        return salt_key(self.prefix)

    # --- the outage policy (``_state_redis_outage``) ------------------------------------------

    def _run(self, call: Callable[[], T], offline: Callable[[], T]) -> T:
        import redis

        outage = self._outage
        if outage.skip():
            return offline()
        try:
            result = call()
        except outage_errors() as exc:
            outage.went_down(exc)
            return offline()
        if outage.down:
            for argv in outage.came_back():
                with contextlib.suppress(redis.RedisError):
                    self._sync()[1]["settle"](keys=self._keys, args=argv)
        return result

    async def _arun(self, call: Callable[[], Awaitable[T]], offline: Callable[[], T]) -> T:
        import redis

        outage = self._outage
        if outage.skip():
            return offline()
        try:
            result = await call()
        except outage_errors() as exc:
            outage.went_down(exc)
            return offline()
        if outage.down:
            for argv in outage.came_back():
                with contextlib.suppress(redis.RedisError):
                    await self._async()["settle"](keys=self._keys, args=argv)
        return result

    # --- the protocol -----------------------------------------------------------------------

    def _admit_argv(
        self,
        candidates: Sequence[Candidate],
        tokens: float,
        book: float | None,
        known: str,
        lease: int,
    ) -> list[Any]:
        bases = [scope_base(self.prefix, c.scope) for c in candidates]
        return admit_args(
            self.prefix, candidates, bases, tokens, book, self._salt_due(), SALT_TTL_S, known, lease
        )

    def admit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        if not candidates:
            raise ValueError("admit needs at least one candidate key.")
        leased = self._leases.claim(candidates[0], _whole(tokens))
        if leased is not None:  # a slot this process leased (``_state_lease``): no round trip
            return leased

        def call() -> Decision:
            behind.drain()  # this process's settles first, as if it had waited for them
            seen, known = self._seen.known(candidates)
            lease, sent = self._leases.want(candidates[0]), self._leases.clock()
            argv = self._admit_argv(candidates, tokens, book_until_s, known, lease)
            raw = self._script("admit", argv)
            decision = decode_admit(raw, candidates, tokens)
            self._leases.add(decode_extras(raw, decision), sent, gen_of(raw, decision))
            self._seen.admitted(seen, candidates, raw, decision)
            return decision

        return self._run(call, lambda: self._outage.admit(candidates, tokens, book_until_s))

    async def aadmit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        if not candidates:
            raise ValueError("admit needs at least one candidate key.")
        leased = self._leases.claim(candidates[0], _whole(tokens))
        if leased is not None:
            return leased

        async def call() -> Decision:
            seen, known = self._seen.known(candidates)
            lease, sent = self._leases.want(candidates[0]), self._leases.clock()
            argv = self._admit_argv(candidates, tokens, book_until_s, known, lease)
            raw = await self._async()["admit"](keys=self._keys, args=argv)
            decision = decode_admit(raw, candidates, tokens)
            self._leases.add(decode_extras(raw, decision), sent, gen_of(raw, decision))
            self._seen.admitted(seen, candidates, raw, decision)
            return decision

        return await self._arun(call, lambda: self._outage.admit(candidates, tokens, book_until_s))

    def _verdict(self, outcome: Settle) -> bool:
        """Whether ``outcome`` carries a verdict (see ``Leases.verdict``)."""
        if outcome.quarantine or outcome.cool_key_s or outcome.cool_scope_s:
            self._seen.settled(outcome)
        return self._leases.verdict(outcome)

    def settle(self, outcome: Settle) -> None:
        if self._verdict(outcome) or _home(outcome) != "backend":
            self._write(outcome)  # a verdict waits; a fallback's slot ends here, no I/O
        else:
            behind.put(self._write, outcome)  # a plain end: written behind the caller

    def _settled_here(self, outcome: Settle) -> bool:
        """Whether ``outcome`` ends a slot Redis never gave (the outage fallback's, or the
        ``"open"`` policy's): it ends in this process, not in Redis."""
        home = _home(outcome)
        if home == "local":
            self._outage.fallback().settle(outcome)
        return home != "backend"

    def _write(self, outcome: Settle) -> None:
        if self._settled_here(outcome):
            return
        argv = settle_args(outcome, scope_base(self.prefix, outcome.scope), self.prefix)
        gen = self._run(lambda: self._script("settle", argv), lambda: self._outage.settle(outcome))
        self._leases.news(gen_of(gen))

    async def asettle(self, outcome: Settle) -> None:
        self._verdict(outcome)
        if self._settled_here(outcome):
            return
        argv = settle_args(outcome, scope_base(self.prefix, outcome.scope), self.prefix)

        async def call() -> Any:
            return await self._async()["settle"](keys=self._keys, args=argv)

        gen = await self._arun(call, lambda: self._outage.settle(outcome))
        self._leases.news(gen_of(gen))

    def snapshot(self, candidates: Sequence[Candidate]) -> Snapshot:
        argv: list[Any] = [tag(self.prefix), pacific_offset(time.time()), INFLIGHT_TTL_S]
        for c in candidates:
            argv += cand_args(c, scope_base(self.prefix, c.scope))

        def call() -> Snapshot:
            with self._leases.steady():
                behind.drain()
                raw = self._script("snapshot", argv)
                snap = decode_snapshot(raw, candidates)
                self._seen.snapshot(snap, candidates)
                return self._leases.unclaimed(snap)

        return self._run(call, lambda: self._outage.snapshot(candidates))

    def reset(self, fingerprint: str, scope: Scope) -> None:
        argv = [
            key_base(self.prefix, fingerprint),
            scope_base(self.prefix, scope),
            gen_key(self.prefix),
            SALT_TTL_S,
        ]
        self._seen.forget(fingerprint, scope)
        behind.drain()
        self._run(lambda: self._script("reset", argv), lambda: None)
        if (local := self._outage.local) is not None:
            local.reset(fingerprint, scope)

    def close(self) -> None:
        """Give this process's leased slots back and disconnect (it reconnects if used)."""
        self._leases.close()
        behind.drain()
        if self._client is not None and self._pid == os.getpid():
            if self._hot is not None:
                self._hot.close()
            self._client.close()
        self._pid = -1


def _home(outcome: Settle) -> str:
    return outcome.reservation.home if outcome.reservation else "backend"


def _whole(tokens: float) -> int:
    return max(0, int(-(-tokens // 1)))


_SCRIPTS = {"admit": ADMIT, "settle": SETTLE, "snapshot": SNAPSHOT, "reset": RESET}

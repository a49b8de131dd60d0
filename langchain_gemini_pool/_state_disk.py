"""``DiskState``: one SQLite file shared by every process of one machine.

Each decision is one transaction (``BEGIN IMMEDIATE``, WAL): it reads the candidates'
quarantines, cooldowns and windows, runs the pure ``decide`` and writes the slot, so no
two processes can take the same slot. Connections are per thread and reopened after
``fork``; the async methods run the same work in a thread. A busy key's admits lease slots
ahead (``_state_lease``), and plain settles are written behind the caller, on the caller's
connection (``_state_behind``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from langchain_gemini_pool import _state_behind as behind
from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._state_decide import (
    KeyView,
    ScopeView,
    Take,
    decide,
    room_of,
    warning_of,
)
from langchain_gemini_pool._state_lease import Leases, lease_count
from langchain_gemini_pool._state_sqlite import (
    BUSY_WAIT_S,
    SCHEMA,
    begin,
    connect,
    count_day,
    key_views,
    lease_rows,
    migrate,
    read_window,
)
from langchain_gemini_pool._state_types import (
    INFLIGHT_TTL_S,
    Admit,
    Candidate,
    Decision,
    KeyStatus,
    Reservation,
    Scope,
    ScopeStatus,
    Settle,
    Snapshot,
    day_number,
    effective_limits,
    fingerprint_with,
    pacific_offset,
    reason_code,
    span_of,
)

FILENAME = "gemini-pool-state.sqlite3"


Used = tuple[sqlite3.Connection, threading.Lock]
"""A thread's connection and the lock it is used under."""


class DiskState:
    """Cooldowns, quarantines and quota windows shared by every process of this machine.

    Args:
        directory: Where the SQLite file lives (created if missing). Use a local disk:
            SQLite's locking is unreliable on network filesystems.
        clock: Where time comes from (tests pass a ``ManualClock``; every process sharing
            the file must read the same time, so production code keeps the system clock).

    Raises:
        ValueError: The directory cannot be created or is not writable.
    """

    shared = True
    name = "disk"

    def __init__(self, directory: str | os.PathLike[str], clock: Clock | None = None) -> None:
        path = Path(directory).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"DiskState cannot create its directory {str(path)!r} ({exc.strerror or exc}); "
                "pass a writable local directory."
            ) from None
        self.directory = path
        self.path = path / FILENAME
        self._clock: Clock = clock or SystemClock()
        self._local = threading.local()
        self._admits = 0
        self._leases = Leases(self.settle, self._clock.now)
        try:
            conn, _ = self._conn()
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_WAIT_S * 1000)}")  # many starting
            conn.executescript(SCHEMA)
            migrate(conn)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('salt', ?)", (os.urandom(32),))
            self._salt = bytes(
                conn.execute("SELECT value FROM meta WHERE name='salt'").fetchone()[0]
            )
            conn.execute("PRAGMA busy_timeout = 1")
        except sqlite3.Error as exc:
            raise ValueError(
                f"DiskState cannot open {str(self.path)!r} ({exc}); "
                "pass a writable local directory."
            ) from None

    def __repr__(self) -> str:
        return f"DiskState({str(self.directory)!r})"

    def _conn(self) -> Used:
        """This thread's connection, and the lock it is used under (the settle writer
        borrows it: see ``settle``)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # new thread, or a forked child
            conn = connect(self.path)
            local.conn, local.lock, local.pid = conn, threading.Lock(), os.getpid()
        return local.conn, local.lock

    @contextmanager
    def _tx(self, used: Used | None = None) -> Iterator[sqlite3.Connection]:
        conn, lock = used or self._conn()
        with lock:
            begin(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def fingerprint(self, secret: str) -> str:
        return fingerprint_with(self._salt, secret)

    # --- admit ------------------------------------------------------------------------------

    def admit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        if not candidates:
            raise ValueError("admit needs at least one candidate key.")
        need = max(0, int(-(-tokens // 1)))
        leased = self._leases.claim(candidates[0], need)
        if leased is not None:  # a slot this process leased (``_state_lease``): no transaction
            return leased
        behind.drain()  # this process's settles first, as if it had waited for them
        lease, sent = self._leases.want(candidates[0]), self._leases.clock()
        with self._tx() as conn:
            now = self._clock.now()
            decision, extras = self._admit(conn, candidates, need, now, book_until_s, lease)
        self._leases.add(extras, sent)
        return decision

    async def aadmit(
        self, candidates: Sequence[Candidate], tokens: float, *, book_until_s: float | None = None
    ) -> Decision:
        return await asyncio.to_thread(self.admit, candidates, tokens, book_until_s=book_until_s)

    def _admit(
        self,
        conn: sqlite3.Connection,
        candidates: Sequence[Candidate],
        tokens: int,
        now: float,
        book_until_s: float | None,
        lease: int,
    ) -> tuple[Decision, list[Reservation]]:
        """The decision, and the extra slots leased with it (``_state_lease``)."""
        day = day_number(now, pacific_offset(now))
        keys = key_views(conn, [c.fingerprint for c in candidates], now)
        views: dict[Scope, ScopeView] = {}

        def view(cand: Candidate) -> ScopeView:
            if cand.scope not in views:
                views[cand.scope] = self._scope_view(conn, cand, now, day)
            return views[cand.scope]

        take = decide(candidates, keys, view, tokens, now, book_until_s)
        if not isinstance(take, Take):
            return take, []
        cand = candidates[take.index]
        rid = os.urandom(8).hex()
        conn.execute("INSERT INTO flights VALUES (?, ?, ?)", (rid, cand.fingerprint, now))
        self._admits += 1
        if self._admits % 256 == 0:
            conn.execute("DELETE FROM flights WHERE t < ?", (now - INFLIGHT_TTL_S,))
            conn.execute("DELETE FROM days WHERE day < ?", (day_number(now, 0) - 3,))
        at_day = day_number(take.at, pacific_offset(take.at))
        warning = None
        if take.limits is not None:
            p, m = cand.scope.project, cand.scope.model
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, 1)", (p, m, rid, take.at, tokens)
            )
            conn.execute(
                "INSERT INTO scopes (project, model, n, token_sum) VALUES (?, ?, 1, ?)"
                " ON CONFLICT DO UPDATE SET n = n + 1, token_sum = token_sum + excluded.token_sum",
                (p, m, tokens),
            )
            count, warned = count_day(conn, p, m, at_day)
            warning = None if warned else warning_of(cand.scope, count, take.limits)
            if warning is not None:
                conn.execute(
                    "UPDATE days SET warned = 1 WHERE project = ? AND model = ? AND day = ?",
                    (p, m, at_day),
                )
        res = Reservation(
            cand.fingerprint, cand.scope, rid, take.at, tokens, at_day, take.limits is not None
        )
        extras: list[Reservation] = []
        if take.limits is not None and take.at <= now and lease > 0:
            view_ = views[cand.scope]
            n = len(view_.events) + len(view_.flying) + 1
            extra = lease_count(take.limits, lease, n, view_.day_count + 1, view_.token_sum, tokens)
            extras = lease_rows(conn, res, extra)
        return Admit(take.index, res, now, warning), extras

    @staticmethod
    def _scope_view(conn: sqlite3.Connection, cand: Candidate, now: float, day: int) -> ScopeView:
        p, m = cand.scope.project, cand.scope.model
        row = conn.execute(
            "SELECT s.cool_until, s.cool_reason, s.learned, s.n, s.token_sum, d.count"
            " FROM scopes AS s LEFT JOIN days AS d"
            " ON d.project = s.project AND d.model = s.model AND d.day = ?"
            " WHERE s.project = ? AND s.model = ?",
            (day, p, m),
        ).fetchone()
        if row is None:
            return ScopeView()
        learned = {str(k): int(v) for k, v in json.loads(row[2]).items()}
        view = ScopeView(
            day_count=row[5] or 0,
            cool_until=row[0],
            cool_reason=row[1],
            learned=learned,
        )
        limits = effective_limits(cand.limits, learned)
        if limits is not None:
            view.events, view.flying, view.token_sum = read_window(
                conn, p, m, (row[3], row[4]), now - span_of(limits), now - INFLIGHT_TTL_S
            )
        return view

    # --- settle -----------------------------------------------------------------------------

    def settle(self, outcome: Settle) -> None:
        now = self._clock.now()
        if not self._leases.verdict(outcome):
            # a plain end, written behind the caller on the caller's own connection (another
            # connection's write would cost this one its page cache)
            behind.put(functools.partial(self._write, self._conn(), now), outcome)
        else:  # a verdict: every process must see it once this returns
            self._write(self._conn(), now, outcome)

    def _write(self, used: Used, now: float, outcome: Settle) -> None:
        with self._tx(used) as conn:
            self._settle(conn, outcome, now)

    async def asettle(self, outcome: Settle) -> None:
        await asyncio.to_thread(self.settle, outcome)

    @staticmethod
    def _settle(conn: sqlite3.Connection, o: Settle, now: float) -> None:
        p, m = o.scope.project, o.scope.model
        res = o.reservation
        if res is not None:
            conn.execute("DELETE FROM flights WHERE id = ?", (res.id,))
        if res is not None and o.cancel:
            old = conn.execute(
                "SELECT tokens FROM events WHERE project = ? AND model = ? AND id = ?",
                (p, m, res.id),
            ).fetchone()
            if old is not None:
                conn.execute(
                    "DELETE FROM events WHERE project = ? AND model = ? AND id = ?", (p, m, res.id)
                )
                conn.execute(
                    "UPDATE scopes SET n = n - 1, token_sum = token_sum - ?"
                    " WHERE project = ? AND model = ?",
                    (old[0], p, m),
                )
                conn.execute(
                    "UPDATE days SET count = count - 1"
                    " WHERE project = ? AND model = ? AND day = ? AND count > 0",
                    (p, m, res.day),
                )
        elif res is not None:
            row = {"p": p, "m": m, "id": res.id, "now": now, "tokens": None}
            if o.prompt_tokens is not None:  # the real count replaces the guess
                row["tokens"] = max(0, int(o.prompt_tokens))
                conn.execute(
                    "UPDATE scopes SET token_sum = token_sum + :tokens - ("
                    "SELECT tokens FROM events WHERE project = :p AND model = :m AND id = :id)"
                    " WHERE project = :p AND model = :m AND EXISTS ("
                    "SELECT 1 FROM events WHERE project = :p AND model = :m AND id = :id)",
                    row,
                )
            conn.execute(  # the flight ends: it counts a window from now (see span_of)
                "UPDATE events SET tokens = COALESCE(:tokens, tokens),"
                " t = CASE flying WHEN 1 THEN MAX(t, :now) ELSE t END, flying = 0"
                " WHERE project = :p AND model = :m AND id = :id",
                row,
            )
        reason = reason_code(o.cool_reason) or "cooling down"
        if o.cool_scope_s is not None or o.learned:
            conn.execute("INSERT OR IGNORE INTO scopes (project, model) VALUES (?, ?)", (p, m))
        if o.cool_scope_s is not None:
            conn.execute(
                "UPDATE scopes SET cool_until = ?, cool_reason = ?"
                " WHERE project = ? AND model = ? AND cool_until < ?",
                (now + o.cool_scope_s, reason, p, m, now + o.cool_scope_s),
            )
        if o.cool_key_s is not None or o.quarantine is not None:
            conn.execute("INSERT OR IGNORE INTO keys (fp) VALUES (?)", (o.fingerprint,))
        if o.cool_key_s is not None:
            conn.execute(
                "UPDATE keys SET cool_until = ?, cool_reason = ? WHERE fp = ? AND cool_until < ?",
                (now + o.cool_key_s, reason, o.fingerprint, now + o.cool_key_s),
            )
        if o.quarantine is not None:
            conn.execute(
                "UPDATE keys SET quarantine = ?, q_at = ? WHERE fp = ?",
                (reason_code(o.quarantine), now, o.fingerprint),
            )
        if o.learned:
            row = conn.execute(
                "SELECT learned FROM scopes WHERE project = ? AND model = ?", (p, m)
            ).fetchone()
            learned = json.loads(row[0])
            for dim, value in o.learned.items():
                if dim in ("rpm", "tpm", "rpd"):
                    learned[dim] = min(int(value), int(learned.get(dim, value)))
            conn.execute(
                "UPDATE scopes SET learned = ? WHERE project = ? AND model = ?",
                (json.dumps(learned), p, m),
            )

    # --- reporting --------------------------------------------------------------------------

    def snapshot(self, candidates: Sequence[Candidate]) -> Snapshot:
        with self._leases.steady():
            behind.drain()
            return self._leases.unclaimed(self._read(candidates))

    def _read(self, candidates: Sequence[Candidate]) -> Snapshot:
        with self._tx() as conn:
            now = self._clock.now()
            day = day_number(now, pacific_offset(now))
            fps = [c.fingerprint for c in candidates]
            views = key_views(conn, fps, now)
            keys: dict[str, KeyStatus] = {}
            for fp in fps:
                v = views.get(fp, KeyView())
                (flying,) = conn.execute(
                    "SELECT COUNT(*) FROM flights WHERE fp = ? AND t > ?",
                    (fp, now - INFLIGHT_TTL_S),
                ).fetchone()
                keys[fp] = KeyStatus(fp, v.quarantine, v.cool_until, v.cool_reason, flying)
            scopes: dict[Scope, ScopeStatus] = {}
            for cand in candidates:
                if cand.scope in scopes:
                    continue
                view = self._scope_view(conn, cand, now, day)
                limits = effective_limits(cand.limits, view.learned)
                count = len(view.events) + len(view.flying)
                room = room_of(limits, count, view.token_sum, view.day_count)
                scopes[cand.scope] = ScopeStatus(
                    cand.scope, view.cool_until, view.cool_reason, room, limits
                )
            return Snapshot(now, keys, scopes, self.shared, self.name)

    def reset(self, fingerprint: str, scope: Scope) -> None:
        behind.drain()
        with self._tx() as conn:
            conn.execute("DELETE FROM keys WHERE fp = ?", (fingerprint,))
            conn.execute(
                "UPDATE scopes SET cool_until = 0, cool_reason = NULL"
                " WHERE project = ? AND model = ?",
                (scope.project, scope.model),
            )

    def close(self) -> None:
        """Give this process's leased slots back and close this thread's connection."""
        self._leases.close()
        behind.drain()
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()

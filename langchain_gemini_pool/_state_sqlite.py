"""The SQLite side of ``DiskState``: its tables, how a connection opens and a transaction
begins, and a window read lazily."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any, overload

from langchain_gemini_pool._state_decide import KeyView
from langchain_gemini_pool._state_types import QUARANTINE_TTL_S, Reservation

BUSY_WAIT_S = 30.0
"""How long a decision waits for the write lock other processes hold before it fails."""
RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
"""SQLite answers ``RETURNING`` (one statement instead of two where it does)."""

SCHEMA = """
-- WITHOUT ROWID: a table keyed by text is then one b-tree, not a table and its key's index,
-- so each admit and settle writes fewer pages (files made before keep their tables as they are)
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS keys (
    fp TEXT PRIMARY KEY, quarantine TEXT, q_at REAL NOT NULL DEFAULT 0,
    cool_until REAL NOT NULL DEFAULT 0, cool_reason TEXT);
CREATE TABLE IF NOT EXISTS flights (
    id TEXT PRIMARY KEY, fp TEXT NOT NULL, t REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flights_t ON flights (t);
CREATE TABLE IF NOT EXISTS scopes (
    project TEXT NOT NULL, model TEXT NOT NULL,
    cool_until REAL NOT NULL DEFAULT 0, cool_reason TEXT,
    learned TEXT NOT NULL DEFAULT '{}',
    n INTEGER NOT NULL DEFAULT 0, token_sum INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, model));
CREATE TABLE IF NOT EXISTS days (
    project TEXT NOT NULL, model TEXT NOT NULL, day INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0, warned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, model, day));
-- one row per request in a window: flying = 1 from its admit to its settle (it counts
-- whatever t is), then t = the settle's time if later, and it counts until t + window_s
CREATE TABLE IF NOT EXISTS events (
    project TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL,
    t REAL NOT NULL, tokens INTEGER NOT NULL, flying INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project, model, id)) WITHOUT ROWID;
"""
INDEXES = (
    "DROP INDEX IF EXISTS events_t",  # (project, model, t): before requests in flight were told
    "CREATE INDEX IF NOT EXISTS events_ft ON events (project, model, flying, t)",
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a file made by an earlier version up to ``SCHEMA`` (its rows count as settled),
    in one transaction: processes starting together must not both add the column."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "flying" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN flying INTEGER NOT NULL DEFAULT 0")
        for statement in INDEXES:
            conn.execute(statement)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Events(Sequence[Any]):
    """A scope's settled requests, read lazily: their count is known; rows are fetched
    when asked."""

    _SQL = "SELECT t, tokens FROM events WHERE project = ? AND model = ? AND flying = 0 ORDER BY t"

    def __init__(self, conn: sqlite3.Connection, project: str, model: str, count: int) -> None:
        self._conn, self._args, self._count = conn, (project, model), count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._conn.execute(self._SQL + " LIMIT 1 OFFSET ?", (*self._args, index)).fetchone()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._conn.execute(self._SQL, self._args))


def read_window(
    conn: sqlite3.Connection,
    project: str,
    model: str,
    totals: tuple[int, int],
    horizon: float,
    lost: float,
) -> tuple[Events, list[Any], int]:
    """A scope's window after dropping what expired: settled requests stamped at or before
    ``horizon`` and flights started at or before ``lost`` (their process never settled them).

    ``totals`` are the scope's running count and token sum (``scopes.n``, ``token_sum``),
    kept up to date here. Returns the settled requests (lazy), those in flight (stamp
    order) and the token sum of both.
    """
    p, m = project, model
    gone, freed = conn.execute(  # the running count and sum, less what expired
        "SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM events"
        " WHERE project = ? AND model = ? AND flying = 0 AND t <= ?",
        (p, m, horizon),
    ).fetchone()
    flying = conn.execute(
        "SELECT t, tokens FROM events WHERE project = ? AND model = ? AND flying = 1 ORDER BY t",
        (p, m),
    ).fetchall()
    if flying and flying[0][0] <= lost:
        dead = [row for row in flying if row[0] <= lost]
        gone, freed = gone + len(dead), freed + sum(row[1] for row in dead)
        flying = flying[len(dead) :]
        conn.execute(
            "DELETE FROM events WHERE project = ? AND model = ? AND flying = 1 AND t <= ?",
            (p, m, lost),
        )
    count, token_sum = totals[0] - gone, totals[1] - freed
    if gone:
        conn.execute(
            "DELETE FROM events WHERE project = ? AND model = ? AND flying = 0 AND t <= ?",
            (p, m, horizon),
        )
        conn.execute(
            "UPDATE scopes SET n = ?, token_sum = ? WHERE project = ? AND model = ?",
            (count, token_sum, p, m),
        )
    return Events(conn, p, m, count - len(flying)), flying, token_sum


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection one thread uses, and lends to the settle writer (``_state_behind``)
    under its own lock: hence ``check_same_thread=False``."""
    conn = sqlite3.connect(path, timeout=BUSY_WAIT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL under WAL: a commit appends to the WAL without fsync; the WAL is synced at each
    # checkpoint. A process crash loses nothing (the OS has the writes); power loss can drop
    # the last commits but never corrupts the file. What they held (slots of calls in flight,
    # a cooldown) is short-lived: losing it errs towards sending a little early after a
    # machine restart, which every limit tolerates as a 429 answered by a cooldown.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout = 1")  # begin() waits for the write lock
    return conn


def begin(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, tried again every ~0.5 ms while another process holds the write
    lock, for up to ``BUSY_WAIT_S``. SQLite's own busy handler sleeps longer each time (up to
    100 ms a try), so a process that found the lock taken once kept losing it to the others'
    short transactions: one of four workers could go seconds without a slot."""
    deadline = 0.0
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            now = time.monotonic()
            deadline = deadline or now + BUSY_WAIT_S
            if now > deadline:
                raise
        time.sleep(random.uniform(0.0001, 0.001))  # noqa: S311 (jitter, not a secret)


def lease_rows(conn: sqlite3.Connection, res: Reservation, extra: int) -> list[Reservation]:
    """Take ``extra`` more slots like ``res`` (in flight now, its tokens each): a lease
    (``_state_lease``), inside the admit's transaction."""
    if extra <= 0:
        return []
    p, m = res.scope.project, res.scope.model
    made = [
        Reservation(res.fingerprint, res.scope, f"{res.id}.{j}", res.at, res.tokens, res.day, True)
        for j in range(1, extra + 1)
    ]
    conn.executemany(
        "INSERT INTO flights VALUES (?, ?, ?)", [(r.id, r.fingerprint, r.at) for r in made]
    )
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, 1)", [(p, m, r.id, r.at, r.tokens) for r in made]
    )
    conn.execute(
        "UPDATE scopes SET n = n + ?, token_sum = token_sum + ? WHERE project = ? AND model = ?",
        (extra, extra * res.tokens, p, m),
    )
    conn.execute(
        "UPDATE days SET count = count + ? WHERE project = ? AND model = ? AND day = ?",
        (extra, p, m, res.day),
    )
    return made


def count_day(conn: sqlite3.Connection, p: str, m: str, day: int) -> tuple[int, int]:
    """One more request on ``day``: the day's count and warned flag after it."""
    count_it = (
        "INSERT INTO days (project, model, day, count) VALUES (?, ?, ?, 1)"
        " ON CONFLICT DO UPDATE SET count = count + 1"
    )
    if RETURNING:
        ((count, warned),) = conn.execute(count_it + " RETURNING count, warned", (p, m, day))
        return count, warned
    conn.execute(count_it, (p, m, day))
    count, warned = conn.execute(
        "SELECT count, warned FROM days WHERE project = ? AND model = ? AND day = ?",
        (p, m, day),
    ).fetchone()
    return count, warned


def key_views(conn: sqlite3.Connection, fps: list[str], now: float) -> dict[str, KeyView]:
    """Quarantines and cooldowns of the keys ``fps`` (those with none are left out)."""
    marks = ",".join("?" * len(fps))
    rows = conn.execute(
        f"SELECT fp, quarantine, q_at, cool_until, cool_reason FROM keys WHERE fp IN ({marks})",  # noqa: S608 (only ? marks)
        fps,
    ).fetchall()
    views = {}
    for fp, quarantine, q_at, cool_until, cool_reason in rows:
        if quarantine is not None and now - q_at > QUARANTINE_TTL_S:
            quarantine = None
        views[fp] = KeyView(quarantine, cool_until, cool_reason)
    return views

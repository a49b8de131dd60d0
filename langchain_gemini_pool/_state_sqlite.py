"""The SQLite side of ``DiskState``: its tables, and a window read lazily."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, overload

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
CREATE TABLE IF NOT EXISTS events (
    project TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL,
    t REAL NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (project, model, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_t ON events (project, model, t);
"""


class Events(Sequence[Any]):
    """A scope's window, read lazily: its length is known; rows are fetched when asked."""

    _SQL = "SELECT t, tokens FROM events WHERE project = ? AND model = ? ORDER BY t"

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

"""What the disk and Redis backends leave behind: TTLs, hash tags, no key text, clear errors."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from langchain_gemini_pool import DiskState, ManualClock, QuotaLimits, RedisState
from langchain_gemini_pool._state_env import state_from_env
from langchain_gemini_pool._state_types import Admit, Candidate, Scope, Settle, StateBackend
from tests.state.conftest import T0, RedisServer

SECRET = "fake-secret-key-text-0123456789-never-stored"
S = Scope("proj-{odd}|name", "gemini-2.5-flash")


def _exercise(state: StateBackend) -> Candidate:
    """Every kind of write: windows, day count, warning, cooldowns, quarantine, learning."""
    c = Candidate(state.fingerprint(SECRET), S, QuotaLimits(rpm=50, tpm=10_000, rpd=2))
    first = state.admit([c], 500)
    assert isinstance(first, Admit)
    second = state.admit([c], 5)
    assert isinstance(second, Admit)
    state.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=400))
    state.settle(
        Settle(
            c.fingerprint,
            S,
            second.reservation,
            cool_scope_s=30,
            cool_key_s=20,
            cool_reason="429 RESOURCE_EXHAUSTED",
            learned={"rpm": 40},
        )
    )
    state.settle(Settle(c.fingerprint, S, quarantine="400 API_KEY_INVALID"))
    state.snapshot([c])
    return c


def _windows(text: str) -> list[bytes]:
    return [text[i : i + 8].encode() for i in range(len(text) - 7)]


@pytest.fixture
def redis_state(shared_redis: RedisServer) -> Iterator[RedisState]:
    shared_redis.client().flushall()
    state = RedisState(shared_redis.url, prefix="t")
    yield state
    state.close()


def test_every_redis_key_has_a_ttl_and_all_share_one_hash_tag(
    redis_state: RedisState, shared_redis: RedisServer
) -> None:
    c = _exercise(redis_state)
    client = shared_redis.client()
    keys = [k.decode() for k in client.scan_iter(count=1000)]
    assert len(keys) >= 8
    for key in keys:
        assert client.pttl(key) > 0, f"{key} has no TTL"
    quarantine = [k for k in keys if k.endswith(":k")]
    assert quarantine == [f"{{t}}:{c.fingerprint}:k"]
    assert client.ttl(quarantine[0]) > 29 * 86400  # remembered for about a month
    # one admit touches several scopes and keys: on a Redis Cluster they share one slot
    assert {k[: k.index("}") + 1] for k in keys} == {"{t}"}
    scoped = [k for k in keys if "proj-" in k]
    assert {k.split(":")[2] for k in scoped} == {"proj-%7Bodd%7D%7Cname|gemini-2.5-flash"}
    assert "{t}:gen" in keys  # what an admit compares to learn of quarantines elsewhere
    day_keys = [k for k in scoped if ":d:" in k or ":w:" in k]
    assert day_keys
    for key in day_keys:  # a Pacific day number, never a date string
        assert key.rsplit(":", 1)[1].isdigit()
        assert client.ttl(key) <= 3 * 86400


def test_no_key_text_in_redis(redis_state: RedisState, shared_redis: RedisServer) -> None:
    _exercise(redis_state)
    client = shared_redis.client()
    blob = b"".join(k + (client.dump(k) or b"") for k in client.scan_iter(count=1000))
    assert len(blob) > 200
    for window in _windows(SECRET):
        assert window not in blob, window


def test_no_key_text_in_the_sqlite_files(tmp_path: Path) -> None:
    state = DiskState(tmp_path, ManualClock(T0))
    _exercise(state)  # the WAL still holds the writes
    files = list(tmp_path.iterdir())
    blob = b"".join(p.read_bytes() for p in files)
    assert any(p.name.endswith("-wal") for p in files)
    assert b"API_KEY_INVALID" in blob  # the scan does see what was written
    for window in _windows(SECRET):
        assert window not in blob, window
    state.close()


def test_a_directory_that_cannot_be_made_is_a_value_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot create its directory"):
        DiskState(blocker / "state")


def test_an_unreachable_redis_names_the_url_without_its_password(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    port = server.port
    server.stop()
    with pytest.raises(ConnectionError) as info:
        RedisState(f"redis://:hunter2-secret@127.0.0.1:{port}/0", timeout=0.5)
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text
    assert "hunter2" not in text
    assert "***" in text


def test_a_wrong_password_is_a_clear_error(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory("--requirepass", "right-pass")
    with pytest.raises(ConnectionError, match="refused the password") as info:
        RedisState(f"redis://:wrong-pass@127.0.0.1:{server.port}/0")
    assert "wrong-pass" not in str(info.value)
    with pytest.raises(ConnectionError, match="refused the password"):
        RedisState(f"redis://127.0.0.1:{server.port}/0")
    ok = RedisState(f"redis://:right-pass@127.0.0.1:{server.port}/0")
    assert "right-pass" not in repr(ok)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="on_outage"):
        RedisState("redis://127.0.0.1:1/0", on_outage="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="redis://"):
        RedisState("http://127.0.0.1:1/0")


def test_state_from_env(tmp_path: Path, redis_factory: Callable[..., RedisServer]) -> None:
    assert state_from_env({}) is None
    disk = state_from_env({"GEMINI_POOL_STATE": str(tmp_path / "d")})
    assert isinstance(disk, DiskState)
    server = redis_factory()
    assert isinstance(state_from_env({"GEMINI_POOL_STATE": server.url}), RedisState)
    with pytest.raises(ValueError, match="GEMINI_POOL_STATE"):
        state_from_env({"GEMINI_POOL_STATE": "http://user:pw@host/"})
    sock = os.path.join(server.directory, "r.sock")
    unix = redis_factory("--unixsocket", sock)
    assert unix.port
    assert isinstance(state_from_env({"GEMINI_POOL_STATE": f"unix://{sock}"}), RedisState)


def test_a_decision_waits_for_the_write_lock_another_process_holds(tmp_path: Path) -> None:
    """SQLite's own wait is cut to 1 ms; the decision itself waits (and keeps trying) while
    another connection holds the write lock, then goes through."""
    import sqlite3
    import threading
    import time

    state = DiskState(tmp_path / "state")
    c = Candidate(state.fingerprint(SECRET), S, QuotaLimits(rpm=50))
    other = sqlite3.connect(state.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # as another worker in the middle of its decision
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    try:
        decision = state.admit([c], 10)
    finally:
        release.join()
        other.close()
        state.close()
    assert isinstance(decision, Admit)
    assert time.monotonic() - t0 >= 0.25  # it did wait for the lock


def test_a_file_from_before_flights_were_told_apart_still_works(tmp_path: Path) -> None:
    """A state file written by an earlier version (no ``flying`` column): its window rows
    count as settled, and new requests are told apart."""
    import sqlite3

    from langchain_gemini_pool._state_disk import FILENAME

    (tmp_path / "old").mkdir()
    old = sqlite3.connect(tmp_path / "old" / FILENAME, isolation_level=None)
    old.executescript(
        "CREATE TABLE events (project TEXT NOT NULL, model TEXT NOT NULL, id TEXT NOT NULL,"
        " t REAL NOT NULL, tokens INTEGER NOT NULL, PRIMARY KEY (project, model, id))"
        " WITHOUT ROWID; CREATE INDEX events_t ON events (project, model, t);"
        "CREATE TABLE scopes (project TEXT NOT NULL, model TEXT NOT NULL,"
        " cool_until REAL NOT NULL DEFAULT 0, cool_reason TEXT,"
        " learned TEXT NOT NULL DEFAULT '{}', n INTEGER NOT NULL DEFAULT 0,"
        " token_sum INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (project, model));"
    )
    old.execute("INSERT INTO events VALUES (?, ?, 'old1', ?, 7)", (S.project, S.model, T0 - 5))
    old.execute(
        "INSERT INTO scopes (project, model, n, token_sum) VALUES (?, ?, 1, 7)",
        (S.project, S.model),
    )
    old.close()
    clock = ManualClock(T0)
    state = DiskState(tmp_path / "old", clock)
    c = Candidate(state.fingerprint(SECRET), S, QuotaLimits(rpm=2, window_s=30))
    assert state.snapshot([c]).scopes[S].room["rpm"] == 1  # the old row counts
    got = state.admit([c], 3)
    assert isinstance(got, Admit)
    clock.advance(25)  # the old row has expired, the new one is in flight
    assert state.snapshot([c]).scopes[S].room["rpm"] == 1
    clock.advance(30)
    assert state.snapshot([c]).scopes[S].room["rpm"] == 1  # in flight still counts
    state.settle(Settle(c.fingerprint, S, got.reservation, prompt_tokens=3))
    clock.advance(29)
    assert state.snapshot([c]).scopes[S].room["rpm"] == 1  # a window from its settle
    clock.advance(2)
    assert state.snapshot([c]).scopes[S].room["rpm"] == 2
    indexes = {r[1] for r in sqlite3.connect(state.path).execute("PRAGMA index_list(events)")}
    assert "events_t" not in indexes
    assert "events_ft" in indexes
    state.close()

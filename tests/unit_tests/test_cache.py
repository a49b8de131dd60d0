"""GeminiDiskCache on real directories: round trips, safety, failures as misses."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import pickle
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation
from pydantic import SecretStr

from langchain_gemini_pool import GeminiDiskCache, ManualClock
from langchain_gemini_pool._cache import ENV_CACHE_DIR, entry_key

PROMPT = '[{"lc": 1, "type": "constructor", "id": ["HumanMessage"], "kwargs": {"content": "hi"}}]'
LLM = "model=gemini-2.5-flash temperature=0.7"


def chat_generation(text: str = "Hello there", fingerprint: str = "…0001") -> ChatGeneration:
    return ChatGeneration(
        message=AIMessage(
            content=text,
            usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
            response_metadata={"model_name": "gemini-2.5-flash", "pool_key": fingerprint},
        ),
        generation_info={"finish_reason": "STOP"},
    )


def rows(directory: Path) -> list[tuple[int, object, str | None]]:
    """(mode, value, filename) of every stored entry, read with plain sqlite."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as con:
        return con.execute("SELECT mode, value, filename FROM Cache").fetchall()


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[GeminiDiskCache]:
    c = GeminiDiskCache(tmp_path / "c")
    yield c
    c.close()


# -- round trips -----------------------------------------------------------------------


def test_round_trip_keeps_message_usage_and_metadata(cache: GeminiDiskCache) -> None:
    value = [chat_generation(), Generation(text="plain")]
    cache.update(PROMPT, LLM, value)
    assert cache.lookup(PROMPT, LLM) == value
    assert cache.lookup(PROMPT, LLM + " ") is None
    assert cache.lookup(PROMPT + " ", LLM) is None


def test_key_is_a_hash_and_neither_prompt_nor_llm_string_is_stored(
    cache: GeminiDiskCache,
) -> None:
    cache.update("a secret prompt text", "an llm string", [Generation(text="x")])
    with contextlib.closing(sqlite3.connect(cache.directory / "cache.db")) as con:
        ((key,),) = con.execute("SELECT key FROM Cache").fetchall()
    assert key == entry_key("a secret prompt text", "an llm string")
    assert len(key) == 64
    assert set(key) <= set("0123456789abcdef")  # lower-case hex digits only
    raw = (cache.directory / "cache.db").read_bytes() + _wal(cache.directory)
    assert b"a secret prompt text" not in raw
    assert b"an llm string" not in raw


def _wal(directory: Path) -> bytes:
    wal = directory / "cache.db-wal"
    return wal.read_bytes() if wal.exists() else b""


def test_entry_key_is_unambiguous() -> None:
    assert entry_key("ab", "c") != entry_key("a", "bc")
    assert entry_key("", "x") != entry_key("x", "")


def test_values_are_json_text_not_pickle(cache: GeminiDiskCache) -> None:
    cache.update("small", LLM, [chat_generation()])
    cache.update("large", LLM, [chat_generation("y" * 50_000)])  # > 32 KB: a value file
    stored = rows(cache.directory)
    assert sorted(mode for mode, _, _ in stored) == [
        diskcache.core.MODE_RAW,
        diskcache.core.MODE_TEXT,
    ]
    for mode, value, filename in stored:
        if mode == diskcache.core.MODE_RAW:
            assert isinstance(value, str)
            text = value
        else:
            assert filename is not None
            data = (cache.directory / filename).read_bytes()
            assert not data.startswith(b"\x80")  # no pickle protocol header
            text = data.decode("utf-8")
        assert json.loads(text)[0]["id"][-1] == "ChatGeneration"
    assert cache.lookup("large", LLM) == [chat_generation("y" * 50_000)]


calls: list[str] = []


def _mark() -> str:
    calls.append("unpickled")
    return "pwned"


class _Planted:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_mark, ())


def test_a_planted_pickle_entry_is_refused_not_unpickled(
    cache: GeminiDiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    calls.clear()
    with diskcache.Cache(str(cache.directory)) as plain:
        plain.set(entry_key(PROMPT, LLM), _Planted())
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert cache.lookup(PROMPT, LLM) is None
    assert calls == []
    assert "unreadable entry" in caplog.text
    assert rows(cache.directory) == []  # the planted row was dropped


def test_secrets_are_not_written_in_clear(cache: GeminiDiskCache) -> None:
    secret = "AIzaSyTHIS-IS-A-REAL-LOOKING-KEY-1234"
    generation = ChatGeneration(
        message=AIMessage(
            content="ok",
            response_metadata={"pool_key": "…1234", "leaked": SecretStr(secret)},
        )
    )
    cache.update(PROMPT, LLM, [generation])
    raw = (cache.directory / "cache.db").read_bytes() + _wal(cache.directory)
    assert secret.encode() not in raw
    assert b"**********" in raw or b"SecretStr" in raw
    found = cache.lookup(PROMPT, LLM)
    assert found is not None
    message = found[0].message  # type: ignore[attr-defined]
    assert message.response_metadata == {"pool_key": "…1234", "leaked": None}


# -- counting, peek, stats, clear --------------------------------------------------------


def test_stats_count_hits_and_misses_and_peek_counts_nothing(cache: GeminiDiskCache) -> None:
    assert cache.lookup(PROMPT, LLM) is None
    assert cache.peek(PROMPT, LLM) is None
    cache.update(PROMPT, LLM, [chat_generation()])
    assert cache.peek(PROMPT, LLM) == [chat_generation()]
    assert cache.lookup(PROMPT, LLM) == [chat_generation()]
    assert cache.lookup(PROMPT, LLM) == [chat_generation()]
    stats = cache.stats()
    assert stats["hits"] == 2
    assert stats["misses"] == 1
    assert stats["entries"] == 1
    assert stats["bytes"] > 0
    assert stats["errors"] == 0


def test_clear_empties_the_directory_for_every_instance(tmp_path: Path) -> None:
    a = GeminiDiskCache(tmp_path)
    b = GeminiDiskCache(tmp_path)
    a.update(PROMPT, LLM, [chat_generation()])
    assert b.lookup(PROMPT, LLM) == [chat_generation()]
    b.clear()
    assert a.lookup(PROMPT, LLM) is None
    assert a.stats()["entries"] == 0


# -- ttl and size ------------------------------------------------------------------------


def test_ttl_follows_the_injected_clock(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000.0)
    c = GeminiDiskCache(tmp_path, ttl=60, clock=clock)
    c.update(PROMPT, LLM, [chat_generation()])
    clock.advance(59.5)
    assert c.lookup(PROMPT, LLM) == [chat_generation()]
    clock.advance(1)
    assert c.lookup(PROMPT, LLM) is None
    c.update(PROMPT, LLM, [chat_generation("fresh")])  # a new write starts a new ttl
    assert c.lookup(PROMPT, LLM) == [chat_generation("fresh")]


def test_ttl_is_also_given_to_diskcache_for_cleanup(tmp_path: Path) -> None:
    c = GeminiDiskCache(tmp_path, ttl=30)
    c.update(PROMPT, LLM, [chat_generation()])
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.db")) as con:
        ((store_time, expire_time),) = con.execute(
            "SELECT store_time, expire_time FROM Cache"
        ).fetchall()
    assert expire_time == pytest.approx(store_time + 30, abs=1)


def test_size_limit_evicts_the_oldest_entries(tmp_path: Path) -> None:
    c = GeminiDiskCache(tmp_path, size_limit=200_000)
    for i in range(300):
        c.update(f"prompt {i}", LLM, [chat_generation(f"{i} " + "z" * 2_000)])
    assert c.lookup("prompt 299", LLM) is not None
    assert c.lookup("prompt 0", LLM) is None
    stats = c.stats()
    assert stats["entries"] < 300
    assert stats["bytes"] < 1_000_000


# -- settings and errors at construction -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ttl": 0}, "ttl must be a positive"),
        ({"ttl": -5}, "ttl must be a positive"),
        ({"ttl": float("nan")}, "ttl must be a positive"),
        ({"ttl": "60"}, "ttl must be a positive"),
        ({"ttl": True}, "ttl must be a positive"),
        ({"ttl": float("inf")}, "ttl must be a positive"),
        ({"size_limit": 0}, "size_limit must be a positive"),
        ({"size_limit": 1.5}, "size_limit must be a positive"),
        ({"size_limit": True}, "size_limit must be a positive"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": True}, "timeout must be a positive"),
        ({"timeout": float("inf")}, "timeout must be a positive"),
        ({"timeout": "1"}, "timeout must be a positive"),
        ({"eviction_policy": "random"}, "eviction_policy must be one of"),
    ],
)
def test_bad_settings_say_what_is_wrong(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        GeminiDiskCache(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_a_directory_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="cannot create its directory") as info:
        GeminiDiskCache(blocker / "cache")
    assert ENV_CACHE_DIR in str(info.value)
    assert "cache=False" in str(info.value)


def test_default_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "from-env"))
    assert GeminiDiskCache().directory == (tmp_path / "from-env").resolve()
    assert GeminiDiskCache(tmp_path / "explicit").directory == (tmp_path / "explicit").resolve()


def test_default_directory_without_the_environment_is_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_CACHE_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert GeminiDiskCache().directory == (tmp_path / "xdg" / "langchain-gemini-pool" / "responses")


def test_repr_shows_directory_and_settings(tmp_path: Path) -> None:
    text = repr(GeminiDiskCache(tmp_path, ttl=5, size_limit=1000, timeout=0.5))
    assert text == (
        f"GeminiDiskCache(directory={str(tmp_path.resolve())!r}, ttl=5.0, size_limit=1000, "
        "timeout=0.5, eviction_policy='least-recently-stored')"
    )


# -- failures are misses, with a warning -------------------------------------------------


def test_garbage_in_the_sqlite_value_is_a_miss_with_a_warning(
    cache: GeminiDiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.update(PROMPT, LLM, [chat_generation()])
    with contextlib.closing(sqlite3.connect(cache.directory / "cache.db")) as con:
        con.execute("UPDATE Cache SET value = '{not json'")
        con.commit()
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert cache.lookup(PROMPT, LLM) is None
    assert "unreadable entry dropped" in caplog.text
    assert cache.stats()["errors"] == 1
    assert cache.stats()["entries"] == 0
    cache.update(PROMPT, LLM, [chat_generation()])  # and the key is usable again
    assert cache.lookup(PROMPT, LLM) == [chat_generation()]


def test_valid_json_of_the_wrong_shape_is_a_miss(cache: GeminiDiskCache) -> None:
    cache.update(PROMPT, LLM, [chat_generation()])
    with contextlib.closing(sqlite3.connect(cache.directory / "cache.db")) as con:
        con.execute("UPDATE Cache SET value = '{\"a\": 1}'")
        con.commit()
    assert cache.lookup(PROMPT, LLM) is None


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00garbage", b"[{valid utf-8, not json"])
def test_garbage_in_a_value_file_is_a_miss_with_a_warning(
    cache: GeminiDiskCache, caplog: pytest.LogCaptureFixture, garbage: bytes
) -> None:
    cache.update(PROMPT, LLM, [chat_generation("w" * 40_000)])
    ((_, _, filename),) = rows(cache.directory)
    assert filename is not None
    (cache.directory / filename).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert cache.lookup(PROMPT, LLM) is None
    assert "unreadable entry dropped" in caplog.text


def test_a_missing_value_file_is_a_plain_miss(cache: GeminiDiskCache) -> None:
    cache.update(PROMPT, LLM, [chat_generation("w" * 40_000)])
    ((_, _, filename),) = rows(cache.directory)
    assert filename is not None
    (cache.directory / filename).unlink()
    assert cache.lookup(PROMPT, LLM) is None


def test_a_corrupt_database_file_turns_caching_off_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not an sqlite database" * 100)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        c = GeminiDiskCache(tmp_path)
    assert "cannot be opened" in caplog.text
    assert "unavailable=True" in repr(c)
    c.update(PROMPT, LLM, [chat_generation()])
    assert c.lookup(PROMPT, LLM) is None
    c.clear()
    assert c.stats() == {"hits": 0, "misses": 1, "errors": 1, "entries": 0, "bytes": 0}


def test_reopens_once_the_directory_is_usable_again(tmp_path: Path) -> None:
    clock = ManualClock(1_000.0)
    (tmp_path / "cache.db").write_bytes(b"garbage" * 100)
    c = GeminiDiskCache(tmp_path, clock=clock)
    assert c.lookup(PROMPT, LLM) is None
    (tmp_path / "cache.db").unlink()
    c.update(PROMPT, LLM, [chat_generation()])  # too soon: still off
    assert c.lookup(PROMPT, LLM) is None
    clock.advance(10)
    c.update(PROMPT, LLM, [chat_generation()])
    assert c.lookup(PROMPT, LLM) == [chat_generation()]


def test_corruption_after_opening_turns_caching_off_says_how_to_recover_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(1_000.0)
    directory = tmp_path / "cache"
    c = GeminiDiskCache(directory, clock=clock)
    c.update(PROMPT, LLM, [chat_generation()])
    c.close()  # the connection is reopened on next use, onto a broken file
    (directory / "cache.db").write_bytes(b"this is not an sqlite database" * 100)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert c.lookup(PROMPT, LLM) is None
        c.update(PROMPT, LLM, [chat_generation()])  # off: skipped without touching the disk
    assert "lookup failed, treated as a miss (DatabaseError" in caplog.text
    assert "caching is off until" in caplog.text
    assert f"mv {str(directory)!r}" in caplog.text
    assert "unavailable=True" in repr(c)
    assert c.stats()["errors"] == 1
    directory.rename(tmp_path / "cache.broken")  # the remedy the warning gives
    clock.advance(5)
    c.update(PROMPT, LLM, [chat_generation()])
    assert c.lookup(PROMPT, LLM) == [chat_generation()]
    assert "unavailable=True" not in repr(c)


def test_the_open_warning_says_how_to_recover(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cache.db").write_bytes(b"garbage" * 100)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        GeminiDiskCache(tmp_path)
    assert "retried every 5 s" in caplog.text
    assert "move it aside" in caplog.text
    assert "only cached answers are lost" in caplog.text


@contextlib.contextmanager
def write_lock_held(directory: Path) -> Iterator[None]:
    """Another connection holding a write transaction on the cache database."""
    con = sqlite3.connect(directory / "cache.db", isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_a_lock_timeout_skips_the_write_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c = GeminiDiskCache(tmp_path, timeout=0.05)
    c.update("before", LLM, [chat_generation()])
    with (
        caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"),
        write_lock_held(tmp_path),
    ):
        c.update(PROMPT, LLM, [chat_generation()])
        assert c.lookup("before", LLM) == [chat_generation()]  # readers are not blocked
        c.clear()
    assert "response not cached (Timeout" in caplog.text
    assert "clear failed (Timeout" in caplog.text
    assert c.lookup(PROMPT, LLM) is None
    assert c.lookup("before", LLM) == [chat_generation()]
    assert c.stats()["errors"] == 2


def test_warnings_repeat_at_most_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(5_000.0)
    c = GeminiDiskCache(tmp_path, timeout=0.01, clock=clock)
    with (
        caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"),
        write_lock_held(tmp_path),
    ):
        for _ in range(3):
            c.update(PROMPT, LLM, [chat_generation()])
        clock.advance(61)
        c.update(PROMPT, LLM, [chat_generation()])
    assert caplog.text.count("response not cached") == 2
    assert c.stats()["errors"] == 4


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (works as root too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_full_disk_skips_the_write_with_a_warning(
    cache: GeminiDiskCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache.update("small", LLM, [chat_generation()])
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"), file_size_limit(16_384):
        cache.update(PROMPT, LLM, [chat_generation("q" * 200_000)])
    assert "response not cached" in caplog.text
    assert "File too large" in caplog.text
    assert cache.lookup(PROMPT, LLM) is None
    assert cache.lookup("small", LLM) == [chat_generation()]


@contextlib.contextmanager
def read_only_view(source: Path, mount_point: Path) -> Iterator[Path]:
    """``source`` seen through a path where every write fails as on a read-only directory.

    Not root: plain file modes. Root ignores modes, so a read-only bind mount instead; where
    that is not permitted (an unprivileged container), the test is skipped with the reason.
    """
    if os.geteuid() != 0:  # pragma: no cover - CI as root takes the mount branch
        paths = [source, *source.rglob("*")]
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield source
        finally:
            for path in paths:
                path.chmod(0o755 if path.is_dir() else 0o644)
        return
    mount_point.mkdir()
    mounted = subprocess.run(  # noqa: S603
        ["mount", "--bind", str(source), str(mount_point)],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("running as root, which ignores chmod, and mount is not permitted here")
    try:
        subprocess.run(  # noqa: S603
            ["mount", "-o", "remount,bind,ro", str(mount_point)],  # noqa: S607
            check=True,
            capture_output=True,
        )
        yield mount_point
    finally:
        gc.collect()  # let go of any connection a failed open left behind
        unmounted = subprocess.run(["umount", str(mount_point)], check=False)  # noqa: S603,S607
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # noqa: S603,S607
            pytest.fail("a connection on the read-only directory was left open")


def test_a_read_only_directory_is_a_miss_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writable = GeminiDiskCache(tmp_path / "cache")
    writable.update(PROMPT, LLM, [chat_generation()])
    writable.close()
    with read_only_view(tmp_path / "cache", tmp_path / "ro") as view:
        with pytest.raises(OSError, match=r"Read-only|Permission"):
            (view / "probe").write_text("x")
        with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
            c = GeminiDiskCache(view)
            c.update("new", LLM, [chat_generation()])
            assert c.lookup(PROMPT, LLM) is None
            assert c.lookup("new", LLM) is None
            c.clear()
            stats = c.stats()
        c.close()
    assert "GeminiDiskCache: cache directory" in caplog.text
    assert "cannot be opened" in caplog.text
    assert stats["misses"] == 2
    assert writable.lookup(PROMPT, LLM) == [chat_generation()]  # nothing was damaged


# -- threads, processes, async, pickling ---------------------------------------------------


def test_threads_share_one_cache(cache: GeminiDiskCache) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                cache.update(f"{t}-{i}", LLM, [Generation(text=f"{t}-{i}")])
                assert cache.lookup(f"{t}-{i}", LLM) == [Generation(text=f"{t}-{i}")]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = cache.stats()
    assert stats["hits"] == 240
    assert stats["entries"] == 240


def _write_in_child(cache: GeminiDiskCache, start: int) -> None:
    for i in range(start, start + 30):
        cache.update(f"p{i}", LLM, [Generation(text=f"from child {i}")])


def test_processes_share_a_directory(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path)
    child = multiprocessing.get_context("spawn").Process(target=_write_in_child, args=(cache, 0))
    child.start()  # one spawned child (startup imports dominate the cost), writing meanwhile
    for i in range(30, 60):
        cache.update(f"p{i}", LLM, [Generation(text=f"from parent {i}")])
    child.join(60)
    assert child.exitcode == 0
    for i in range(30):
        assert cache.lookup(f"p{i}", LLM) == [Generation(text=f"from child {i}")]
    assert cache.stats()["entries"] == 60


def _read_after_fork(cache: GeminiDiskCache, out: multiprocessing.queues.Queue[str]) -> None:
    found = cache.lookup(PROMPT, LLM)
    cache.update("child", LLM, [Generation(text="forked")])
    out.put("hit" if found else "miss")


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_a_forked_child_reopens_its_connection(cache: GeminiDiskCache) -> None:
    cache.update(PROMPT, LLM, [chat_generation()])
    assert cache.lookup(PROMPT, LLM) is not None  # the parent's connection is open
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.queues.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_read_after_fork, args=(cache, out))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert out.get(timeout=5) == "hit"
    assert cache.lookup("child", LLM) == [Generation(text="forked")]


def test_pickling_reopens_the_same_directory(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path, ttl=100, size_limit=10**6, timeout=0.25)
    cache.update(PROMPT, LLM, [chat_generation()])
    copy = pickle.loads(pickle.dumps(cache))  # noqa: S301 - our own object
    assert repr(copy) == repr(cache)
    assert copy.lookup(PROMPT, LLM) == [chat_generation()]
    assert copy.stats()["hits"] == 1
    assert cache.stats()["hits"] == 0


def test_pickling_with_an_unpicklable_clock_is_a_clear_type_error(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path, clock=ManualClock(0.0))
    with pytest.raises(TypeError, match="cannot be pickled with the clock"):
        pickle.dumps(cache)


async def test_async_methods_round_trip(cache: GeminiDiskCache) -> None:
    await cache.aupdate(PROMPT, LLM, [chat_generation()])
    assert await cache.apeek(PROMPT, LLM) == [chat_generation()]
    assert await cache.alookup(PROMPT, LLM) == [chat_generation()]
    await cache.aclear()
    assert await cache.alookup(PROMPT, LLM) is None
    assert cache.stats()["hits"] == 1
    assert cache.stats()["misses"] == 1


async def test_async_methods_do_not_block_the_event_loop(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path, timeout=0.3)
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    with write_lock_held(tmp_path):
        await cache.aupdate(PROMPT, LLM, [chat_generation()])  # waits 0.3 s for the lock
    stop.set()
    await task
    assert ticks >= 10  # the loop kept running while the write waited
    assert await cache.alookup(PROMPT, LLM) is None


# -- as a LangChain cache ----------------------------------------------------------------


def test_serves_a_chat_model_through_cache_param(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path)
    model = GenericFakeChatModel(messages=iter([AIMessage(content="first")]), cache=cache)
    assert model.invoke("hello").content == "first"
    assert model.invoke("hello").content == "first"  # the iterator is spent: from cache
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)


async def test_serves_a_chat_model_globally_async(tmp_path: Path) -> None:
    cache = GeminiDiskCache(tmp_path)
    previous = get_llm_cache()
    set_llm_cache(cache)
    try:
        model = GenericFakeChatModel(messages=iter([AIMessage(content="only once")]))
        assert (await model.ainvoke("hi")).content == "only once"
        assert (await model.ainvoke("hi")).content == "only once"
    finally:
        set_llm_cache(previous)
    assert cache.stats()["hits"] == 1


# -- the one-Reviver fast path agrees with langchain_core.load ------------------------------


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_fast_revival_matches_load_and_keeps_user_dicts_plain() -> None:
    from langchain_core.load import dumps, load

    from langchain_gemini_pool._cache_codec import _ALLOWED_OBJECTS, load_generations

    lookalike = {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}
    value = [
        ChatGeneration(
            message=AIMessage(content="x", response_metadata={"user": lookalike, "n": [1, 2]})
        ),
        Generation(text="y", generation_info={"nested": {"lc": 2}}),
    ]
    text = dumps(value)
    expected = load(json.loads(text), allowed_objects=_ALLOWED_OBJECTS)
    assert load_generations(text) == expected == value
    message = load_generations(text)[0].message  # type: ignore[attr-defined]
    assert message.response_metadata["user"] == lookalike  # data, not an object


def test_revival_refuses_classes_outside_the_allowlist() -> None:
    from langchain_core.load import dumps
    from langchain_core.prompts import PromptTemplate

    from langchain_gemini_pool._cache_codec import load_generations

    with pytest.raises(ValueError, match="not allowed"):
        load_generations(dumps([PromptTemplate.from_template("{x}")]))

"""The usage ledger in Redis: the same answers as on disk, shared by processes, safe to lose.

A real redis-server (``tests/state/conftest.py``); the disk ledger is a real diskcache
directory. Each Redis ledger gets its own key prefix, so tests share one server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_gemini_pool import (
    DiskState,
    InMemoryState,
    ManualClock,
    RedisState,
    UsageLedger,
    UsageLimitExceededError,
    UsageLimits,
    check_usage,
)
from langchain_gemini_pool._ledger_redis import ALL_TTL_S, DAY_TTL_S, MONTH_TTL_S
from langchain_gemini_pool._ledger_store import RETRY_S
from tests.state.conftest import RedisServer
from tests.unit_tests.test_usage_ledger import (
    FAKE_KEY,
    Request,
    _expected,
    _record,
    cache_hit,
    requests_strategy,
    served,
)

UTC = timezone.utc
MakeLedger = Callable[[ManualClock], UsageLedger]


@pytest.fixture(params=["disk", "redis", "redis-cluster"])
def make_ledger(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MakeLedger]:
    """Ledgers on one fresh storage (a directory, or a Redis prefix): each call opens
    another one on it, as another process would."""
    made: list[UsageLedger] = []
    if request.param == "disk":
        directory = tmp_path_factory.mktemp("ledger")

        def make(clock: ManualClock) -> UsageLedger:
            made.append(UsageLedger(directory, clock=clock))
            return made[-1]

    else:
        fixture = "shared_redis" if request.param == "redis" else "redis_cluster"
        url = request.getfixturevalue(fixture).url
        prefix = f"t{uuid.uuid4().hex[:8]}"

        def make(clock: ManualClock) -> UsageLedger:
            made.append(UsageLedger(url=url, prefix=prefix, clock=clock))
            return made[-1]

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 31, 23, 58, tzinfo=UTC))


# -- the same answers as on disk ----------------------------------------------------------------


def test_periods_roll_over_and_at_reads_the_past(
    make_ledger: MakeLedger, clock: ManualClock
) -> None:
    ledger = make_ledger(clock)
    ledger.record(served(tokens=100), user="alice")
    clock.advance(180)  # 2026-02-01 00:01 UTC: a new day and a new month
    make_ledger(clock).record(served(tokens=50), user="alice")
    assert ledger.totals(user="alice", period="day").total_tokens == 50
    assert ledger.totals(user="alice", period="month").total_tokens == 50
    assert ledger.totals(user="alice", period="all").total_tokens == 150
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    assert ledger.totals(user="alice", period="month", at=jan).total_tokens == 100
    assert ledger.totals(period="day", at=datetime(2026, 1, 31, tzinfo=UTC)).requests == 1
    groups = ledger.breakdown("all")
    assert set(groups) == {"total", "user", "model", "key", "project"}
    assert groups["user"]["alice"].total_tokens == 150


def test_filters_combine(make_ledger: MakeLedger, clock: ManualClock) -> None:
    ledger = make_ledger(clock)
    other = make_ledger(clock)  # another process's ledger on the same storage
    pro = {"model": "gemini-2.5-pro"}
    ledger.record(served(0, "pA", tokens=100), user="alice", **pro)
    other.record(served(1, "pB", tokens=40), user="alice", model="models/gemini-2.5-pro")
    ledger.record(served(0, "pA", tokens=7), user="alice")  # flash
    other.record(served(0, "pA", tokens=1000), user="bob", **pro)
    clock.advance(180)  # February
    ledger.record(served(1, "pB", tokens=3), user="alice", **pro)
    month = other.totals(user="alice", model="gemini-2.5-pro", period="month")
    assert (month.requests, month.total_tokens) == (1, 3)
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    in_jan = ledger.totals(user="alice", model="gemini-2.5-pro", period="month", at=jan)
    assert (in_jan.requests, in_jan.total_tokens) == (2, 140)
    assert in_jan.cost_usd == pytest.approx(
        ledger.totals(user="alice", model="gemini-2.5-pro").cost_usd - month.cost_usd
    )
    assert ledger.totals(user="alice", key_index=0).total_tokens == 107
    assert ledger.totals(user="alice", project="pB", model="gemini-2.5-pro").requests == 2
    assert ledger.totals(key_index=0, project="pA").total_tokens == 1107
    assert ledger.totals(key_index=0, project="pB").requests == 0
    assert ledger.totals(model="gemini-2.5-pro", project="pA").total_tokens == 1100
    everything = ledger.totals(user="bob", key_index=0, project="pA", model="gemini-2.5-pro")
    assert everything.total_tokens == 1000
    assert ledger.totals(user="carol", model="gemini-2.5-pro").requests == 0


def test_unpriced_models_keep_cost_unknown_not_zero(
    make_ledger: MakeLedger, clock: ManualClock
) -> None:
    ledger = make_ledger(clock)
    future = served(tokens=100, model_name="gemini-from-the-future")
    ledger.record(future, user="u", model="gemini-from-the-future")
    ledger.record(cache_hit(), user="u")
    t = ledger.totals(user="u", model="gemini-from-the-future")
    assert (t.unknown_cost_requests, t.cost_usd) == (1, None)
    assert ledger.totals(user="u", model="gemini-from-the-future", period="day").cost_usd is None
    assert ledger.totals(user="u").cost_usd is None  # the cache hit priced nothing either
    ledger.record(served(tokens=100), user="u")
    assert ledger.totals(user="u").cost_usd == pytest.approx((80 * 0.30 + 20 * 2.50) / 1e6)


def test_hard_limit_refuses_at_the_limit_until_the_next_day(
    make_ledger: MakeLedger, clock: ManualClock
) -> None:
    first, second = make_ledger(clock), make_ledger(clock)
    limits = UsageLimits(tokens_per_day=300, cost_per_month=1.0)
    for ledger in (first, second):
        check_usage(ledger, "alice", limits)
        ledger.record(served(tokens=150), user="alice")
    with pytest.raises(UsageLimitExceededError) as caught:
        check_usage(first, "alice", limits)
    assert (caught.value.limit_name, caught.value.current) == ("tokens_per_day", 300)
    check_usage(second, "bob", limits)
    clock.advance(180)  # a new day
    check_usage(second, "alice", limits)


@pytest.mark.parametrize("on_redis", [False, True])
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=requests_strategy, data=st.data())
def test_any_combination_of_filters_matches_the_definition(
    on_redis: bool,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    requests: list[Request],
    data: Any,
) -> None:
    clock = ManualClock(datetime(2026, 5, 5, 12, tzinfo=UTC))
    if on_redis:
        server: RedisServer = request.getfixturevalue("shared_redis")
        prefix = f"h{uuid.uuid4().hex[:8]}"
        ledger = UsageLedger(url=server.url, prefix=prefix, clock=clock)
    else:
        ledger = UsageLedger(tmp_path_factory.mktemp("ledger"), clock=clock)
    for req in requests:
        _record(ledger, req)
    choices = {
        "user": ["alice", "bob", '名前 "q"', "nobody"],
        "model": ["gemini-2.5-pro", "gemini-2.5-flash"],
        "key_index": [0, 1, 2, 3, 9],
        "project": ["pA", "pB", "pC"],
    }
    for _ in range(6):
        names = data.draw(st.sets(st.sampled_from(sorted(choices))))
        flt = {name: data.draw(st.sampled_from(choices[name])) for name in names}
        period = data.draw(st.sampled_from(["day", "month", "all"]))
        got = ledger.totals(**flt, period=period)
        assert (got.requests, got.attempts, got.total_tokens) == _expected(requests, flt), flt
    ledger.close()


# -- across processes ---------------------------------------------------------------------------


def _spend_until_refused(url: str, prefix: str, out: Any) -> None:
    """Runs in a forked child: the parent's ledger object, used until the limit refuses."""
    ledger = _INHERITED[0]
    limits = UsageLimits(requests_per_day=10)
    sent = 0
    try:
        while sent < 50:
            check_usage(ledger, "alice", limits)
            ledger.record(served(tokens=10), user="alice")
            sent += 1
    except UsageLimitExceededError:
        pass
    other = UsageLedger(url=url, prefix=prefix)
    ledger.record(served(tokens=1), user="child")
    out.put((sent, ledger.totals(user="parent").requests, other.totals(user="child").requests))


_INHERITED: list[UsageLedger] = []


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)"
)
def test_two_processes_share_totals_and_a_hard_limit(shared_redis: RedisServer) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    ledger = UsageLedger(url=shared_redis.url, prefix=prefix)
    limits = UsageLimits(requests_per_day=10)
    for _ in range(6):
        check_usage(ledger, "alice", limits)
        ledger.record(served(tokens=10), user="alice")
    ledger.record(served(tokens=10), user="parent")
    _INHERITED[:] = [ledger]  # the child uses this very object: it must reconnect after fork
    ctx: Any = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_spend_until_refused, args=(shared_redis.url, prefix, out))
    child.start()
    sent, parent_seen, child_seen = out.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert sent == 4  # the child saw the parent's 6 requests: 6 + 4 = the limit of 10
    assert (parent_seen, child_seen) == (1, 1)
    with pytest.raises(UsageLimitExceededError, match="requests_per_day"):
        check_usage(ledger, "alice", limits)  # the parent sees the child's 4
    assert ledger.totals(user="alice").requests == 10
    assert ledger.totals(user="child").requests == 1
    assert ledger.totals().requests == 12


def _race_to_the_limit(url: str, prefix: str, go: Any, out: Any) -> None:
    ledger = UsageLedger(url=url, prefix=prefix)
    limits = UsageLimits(requests_per_day=150)
    go.wait(30)
    sent = 0
    try:
        while sent < 300:
            check_usage(ledger, "alice", limits)
            ledger.record(served(tokens=10), user="alice")
            sent += 1
    except UsageLimitExceededError:
        pass
    out.put(sent)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)"
)
def test_processes_racing_for_one_limit_stop_together(shared_redis: RedisServer) -> None:
    """Each checks, then records: the limit holds to within one in-flight request per
    extra process (check and record are two steps, as they are around a real request)."""
    prefix = f"r{uuid.uuid4().hex[:8]}"
    ctx: Any = multiprocessing.get_context("fork")
    go, out = ctx.Barrier(2), ctx.Queue()
    racers = [
        ctx.Process(target=_race_to_the_limit, args=(shared_redis.url, prefix, go, out))
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    sent = [out.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(60)
    assert all(n > 0 for n in sent), sent  # both took part
    total = UsageLedger(url=shared_redis.url, prefix=prefix).totals(user="alice").requests
    assert total == sum(sent)
    assert 150 <= total <= 151, sent


def _record_once_and_close() -> None:
    ledger = _INHERITED[0]
    ledger.record(served(tokens=7), user="child")
    ledger.close()


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (POSIX)"
)
def test_a_forked_child_never_saves_the_parents_backlog(
    redis_factory: Callable[..., RedisServer], clock: ManualClock
) -> None:
    server = redis_factory()
    ledger = UsageLedger(url=server.url, clock=clock)
    server.stop()
    for _ in range(2):
        ledger.record(served(tokens=10), user="parent")  # kept in memory
    server.start()
    clock.advance(RETRY_S + 1)  # the child could write at once
    _INHERITED[:] = [ledger]
    child: Any = multiprocessing.get_context("fork").Process(target=_record_once_and_close)
    child.start()
    child.join(60)
    assert child.exitcode == 0
    fresh = UsageLedger(url=server.url, clock=clock)
    assert (fresh.totals(user="child").requests, fresh.totals(user="parent").requests) == (1, 0)
    ledger.record(served(tokens=10), user="parent")  # the parent writes its own backlog
    assert fresh.totals(user="parent").requests == 3
    assert fresh.totals().requests == 4


# -- what Redis holds ---------------------------------------------------------------------------


def _keys(server: RedisServer, prefix: str) -> list[bytes]:
    return sorted(server.client().scan_iter(match=f"{{{prefix}}}:*"))  # {prefix}: a hash tag


def test_every_key_has_a_ttl_by_its_period(shared_redis: RedisServer, clock: ManualClock) -> None:
    ledger = UsageLedger(url=shared_redis.url, prefix="ttl", clock=clock)
    shared_redis.client().delete(*_keys(shared_redis, "ttl") or ["-"])
    retried = served(2, "pB")
    retried.response_metadata["attempts"] = [
        {"key_index": 0, "project": "pA", "outcome": "rate_limited"},
        {"key_index": 2, "project": "pB", "outcome": "ok"},
    ]
    ledger.record(retried, user="alice")
    ledger.record(cache_hit(), user="bob")
    keys = _keys(shared_redis, "ttl")
    kinds = {k.decode().split(":")[2] for k in keys}
    assert kinds == {"day", "month", "all"}
    assert len(keys) == 3 * (1 + 1 + 2)  # per period: groups, users set, a cell hash per user
    client = shared_redis.client()
    for key in keys:
        ttl = client.ttl(key)
        period = key.decode().split(":")[2]
        most = {"day": DAY_TTL_S, "month": MONTH_TTL_S, "all": ALL_TTL_S}[period]
        assert most - 60 < ttl <= most, (key, ttl)
    ledger.close()


def test_no_key_text_or_error_text_reaches_redis(shared_redis: RedisServer) -> None:
    ledger = UsageLedger(url=shared_redis.url, prefix="secret")
    ledger.record(served(api_key_echo=FAKE_KEY), user="alice")
    err = RuntimeError(f"request with key {FAKE_KEY} failed: Kaboom")
    err.gemini_pool_attempts = [  # type: ignore[attr-defined]
        {"key_index": 0, "project": "p0", "outcome": "bad_key"}
    ]
    ledger.record(error=err, user="alice")
    client = shared_redis.client()
    blobs = b""
    for key in _keys(shared_redis, "secret"):
        blobs += key + (client.dump(key) or b"")
        if client.type(key) == b"hash":
            blobs += b"".join(a + b for a, b in client.hgetall(key).items())
        else:
            blobs += b"".join(client.smembers(key))
    assert b"alice" in blobs and b"failed_requests" in blobs  # what should be there is
    assert b"Kaboom" not in blobs and b"RuntimeError" not in blobs
    for start in range(len(FAKE_KEY) - 7):
        assert FAKE_KEY[start : start + 8].encode() not in blobs, FAKE_KEY[start : start + 8]
    ledger.close()


# -- construction and outages -------------------------------------------------------------------


def test_bad_urls_and_passwords_are_clear_errors_without_the_password(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="needs a redis://, rediss:// or unix:// URL"):
        UsageLedger(url="http://:hunter2@localhost:6379")
    with pytest.raises(ValueError, match="directory or a Redis url, not both"):
        UsageLedger(tmp_path, url="redis://localhost:1")
    locked = redis_factory("--requirepass", "right-pass-123")
    wrong = locked.url.replace("redis://", "redis://:wrong-pass-456@")
    with pytest.raises(ConnectionError, match="refused the password") as refused:
        UsageLedger(url=wrong)
    assert "wrong-pass-456" not in str(refused.value) and "***" in str(refused.value)
    with pytest.raises(ConnectionError, match="refused the password"):
        UsageLedger(url=locked.url)  # no password at all
    right = locked.url.replace("redis://", "redis://:right-pass-123@")
    ledger = UsageLedger(url=right)
    ledger.record(served(), user="alice")
    assert ledger.totals().requests == 1
    assert "right-pass-123" not in repr(ledger) and "right-pass-123" not in ledger.location
    gone = locked.url.replace("redis://", "redis://:right-pass-123@").replace(str(locked.port), "1")
    with pytest.raises(ConnectionError, match="Cannot reach Redis at") as unreachable:
        UsageLedger(url=gone)
    assert "right-pass-123" not in str(unreachable.value)
    sock = tmp_path / "redis.sock"
    over_unix = redis_factory("--unixsocket", str(sock), "--unixsocketperm", "700")
    assert over_unix.port
    via_unix = UsageLedger(url=f"unix://{sock}")
    via_unix.record(served(), user="alice")
    assert UsageLedger(url=f"unix://{sock}").totals(user="alice").requests == 1


def test_redis_lost_mid_run_warns_once_keeps_counting_and_writes_back(
    redis_factory: Callable[..., RedisServer],
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_factory()
    ledger = UsageLedger(url=server.url, clock=clock)
    other = UsageLedger(url=server.url, clock=clock)  # another process's
    for _ in range(3):  # lost with the server later (it keeps nothing on disk)
        other.record(served(tokens=100), user="alice")
    limits = UsageLimits(requests_per_day=5)
    check_usage(ledger, "alice", limits)  # reads alice's 3 requests from Redis
    server.stop()
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        for _ in range(2):
            ledger.record(served(tokens=10), user="alice", model="gemini-2.5-pro")
        with pytest.raises(UsageLimitExceededError):  # 3 last read + 2 kept here: the limit
            check_usage(ledger, "alice", limits)
        assert ledger.totals(user="alice", model="gemini-2.5-pro", period="day").requests == 2
        clock.advance(RETRY_S + 1)  # retried while still down: no second WARNING
        ledger.record(served(tokens=0), user="carol")
    assert ledger.problem is not None and "unreachable" in ledger.problem
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert server.url in warnings[0].getMessage()
    caplog.clear()
    server.start()  # same port, empty
    ledger.record(served(tokens=5), user="alice")  # before the retry time: kept in memory
    assert server.client().dbsize() == 0
    clock.advance(RETRY_S + 1)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        assert ledger.totals(user="alice").total_tokens == 25  # a read writes the backlog
    assert any("wrote" in r.getMessage() for r in caplog.records)
    assert ledger.problem is None
    fresh = UsageLedger(url=server.url, clock=clock)  # reads Redis only
    assert fresh.totals(user="alice", period="day").requests == 3
    ledger.record(served(tokens=1), user="bob")
    assert fresh.totals(user="alice").total_tokens == 25
    assert fresh.totals(user="alice", model="gemini-2.5-pro").requests == 2
    assert fresh.totals(user="carol").requests == 1
    assert fresh.totals().requests == 5
    assert ledger.totals().requests == 5  # nothing counted twice
    assert other.totals(user="alice", period="day").requests == 3  # read back from Redis


# -- the pool's state backend -------------------------------------------------------------------


def test_from_state_lives_where_the_state_does(shared_redis: RedisServer, tmp_path: Path) -> None:
    redis_state = RedisState(shared_redis.url, prefix=f"s{uuid.uuid4().hex[:6]}")
    on_redis = UsageLedger.from_state(redis_state)
    assert on_redis.url == redis_state.url
    on_redis.record(served(), user="alice")
    same = UsageLedger(url=shared_redis.url, prefix=redis_state.prefix)
    assert same.totals(user="alice").requests == 1
    assert UsageLedger(url=shared_redis.url, prefix="other").totals(user="alice").requests == 0
    redis_state.close()

    clock = ManualClock(datetime(2026, 3, 3, tzinfo=UTC))
    disk_state = DiskState(tmp_path / "state", clock)
    on_disk = UsageLedger.from_state(disk_state)
    assert on_disk.directory == tmp_path / "state" / "usage"
    on_disk.record(served(), user="alice")
    assert on_disk.totals(period="day", at=datetime(2026, 3, 3, 5, tzinfo=UTC)).requests == 1
    assert UsageLedger(tmp_path / "state" / "usage").totals(user="alice").requests == 1
    on_disk.close()
    disk_state.close()

    in_memory = UsageLedger.from_state(InMemoryState())
    assert (in_memory.directory, in_memory.url, in_memory.location) == (None, None, "in memory")
    with pytest.raises(TypeError, match="needs an InMemoryState, DiskState or RedisState"):
        UsageLedger.from_state(os)  # type: ignore[arg-type]

"""The usage ledger (periods, persistence across instances and processes) and usage limits."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.exceptions import ModelRateLimitError
from langchain_core.messages import AIMessage

from langchain_gemini_pool import (
    ManualClock,
    UsageLedger,
    UsageLimitExceededError,
    UsageLimits,
    check_usage,
    compute_overage,
    mask_key,
    resolve_limits,
)

UTC = timezone.utc
FAKE_KEY = "fake-ledger-key-not-a-real-key-0123456789wxyz"


def served(key: int = 0, project: str = "p0", tokens: int = 100, **extra: Any) -> AIMessage:
    """A pool answer: ``tokens`` total (80 in, 20 out), served by ``key`` on the first attempt."""
    return AIMessage(
        content="ok",
        usage_metadata={
            "input_tokens": tokens - 20,
            "output_tokens": 20,
            "total_tokens": tokens,
        },
        response_metadata={
            "model_name": "gemini-2.5-flash",
            "key_index": key,
            "key_fingerprint": mask_key(FAKE_KEY),
            "project": project,
            "attempts": [{"key_index": key, "project": project, "outcome": "ok"}],
            **extra,
        },
    )


def cache_hit() -> AIMessage:
    return AIMessage(
        content="ok", response_metadata={"cache_hit": True, "model_name": "gemini-2.5-flash"}
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 1, 31, 23, 58, tzinfo=UTC))


# -- periods ------------------------------------------------------------------------------------


def test_day_and_month_roll_over_at_utc_midnight_and_month_end(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    ledger.record(served(tokens=100), user="alice")
    clock.advance(180)  # 2026-02-01 00:01 UTC: a new day and a new month
    ledger.record(served(tokens=50), user="alice")
    assert ledger.totals(user="alice", period="day").total_tokens == 50
    assert ledger.totals(user="alice", period="month").total_tokens == 50
    assert ledger.totals(user="alice", period="all").total_tokens == 150
    jan = datetime(2026, 1, 15, tzinfo=UTC)
    assert ledger.totals(user="alice", period="month", at=jan).total_tokens == 100
    clock.set(datetime(2026, 2, 28, 12, tzinfo=UTC))
    assert ledger.totals(user="alice", period="day").requests == 0
    assert ledger.totals(user="alice", period="month").requests == 1


def test_periods_follow_the_given_time_zone(clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 1, 5, 0, tzinfo=UTC))  # still Feb 28, 21:00 in Los Angeles
    utc = UsageLedger.in_memory(clock=clock)
    pacific = UsageLedger.in_memory(tz="America/Los_Angeles", clock=clock)
    for ledger in (utc, pacific):
        ledger.record(served())
    feb = datetime(2026, 2, 10, tzinfo=UTC)
    assert utc.totals(period="month", at=feb).requests == 0
    assert pacific.totals(period="month", at=feb).requests == 1
    assert pacific.period_end("day") == datetime(2026, 3, 1, 8, tzinfo=UTC).timestamp()
    assert utc.period_end("month") == datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    assert utc.period_end("all") is None


def test_bad_arguments_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown time zone 'Mars/Olympus'"):
        UsageLedger.in_memory(tz="Mars/Olympus")
    ledger = UsageLedger.in_memory()
    with pytest.raises(ValueError, match="key_index must be a key's index"):
        ledger.totals(user="a", key_index="0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period must be 'day', 'month' or 'all'"):
        ledger.totals(period="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        ledger.record(served(), user="  ")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"Cannot use .* as the usage ledger directory"):
        UsageLedger(blocker / "ledger")


def test_filters_and_breakdown(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    retried = served(2, "pB")
    retried.response_metadata["attempts"] = [
        {"key_index": 0, "project": "pA", "outcome": "rate_limited"},
        {"key_index": 2, "project": "pB", "outcome": "ok"},
    ]
    ledger.record(retried, user="alice", model="models/gemini-2.5-flash")
    ledger.record(served(0, "pA"), user="bob")
    ledger.record(cache_hit(), user="bob")
    assert ledger.totals().requests == 3
    assert ledger.totals().attempts == 3
    assert ledger.totals(key_index=0).attempts == 2
    assert ledger.totals(key_index=0).successful_requests == 1
    assert ledger.totals(key_index=2).total_tokens == 100
    assert ledger.totals(project="pA").total_tokens == 100
    assert ledger.totals(model="gemini-2.5-flash").requests == 3
    assert ledger.totals(user="bob").cached_requests == 1
    groups = ledger.breakdown("day")
    assert set(groups) == {"total", "user", "model", "key", "project"}
    assert set(groups["key"]) == {"0", "2"}
    assert groups["user"]["alice"].attempts == 2


def test_filters_combine(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    pro = {"model": "gemini-2.5-pro"}
    ledger.record(served(0, "pA", tokens=100), user="alice", **pro)
    ledger.record(served(1, "pB", tokens=40), user="alice", model="models/gemini-2.5-pro")
    ledger.record(served(0, "pA", tokens=7), user="alice")  # flash
    ledger.record(served(0, "pA", tokens=1000), user="bob", **pro)
    clock.advance(180)  # February: last month's usage is not this month's
    ledger.record(served(1, "pB", tokens=3), user="alice", **pro)
    month = ledger.totals(user="alice", model="gemini-2.5-pro", period="month")
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


Request = tuple[str, str, str, list[tuple[int, str]], int]
"""(user, model, outcome, attempts as (key, project), tokens)."""

KEY_PROJECT = {0: "pA", 1: "pA", 2: "pB", 3: "pC"}

requests_strategy = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", '名前 "q"']),
        st.sampled_from(["gemini-2.5-pro", "gemini-2.5-flash"]),
        st.sampled_from(["ok", "failed", "cached"]),
        st.lists(st.sampled_from(sorted(KEY_PROJECT)), min_size=1, max_size=3).map(
            lambda keys: [(k, KEY_PROJECT[k]) for k in keys]
        ),
        st.integers(20, 500),
    ),
    max_size=12,
)


def _record(ledger: UsageLedger, req: Request) -> None:
    user, model, outcome, attempts, tokens = req
    meta = [{"key_index": k, "project": p, "outcome": "x"} for k, p in attempts]
    if outcome == "cached":
        ledger.record(cache_hit(), user=user, model=model)
    elif outcome == "failed":
        err = RuntimeError("failed")
        err.gemini_pool_attempts = meta  # type: ignore[attr-defined]
        ledger.record(error=err, user=user, model=model)
    else:
        message = served(attempts[-1][0], attempts[-1][1], tokens=tokens)
        message.response_metadata["attempts"] = meta
        ledger.record(message, user=user, model=model)


def _expected(requests: list[Request], flt: dict[str, Any]) -> tuple[int, int, int]:
    """(requests, attempts, total_tokens) by the definition, from the raw requests."""
    n = sent = tokens = 0
    for user, model, outcome, attempts, toks in requests:
        if flt.get("user", user) != user or flt.get("model", model) != model:
            continue
        tried = [] if outcome == "cached" else attempts
        if "key_index" not in flt and "project" not in flt:
            n, sent = n + 1, sent + len(tried)
            tokens += toks if outcome == "ok" else 0
            continue
        sent += sum(flt.get("key_index", k) == k and flt.get("project", p) == p for k, p in tried)
        if tried:
            k, p = tried[-1]
            if flt.get("key_index", k) == k and flt.get("project", p) == p:
                n += 1
                tokens += toks if outcome == "ok" else 0
    return n, sent, tokens


@pytest.mark.parametrize("on_disk", [False, True])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=requests_strategy, data=st.data())
def test_any_combination_of_filters_matches_the_definition(
    on_disk: bool, tmp_path_factory: pytest.TempPathFactory, requests: list[Request], data: Any
) -> None:
    clock = ManualClock(datetime(2026, 5, 5, 12, tzinfo=UTC))
    directory = tmp_path_factory.mktemp("ledger")
    ledger = UsageLedger(directory, clock=clock) if on_disk else UsageLedger.in_memory(clock=clock)
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


def test_failed_request_is_recorded_without_tokens(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    err = RuntimeError("every key failed")
    err.gemini_pool_attempts = [  # type: ignore[attr-defined]
        {"key_index": 1, "project": "p1", "outcome": "server_fault"},
        {"key_index": 1, "project": "p1", "outcome": "server_fault"},
    ]
    ledger.record(error=err, user="carol", model="gemini-2.5-flash")
    t = ledger.totals(key_index=1)
    assert (t.requests, t.attempts, t.failed_requests, t.total_tokens) == (1, 2, 1, 0)
    assert ledger.totals(user="carol").failed_requests == 1


@pytest.mark.parametrize(("on_disk", "threads", "each"), [(False, 8, 150), (True, 4, 30)])
def test_ledger_is_exact_under_threads(
    on_disk: bool, threads: int, each: int, tmp_path: Path
) -> None:
    ledger = UsageLedger(tmp_path) if on_disk else UsageLedger.in_memory()
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(each):
            ledger.record(served(i % 3, f"p{i % 3}"), user=f"u{n}")

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert ledger.totals().requests == threads * each
    assert ledger.totals(user="u3").total_tokens == each * 100
    assert sum(ledger.totals(key_index=k).attempts for k in range(3)) == threads * each
    assert ledger.totals(project="p1", period="day").requests == threads * each // 3


# -- on disk ------------------------------------------------------------------------------------


def test_two_ledgers_on_one_directory_share_totals(tmp_path: Path, clock: ManualClock) -> None:
    first = UsageLedger(tmp_path, clock=clock)
    second = UsageLedger(tmp_path, clock=clock)
    first.record(served(tokens=100), user="alice")
    second.record(served(tokens=40), user="alice")
    assert first.totals(user="alice").total_tokens == 140
    first.close()
    second.close()
    with UsageLedger(tmp_path, clock=clock) as reopened:
        assert reopened.totals(user="alice", period="day").requests == 2
        assert reopened.totals(key_index=0).cost_usd == pytest.approx(
            2 * (20 * 2.50) / 1e6 + (80 + 20) * 0.30 / 1e6
        )


def test_default_directory_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_POOL_LEDGER_DIR", str(tmp_path / "ledger"))
    ledger = UsageLedger()
    ledger.record(served())
    assert ledger.directory == tmp_path / "ledger"
    assert any((tmp_path / "ledger").iterdir())
    assert "ledger" in repr(ledger)


def _write(directory: str, count: int, user: str, go: Any) -> None:
    """Runs in a child process: its own ledger object on the shared directory."""
    ledger = UsageLedger(directory)
    go.wait(30)
    for _ in range(count):
        ledger.record(served(tokens=10), user=user)
    ledger.close()


def test_processes_update_one_ledger_atomically(tmp_path: Path) -> None:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    go = ctx.Event()
    children = [ctx.Process(target=_write, args=(str(tmp_path), 60, f"p{n}", go)) for n in range(2)]
    for child in children:
        child.start()
    ledger = UsageLedger(tmp_path)
    go.set()  # all three write at once
    for _ in range(60):
        ledger.record(served(tokens=10), user="parent")
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert ledger.totals().requests == 180
    assert ledger.totals().total_tokens == 1800
    assert ledger.totals(user="p1", period="month").requests == 60
    assert ledger.totals(key_index=0).requests == 180


def test_no_key_text_reaches_the_ledger_files(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    ledger.record(served(api_key_echo=FAKE_KEY), user="alice")
    err = RuntimeError(f"request with key {FAKE_KEY} failed")
    err.gemini_pool_attempts = [  # type: ignore[attr-defined]
        {"key_index": 0, "project": "p0", "outcome": "bad_key"}
    ]
    ledger.record(error=err, user="alice")
    ledger.close()
    blobs = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"alice" in blobs  # the files were read, and hold what they should
    assert FAKE_KEY.encode() not in blobs
    assert FAKE_KEY[-12:].encode() not in blobs
    with sqlite3.connect(tmp_path / "cache.db") as db:
        rows = db.execute("SELECT key, value, mode FROM Cache").fetchall()
    assert rows
    for key, value, mode in rows:  # JSON text keys and values, nothing pickled (mode 4)
        assert mode != 4
        assert json.loads(key)[2] in {"total", "user", "model", "key", "project", "cell"}
        assert "requests" in json.loads(value)


# -- limits -------------------------------------------------------------------------------------


def test_hard_token_limit_refuses_at_the_limit_until_the_next_day(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    limits = UsageLimits(tokens_per_day=300)
    for _ in range(2):
        check_usage(ledger, "alice", limits)
        ledger.record(served(tokens=150), user="alice")
    with pytest.raises(UsageLimitExceededError) as caught:
        check_usage(ledger, "alice", limits)
    err = caught.value
    assert (err.limit_name, err.current, err.limit, err.user) == (
        "tokens_per_day",
        300,
        300,
        "alice",
    )
    assert "'alice'" in str(err)
    assert "tokens_per_day" in str(err)
    assert "300" in str(err)
    assert err.resets_at == datetime(2026, 2, 1, tzinfo=UTC)  # aware: when the day ends
    assert err.resets_at is not None and err.resets_at.tzinfo is not None
    assert isinstance(err.limit, int) and isinstance(err.current, int)  # counts stay counts
    check_usage(ledger, "bob", limits)  # limits are per user
    clock.advance(180)  # past midnight: a new day
    check_usage(ledger, "alice", limits)


def test_limit_error_is_a_non_retryable_rate_limit_and_pickles() -> None:
    err = UsageLimitExceededError(limit_name="cost_per_month", current=2.5, limit=2.0, user="u")
    assert isinstance(err, ModelRateLimitError)
    assert err.is_retryable is False
    again = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own object, round-tripped
    assert (again.limit_name, again.current, again.user) == ("cost_per_month", 2.5, "u")
    assert str(again) == str(err)
    assert isinstance(err.limit, float)  # dollars stay dollars
    stamped = UsageLimitExceededError(
        limit_name="requests_per_day", current=3, limit=3, user="u", resets_at=86400.0
    )
    assert stamped.resets_at == datetime(1970, 1, 2, tzinfo=UTC)
    assert pickle.loads(pickle.dumps(stamped)).resets_at == stamped.resets_at  # noqa: S301


def test_requests_per_day_ignores_cache_hits_and_refusals(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    limits = UsageLimits(requests_per_day=2)
    ledger.record(served(), user="alice")
    for _ in range(5):
        ledger.record(cache_hit(), user="alice")
    check_usage(ledger, "alice", limits)
    ledger.record(served(), user="alice")
    with pytest.raises(UsageLimitExceededError) as caught:
        check_usage(ledger, "alice", limits)
    ledger.record(error=caught.value, user="alice")
    assert ledger.totals(user="alice").refused_requests == 1
    assert compute_overage(ledger, "alice", limits) == {}


def test_cost_and_monthly_limits(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    ledger.record(served(tokens=1_000_020), user="alice")  # 1M input tokens: $0.30 + output
    cost = ledger.totals(user="alice", period="month").cost_usd
    assert cost == pytest.approx(0.30 + 20 * 2.50 / 1e6)
    with pytest.raises(UsageLimitExceededError, match="cost_per_month"):
        check_usage(ledger, "alice", UsageLimits(cost_per_month=0.25))
    check_usage(ledger, "alice", UsageLimits(cost_per_month=0.40, tokens_per_month=2_000_000))
    clock.advance(180)  # February: a new month
    check_usage(ledger, "alice", UsageLimits(cost_per_month=0.25))


def test_soft_limits_let_requests_through_and_report_overage(clock: ManualClock) -> None:
    ledger = UsageLedger.in_memory(clock=clock)
    soft = UsageLimits(tokens_per_month=200, requests_per_day=1, tokens_per_day=1000, hard=False)
    for _ in range(3):
        check_usage(ledger, "alice", soft)
        ledger.record(served(tokens=80), user="alice")
    assert compute_overage(ledger, "alice", soft) == {
        "tokens_per_month": 40,
        "requests_per_day": 2,
    }
    assert compute_overage(ledger, "alice", None) == {}
    hard = UsageLimits(tokens_per_month=200)
    assert compute_overage(ledger, "alice", hard) == {"tokens_per_month": 40}


def test_resolve_limits() -> None:
    everyone = UsageLimits(tokens_per_day=10)
    vip = UsageLimits(tokens_per_day=1000)
    assert resolve_limits(everyone, "x") is everyone
    assert resolve_limits(None, "x") is None
    assert resolve_limits({"vip": vip, "*": everyone}, "vip") is vip
    assert resolve_limits({"vip": vip, "*": everyone}, "x") is everyone
    assert resolve_limits({"vip": vip}, "x") is None
    with pytest.raises(TypeError, match="usage_limits must be a UsageLimits"):
        resolve_limits(42, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"usage_limits\['x'\] must be a UsageLimits"):
        resolve_limits({"x": {"tokens_per_day": 1}}, "x")  # type: ignore[dict-item]


@pytest.mark.parametrize("bad", [-1, float("nan"), "100", True])
def test_limit_values_are_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"UsageLimits\.tokens_per_day must be a non-negative"):
        UsageLimits(tokens_per_day=bad)

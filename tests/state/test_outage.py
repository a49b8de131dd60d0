"""Redis lost mid-run: killed, or hung (SIGSTOP). Each outage policy, and the way back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from langchain_gemini_pool import QuotaLimits, RedisState
from langchain_gemini_pool._state_types import (
    Admit,
    AllQuarantined,
    Candidate,
    Scope,
    Settle,
    WaitUntil,
)
from tests.state.conftest import RedisServer

S = Scope("proj", "gemini-2.5-flash")
LIMITS = QuotaLimits(rpm=1000, window_s=60)


def _warnings(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    """The WARNINGs about the Redis at ``url`` (a state of an earlier test may still be
    writing a settle behind to its own, gone Redis)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and url in r.getMessage()
    ]


def _wait_back(state: RedisState, c: Candidate) -> Admit:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        decision = state.admit([c], 0)
        assert isinstance(decision, Admit)
        if decision.reservation.home == "backend":
            return decision
        time.sleep(0.1)
    raise AssertionError("RedisState never went back to Redis")


@pytest.mark.parametrize("how", ["kill", "sigstop"])
def test_local_fallback_warns_once_and_comes_back(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture, how: str
) -> None:
    server = redis_factory()
    state = RedisState(server.url, timeout=0.3)
    c = Candidate(state.fingerprint("fake-key-outage"), S, LIMITS)
    first = state.admit([c], 0)
    assert isinstance(first, Admit)
    assert first.reservation.home == "backend"
    if how == "kill":
        server.proc.kill()  # type: ignore[union-attr]
        server.proc.wait()  # type: ignore[union-attr]
    else:
        server.pause()
    caplog.set_level(logging.WARNING, logger="langchain_gemini_pool")
    started = time.monotonic()
    local = [state.admit([c], 0) for _ in range(20)]
    elapsed = time.monotonic() - started
    assert all(isinstance(d, Admit) and d.reservation.home == "local" for d in local)
    assert elapsed < 2.0  # a hung Redis costs one short timeout, not one per request
    state.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=3))  # no error
    for decision in local:
        assert isinstance(decision, Admit)
        state.settle(Settle(c.fingerprint, S, decision.reservation, prompt_tokens=1))
    down = _warnings(caplog, server.url)
    assert len(down) == 1
    assert "unreachable" in down[0]
    assert server.url in down[0]
    # a cooldown set while Redis is away still holds in this process
    state.settle(Settle(c.fingerprint, S, cool_scope_s=60, cool_reason="429 local"))
    assert isinstance(state.admit([c], 0), WaitUntil)
    bad = Candidate(state.fingerprint("fake-key-found-bad"), Scope("p2", "m"), None)
    state.settle(Settle(bad.fingerprint, bad.scope, quarantine="400 API_KEY_INVALID"))

    if how == "kill":
        server.start()  # same port, empty data
    else:
        server.resume()
    back = _wait_back(state, Candidate(c.fingerprint, Scope("proj", "other-model"), LIMITS))
    assert back.reservation.home == "backend"
    messages = _warnings(caplog, server.url)
    assert len(messages) == 2
    assert "is back" in messages[1]
    # what this process learned while Redis was away now holds for every process
    fresh = RedisState(server.url)
    cooled = fresh.admit([c], 0)
    assert isinstance(cooled, WaitUntil)
    assert cooled.reason == "429 local"
    assert 50 < cooled.delay <= 60
    assert fresh.snapshot([bad]).keys[bad.fingerprint].quarantine == "400 API_KEY_INVALID"
    state.close()  # gives back what it leased while Redis is still there


def test_closed_raises_a_clear_error(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    state = RedisState(server.url, on_outage="closed", timeout=0.3)
    c = Candidate(state.fingerprint("fake-key-closed"), S, LIMITS)
    assert isinstance(state.admit([c], 0), Admit)
    server.pause()
    with pytest.raises(ConnectionError, match="on_outage='closed'") as info:
        state.admit([c], 0)
    assert server.url in str(info.value)
    with pytest.raises(ConnectionError):
        state.settle(Settle(c.fingerprint, S, cool_scope_s=1))
    server.resume()
    time.sleep(0.6)  # the first retry after the backoff
    assert isinstance(state.admit([c], 0), Admit)


async def test_async_paths_follow_the_policy(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    state = RedisState(server.url, timeout=0.3)
    c = Candidate(state.fingerprint("fake-key-async"), S, LIMITS)
    first = await state.aadmit([c], 0)
    assert isinstance(first, Admit)
    assert first.reservation.home == "backend"
    server.pause()
    caplog.set_level(logging.WARNING, logger="langchain_gemini_pool")
    fallback = await state.aadmit([c], 0)
    assert isinstance(fallback, Admit)
    assert fallback.reservation.home == "local"
    await state.asettle(Settle(c.fingerprint, S, fallback.reservation, prompt_tokens=1))
    assert len(_warnings(caplog, server.url)) == 1
    server.resume()


def test_open_sends_without_limits(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    state = RedisState(server.url, on_outage="open", timeout=0.3)
    tight = Candidate(state.fingerprint("fake-key-open"), S, QuotaLimits(rpm=1, window_s=60))
    assert isinstance(state.admit([tight], 0), Admit)
    assert isinstance(state.admit([tight], 0), WaitUntil)
    server.pause()
    for _ in range(5):
        decision = state.admit([tight], 0)
        assert isinstance(decision, Admit)
        assert decision.reservation.home == "open"
        state.settle(Settle(tight.fingerprint, S, decision.reservation, prompt_tokens=1))
    server.resume()


def test_the_local_fallback_starts_from_what_redis_last_showed(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    state = RedisState(server.url, timeout=0.3)
    other = RedisState(server.url)  # "another process" on the same Redis
    good = Candidate(state.fingerprint("fake-key-still-good"), S, LIMITS)
    bad = Candidate(state.fingerprint("fake-key-bad-elsewhere"), S, LIMITS)
    hot = Scope("proj-hot", "gemini-2.5-pro")
    cooled = Candidate(state.fingerprint("fake-key-hot-project"), hot, LIMITS)
    first = state.admit([good, bad], 0)  # learns that nothing is wrong yet
    assert isinstance(first, Admit)
    other.settle(Settle(bad.fingerprint, S, quarantine="400 API_KEY_INVALID"))
    other.settle(Settle(cooled.fingerprint, hot, cool_scope_s=60, cool_reason="429 per minute"))
    # the next admit never looks at `bad` (`good` comes first and is free), yet its reply
    # says what changed for every candidate
    again = state.admit([good, bad, cooled], 0)
    assert isinstance(again, Admit)
    assert again.index == 0
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait()  # type: ignore[union-attr]
    offline = state.admit([bad, good], 0)
    assert isinstance(offline, Admit)
    assert offline.reservation.home == "local"
    assert offline.index == 1  # the key another process found bad stays skipped
    assert isinstance(state.admit([bad], 0), AllQuarantined)
    waiting = state.admit([cooled], 0)
    assert isinstance(waiting, WaitUntil)  # and its cooldown holds for what is left of it
    assert waiting.reason == "429 per minute"
    assert 50 < waiting.delay <= 60
    snap = state.snapshot([good, bad])
    assert snap.keys[bad.fingerprint].quarantine == "400 API_KEY_INVALID"
    assert snap.keys[good.fingerprint].quarantine is None


def test_a_status_read_is_remembered_and_a_lifted_quarantine_is_forgotten(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    state = RedisState(server.url, timeout=0.3)
    other = RedisState(server.url)
    a = Candidate(state.fingerprint("fake-key-seen-by-status"), S, LIMITS)
    b = Candidate(state.fingerprint("fake-key-lifted-elsewhere"), S, LIMITS)
    other.settle(Settle(a.fingerprint, S, quarantine="403 PERMISSION_DENIED"))
    other.settle(Settle(b.fingerprint, S, quarantine="400 API_KEY_INVALID"))
    assert state.snapshot([a, b]).keys[b.fingerprint].quarantine  # pool_status() reads
    other.reset(b.fingerprint, S)  # lifted by another process (CLI `reset`)
    assert isinstance(state.admit([b], 0), Admit)  # learns that it was lifted
    server.proc.kill()  # type: ignore[union-attr]
    server.proc.wait()  # type: ignore[union-attr]
    assert isinstance(state.admit([a], 0), AllQuarantined)
    decision = state.admit([b, a], 0)
    assert isinstance(decision, Admit)
    assert decision.index == 0


def test_an_admit_carries_the_scan_only_after_a_change(
    redis_factory: Callable[..., RedisServer],
) -> None:
    from langchain_gemini_pool._state_lua import ADMIT
    from langchain_gemini_pool._state_redis_codec import admit_args, salt_key, scope_base

    server = redis_factory()
    state = RedisState(server.url, prefix="t")
    c = Candidate(state.fingerprint("fake-key-scan"), S, LIMITS)
    script = server.client().register_script(ADMIT)

    def reply(known: str) -> list[object]:
        argv = admit_args("t", [c], [scope_base("t", S)], 0, None, "", 0, known)
        raw = script(keys=[salt_key("t")], args=argv)
        assert isinstance(raw, list)
        return list(raw[-1])

    first = reply("?")
    assert first == [b"", b"", b"", b"", b"", b""]  # no change ever: gen unset, all clear
    assert reply("") == []  # the value just seen: nothing to send
    state.settle(Settle(c.fingerprint, S, cool_key_s=30, cool_reason="500 INTERNAL"))
    changed = reply("")
    assert changed[0] and changed[1:4] == [b"", changed[2], b"500 INTERNAL"]
    assert float(changed[2]) > 0
    assert reply(changed[0].decode()) == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("policy", ["local", "open"])
def test_a_flight_redis_admitted_and_settled_during_an_outage_ends_in_redis_when_back(
    redis_factory: Callable[..., RedisServer], policy: str
) -> None:
    """Its settle is replayed: the slot counts a window from then, not the in-flight TTL."""
    server = redis_factory()
    state = RedisState(server.url, timeout=0.3, on_outage=policy)  # type: ignore[arg-type]
    c = Candidate(state.fingerprint("fake-key-flight"), S, LIMITS)
    flight = state.admit([c], 0)
    assert isinstance(flight, Admit)
    assert flight.reservation.home == "backend"
    fresh = RedisState(server.url)
    assert fresh.snapshot([c]).keys[c.fingerprint].in_flight == 1
    other = Candidate(state.fingerprint("fake-key-elsewhere"), Scope("p9", "m"), LIMITS)
    server.pause()
    assert state.admit([other], 0).reservation.home != "backend"  # type: ignore[union-attr]
    state.settle(Settle(c.fingerprint, S, flight.reservation, prompt_tokens=1))  # no error
    server.resume()
    _wait_back(state, other)
    assert fresh.snapshot([c]).keys[c.fingerprint].in_flight == 0

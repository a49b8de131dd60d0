"""Slot leases (``_state_lease``) and settles written behind the caller (``_state_behind``)
on DiskState (real SQLite) and RedisState (a real redis-server): fewer round trips, never
a slot more than the limit, a cooldown set elsewhere honoured within 1 s, and nothing left
taken."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import DiskState, ManualClock, QuotaLimits, RedisState
from langchain_gemini_pool._state_behind import drain
from langchain_gemini_pool._state_lease import LEASE_S
from langchain_gemini_pool._state_types import (
    Admit,
    AllQuarantined,
    Candidate,
    Scope,
    Settle,
    StateBackend,
    WaitUntil,
)
from tests.state.conftest import T0, RedisServer

S = Scope("proj-lease", "gemini-2.5-flash")
OTHER = Scope("proj-lease", "gemini-2.5-pro")
BIG = QuotaLimits(rpm=6400, window_s=60)


def _scripts_run(server: RedisServer) -> int:
    """How many scripts Redis has run (its own counters, not ours)."""
    stats = server.client().info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


def _room(url: str, cand: Candidate) -> tuple[int | None, int]:
    """Room and in-flight count as a process without leases sees them."""
    return _seen_by(RedisState(url, prefix="gemini-pool"), cand)


def _seen_by(fresh: StateBackend, cand: Candidate) -> tuple[int | None, int]:
    try:
        snap = fresh.snapshot([cand])
        return snap.scopes[cand.scope].room["rpm"], snap.keys[cand.fingerprint].in_flight
    finally:
        fresh.close()


@dataclass
class Deployment:
    """Processes (as states) of one deployment on one backend, with one lease clock."""

    kind: str
    where: str
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))

    def process(self) -> Any:
        if self.kind == "disk":
            return DiskState(self.where, clock=self.clock)  # its clock is its leases' too
        state = RedisState(self.where)
        state._leases.clock = self.clock.now  # leases end on this clock, not the wall's
        return state

    def room(self, cand: Candidate) -> tuple[int | None, int]:
        """Room and in-flight count as a process holding no lease sees them."""
        fresh = DiskState(self.where, clock=self.clock) if self.kind == "disk" else None
        return _seen_by(fresh or RedisState(self.where), cand)


@pytest.fixture(params=["disk", "redis"])
def deployment(
    request: pytest.FixtureRequest,
    redis_factory: Callable[..., RedisServer],
    tmp_path: Path,
) -> Deployment:
    if request.param == "disk":
        return Deployment("disk", str(tmp_path / "state"))
    return Deployment("redis", redis_factory().url)


def test_a_busy_key_sends_most_requests_without_a_round_trip(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    state = RedisState(server.url)
    try:
        c = Candidate(state.fingerprint("fake-key-lease-busy"), S, BIG)
        before = _scripts_run(server)
        for _ in range(100):
            decision = state.admit([c], 10)
            assert isinstance(decision, Admit)
            state.settle(Settle(c.fingerprint, S, decision.reservation, prompt_tokens=7))
        snap = state.snapshot([c])  # this process's own view: unclaimed slots are room
        admits_sent = _scripts_run(server) - before - 100 - 1  # a settle each, the snapshot
        assert admits_sent <= 15  # 100 without leases
        assert snap.scopes[S].room["rpm"] == 6400 - 100
        assert snap.keys[c.fingerprint].in_flight == 0
    finally:
        state.close()
    assert _room(server.url, c) == (6400 - 100, 0)  # close gave the unclaimed ones back


def test_leases_never_admit_more_than_the_limit(deployment: Deployment) -> None:
    limits = QuotaLimits(rpm=640, window_s=60)
    states = [deployment.process() for _ in range(3)]
    c = Candidate(states[0].fingerprint("fake-key-lease-limit"), S, limits)
    admitted, waited, turn = 0, [False] * 3, 0
    while not all(waited):
        i = turn % 3
        turn += 1
        decision = states[i].admit([c], 0)
        if isinstance(decision, Admit):
            admitted += 1
            waited[i] = False
        else:
            assert isinstance(decision, WaitUntil)
            waited[i] = True
        assert admitted <= 640
    assert admitted == 640  # a process waits only once its leased slots are used
    for state in states:
        state.close()
    assert deployment.room(c) == (0, 640)


def test_a_cooldown_set_elsewhere_holds_here_within_one_second(deployment: Deployment) -> None:
    busy, other = deployment.process(), deployment.process()
    try:
        c = Candidate(busy.fingerprint("fake-key-lease-cool"), S, BIG)
        for _ in range(5):  # busy enough to lease: the 5th leases 5 more
            assert isinstance(busy.admit([c], 0), Admit)
        other.settle(Settle(c.fingerprint, S, cool_scope_s=60, cool_reason="429 elsewhere"))
        deployment.clock.advance(LEASE_S * 0.9)
        assert isinstance(busy.admit([c], 0), Admit)  # a lease still in its second
        deployment.clock.advance(LEASE_S * 0.1)
        cooled = busy.admit([c], 0)
        assert isinstance(cooled, WaitUntil)
        assert cooled.reason == "429 elsewhere"
        busy.close()
        assert deployment.room(c)[0] == 6400 - 6
    finally:
        busy.close()
        other.close()


def test_this_process_429_ends_its_leases_at_once(deployment: Deployment) -> None:
    state = deployment.process()
    try:
        c = Candidate(state.fingerprint("fake-key-lease-own"), S, BIG)
        other = Candidate(c.fingerprint, OTHER, BIG)
        for _ in range(5):  # the 5th of each leases 5 more
            assert isinstance(state.admit([c], 0), Admit)
            assert isinstance(state.admit([other], 0), Admit)
        state.settle(Settle(c.fingerprint, S, cool_scope_s=60, cool_reason="429 here"))
        assert isinstance(state.admit([c], 0), WaitUntil)
        assert isinstance(state.admit([other], 0), Admit)  # another model is not cooled
        state.settle(Settle(c.fingerprint, S, quarantine="400 API_KEY_INVALID"))
        assert not isinstance(state.admit([other], 0), Admit)  # a bad key: every scope
    finally:
        state.close()


def test_a_lease_not_claimed_goes_back_when_it_ends_with_no_further_call(
    deployment: Deployment,
) -> None:
    state = deployment.process()
    try:
        c = Candidate(state.fingerprint("fake-key-lease-idle"), S, BIG)
        for _ in range(5):  # the 5th leases 5 more
            assert isinstance(state.admit([c], 0), Admit)
        assert deployment.room(c) == (6400 - 10, 10)  # leased: in flight for the others
        assert state.snapshot([c]).scopes[S].room["rpm"] == 6400 - 5  # not for itself
        deployment.clock.advance(LEASE_S)
        deadline = time.monotonic() + 5  # the give-back thread wakes at least every 0.25 s
        while deployment.room(c) != (6400 - 5, 5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert deployment.room(c) == (6400 - 5, 5)
    finally:
        state.close()


def test_a_process_that_exits_without_close_leaves_nothing_taken(deployment: Deployment) -> None:
    """Settles written behind and unclaimed leased slots are written at exit."""
    make = (
        f"DiskState({deployment.where!r})"
        if deployment.kind == "disk"
        else f"RedisState({deployment.where!r})"
    )
    code = f"""
from langchain_gemini_pool import DiskState, QuotaLimits, RedisState
from langchain_gemini_pool._state_types import Candidate, Scope, Settle
state = {make}
c = Candidate(state.fingerprint("fake-key-lease-exit"), Scope("proj-lease", "m"),
              QuotaLimits(rpm=6400, window_s=60))
for _ in range(30):
    d = state.admit([c], 0)
    state.settle(Settle(c.fingerprint, c.scope, d.reservation, prompt_tokens=1))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # noqa: S603
    probe = deployment.process()
    c = Candidate(probe.fingerprint("fake-key-lease-exit"), Scope("proj-lease", "m"), BIG)
    probe.close()
    assert deployment.room(c) == (6400 - 30, 0)


def test_a_settle_written_behind_is_seen_by_this_process_next_admit(
    deployment: Deployment,
) -> None:
    state = deployment.process()
    try:
        c = Candidate(state.fingerprint("fake-key-behind"), S, QuotaLimits(rpm=1, window_s=60))
        for _ in range(50):  # each slot given back is free again at once, every time
            decision = state.admit([c], 0)
            assert isinstance(decision, Admit)
            state.settle(Settle(c.fingerprint, S, decision.reservation, cancel=True))
    finally:
        state.close()


def test_on_redis_a_verdict_elsewhere_ends_leases_at_this_process_next_reply(
    redis_factory: Callable[..., RedisServer],
) -> None:
    """Redis's change counter comes back with every settle: a quarantine set by another
    process ends this one's leases from then on, well within their second."""
    deployment = Deployment("redis", redis_factory().url)
    busy, other = deployment.process(), deployment.process()
    try:
        c = Candidate(busy.fingerprint("fake-key-lease-gen"), S, BIG)
        firsts = [busy.admit([c], 0) for _ in range(5)]  # the 5th leases 5 more
        other.settle(Settle(c.fingerprint, S, quarantine="400 API_KEY_INVALID"))
        first = firsts[0]
        assert isinstance(first, Admit)
        busy.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=1))
        drain()  # that settle written (the lease clock has not moved)
        assert isinstance(busy.admit([c], 0), AllQuarantined)
    finally:
        busy.close()
        other.close()

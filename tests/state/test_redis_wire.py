"""RedisState's sync hot path (``_state_redis_wire``): the ways a reply could reach the
wrong command. Each test runs its work in a thread with a deadline, so a regression fails
the test instead of hanging the suite."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from langchain_gemini_pool import QuotaLimits, RedisState
from langchain_gemini_pool._state_types import Admit, Candidate, Scope, Settle, WaitUntil
from tests.state.conftest import RedisServer

S = Scope("proj-w", "gemini-2.5-flash")
S2 = Scope("proj-w", "gemini-2.5-pro")
ONE_A_MINUTE = QuotaLimits(rpm=1, window_s=60)


def within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()`` in a thread; fails (instead of hanging) when it takes longer."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def server(shared_redis: RedisServer) -> RedisServer:
    client = shared_redis.client()
    client.flushall()
    client.script_flush()  # as a new or restarted Redis: it knows no script yet
    return shared_redis


def admitted(decision: object) -> Admit:
    assert isinstance(decision, Admit), decision
    return decision


def test_a_slot_given_back_is_free_at_once_for_every_other_connection(
    server: RedisServer,
) -> None:
    """The settle that gives a slot back is not waited for; another process must still get
    the slot at once, even from a Redis that has never seen the settle script (an
    ``EVALSHA`` answered ``NOSCRIPT`` would only be read at this thread's next command)."""
    mine, theirs = RedisState(server.url, prefix="w"), RedisState(server.url, prefix="w")
    try:
        c = Candidate(mine.fingerprint("fake-key-wire-AAAA"), S, ONE_A_MINUTE)

        def scenario() -> object:
            first = admitted(mine.admit([c], 10))
            mine.settle(Settle(c.fingerprint, S, first.reservation, cancel=True))
            admitted(theirs.admit([c], 10))  # the slot given back, not a minute's wait
            return mine.admit([c], 10)

        assert isinstance(within(20, scenario), WaitUntil)  # one a minute, still
    finally:
        mine.close()
        theirs.close()


class _AtRecv:
    """Runs ``action`` once, the first time this thread is about to read a socket: the
    moment a garbage-collected generator's ``finally`` (or a signal handler) could run."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action, self.fired = action, False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if (
            event == "c_call"
            and not self.fired
            and getattr(arg, "__name__", "")
            in (
                "recv",
                "recv_into",
            )
        ):
            self.fired = True
            sys.setprofile(None)
            self.action()


def test_a_settle_made_while_this_thread_reads_a_reply_does_not_take_it(
    server: RedisServer,
) -> None:
    """A settle that runs inside another command's read (a stream closed by the garbage
    collector) must not read that command's reply as its own."""
    state = RedisState(server.url, prefix="w")
    try:
        a = Candidate(state.fingerprint("fake-key-wire-AAAA"), S, QuotaLimits(rpm=100))
        b = Candidate(state.fingerprint("fake-key-wire-BBBB"), S2, QuotaLimits(rpm=100))
        done = admitted(state.admit([b], 10))
        cool = Settle(b.fingerprint, S2, done.reservation, cool_scope_s=30.0, cool_reason="429")

        def scenario() -> tuple[Admit, Any]:
            state.admit([a], 10)  # the scripts are loaded: the next read is the reply's
            hook = _AtRecv(lambda: state.settle(cool))
            sys.setprofile(hook)
            try:
                got = admitted(state.admit([a], 10))
            finally:
                sys.setprofile(None)
            assert hook.fired
            return got, state.snapshot([a, b])

        got, snap = within(20, scenario)
        assert got.reservation.fingerprint == a.fingerprint
        assert snap.scopes[S2].cooling_until > snap.now + 25  # the inner settle was applied
        assert snap.keys[a.fingerprint].in_flight == 2
        assert admitted(state.admit([a], 10)).index == 0  # and the connection is in step
    finally:
        state.close()


def test_a_read_cut_short_drops_the_connection_and_what_it_owed(server: RedisServer) -> None:
    """An exception between sending a command and reading its whole reply leaves that reply
    on the socket: the connection must go, or the next command reads it as its own."""
    state = RedisState(server.url, prefix="w")
    try:
        # rpm=60: too few for a lease (``_state_lease``), whose extra slots a lost reply
        # would leave in flight too
        a = Candidate(state.fingerprint("fake-key-wire-AAAA"), S, QuotaLimits(rpm=60))

        def interrupt() -> None:
            raise KeyboardInterrupt

        def scenario() -> Any:
            state.admit([a], 10)
            sys.setprofile(_AtRecv(interrupt))
            try:
                with pytest.raises(KeyboardInterrupt):
                    state.admit([a], 10)
            finally:
                sys.setprofile(None)
            return state.snapshot([a])  # an admit's reply here would not decode

        snap = within(20, scenario)
        assert snap.keys[a.fingerprint].in_flight == 2
        assert snap.scopes[S].room["rpm"] == 58
    finally:
        state.close()


def test_a_restarted_redis_is_a_reconnect_not_an_outage(
    redis_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A connection Redis closed while idle (a restart) is replaced before the next command,
    as redis-py's pool does: no outage, no WARNING, and the decision is Redis's."""
    server = redis_factory()
    state = RedisState(server.url, prefix="w")
    try:
        a = Candidate(state.fingerprint("fake-key-wire-AAAA"), S, QuotaLimits(rpm=100))

        def scenario() -> Any:
            done = admitted(state.admit([a], 10))
            state.settle(Settle(a.fingerprint, S, done.reservation, prompt_tokens=5))
            state.snapshot([a])  # the settle written behind is applied when Redis goes
            server.stop()
            server.start()  # same port, empty (no persistence), knows no script
            admitted(state.admit([a], 10))
            return state.snapshot([a])

        snap = within(20, scenario)
        assert snap.shared and snap.backend == "redis"
        assert snap.scopes[S].room["rpm"] == 99  # counted in the new Redis, not locally
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
    finally:
        state.close()


def test_a_url_asking_for_resp3_still_works(server: RedisServer) -> None:
    """The wire speaks RESP2 on its own connections, whatever the URL asks of redis-py."""
    state = RedisState(server.url + "?protocol=3", prefix="w")
    try:
        a = Candidate(state.fingerprint("fake-key-wire-AAAA"), S, QuotaLimits(rpm=100))
        done = admitted(within(20, lambda: state.admit([a], 10)))
        state.settle(Settle(a.fingerprint, S, done.reservation, prompt_tokens=5))
        assert state.snapshot([a]).scopes[S].room["rpm"] == 99
    finally:
        state.close()

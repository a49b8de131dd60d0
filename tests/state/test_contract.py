"""One contract, three backends: the same tests on InMemoryState, DiskState (real SQLite)
and RedisState (a real redis-server). Memory and disk move a ManualClock; Redis reads the
server's TIME, so its tests use sub-second windows and really wait."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from langchain_gemini_pool import (
    QuotaLimits,
    _state_disk,
    _state_memory,
    _state_redis,
    _state_redis_codec,
)
from langchain_gemini_pool._state_types import (
    INFLIGHT_TTL_S,
    Admit,
    AllQuarantined,
    Candidate,
    Scope,
    Settle,
    WaitUntil,
)
from tests.state.conftest import Harness

S = Scope("proj-a", "gemini-2.5-flash")
S2 = Scope("proj-a", "gemini-2.5-pro")
KEY_A = "fake-key-for-state-tests-AAAA"
KEY_B = "fake-key-for-state-tests-BBBB"


def cand(h: Harness, key: str, limits: QuotaLimits | None, scope: Scope = S) -> Candidate:
    return Candidate(h.state.fingerprint(key), scope, limits)


def admitted(decision: object) -> Admit:
    assert isinstance(decision, Admit), decision
    return decision


def room(h: Harness, c: Candidate) -> dict[str, int | None]:
    return h.state.snapshot([c]).scopes[c.scope].room


def test_all_or_nothing_across_rpm_tpm_rpd(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpm=5, tpm=100, rpd=3, window_s=30))
    admitted(harness.state.admit([c], 60))
    denied = harness.state.admit([c], 60)  # passes RPM and RPD, fails TPM
    assert isinstance(denied, WaitUntil)
    assert room(harness, c) == {"rpm": 4, "tpm": 40, "rpd": 2}  # took no slot anywhere
    admitted(harness.state.admit([c], 40))  # exactly fills TPM
    admitted(harness.state.admit([c], 0))
    denied = harness.state.admit([c], 0)  # passes RPM and TPM, fails RPD
    assert isinstance(denied, WaitUntil)
    assert room(harness, c) == {"rpm": 2, "tpm": 0, "rpd": 0}


def test_a_full_day_waits_until_midnight_pacific(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpd=1, window_s=30))
    first = admitted(harness.state.admit([c], 0))
    denied = harness.state.admit([c], 0)
    assert isinstance(denied, WaitUntil)
    assert 0 < denied.until - first.now <= 86400
    assert denied.until > denied.now + 30  # not the per-window wait


def backend_now(h: Harness, c: Candidate) -> float:
    """The backend's time now (its own clock; Redis: the server's ``TIME``)."""
    return h.state.snapshot([c]).now


def worst_interval(spans: list[tuple[float, float, int]], window: float) -> tuple[int, int]:
    """The most requests (and tokens) the server could see in one ``window``-long interval,
    each arriving anywhere between its slot and its settle (``spans``: slot, settle, tokens).

    One interval [s, s + window) can hold every request with slot < s + window and settle
    >= s; the most are held when s is one of the settles."""
    worst = (0, 0)
    for _, start, _ in spans:
        inside = [n for a, b, n in spans if a < start + window and b >= start]
        worst = max(worst, (len(inside), sum(inside)))
    return worst


def test_never_more_than_the_limit_in_any_window(harness: Harness) -> None:
    """Whatever the transit delay: requests settle 0 to 3 steps (up to nearly half a
    window) after their slot, and may reach the server any time in between."""
    redis = harness.kind.startswith("redis")
    window, rpm, tpm = (0.4, 4, 40) if redis else (10.0, 4, 40)
    c = cand(harness, KEY_A, QuotaLimits(rpm=rpm, tpm=tpm, window_s=window))
    rng = random.Random(11)
    flying: list[list[Any]] = []  # [reservation, tokens, steps left]
    spans: list[tuple[float, float, int]] = []  # (slot, settle, tokens)
    step = window / 7
    for i in range(60 if redis else 200):
        tokens = (3, 17, 8, 1, 12)[i % 5]
        decision = harness.state.admit([c], tokens)
        if isinstance(decision, Admit):
            flying.append([decision.reservation, tokens, rng.randint(0, 3)])
        harness.advance(step)
        for f in list(flying):
            f[2] -= 1
            if f[2] < 0:
                flying.remove(f)
                settled = backend_now(harness, c)  # the settle stamps at this time or later
                harness.state.settle(Settle(c.fingerprint, S, f[0], prompt_tokens=f[1]))
                spans.append((f[0].at, settled, f[1]))
    assert len(spans) >= 10
    assert any(b - a >= 2 * step for a, b, _ in spans)  # some took two steps or more
    requests, tokens = worst_interval(spans, window)
    assert requests <= rpm
    assert tokens <= tpm


def test_a_request_counts_a_window_from_its_settle(harness: Harness) -> None:
    """Admitted at t, settled at t + d: its slot is held until t + d + window (in flight,
    it counts however old its slot), and nobody books past it while it is in flight."""
    redis = harness.kind.startswith("redis")
    window = 0.6 if redis else 30.0
    c = cand(harness, KEY_A, QuotaLimits(rpm=1, tpm=100, window_s=window))
    first = admitted(harness.state.admit([c], 10))
    harness.advance(window * 7 / 6)  # longer than a window in flight: still counted
    busy = harness.state.admit([c], 0, book_until_s=10 * window)
    assert isinstance(busy, WaitUntil)  # no booking: its end is unknown
    assert window * 0.98 <= busy.delay <= window + 1e-3  # the earliest it could free: settled now
    settled = backend_now(harness, c)
    harness.state.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=90))
    assert room(harness, c) == {"rpm": 0, "tpm": 10, "rpd": None}
    harness.advance(window / 2)
    assert isinstance(harness.state.admit([c], 0), WaitUntil)  # held a window from its settle
    booked = admitted(harness.state.admit([c], 0, book_until_s=window))  # settled: bookable
    assert settled + window <= booked.reservation.at <= backend_now(harness, c) + window / 2
    harness.state.settle(Settle(c.fingerprint, S, booked.reservation, cancel=True))
    harness.advance(window / 2 + (0.05 if redis else 0.0))
    assert room(harness, c) == {"rpm": 1, "tpm": 100, "rpd": None}
    admitted(harness.state.admit([c], 0))


def test_a_flight_never_settled_stops_counting_after_the_inflight_ttl(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that died mid-call holds its slot for the in-flight TTL, not forever."""
    redis = harness.kind.startswith("redis")
    ttl = 0.5 if redis else INFLIGHT_TTL_S
    for module in (_state_redis, _state_redis_codec, _state_memory, _state_disk):
        monkeypatch.setattr(module, "INFLIGHT_TTL_S", ttl)
    c = cand(harness, KEY_A, QuotaLimits(rpm=2, tpm=100, window_s=ttl / 5))
    admitted(harness.state.admit([c], 60))
    admitted(harness.state.admit([c], 0))
    harness.advance(ttl * 0.6)
    assert isinstance(harness.state.admit([c], 0), WaitUntil)
    harness.advance(ttl * 0.6)
    assert room(harness, c) == {"rpm": 2, "tpm": 100, "rpd": None}


def test_cooldowns_only_extend(harness: Harness) -> None:
    c = cand(harness, KEY_A, None)
    harness.state.settle(Settle(c.fingerprint, S, cool_scope_s=50, cool_reason="429 long"))
    harness.state.settle(Settle(c.fingerprint, S, cool_scope_s=5, cool_reason="429 short"))
    harness.state.settle(Settle(c.fingerprint, S, cool_key_s=40, cool_reason="fault long"))
    harness.state.settle(Settle(c.fingerprint, S, cool_key_s=1, cool_reason="fault short"))
    snap = harness.twin().snapshot([c])
    scope, key = snap.scopes[S], snap.keys[c.fingerprint]
    assert 45 < scope.cooling_until - snap.now <= 50
    assert scope.cool_reason == "429 long"
    assert 35 < key.cooling_until - snap.now <= 40
    assert key.cool_reason == "fault long"
    decision = harness.twin().admit([c], 0)
    assert isinstance(decision, WaitUntil)
    assert 45 < decision.delay <= 50
    assert decision.reason == "429 long"


def test_a_cooled_model_does_not_block_another_model(harness: Harness) -> None:
    limits = QuotaLimits(rpm=1, window_s=30)
    flash, pro = cand(harness, KEY_A, limits, S), cand(harness, KEY_A, limits, S2)
    admitted(harness.state.admit([flash], 0))
    assert isinstance(harness.state.admit([flash], 0), WaitUntil)  # flash's window is full
    admitted(harness.state.admit([pro], 0))  # same key and project, other model
    harness.state.settle(Settle(flash.fingerprint, S, cool_scope_s=60, cool_reason="429"))
    assert room(harness, pro)["rpm"] == 0
    other = Candidate(pro.fingerprint, Scope("proj-a", "gemini-embedding"), limits)
    admitted(harness.state.admit([other], 0))


def test_quarantine_is_seen_by_another_instance_and_skipped(harness: Harness) -> None:
    a, b = cand(harness, KEY_A, None), cand(harness, KEY_B, None, Scope("proj-b", S.model))
    harness.state.settle(Settle(a.fingerprint, S, quarantine="400 API_KEY_INVALID"))
    other = harness.twin()
    assert other.fingerprint(KEY_A) == a.fingerprint  # the salt lives in the backend
    decision = admitted(other.admit([a, b], 0))
    assert decision.index == 1  # the quarantined first choice is skipped
    everything = other.admit([a], 0)
    assert isinstance(everything, AllQuarantined)
    assert everything.reasons == {a.fingerprint: "400 API_KEY_INVALID"}
    assert other.snapshot([a]).keys[a.fingerprint].quarantine == "400 API_KEY_INVALID"
    other.reset(a.fingerprint, S)
    assert admitted(harness.state.admit([a, b], 0)).index == 0


def test_reservations_are_corrected_and_given_back(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpm=10, tpm=100, rpd=50, window_s=30))
    first = admitted(harness.state.admit([c], 50))
    second = admitted(harness.state.admit([c], 40))
    assert room(harness, c) == {"rpm": 8, "tpm": 10, "rpd": 48}
    assert harness.twin().snapshot([c]).keys[c.fingerprint].in_flight == 2
    harness.state.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=5))
    assert room(harness, c) == {"rpm": 8, "tpm": 55, "rpd": 48}
    harness.state.settle(Settle(c.fingerprint, S, second.reservation, cancel=True))
    assert room(harness, c) == {"rpm": 9, "tpm": 95, "rpd": 49}
    assert harness.state.snapshot([c]).keys[c.fingerprint].in_flight == 0
    harness.state.settle(Settle(c.fingerprint, S, second.reservation, cancel=True))
    assert room(harness, c) == {"rpm": 9, "tpm": 95, "rpd": 49}  # given back once only


def test_learned_limits_lower_the_configured_ones(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpm=10, window_s=30))
    harness.state.settle(Settle(c.fingerprint, S, learned={"rpm": 2}))
    harness.state.settle(Settle(c.fingerprint, S, learned={"rpm": 7}))  # never raised again
    other = harness.twin()
    admitted(other.admit([c], 0))
    admitted(other.admit([c], 0))
    assert isinstance(other.admit([c], 0), WaitUntil)
    assert other.snapshot([c]).scopes[S].limits == QuotaLimits(rpm=2, window_s=30)


def test_the_80_percent_warning_comes_once_a_day_deployment_wide(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpd=10, window_s=30))
    twin = harness.twin()
    warnings = []
    for i in range(10):
        decision = admitted((harness.state if i % 2 else twin).admit([c], 0))
        warnings.append(decision.warning)
    assert [i for i, w in enumerate(warnings) if w] == [7]  # the 8th request: 80%
    assert warnings[7] == {"project": S.project, "model": S.model, "used": 0.8, "rpd": 10}
    if not harness.kind.startswith(
        "redis"
    ):  # the next Pacific day (Redis days follow the server clock)
        harness.advance(86400)
        later = [admitted(harness.state.admit([c], 0)).warning for _ in range(9)]
        assert [i for i, w in enumerate(later) if w] == [7]


def test_a_free_slot_can_be_booked_ahead(harness: Harness) -> None:
    window = 0.5 if harness.kind.startswith("redis") else 30.0
    c = cand(harness, KEY_A, QuotaLimits(rpm=1, window_s=window))
    first = admitted(harness.state.admit([c], 0))
    settled = backend_now(harness, c)
    harness.state.settle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=0))
    assert isinstance(harness.state.admit([c], 0), WaitUntil)
    assert isinstance(harness.state.admit([c], 0, book_until_s=window / 10), WaitUntil)
    booked = admitted(harness.state.admit([c], 0, book_until_s=2 * window))
    assert settled + window <= booked.reservation.at <= booked.now + window
    assert booked.delay > 0
    assert isinstance(harness.state.admit([c], 0, book_until_s=2 * window), WaitUntil)


def test_the_caller_order_is_kept_and_unlimited_scopes_always_admit(harness: Harness) -> None:
    a = cand(harness, KEY_A, QuotaLimits(rpm=1, window_s=30))
    b = cand(harness, KEY_B, None, Scope("proj-b", S.model))
    assert admitted(harness.state.admit([a, b], 0)).index == 0
    assert admitted(harness.state.admit([a, b], 0)).index == 1
    for _ in range(5):
        got = admitted(harness.state.admit([b], 10_000))
        assert not got.reservation.counted
    zero = cand(harness, KEY_A, QuotaLimits(rpm=0), Scope("proj-z", S.model))
    never = harness.state.admit([zero], 0)
    assert isinstance(never, WaitUntil)
    assert math.isinf(never.until)


async def test_async_admit_and_settle_share_the_same_state(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpm=2, tpm=100, window_s=30))
    first = await harness.state.aadmit([c], 30)
    assert isinstance(first, Admit)
    await harness.state.asettle(Settle(c.fingerprint, S, first.reservation, prompt_tokens=70))
    admitted(harness.state.admit([c], 30))
    assert isinstance(await harness.state.aadmit([c], 0), WaitUntil)
    await harness.state.asettle(Settle(c.fingerprint, S, quarantine="403 PERMISSION_DENIED"))
    assert isinstance(harness.state.admit([c], 0), AllQuarantined)


def test_reasons_are_stored_as_codes_not_free_text(harness: Harness) -> None:
    c = cand(harness, KEY_A, None)
    harness.state.settle(
        Settle(c.fingerprint, S, quarantine="400 bad <key=" + KEY_A + "> " + "x" * 200)
    )
    reason = harness.state.snapshot([c]).keys[c.fingerprint].quarantine
    assert reason is not None
    assert len(reason) <= 80
    assert "<" not in reason


@pytest.mark.parametrize("secret", [KEY_A, "another-fake-key-ZZZZ"])
def test_fingerprints_are_keyed_hashes(harness: Harness, secret: str) -> None:
    fp = harness.state.fingerprint(secret)
    assert fp.startswith("k:")
    assert secret[-4:] not in fp
    assert fp != harness.state.fingerprint(secret + "x")


def test_a_window_frees_fully_once_its_requests_age_out(harness: Harness) -> None:
    window = 0.3 if harness.kind.startswith("redis") else 30.0
    c = cand(harness, KEY_A, QuotaLimits(rpm=3, tpm=90, rpd=100, window_s=window))
    for tokens in (30, 30, 30):
        decision = admitted(harness.state.admit([c], tokens))
        harness.state.settle(Settle(c.fingerprint, S, decision.reservation, prompt_tokens=20))
    assert room(harness, c) == {"rpm": 0, "tpm": 30, "rpd": 97}
    harness.advance(window * 1.1)
    assert room(harness, c) == {"rpm": 3, "tpm": 90, "rpd": 97}
    for _ in range(3):
        admitted(harness.state.admit([c], 30))
    assert isinstance(harness.state.admit([c], 0), WaitUntil)


def test_admit_needs_a_candidate(harness: Harness) -> None:
    with pytest.raises(ValueError, match="at least one candidate"):
        harness.state.admit([], 0)


def test_a_slot_booked_for_tomorrow_leaves_today_full(harness: Harness) -> None:
    c = cand(harness, KEY_A, QuotaLimits(rpd=2, window_s=30))
    admitted(harness.state.admit([c], 0))
    admitted(harness.state.admit([c], 0))
    tomorrow = admitted(harness.state.admit([c], 0, book_until_s=2 * 86400))
    assert tomorrow.delay > 30  # at midnight Pacific
    assert isinstance(harness.state.admit([c], 0), WaitUntil)  # today is still full
    assert room(harness, c)["rpd"] == 0


def test_threads_racing_for_the_last_slots_never_overshoot(harness: Harness) -> None:
    from concurrent.futures import ThreadPoolExecutor

    c = cand(harness, KEY_A, QuotaLimits(rpm=40, tpm=4000, window_s=3600))

    def hammer(_: int) -> int:
        return sum(isinstance(harness.state.admit([c], 10), Admit) for _ in range(15))

    with ThreadPoolExecutor(8) as pool:
        got = sum(pool.map(hammer, range(8)))
    assert got == 40
    assert room(harness, c) == {"rpm": 0, "tpm": 3600, "rpd": None}

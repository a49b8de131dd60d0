"""Four processes, one (project, model) limit: together never over it, together near it.

The backend is built in the parent and used before ``fork`` (gunicorn ``--preload``), so
this also proves each child reopens its own connections.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import DiskState, QuotaLimits, RedisState
from langchain_gemini_pool._state_types import (
    Admit,
    AllQuarantined,
    Candidate,
    Scope,
    Settle,
    StateBackend,
    WaitUntil,
)
from tests.state.conftest import RedisServer

N, WINDOW, RUN_S, PROCS = 20, 0.5, 3.0, 4
S = Scope("shared-proj", "gemini-2.5-flash")
OTHER = Scope("shared-proj", "gemini-2.5-pro")


def _worker(state: StateBackend, cand: Candidate, start: float, out: Any) -> None:
    """Takes slots as a pool does: a full window books the next free slot (up to a window
    ahead) and waits for it. Asking again after each wait instead let one process starve:
    a window's slots free in the burst they were taken in, and a process already in its
    loop took them all while the others woke from their waits a little too late."""
    times: list[float] = []
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < start + RUN_S:
        decision = state.admit([cand], 1, book_until_s=WINDOW)
        if isinstance(decision, Admit):
            time.sleep(decision.delay)
            times.append(decision.reservation.at)
            state.settle(Settle(cand.fingerprint, S, decision.reservation, prompt_tokens=1))
        elif isinstance(decision, WaitUntil):
            time.sleep(min(decision.delay, start + RUN_S - time.time(), 0.2) + 0.0005)
    out.put(times)


def _punisher(state: StateBackend, bad: Candidate) -> None:
    state.settle(Settle(bad.fingerprint, S, quarantine="400 API_KEY_INVALID"))
    state.settle(Settle(bad.fingerprint, S, cool_scope_s=30, cool_reason="429 seen elsewhere"))


def _backend(kind: str, tmp_path: Path, make_redis: Callable[..., RedisServer]) -> StateBackend:
    if kind == "disk":
        return DiskState(tmp_path / "state")
    return RedisState(make_redis().url)


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_four_processes_share_one_limit(
    kind: str, tmp_path: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    state = _backend(kind, tmp_path, redis_factory)
    cand = Candidate(state.fingerprint("fake-key-mp-AAAA"), S, QuotaLimits(rpm=N, window_s=WINDOW))
    warm = state.admit([Candidate(cand.fingerprint, OTHER, None)], 0)  # connect before fork
    assert isinstance(warm, Admit)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 0.3
    procs = [ctx.Process(target=_worker, args=(state, cand, start, out)) for _ in range(PROCS)]
    for p in procs:
        p.start()
    per_proc = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    times = sorted(t for got in per_proc for t in got)
    assert all(got for got in per_proc)  # every process got slots
    # never more than N in any WINDOW-long interval
    worst = max(sum(1 for t in times if s <= t < s + WINDOW) for s in times)
    assert worst <= N
    # together at least 95% of N per window over the run's whole windows
    first = times[0]
    windows = int((start + RUN_S - first) // WINDOW)
    reached = sum(1 for t in times if t < first + windows * WINDOW)
    print(f"{kind}: {reached} admitted in {windows} windows of {N}; busiest window {worst}")
    assert reached >= 0.95 * N * windows


@pytest.mark.parametrize("kind", ["disk", "redis"])
def test_a_quarantine_and_a_cooldown_from_another_process_hold_at_once(
    kind: str, tmp_path: Path, redis_factory: Callable[..., RedisServer]
) -> None:
    state = _backend(kind, tmp_path, redis_factory)
    bad = Candidate(state.fingerprint("fake-key-mp-BAD1"), S, QuotaLimits(rpm=100))
    good = Candidate(state.fingerprint("fake-key-mp-GOOD"), S, QuotaLimits(rpm=100))
    assert isinstance(state.admit([bad, good], 0), Admit)
    child = multiprocessing.get_context("fork").Process(target=_punisher, args=(state, bad))
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert isinstance(state.admit([bad], 0), AllQuarantined)
    cooled = state.admit([bad, good], 0)  # the good key shares the cooled (project, model)
    assert isinstance(cooled, WaitUntil)
    assert cooled.reason == "429 seen elsewhere"
    other_model = state.admit([Candidate(good.fingerprint, OTHER, QuotaLimits(rpm=100))], 0)
    assert isinstance(other_model, Admit)

"""Whole pools in four processes, one shared backend, the emulator through the real SDK.

The pool is built in the parent before ``fork`` (gunicorn ``--preload``) and used in each
child. The emulator runs in the parent; its stats and its log of arrival times are the
ground truth: what the deployment sent, not what the pools believe they sent.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    DiskState,
    ManualClock,
    QuotaLimits,
    RedisState,
)
from langchain_gemini_pool._keys import mask_key
from langchain_gemini_pool._state_types import StateBackend
from langchain_gemini_pool.testing import FakeGeminiServer, Quota
from tests.state.conftest import RedisServer

MODEL, OTHER_MODEL = "gemini-2.5-flash", "gemini-2.5-pro"
GOOD = ["fake-key-proc-0001", "fake-key-proc-0002"]
BAD = "fake-key-proc-dead"
PROCS = 4
# 10:00:10 UTC on the emulator's clock: a 60 s window has 50 s left (a 429 says so)
T0 = datetime(2026, 3, 2, 10, 0, 10, tzinfo=timezone.utc).timestamp()


@pytest.fixture(params=["disk", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_factory: Callable[..., RedisServer]
) -> Iterator[StateBackend]:
    state: StateBackend
    if request.param == "disk":
        state = DiskState(tmp_path / "state")
    else:
        state = RedisState(redis_factory().url)
    yield state
    state.close()


@pytest.fixture
def servers() -> Iterator[list[FakeGeminiServer]]:
    started: list[FakeGeminiServer] = []
    yield started
    for server in started:
        server.stop()


def _run_children(target: Callable[..., None], *args: Any, n: int = PROCS) -> list[Any]:
    """Run ``target(out, *args)`` in ``n`` forked children; their reports, in any order."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(out, *args)) for _ in range(n)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    return reports


def _hammer(
    out: Any, pool: ChatGeminiPool, warm: ChatGeminiPool, start: float, stop: float
) -> None:
    served, errors = 0, []
    warm.invoke("warm up")  # the SDK's first call in a process is slow: not in the windows
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < stop:
        try:
            pool.invoke("hello")
            served += 1
        except Exception as exc:  # reported to the parent, which fails the test
            errors.append(f"{type(exc).__name__}: {exc}")
    out.put((served, errors))


N, WINDOW, RUN_S = 20, 3.0, 9.0
TRANSIT_S = 0.1
"""Each request reaches the emulator's quota up to this long after the pool sent it: the
delay a busy machine adds between a slot and the arrival, made certain (>> 1% of WINDOW)."""


@pytest.mark.parametrize("n", [N, 128], ids=["no-leases", "leases"])
def test_four_processes_never_exceed_the_limit_and_nearly_reach_it(
    backend: StateBackend, servers: list[FakeGeminiServer], n: int
) -> None:
    """At 128 a window busy processes lease slots ahead early in each window
    (``_state_lease``); at 20 they never do."""
    arrivals: list[float] = []

    transit = random.Random(5)

    def log(body: dict[str, Any]) -> None:  # runs as the request arrives, before its quota
        if "warm up" not in json.dumps(body):  # the warm-ups go to another model
            time.sleep(transit.uniform(0, TRANSIT_S))
            arrivals.append(time.time())

    quotas = {"shared": {MODEL: Quota(rpm=n)}}
    server = FakeGeminiServer(
        keys={"shared": GOOD}, quotas=quotas, window_s=WINDOW, label=log
    ).start()
    servers.append(server)

    def make(model: str) -> ChatGeminiPool:
        return ChatGeminiPool(
            model=model,
            api_keys={"shared": GOOD},
            base_url=server.base_url,
            limits=QuotaLimits(rpm=n, window_s=WINDOW),
            state=backend,
            max_wait=30,
        )

    start = time.time() + 1.5
    reports = _run_children(_hammer, make(MODEL), make(OTHER_MODEL), start, start + RUN_S)
    assert [e for _, errors in reports for e in errors] == []
    assert all(served for served, _ in reports)  # every process was served
    total = server.stats()["total"]
    assert total["rate_limited"] == 0
    assert total["ok"] == sum(served for served, _ in reports) + PROCS
    # the emulator's own windows never saw more than N (a 429 would have said so) ...
    per_window: dict[int, int] = {}
    for t in arrivals:
        per_window[math.floor(t / WINDOW)] = per_window.get(math.floor(t / WINDOW), 0) + 1
    assert max(per_window.values()) <= n
    # ... nor did any WINDOW-long interval, however long the request took between its slot
    # and its arrival (a request counts a window from its settle, which is after it)
    worst = max(sum(1 for t in arrivals if s <= t < s + WINDOW) for s in arrivals)
    assert worst <= n
    # ... and the four together reached at least 95% of N in each whole window
    times = sorted(arrivals)
    whole = int((times[-1] - times[0]) // WINDOW)
    reached = sum(1 for t in times if t < times[0] + whole * WINDOW)
    print(
        f"{backend!r}: {reached} in {whole} windows of {n}; {total['ok']} served in all;"
        f" at most {worst} in any {WINDOW} s"
    )
    assert reached >= 0.95 * n * whole


def _use_once(out: Any, pool: ChatGeminiPool, max_wait_s: float) -> None:
    try:
        pool.invoke("hello")
        out.put("ok")
    except AllKeysRateLimitedError:
        out.put("rate limited")
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_a_key_quarantined_in_one_process_is_skipped_by_the_others(
    backend: StateBackend, servers: list[FakeGeminiServer]
) -> None:
    server = FakeGeminiServer(keys={"p": GOOD}).start()  # BAD gets 400 API_KEY_INVALID
    servers.append(server)
    pool = ChatGeminiPool(
        model=MODEL, api_keys={"p": [BAD, *GOOD]}, base_url=server.base_url, state=backend
    )
    assert _run_children(_use_once, pool, 10.0, n=1) == ["ok"]  # BAD first, then a good one
    assert server.stats()["keys"][mask_key(BAD)]["requests"] == 1
    row = pool.pool_status()[0]  # this process never sent with BAD
    assert (row["state"], row["reason"], row["requests"]) == ("invalid", "400 API_KEY_INVALID", 0)
    assert row["shared"] is True
    assert _run_children(_use_once, pool, 10.0, n=PROCS) == ["ok"] * PROCS
    for _ in range(4):
        pool.invoke("hello")
    assert server.stats()["keys"][mask_key(BAD)]["requests"] == 1  # never tried again


def test_a_429_in_one_process_cools_its_project_and_model_for_all(
    backend: StateBackend, servers: list[FakeGeminiServer]
) -> None:
    clock = ManualClock(T0)  # the emulator's: its 429 says 50 s are left in the window
    server = FakeGeminiServer(
        keys={"p": GOOD}, quotas={"p": {MODEL: Quota(rpm=1)}}, clock=clock
    ).start()
    servers.append(server)

    def make(model: str) -> ChatGeminiPool:
        return ChatGeminiPool(
            model=model, api_keys={"p": GOOD}, base_url=server.base_url, state=backend, max_wait=0
        )

    flash, pro = make(MODEL), make(OTHER_MODEL)
    reports = _run_children(_use_once, flash, 0.0, n=1)
    reports += _run_children(_use_once, flash, 0.0, n=1)
    assert reports == ["ok", "rate limited"]  # the second process drew the 429
    assert server.stats()["total"]["rate_limited"] == 1
    rows = flash.pool_status()  # set by another process, shown here, with its reason
    assert {r["state"] for r in rows} == {"cooling"}
    assert all(40 < r["ready_in_s"] <= 50 for r in rows)
    assert all("429" in (r["reason"] or "") or "rate" in (r["reason"] or "") for r in rows)
    sent = server.stats()["total"]["requests"]
    with pytest.raises(AllKeysRateLimitedError):
        flash.invoke("hello")  # this process waits it out instead of sending
    assert _run_children(_use_once, flash, 0.0) == ["rate limited"] * PROCS
    assert server.stats()["total"]["requests"] == sent  # nobody sent into the cooldown
    assert pro.invoke("hello").content  # another model of the same project is not cooled
    assert {r["state"] for r in pro.pool_status()} == {"ready"}

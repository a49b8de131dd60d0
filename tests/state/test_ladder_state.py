"""The model ladder over a shared state: pools (workers) with one ladder on one backend
share which (project, model) pairs are out and which keys are quarantined. Real emulator,
real SDK over loopback, real SQLite and a real redis-server."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import ChatGeminiPool, DiskState, RedisState
from langchain_gemini_pool._errors import Failure, FailureKind, QuotaViolation
from langchain_gemini_pool._ladder import LadderPick, LadderScheduler
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool.testing import FakeGeminiServer, Quota
from tests.state.conftest import RedisServer

PRO, FLASH = "gemini-2.5-pro", "gemini-2.5-flash"
KEYS = {"p1": ["fake-key-lad-aaaa"], "p2": ["fake-key-lad-bbbb"]}

Backend = Callable[[], DiskState | RedisState]


@pytest.fixture(params=["disk", "redis"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, redis_factory: Callable[..., RedisServer]
) -> Iterator[Backend]:
    """Opens another handle on one backend each call (as another worker would)."""
    opened: list[DiskState | RedisState] = []
    url = redis_factory().url if request.param == "redis" else ""

    def open_one() -> DiskState | RedisState:
        state = DiskState(tmp_path / "state") if not url else RedisState(url)
        opened.append(state)
        return state

    yield open_one
    for state in opened:
        state.close()


def worker(server: FakeGeminiServer, state: Any, keys: Any = None) -> ChatGeminiPool:
    """One worker's pool: the ladder pro -> flash over ``state``."""
    return ChatGeminiPool(
        model=PRO,
        fallback_models=[FLASH],
        api_keys=KEYS if keys is None else keys,
        base_url=server.base_url,
        state=state,
        max_wait=0,
    )


def sent(server: FakeGeminiServer, model: str) -> dict[str, int]:
    """Generate requests the emulator received for ``model``, per project."""
    rows = server.stats()["models"].get(model, {})
    return {project: row["requests"] for project, row in rows.items()}


def test_the_ladder_keeps_its_rungs_in_the_backend(backend: Backend) -> None:
    with FakeGeminiServer(keys=KEYS) as server:
        pool = worker(server, backend())
        assert isinstance(pool._scheduler, LadderScheduler)
        assert all(isinstance(r, SharedScheduler) for r in pool._scheduler._rungs)
        assert [r.model for r in pool._scheduler._rungs] == [PRO, FLASH]  # type: ignore[union-attr]
        assert pool.invoke("hi").response_metadata["model_name"] == PRO
        assert pool.pool_status()[0]["shared"] is True


def test_quota_zero_seen_by_one_worker_sends_the_other_straight_down(backend: Backend) -> None:
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        first, second = worker(server, backend()), worker(server, backend())
        message = first.invoke("hello")
        assert message.response_metadata["model_name"] == FLASH
        assert sent(server, PRO) == {"p1": 1, "p2": 1}  # each project's pro answered 429
        for _ in range(3):
            answer = second.invoke("hello again")
            assert answer.response_metadata["model_name"] == FLASH
            assert answer.response_metadata["fallback_from"] == PRO
        assert sent(server, PRO) == {"p1": 1, "p2": 1}  # the second never sent to pro
        assert sum(sent(server, FLASH).values()) == 4
        row = second.pool_status()[0]
        assert row["models"] == {PRO: "cooling", FLASH: "ready"}
        assert row["ready_in_s"] > 3600  # out until Pacific midnight, not the 429's hint


def test_a_spent_day_seen_by_one_worker_sends_the_other_straight_down(backend: Backend) -> None:
    quotas = {"*": {PRO: Quota(rpd=1), "*": Quota()}}
    with FakeGeminiServer(keys={"p1": KEYS["p1"]}, quotas=quotas) as server:
        first = worker(server, backend(), {"p1": KEYS["p1"]})
        second = worker(server, backend(), {"p1": KEYS["p1"]})
        assert first.invoke("one").response_metadata["model_name"] == PRO
        assert first.invoke("two").response_metadata["model_name"] == FLASH  # pro: 429 per day
        assert sent(server, PRO) == {"p1": 2}
        assert second.invoke("three").response_metadata["model_name"] == FLASH
        assert sent(server, PRO) == {"p1": 2}  # no request to a pair known out


def test_a_key_quarantined_on_one_rung_is_skipped_on_every_rung_by_the_other(
    backend: Backend,
) -> None:
    quotas = {"*": {PRO: Quota(rpd=1), "*": Quota()}}
    bad = {"fake-key-lad-aaaa": "leaked"}
    with FakeGeminiServer(keys=KEYS, quotas=quotas, bad_keys=bad) as server:
        first, second = worker(server, backend()), worker(server, backend())
        assert first.invoke("x").response_metadata["model_name"] == PRO  # …aaaa bad, …bbbb ok
        assert server.stats()["keys"]["…aaaa"]["requests"] == 1
        # p2 has spent its pro day: the second worker's pro rung fails over to flash, where
        # it must skip …aaaa (quarantined on the pro rung by the first worker)
        for _ in range(3):
            answer = second.invoke("y")
            assert answer.response_metadata["model_name"] == FLASH
        assert server.stats()["keys"]["…aaaa"]["requests"] == 1  # never sent again
        assert sent(server, PRO) == {"p1": 1, "p2": 2}
        assert sent(server, FLASH) == {"p2": 3}
        assert second.pool_status()[0]["models"] == {PRO: "invalid", FLASH: "invalid"}


def test_a_per_minute_quota_zero_outs_the_pair_for_the_day_in_the_backend(
    backend: Backend,
) -> None:
    """A 429 with ``quotaValue`` 0 on a per-minute quota only (no per-day violation) still
    takes (project, model) out until Pacific midnight, for every worker; flash untouched."""
    with FakeGeminiServer(keys=KEYS) as server:
        first, second = worker(server, backend()), worker(server, backend())
        ladder = first._scheduler
        assert isinstance(ladder, LadderScheduler)
        now = time.time()
        pick = ladder.choose(now)
        assert isinstance(pick, LadderPick) and pick.rung == 0
        zero = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", 0)
        ladder.on_failure(pick, Failure(FailureKind.RATE_LIMITED, "rpm 0", 5.0, (zero,)), now)
        row = second.pool_status()[pick.index]
        assert row["models"] == {PRO: "cooling", FLASH: "ready"}
        assert row["ready_in_s"] > 3600  # not the 5 s the body said: out until midnight


def _ask(out: Any, pool: ChatGeminiPool) -> None:
    """A forked worker: one request; reports the model that served it."""
    try:
        out.put(pool.invoke("from a worker").response_metadata["model_name"])
    except BaseException as exc:  # pragma: no cover - reported to the parent
        out.put(repr(exc))


def _in_a_child(pool: ChatGeminiPool) -> str:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_ask, args=(out, pool))
    child.start()
    served = out.get(timeout=60)
    child.join(20)
    assert child.exitcode == 0
    return str(served)


def test_workers_forked_from_one_preloaded_pool_share_the_ladder(backend: Backend) -> None:
    """gunicorn ``--preload``: one pool built before fork; each child has its own ladder in
    memory, and the backend tells the second child what the first learned."""
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        pool = worker(server, backend())
        assert _in_a_child(pool) == FLASH
        assert sent(server, PRO) == {"p1": 1, "p2": 1}
        assert _in_a_child(pool) == FLASH
        assert sent(server, PRO) == {"p1": 1, "p2": 1}  # the second child never tried pro
        assert sum(sent(server, FLASH).values()) == 2


async def test_async_ladder_over_a_backend(backend: Backend) -> None:
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        first, second = worker(server, backend()), worker(server, backend())
        assert first._scheduler.blocking  # decisions run off the event loop
        assert (await first.ainvoke("a")).response_metadata["model_name"] == FLASH
        chunks = [c async for c in second.astream("b")]
        assert chunks[-1].response_metadata["fallback_from"] == PRO
        assert sent(server, PRO) == {"p1": 1, "p2": 1}  # the second worker never tried pro


class CountingDiskState(DiskState):
    """A real ``DiskState`` that counts its decisions (``admit`` round trips)."""

    admits = 0

    def admit(self, *args: Any, **kwargs: Any) -> Any:
        self.admits += 1
        return super().admit(*args, **kwargs)


def test_moving_down_the_ladder_costs_one_backend_round_trip(tmp_path: Path) -> None:
    """The hot path's budget holds on a ladder: with the first model out, a request that
    falls back still makes one ``admit`` before its call, not one per rung."""
    with FakeGeminiServer(keys=KEYS, zero_quota_models=[PRO]) as server:
        state = CountingDiskState(tmp_path / "state")
        pool = worker(server, state)
        pool.invoke("learn that pro is out")  # 429s on pro (quota 0) take it out for the day
        before = state.admits
        for _ in range(3):
            answer = pool.invoke("hello")
            assert answer.response_metadata["model_name"] == FLASH
        assert state.admits - before == 3
        assert sent(server, PRO) == {"p1": 1, "p2": 1}  # pro was not asked again

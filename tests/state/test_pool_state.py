"""``ChatGeminiPool(state=...)`` in one process: choosing the backend, async paths, the CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from langchain_gemini_pool import (
    ChatGeminiPool,
    DiskState,
    InMemoryState,
    QuotaLimits,
    RedisState,
)
from langchain_gemini_pool._scheduler import Scheduler
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool.cli import main
from langchain_gemini_pool.testing import FakeGeminiServer, Quota
from tests.state.conftest import RedisServer

MODEL = "gemini-2.5-flash"
KEYS = ["fake-key-pool-0001", "fake-key-pool-0002"]
BAD = "fake-key-pool-dead"


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer(keys=KEYS) as started:
        yield started


def test_without_state_the_pool_keeps_its_in_process_scheduler(
    server: FakeGeminiServer,
) -> None:
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS, base_url=server.base_url)
    assert type(pool._scheduler) is Scheduler
    assert pool.pool_status()[0]["shared"] is False


def test_state_from_the_environment_or_a_string(
    server: FakeGeminiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_POOL_STATE", str(tmp_path / "env"))
    pool = ChatGeminiPool(model=MODEL, api_keys=KEYS, base_url=server.base_url)
    assert isinstance(pool._state, DiskState)
    assert pool._state.directory == tmp_path / "env"
    given = ChatGeminiPool(
        model=MODEL, api_keys=KEYS, base_url=server.base_url, state=str(tmp_path / "s")
    )
    assert isinstance(given._state, DiskState)  # an explicit state wins over the variable
    assert given._state.directory == tmp_path / "s"
    assert given.invoke("hi").content
    assert given.pool_status()[0]["shared"] is True


def test_a_state_of_the_wrong_kind_is_a_clear_error(server: FakeGeminiServer) -> None:
    with pytest.raises(TypeError, match=r"state must be InMemoryState\(\), DiskState"):
        ChatGeminiPool(model=MODEL, api_keys=KEYS, base_url=server.base_url, state=42)
    with pytest.raises(ValueError, match="redis://"):
        ChatGeminiPool(model=MODEL, api_keys=KEYS, base_url=server.base_url, state="ftp://x")


def test_two_pools_on_one_in_memory_state_share_quarantines(server: FakeGeminiServer) -> None:
    state = InMemoryState()
    first, second = (
        ChatGeminiPool(model=MODEL, api_keys=[BAD, *KEYS], base_url=server.base_url, state=state)
        for _ in range(2)
    )
    assert isinstance(first._scheduler, SharedScheduler)
    assert not first._scheduler.blocking  # no I/O: the async paths stay inline
    first.invoke("hi")  # BAD is quarantined on the way
    row = second.pool_status()[0]
    assert (row["state"], row["reason"]) == ("invalid", "400 API_KEY_INVALID")
    second.invoke("hi")
    assert server.stats()["total"]["client_errors"] == 1


def test_cli_status_reads_the_shared_state(
    server: FakeGeminiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limited = FakeGeminiServer(keys=KEYS, quotas=Quota(rpm=1)).start()
    try:
        state_dir = tmp_path / "state"
        pool = ChatGeminiPool(
            model=MODEL,
            api_keys=[BAD, *KEYS],
            base_url=limited.base_url,
            state=DiskState(state_dir),
            max_wait=0,
        )
        pool.invoke("one")  # BAD quarantined, KEYS[0]'s project served
        with pytest.raises(Exception, match=r"429|rate"):
            for _ in range(3):  # KEYS[0]'s and KEYS[1]'s projects each draw a 429
                pool.invoke("more")
        monkeypatch.setenv("GEMINI_API_KEYS", ",".join([BAD, *KEYS]))
        for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        sent = limited.stats()["total"]["requests"]
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr("sys.stdout", out)
        monkeypatch.setattr("sys.stderr", err)
        code = main(["status", "--state", str(state_dir), "--json", "--model", MODEL])
        data = json.loads(out.getvalue())
        assert limited.stats()["total"]["requests"] == sent  # the CLI sent nothing
    finally:
        limited.stop()
    assert code == 0, err.getvalue()
    assert data["source"].startswith("DiskState(")
    states = {row["fingerprint"]: (row["state"], row["reason"]) for row in data["keys"]}
    assert states["…dead"] == ("invalid", "400 API_KEY_INVALID")
    cooling = [s for fp, s in states.items() if fp != "…dead" and s[0] == "cooling"]
    assert cooling  # a cooldown another process set, with its reason
    assert all(reason for _, reason in cooling)
    assert all(row["shared"] for row in data["keys"])


@pytest.mark.parametrize("how", ["kill", "sigstop"])
async def test_a_lost_redis_fails_no_caller_request(
    server: FakeGeminiServer,
    redis_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    redis = redis_factory()
    pool = ChatGeminiPool(
        model=MODEL,
        api_keys=KEYS,
        base_url=server.base_url,
        state=RedisState(redis.url, timeout=0.3),
        limits=QuotaLimits(rpm=1000),
    )
    assert pool.invoke("before").content
    if how == "kill":
        redis.stop()
    else:
        redis.pause()
    try:
        with caplog.at_level("WARNING", logger="langchain_gemini_pool"):
            assert pool.invoke("during, sync").content
            replies = await pool.abatch([f"during, async {i}" for i in range(4)])
            assert all(r.content for r in replies)
            assert [c async for c in pool.astream("during, stream")]
        said = [m.getMessage() for m in caplog.records if "unreachable" in m.getMessage()]
        said = [m for m in said if redis.url in m]  # not an earlier test's gone Redis
        assert len(said) == 1  # said once, loudly
        assert {row["state"] for row in pool.pool_status()} == {"ready"}
    finally:
        redis.resume()
    assert server.stats()["total"]["ok"] == 7


def test_usage_limits_without_a_ledger_hold_across_pools_on_one_state(
    server: FakeGeminiServer, tmp_path: Path
) -> None:
    from langchain_gemini_pool import UsageLimitExceededError, UsageLimits

    state = DiskState(tmp_path / "state")
    first, second = (
        ChatGeminiPool(
            model=MODEL,
            api_keys=KEYS,
            base_url=server.base_url,
            state=state,
            usage_limits=UsageLimits(requests_per_day=3),
        )
        for _ in range(2)
    )
    alice = {"metadata": {"user_id": "alice"}}
    first.invoke("one", config=alice)
    second.invoke("two", config=alice)
    first.invoke("three", config=alice)
    with pytest.raises(UsageLimitExceededError):
        second.invoke("four", config=alice)  # the other pool's usage counts here too
    assert server.stats()["total"]["requests"] == 3


def test_a_key_found_bad_elsewhere_stays_skipped_when_redis_dies(
    server: FakeGeminiServer, redis_factory: Callable[..., RedisServer]
) -> None:
    from langchain_gemini_pool import mask_key
    from langchain_gemini_pool._state_types import Scope, Settle

    redis = redis_factory()
    pool = ChatGeminiPool(
        model=MODEL,
        api_keys=KEYS,
        base_url=server.base_url,
        state=RedisState(redis.url, timeout=0.3),
        limits=QuotaLimits(rpm=1000),
    )
    assert pool.invoke("one").content and pool.invoke("two").content  # both keys in use
    other = RedisState(redis.url)  # another process finds KEYS[1] revoked
    other.settle(
        Settle(other.fingerprint(KEYS[1]), Scope("elsewhere", MODEL), quarantine="403 REVOKED")
    )
    assert pool.invoke("three").content  # this pool's admit learns it, no extra round trip
    sent = server.stats()["keys"][mask_key(KEYS[1])]["requests"]
    redis.stop()
    for i in range(6):  # round robin would put KEYS[1] first every other request
        assert pool.invoke(f"during the outage {i}").content
    stats = server.stats()["keys"]
    assert stats[mask_key(KEYS[1])]["requests"] == sent
    assert stats[mask_key(KEYS[0])]["ok"] >= 7
    rows = pool.pool_status()
    assert (rows[1]["state"], rows[1]["reason"]) == ("invalid", "403 REVOKED")

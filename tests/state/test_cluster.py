"""``RedisState`` on a real 3-master Redis Cluster (the contract suite runs there too, see
``conftest.harness``): one slot for the whole deployment, TTLs, and a pool on top of it
that answers exactly as on one Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langchain_gemini_pool import ChatGeminiPool, QuotaLimits, RedisState, mask_key
from langchain_gemini_pool._state_types import Admit, AllQuarantined, Candidate, Scope, Settle
from langchain_gemini_pool.testing import FakeGeminiServer, Quota
from tests.state.conftest import RedisClusterNodes, RedisServer
from tests.state.test_storage import _exercise

MODEL = "gemini-2.5-flash"
KEYS = ["fake-key-cluster-0001", "fake-key-cluster-0002"]
BAD = "fake-key-cluster-dead"


@pytest.fixture
def cluster(redis_cluster: RedisClusterNodes) -> RedisClusterNodes:
    redis_cluster.flush()
    return redis_cluster


def test_a_cluster_is_found_and_every_key_sits_in_one_slot_with_a_ttl(
    cluster: RedisClusterNodes,
) -> None:
    state = RedisState(cluster.url, prefix="t")
    assert state.cluster
    # several scopes and keys in one admit: CROSSSLOT if their keys were in different slots
    scopes = [Scope(f"proj-{i}", MODEL) for i in range(6)]
    cands = [Candidate(state.fingerprint(f"fake-key-slot-{i}"), s) for i, s in enumerate(scopes)]
    state.settle(Settle(cands[0].fingerprint, scopes[0], quarantine="400 API_KEY_INVALID"))
    decision = state.admit(cands, 0)
    assert isinstance(decision, Admit)
    assert decision.index == 1
    _exercise(state)
    by_node = cluster.keys()
    holders = [port for port, keys in by_node.items() if keys]
    assert len(holders) == 1  # the whole deployment lives in the slot of {t}
    keys = by_node[holders[0]]
    assert len(keys) >= 9
    client = next(n for n in cluster.nodes if n.port == holders[0]).client()
    assert {client.cluster("keyslot", k) for k in keys} == {client.cluster("keyslot", "{t}")}
    for key in keys:
        assert client.pttl(key) > 0, f"{key} has no TTL"
    state.close()


def test_reset_and_status_on_a_cluster(cluster: RedisClusterNodes) -> None:
    state = RedisState(cluster.url, prefix="t")
    s = Scope("proj", MODEL)
    c = Candidate(state.fingerprint("fake-key-reset"), s, QuotaLimits(rpm=5))
    state.settle(Settle(c.fingerprint, s, quarantine="400 API_KEY_INVALID", cool_scope_s=30))
    assert isinstance(state.admit([c], 0), AllQuarantined)
    snap = state.snapshot([c])
    assert snap.keys[c.fingerprint].quarantine == "400 API_KEY_INVALID"
    assert snap.scopes[s].cooling_until > snap.now + 25
    state.reset(c.fingerprint, s)
    assert isinstance(state.admit([c], 0), Admit)
    state.close()


def _drive(url: str, gemini: FakeGeminiServer) -> dict[str, Any]:
    """A pool with a bad key and a 1-rpm project: what it sent, and what a second pool on the
    same state then reports."""
    pool = ChatGeminiPool(
        model=MODEL,
        api_keys=[BAD, *KEYS],
        base_url=gemini.base_url,
        state=RedisState(url),
        limits=QuotaLimits(rpm=1, window_s=60),
        max_wait=0,
    )
    answers = []
    for i in range(4):
        try:
            answers.append(bool(pool.invoke(f"q{i}").content))
        except Exception as exc:  # the third and fourth find every project's minute used
            answers.append(type(exc).__name__)
    other = ChatGeminiPool(
        model=MODEL,
        api_keys=[BAD, *KEYS],
        base_url=gemini.base_url,
        state=RedisState(url),
        limits=QuotaLimits(rpm=1, window_s=60),
    )
    rows = [(r["state"], r["reason"], r["shared"]) for r in other.pool_status()]
    stats = gemini.stats()
    sent = {k: stats["keys"].get(mask_key(k), {}).get("requests", 0) for k in [BAD, *KEYS]}
    return {"answers": answers, "rows": rows, "sent": sent, "total": stats["total"]}


@pytest.fixture
def gemini_factory() -> Iterator[Callable[[], FakeGeminiServer]]:
    started: list[FakeGeminiServer] = []

    def make() -> FakeGeminiServer:
        started.append(FakeGeminiServer(keys=KEYS, quotas=Quota(rpm=1)).start())
        return started[-1]

    yield make
    for server in started:
        server.stop()


def test_a_pool_on_a_cluster_answers_as_on_one_redis(
    cluster: RedisClusterNodes,
    redis_factory: Callable[..., RedisServer],
    gemini_factory: Callable[[], FakeGeminiServer],
) -> None:
    on_cluster = _drive(cluster.url, gemini_factory())
    on_one = _drive(redis_factory().url, gemini_factory())
    assert on_cluster == on_one
    assert on_cluster["answers"][:2] == [True, True]
    assert on_cluster["answers"][2:] == ["AllKeysRateLimitedError"] * 2
    assert on_cluster["sent"] == {BAD: 1, KEYS[0]: 1, KEYS[1]: 1}  # the bad key once, ever
    assert on_cluster["total"]["rate_limited"] == 0  # the 1-rpm limit held
    assert on_cluster["rows"][0][:2] == ("invalid", "400 API_KEY_INVALID")
    assert all(shared for _, _, shared in on_cluster["rows"])


def test_losing_the_node_of_the_slot_falls_back_to_what_was_seen(
    redis_cluster: RedisClusterNodes,
) -> None:
    # last in this file: it kills a node of the session's cluster, then starts it again
    redis_cluster.flush()
    state = RedisState(redis_cluster.url, prefix="t", timeout=0.3)
    other = RedisState(redis_cluster.url, prefix="t")
    s = Scope("proj", MODEL)
    good = Candidate(state.fingerprint("fake-key-node-good"), s, QuotaLimits(rpm=100))
    bad = Candidate(state.fingerprint("fake-key-node-bad"), s, QuotaLimits(rpm=100))
    other.settle(Settle(bad.fingerprint, s, quarantine="400 API_KEY_INVALID"))
    assert isinstance(state.admit([good, bad], 0), Admit)
    holder = next(port for port, keys in redis_cluster.keys().items() if keys)
    node = next(n for n in redis_cluster.nodes if n.port == holder)
    node.stop()
    try:
        decision = state.admit([bad, good], 0)
        assert isinstance(decision, Admit)
        assert (decision.index, decision.reservation.home) == (1, "local")
    finally:
        node.start()  # its nodes.conf brings it back into the cluster with its slots
        redis_cluster.wait_ok()


def test_the_usage_ledger_on_a_cluster_one_slot_every_key_with_a_ttl(
    cluster: RedisClusterNodes,
) -> None:
    from langchain_gemini_pool import UsageLedger
    from tests.unit_tests.test_usage_ledger import cache_hit, served

    ledger = UsageLedger(url=cluster.url, prefix="lt")
    ledger.record(served(tokens=40), user="alice")
    ledger.record(cache_hit(), user="bob")
    assert ledger.totals(user="alice").total_tokens == 40
    assert ledger.totals(period="all").requests == 2
    by_node = cluster.keys()
    holders = [port for port, keys in by_node.items() if keys]
    assert len(holders) == 1
    keys = by_node[holders[0]]
    assert len(keys) == 3 * (1 + 1 + 2)  # per period: groups, users, a cell hash per user
    client = next(n for n in cluster.nodes if n.port == holders[0]).client()
    assert all(k.startswith("{lt}:ledger:") for k in keys)
    for key in keys:
        assert client.pttl(key) > 0, f"{key} has no TTL"
    ledger.close()


@pytest.mark.parametrize("prefix", ["", "a{b", "x}y", "{t}"])
def test_a_prefix_that_cannot_be_a_hash_tag_is_a_clear_error(
    shared_redis: RedisServer, prefix: str
) -> None:
    from langchain_gemini_pool import UsageLedger

    with pytest.raises(ValueError, match="prefix must be a non-empty string without"):
        RedisState(shared_redis.url, prefix=prefix)
    with pytest.raises(ValueError, match="hash tag"):
        UsageLedger(url=shared_redis.url, prefix=prefix)

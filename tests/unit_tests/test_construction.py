"""Building a pool of many keys: every key is in its level once, in order, and chosen fairly.

No timing here (``benchmarks/construction.py`` prints the figures): these tests check that the
incremental level structure the fast construction relies on stays exactly what a full rebuild
would give, whatever the order of adds and removes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_gemini_pool import ChatGeminiPool, QuotaLimits
from langchain_gemini_pool._scheduler import Pick, Scheduler, Strategy

N = 10_000


def rebuilt_levels(scheduler: Scheduler) -> list[tuple[int, list[int]]]:
    """The levels as a from-scratch rebuild over every active key would order them."""
    levels: dict[int, list[int]] = {}
    for key in scheduler._keys:
        if not key.removed:
            priority = scheduler._projects[key.project].priority
            levels.setdefault(priority, []).append(key.index)
    return sorted(levels.items())


def levels(scheduler: Scheduler) -> list[tuple[int, list[int]]]:
    return [(p, [k.index for k in keys]) for p, keys in scheduler._levels]


@pytest.mark.parametrize("strategy", ["round_robin", "least_used"])
def test_ten_thousand_keys_build_and_are_chosen_fairly(strategy: Strategy) -> None:
    keys = [f"fake-construction-key-{i:05d}-same" for i in range(N)]  # one shared fingerprint
    pool = ChatGeminiPool(api_keys=keys, model="gemini-2.5-flash", strategy=strategy)
    status = pool.pool_status()
    assert [row["index"] for row in status] == list(range(N))
    assert len({row["project"] for row in status}) == N  # each key its own project still
    scheduler = pool._scheduler
    assert scheduler.size == N
    chosen = [0] * N
    for _ in range(2 * N):
        decision = scheduler.choose(1_000.0, reserve=False)
        assert isinstance(decision, Pick)
        scheduler.on_success(decision)
        chosen[decision.index] += 1
    assert chosen == [2] * N


def test_add_keys_in_bulk_matches_one_at_a_time() -> None:
    pairs = [(f"p{i % 7}", f"…{i:04d}") for i in range(500)]
    limits = {f"p{j}": QuotaLimits(priority=j % 3) for j in range(7)}
    bulk = Scheduler("least_used", limits)
    assert bulk.add_keys(pairs) == list(range(500))
    single = Scheduler("least_used", limits)
    assert [single.add_key(p, f) for p, f in pairs] == list(range(500))
    assert levels(bulk) == levels(single) == rebuilt_levels(bulk)
    assert [p for p, _ in levels(bulk)] == [0, 1, 2]
    first = [bulk.choose(0.0, reserve=False) for _ in range(3)]
    assert all(isinstance(d, Pick) and d.index % 7 in (0, 3, 6) for d in first)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 5), st.integers(1, 4)),
            st.tuples(st.just("remove"), st.integers(0, 10_000), st.just(0)),
        ),
        max_size=40,
    ),
    strategy=st.sampled_from(["round_robin", "least_used"]),
)
def test_levels_stay_equal_to_a_rebuild(ops: list[tuple[str, int, int]], strategy: str) -> None:
    limits = {f"p{j}": QuotaLimits(priority=(j * 5) % 4) for j in range(6)}
    scheduler = Scheduler(strategy, limits)  # type: ignore[arg-type]
    for op, a, b in ops:
        if op == "add":
            scheduler.add_keys([(f"p{a}", "…0000")] * b)
        else:
            active = scheduler.active_indices()
            if active:
                scheduler.remove_key(active[a % len(active)])
        assert levels(scheduler) == rebuilt_levels(scheduler)
        assert scheduler.size == len(scheduler.active_indices())
    active = scheduler.active_indices()
    if not active:
        return
    lowest = rebuilt_levels(scheduler)[0][1]
    seen = set()
    for _ in range(2 * len(lowest)):
        decision = scheduler.choose(0.0, reserve=False)
        assert isinstance(decision, Pick)
        scheduler.on_success(decision)
        seen.add(decision.index)
    assert seen == set(lowest)  # the first level, every key of it, nothing removed

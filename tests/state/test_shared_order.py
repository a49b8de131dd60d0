"""``SharedScheduler``'s key order, kept between decisions (``_by_level``) and redone when
keys come and go: round robin within a priority level, levels in order, removed keys never.
Pure logic over a real ``InMemoryState``."""

from __future__ import annotations

from pydantic import SecretStr

from langchain_gemini_pool import InMemoryState, ManualClock, QuotaLimits
from langchain_gemini_pool._keys import KeyEntry
from langchain_gemini_pool._scheduler import Pick
from langchain_gemini_pool._shared_scheduler import SharedScheduler

MODEL = "gemini-2.5-flash"


def entry(name: str, project: str) -> KeyEntry:
    return KeyEntry(SecretStr(f"fake-key-order-{name}"), project)


def picks(sched: SharedScheduler, n: int) -> list[int]:
    out = []
    for _ in range(n):
        pick = sched.choose(1000.0)
        assert isinstance(pick, Pick)
        sched.on_success(pick)
        out.append(pick.index)
    return out


def test_round_robin_follows_keys_added_and_removed() -> None:
    sched = SharedScheduler(InMemoryState(ManualClock(1000.0)), MODEL)
    sched.add_entries([entry("a", "p1"), entry("b", "p1")])
    assert picks(sched, 4) == [0, 1, 0, 1]
    sched.add_entries([entry("c", "p1")])  # a key added after decisions were made
    assert sorted(picks(sched, 3)) == [0, 1, 2]
    sched.remove_key(1)
    assert 1 not in picks(sched, 6)
    assert sorted(set(picks(sched, 4))) == [0, 2]


def test_a_lower_priority_level_is_used_first_and_a_new_level_joins() -> None:
    limits = {"main": QuotaLimits(rpm=1000, priority=0), "spare": QuotaLimits(priority=1)}
    sched = SharedScheduler(InMemoryState(ManualClock(1000.0)), MODEL, limits=limits)
    sched.add_entries([entry("s", "spare")])
    assert picks(sched, 2) == [0, 0]  # the only level
    sched.add_entries([entry("m1", "main"), entry("m2", "main")])  # a lower level arrives
    assert picks(sched, 4) == [1, 2, 1, 2]
    sched.remove_key(1)
    sched.remove_key(2)
    assert picks(sched, 2) == [0, 0]  # the level emptied: gone from the order

"""Benchmark: building a pool of 100, 1,000 and 10,000 keys, and adding as many to one.

Run: ``python benchmarks/construction.py`` (about half a minute). Target: 10,000 keys build in
under 1 s, and 10x the keys cost about 10x the time (O(n log n) at most; before the levels were
kept incrementally, 10,000 keys took 24-50 s, 55x the time of 1,000).

Three figures per size, each the best of a few runs, in seconds:

* ``build``: ``ChatGeminiPool(api_keys=[...])`` (key checks, projects, scheduler, members).
* ``add_keys``: ``pool.add_keys([...])`` of as many new keys to a pool of that size.
* ``scheduler``: ``Scheduler.add_keys`` alone, with ``least_used`` and three priority tiers.

Every key ends in the same four characters (one fingerprint), the worst case for naming each
key's own project. Nothing is sent: members (HTTP clients) are built on first use. The
per-key cost of the scheduler still creeps up with n (memory and cache effects of 10,000
project windows), not from any pass over the keys already added.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from langchain_gemini_pool import ChatGeminiPool, QuotaLimits
from langchain_gemini_pool._scheduler import Scheduler

SIZES = (100, 1_000, 10_000)
TARGET_S = 1.0


def keys(n: int, tag: str) -> list[str]:
    return [f"fake-bench-{tag}-{i:06d}-same" for i in range(n)]


def best(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def build(n: int) -> float:
    batch = keys(n, "a")
    return best(lambda: ChatGeminiPool(api_keys=batch, model="gemini-2.5-flash"), 3)


def add(n: int) -> float:
    more = keys(n, "b")
    times = []
    for _ in range(3):
        pool = ChatGeminiPool(api_keys=keys(n, "a"), model="gemini-2.5-flash")
        started = time.perf_counter()
        pool.add_keys(more)
        times.append(time.perf_counter() - started)
    return min(times)


def scheduler(n: int) -> float:
    limits = {f"p{j}": QuotaLimits(priority=j % 3) for j in range(n)}
    pairs = [(f"p{i}", f"…{i % 10_000:04d}") for i in range(n)]
    return best(lambda: Scheduler("least_used", limits).add_keys(pairs), 5)


def main() -> int:
    ChatGeminiPool(api_keys=keys(10, "w"), model="gemini-2.5-flash")  # imports, SSL context
    rows = {n: (build(n), add(n), scheduler(n)) for n in SIZES}
    print(f"{'keys':>7} {'build':>9} {'add_keys':>9} {'scheduler':>10}")
    for n, (b, a, s) in rows.items():
        print(f"{n:>7,} {b:>8.3f}s {a:>8.3f}s {s:>9.4f}s")
    big, mid = rows[10_000], rows[1_000]
    ratios = [x / y for x, y in zip(big, mid, strict=True)]
    print(
        "10,000 vs 1,000 keys: "
        + ", ".join(
            f"{name} {r:.1f}x"
            for name, r in zip(("build", "add_keys", "scheduler"), ratios, strict=True)
        )
    )
    ok = big[0] < TARGET_S and big[1] < TARGET_S
    print(
        f"10,000 keys: build {big[0]:.3f}s, add_keys {big[1]:.3f}s: "
        f"{'within' if ok else 'OVER'} the {TARGET_S:.0f} s target"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the cost of choosing a key at 10 keys and at 1,000 keys.

Run: ``python benchmarks/selection.py`` (a few seconds). Target: at 1,000 keys a choice costs
at most 1.5x what it costs at 10 keys, for every strategy and scenario below.

Each key is its own project (the worst case for per-project bookkeeping) with generous
``QuotaLimits`` so every request is counted against sliding windows, as in production.
Time moves on a ``ManualClock`` by 5 ms per request; each request completes (``on_success``
with a corrected token count) before the next, except in the "in flight" scenario, where up
to 8 requests are outstanding at once. Only the ``choose`` calls are timed. Scenarios:

* ``all ready``: every key can take the request.
* ``half cooling``: every other key is cooling after a 429 (for longer than the run).
* ``in flight``: all ready, 8 outstanding requests, outcomes mixed (ok / 429 / 503).

Figures are the best of 7 runs (10-key and 1,000-key runs interleaved, so background load
hits both alike) of the mean time per ``choose``, in microseconds.
"""

from __future__ import annotations

import sys
import time
from collections import deque

from langchain_gemini_pool._clock import ManualClock
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._scheduler import Pick, Scheduler, Strategy

LIMITS = QuotaLimits(rpm=2_000, tpm=50_000_000, rpd=1_000_000)
REQUESTS = 6_000
RUNS = 7
TARGET = 1.5
SCENARIOS = ("all ready", "half cooling", "in flight")
RATE_LIMITED = Failure(FailureKind.RATE_LIMITED, "rate limited", 1.0)
FAULT = Failure(FailureKind.SERVER_FAULT, "503 UNAVAILABLE")


def build(n: int, strategy: Strategy, scenario: str, clock: ManualClock) -> Scheduler:
    scheduler = Scheduler(strategy, LIMITS)
    for i in range(n):
        scheduler.add_key(f"project-{i}", f"…{i:04d}")
    if scenario == "half cooling":
        long = Failure(FailureKind.RATE_LIMITED, "rate limited", 10 * 86_400.0)
        for i in range(0, n, 2):
            scheduler.on_failure(Pick(i, [clock.now(), 0.0]), long, clock.now())
    return scheduler


def run(n: int, strategy: Strategy, scenario: str) -> float:
    """Mean seconds per ``choose`` over one run."""
    clock = ManualClock(1_780_000_000.0)
    scheduler = build(n, strategy, scenario, clock)
    outstanding: deque[Pick] = deque()
    spent = 0.0
    for i in range(REQUESTS):
        clock.advance(0.005)
        now = clock.now()
        started = time.perf_counter()
        decision = scheduler.choose(now, 120.0)
        spent += time.perf_counter() - started
        if not isinstance(decision, Pick):
            raise RuntimeError(f"{scenario}/{strategy}/{n}: expected a key, got {decision}")
        if scenario != "in flight":
            scheduler.on_success(decision, 100.0)
            continue
        outstanding.append(decision)
        if len(outstanding) >= 8:
            done = outstanding.popleft()
            if i % 50 == 0:
                scheduler.on_failure(done, RATE_LIMITED, now)
            elif i % 17 == 0:
                scheduler.on_failure(done, FAULT, now)
            else:
                scheduler.on_success(done, 100.0)
    return spent / REQUESTS


def measure(strategy: Strategy, scenario: str) -> tuple[float, float]:
    """Best mean seconds per ``choose`` at 10 and at 1,000 keys."""
    small, large = [], []
    for _ in range(RUNS):
        small.append(run(10, strategy, scenario))
        large.append(run(1_000, strategy, scenario))
    return min(small), min(large)


def main() -> int:
    print(f"{'strategy':<12} {'scenario':<13} {'10 keys':>10} {'1000 keys':>10} {'ratio':>7}")
    worst = 0.0
    strategies: tuple[Strategy, ...] = ("round_robin", "least_used")
    for strategy in strategies:
        for scenario in SCENARIOS:
            small, large = measure(strategy, scenario)
            ratio = large / small
            worst = max(worst, ratio)
            print(
                f"{strategy:<12} {scenario:<13} {small * 1e6:>8.2f}us {large * 1e6:>8.2f}us "
                f"{ratio:>6.2f}x"
            )
    verdict = "within" if worst <= TARGET else "OVER"
    print(f"worst ratio {worst:.2f}x: {verdict} the {TARGET}x target")
    return 0 if worst <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

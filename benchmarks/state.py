"""Benchmark: what one decision costs on each shared-state backend, side by side.

Run: ``python benchmarks/state.py`` (about a minute; starts its own ``redis-server``
on a free loopback port when one is installed, or pass ``--redis URL``).

Part 2 (``--pool``, on by default): per-call ``invoke`` time of a whole ``ChatGeminiPool``
on each backend against a bare ``ChatGoogleGenerativeAI``, on the local emulator at zero
and at 20 ms added latency, calls interleaved so every contender sees the same machine.
The emulator runs in a process of its own, as Google's servers do: in the benchmark's own
process its threads would compete with the client for the interpreter, and count against
whatever the client does after a response. A DiskState or RedisState pool writes a call's
plain settle from a thread of its own (``_state_behind``); that write is let finish,
untimed, and 1 ms passes before the next contender's call, so what one contender's threads
do after its call (the writer going back to sleep) lands in no other contender's time. In
an application it overlaps the next request's wait on the network. A busy pool on
DiskState or RedisState sends most calls on slots leased ahead (``_state_lease``): one
backend round trip per several calls.

A decision is what the pool will do per attempt: one ``admit`` before the call (4
candidate keys, each its own (project, model) with RPM, TPM and RPD limits) and one
``settle`` after it (the reservation corrected with the real prompt tokens). Each backend
is measured with its windows already holding ``FILL`` requests (nothing expires during the
run), sync and async. Figures are the best of 5 runs of the mean, in microseconds. A sync
settle on DiskState or RedisState is only handed to a writer thread (``_state_behind``) and
the next admit waits until it is written: back to back, as here, its cost shows in the
admit, so read the sum ("decision"). Every admit here leads with the same key, so on the
shared backends most of them claim slots leased ahead (``_state_lease``) and the figure
averages those with the round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from langchain_gemini_pool import DiskState, InMemoryState, QuotaLimits, RedisState
from langchain_gemini_pool._state_types import Admit, Candidate, Scope, Settle, StateBackend

DECISIONS = 400
RUNS = 5
FILLS = (10, 1_000)
LIMITS = QuotaLimits(rpm=1_000_000, tpm=10**12, rpd=10**9, window_s=3600)


def candidates(state: StateBackend, tag: str) -> list[Candidate]:
    return [
        Candidate(state.fingerprint(f"bench-key-{tag}-{i}"), Scope(f"p{i}-{tag}", "m"), LIMITS)
        for i in range(4)
    ]


def settle_of(decision: Any, cands: list[Candidate]) -> Settle:
    assert isinstance(decision, Admit), decision
    c = cands[decision.index]
    return Settle(c.fingerprint, c.scope, decision.reservation, prompt_tokens=90)


def sync_run(state: StateBackend, cands: list[Candidate]) -> tuple[float, float]:
    admit_s = settle_s = 0.0
    for _ in range(DECISIONS):
        t0 = time.perf_counter()
        decision = state.admit(cands, 100)
        t1 = time.perf_counter()
        state.settle(settle_of(decision, cands))
        t2 = time.perf_counter()
        admit_s += t1 - t0
        settle_s += t2 - t1
    return admit_s / DECISIONS * 1e6, settle_s / DECISIONS * 1e6


async def async_run(state: StateBackend, cands: list[Candidate]) -> tuple[float, float]:
    admit_s = settle_s = 0.0
    for _ in range(DECISIONS):
        t0 = time.perf_counter()
        decision = await state.aadmit(cands, 100)
        t1 = time.perf_counter()
        await state.asettle(settle_of(decision, cands))
        t2 = time.perf_counter()
        admit_s += t1 - t0
        settle_s += t2 - t1
    return admit_s / DECISIONS * 1e6, settle_s / DECISIONS * 1e6


def fill(state: StateBackend, cands: list[Candidate], n: int) -> None:
    for _ in range(n):  # round-robin order keeps every scope's window at about n / 4 ... n
        for i in range(len(cands)):
            decision = state.admit(cands[i:] + cands[:i], 100)
            state.settle(settle_of(decision, cands[i:] + cands[:i]))


def measure(name: str, make: Callable[[str], StateBackend]) -> list[str]:
    rows = []
    for filled in FILLS:
        state = make(f"{filled}")
        cands = candidates(state, f"{name}-{filled}")
        fill(state, cands, filled)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(RUNS):
            for mode in ("sync", "async"):
                if mode == "sync":
                    got = sync_run(state, cands)
                else:
                    got = asyncio.run(async_run(state, cands))
                if mode not in best or sum(got) < sum(best[mode]):
                    best[mode] = got
        for mode, (admit_us, settle_us) in best.items():
            rows.append(
                f"{name:<14}{mode:<7}{filled:>7}{admit_us:>12.1f}{settle_us:>12.1f}"
                f"{admit_us + settle_us:>14.1f}"
            )
        state.close()
    return rows


POOL_CALLS = {0.0: 300, 0.02: 60}
POOL_KEYS = [f"bench-pool-key-{i}" for i in range(4)]


def pool_rows(url: str | None, tmp: str) -> list[str]:
    """Median per-call invoke time: bare model vs pools on each backend, interleaved."""
    import statistics

    from langchain_google_genai import ChatGoogleGenerativeAI

    from langchain_gemini_pool import ChatGeminiPool
    from langchain_gemini_pool._state_behind import drain

    rows = []
    for latency, calls in POOL_CALLS.items():
        with emulator_process(latency) as base_url:
            limits = QuotaLimits(rpm=10**6, tpm=10**12, rpd=10**9)
            contenders: list[tuple[str, Any]] = [
                ("bare ChatGoogleGenerativeAI", None),
                ("pool, no state (in-process)", "none"),
                ("pool, InMemoryState", InMemoryState()),
                ("pool, DiskState", DiskState(f"{tmp}/pool-{latency}")),
            ]
            if url:
                contenders.append(("pool, RedisState", RedisState(url, prefix=f"pb{latency}")))
            models: list[tuple[str, Any]] = []
            for name, state in contenders:
                if state is None:
                    model: Any = ChatGoogleGenerativeAI(
                        model="gemini-2.5-flash",
                        google_api_key=POOL_KEYS[0],
                        base_url=base_url,
                    )
                else:
                    model = ChatGeminiPool(
                        model="gemini-2.5-flash",
                        api_keys=POOL_KEYS,
                        base_url=base_url,
                        limits=limits,
                        state=None if state == "none" else state,
                    )
                for _ in range(10):
                    model.invoke("warm up")
                models.append((name, model))
            samples: dict[str, list[float]] = {name: [] for name, _ in models}
            for i in range(calls):
                for name, model in models:
                    t0 = time.perf_counter()
                    model.invoke(f"call {i}")
                    samples[name].append(time.perf_counter() - t0)
                    drain()  # untimed, and a pause: see the module docstring
                    time.sleep(0.001)
            for _, state in contenders:
                if state not in (None, "none"):
                    state.close()  # leased slots back while Redis is still there
            bare = statistics.median(samples[models[0][0]])
            for name, _ in models:
                med = statistics.median(samples[name])
                rows.append(
                    f"{latency * 1e3:>5.0f} ms  {name:<30}{med * 1e3:>9.3f} ms{med / bare:>8.3f}x"
                )
    return rows


def ping_us(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    best = float("inf")
    for _ in range(RUNS):
        t0 = time.perf_counter()
        for _ in range(DECISIONS):
            client.ping()
        best = min(best, (time.perf_counter() - t0) / DECISIONS * 1e6)
    client.close()
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, tries: int) -> None:
    """Until something listens on loopback ``port`` (at most ``tries`` x 20 ms)."""
    for _ in range(tries):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.02)


@contextlib.contextmanager
def emulator_process(latency: float) -> Iterator[str]:
    """The base URL of the emulator (``python -m langchain_gemini_pool.testing``) run in a
    process of its own."""
    port = free_port()
    cmd = [sys.executable, "-m", "langchain_gemini_pool.testing", "--port", str(port)]
    cmd += ["--latency", str(latency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_for(port, 500)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def start_redis() -> tuple[subprocess.Popen[bytes], str, str] | None:
    if shutil.which("redis-server") is None:
        return None
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", directory]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # noqa: S603 (fixed argv)
    wait_for(port, 200)
    return proc, f"redis://127.0.0.1:{port}/0", directory


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    """``url`` if given, else a throwaway ``redis-server``'s (None when none is installed)."""
    started = None if url else start_redis()
    try:
        yield url or (started[1] if started else None)
    finally:
        if started:
            started[0].kill()
            started[0].wait()
            shutil.rmtree(started[2], ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", help="a Redis URL to use instead of starting one")
    parser.add_argument(
        "--no-pool", action="store_true", help="skip part 2 (whole pools on the emulator)"
    )
    args = parser.parse_args()
    with redis_server(args.redis) as url:
        run(url, args.no_pool)
    return 0


def run(url: str | None, no_pool: bool) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-state-")
    backends: list[tuple[str, Callable[[str], StateBackend]]] = [
        ("InMemoryState", lambda _tag: InMemoryState()),
        ("DiskState", lambda tag: DiskState(f"{tmp}/{tag}")),
    ]
    if url:
        backends.append(("RedisState", lambda _tag: RedisState(url, prefix="bench")))
    print(f"admit (4 candidates) + settle, µs per decision; best of {RUNS} x {DECISIONS}")
    print(f"{'backend':<14}{'mode':<7}{'window':>7}{'admit':>12}{'settle':>12}{'decision':>14}")
    try:
        for name, make in backends:
            for row in measure(name, make):
                print(row)
        if url:
            print(f"(reference: one Redis PING round trip, sync: {ping_us(url):.1f} µs)")
        if not no_pool:
            print(
                f"\ninvoke per call, median, interleaved ({POOL_CALLS[0.0]} calls at 0 ms, "
                f"{POOL_CALLS[0.02]} at 20 ms); ratio to the bare model"
            )
            for row in pool_rows(url, tmp):
                print(row)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not url:
        print("RedisState: skipped (no redis-server installed, and no --redis URL)")


if __name__ == "__main__":
    sys.exit(main())

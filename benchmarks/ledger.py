"""Benchmark: the usage ledger per record and per read, in memory, on disk and in Redis.

Run: ``python benchmarks/ledger.py``. Starts its own ``redis-server`` on a free loopback port
(skips Redis with a note when it is not installed); stops by itself in well under a minute.

The three ledgers run side by side in one process on the same requests: ``N`` records of a
pool answer (2 attempts on 2 keys and projects, 8 users, 2 models), then ``check_usage``
(what a pool does before each request under ``UsageLimits``: day and month totals of one
user) and a combined-filter ``totals`` (user + model, one month). Medians in µs per call.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from langchain_core.messages import AIMessage

from langchain_gemini_pool import UsageLedger, UsageLimits, check_usage

N = 1_000
LIMITS = UsageLimits(tokens_per_day=10**12, requests_per_day=10**9, cost_per_month=1e9)


def answer(i: int) -> AIMessage:
    key = i % 4
    return AIMessage(
        content="ok",
        usage_metadata={"input_tokens": 80, "output_tokens": 20, "total_tokens": 100},
        response_metadata={
            "model_name": "gemini-2.5-flash",
            "key_index": key,
            "project": f"p{key % 2}",
            "attempts": [
                {"key_index": (key + 1) % 4, "project": f"p{(key + 1) % 2}", "outcome": "x"},
                {"key_index": key, "project": f"p{key % 2}", "outcome": "ok"},
            ],
        },
    )


def median_us(fn: Callable[[int], object], n: int) -> float:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str] | None:
    if shutil.which("redis-server") is None:
        return None
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(  # noqa: S603 (a fixed argv)
        [*cmd, "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    return None


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = {"memory": UsageLedger.in_memory(), "disk": UsageLedger(Path(tmp) / "usage")}
        redis = start_redis(tmp)
        if redis is not None:
            ledgers["redis"] = UsageLedger(url=redis[1], prefix="bench")
        else:
            print("redis-server not installed: Redis skipped")
        models = ("gemini-2.5-flash", "gemini-2.5-pro")
        print(f"{'µs per call (median)':<30}" + "".join(f"{k:>10}" for k in ledgers))
        rows: dict[str, list[float]] = {"record": [], "check_usage": [], "totals(user, model)": []}
        for ledger in ledgers.values():

            def record(i: int, ledger: UsageLedger = ledger) -> None:
                ledger.record(answer(i), user=f"u{i % 8}", model=models[i % 2])

            rows["record"].append(median_us(record, N))
            rows["check_usage"].append(
                median_us(lambda i, ledger=ledger: check_usage(ledger, f"u{i % 8}", LIMITS), N)
            )
            rows["totals(user, model)"].append(
                median_us(
                    lambda i, ledger=ledger: ledger.totals(
                        user=f"u{i % 8}", model=models[i % 2], period="month"
                    ),
                    N,
                )
            )
            assert ledger.totals().requests == N, ledger
        for name, figures in rows.items():
            print(f"{name:<30}" + "".join(f"{f:>10.0f}" for f in figures))
        for ledger in ledgers.values():
            ledger.close()
        if redis is not None:
            redis[0].kill()
            redis[0].wait()


if __name__ == "__main__":
    main()

"""Start-up time of the ``gemini-pool`` command: ``--help`` and ``keys list`` (target: < 1 s).

Runs each command several times in a fresh interpreter and prints the median wall time, next
to a bare ``python -c pass`` and to ``import langchain_gemini_pool.chat_models`` (what the
command would cost if it imported the pool eagerly). ``python benchmarks/cli_startup.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

RUNS = 7


def median_seconds(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)  # noqa: S603
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    env = {**os.environ, "GEMINI_API_KEY": "bench-key-not-real-0000"}
    python = sys.executable
    cases = {
        "python -c pass": [python, "-c", "pass"],
        "gemini-pool --help": [python, "-m", "langchain_gemini_pool", "--help"],
        "gemini-pool keys list": [python, "-m", "langchain_gemini_pool", "keys", "list"],
        "gemini-pool keys list --json": [
            python,
            "-m",
            "langchain_gemini_pool",
            "keys",
            "list",
            "--json",
        ],
        "import ...chat_models (eager)": [python, "-c", "import langchain_gemini_pool.chat_models"],
    }
    print(f"median of {RUNS} runs, fresh interpreter each")
    for name, argv in cases.items():
        print(f"{name:32s} {median_seconds(argv, env):6.3f} s")


if __name__ == "__main__":
    main()

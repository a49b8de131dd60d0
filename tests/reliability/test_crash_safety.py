"""Crash safety: SIGKILL a process while it writes the disk cache and the usage ledger.

A child process writes one cache entry and one ledger record per step, in a loop, and prints
the step's number once both calls have returned (its acknowledgement). The test kills it with
SIGKILL at a random moment — most often inside a SQLite transaction — five times over the same
two directories. After each kill a new process (this one) opens both: ``PRAGMA
integrity_check`` must say ``ok``, every acknowledged write must be there, and at most the one
step in flight when the kill landed may be missing or (having committed unacknowledged) present.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langchain_gemini_pool import GeminiDiskCache, UsageLedger
from langchain_gemini_pool._cache import entry_key

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX only")

KILLS = 5
LLM = "crash-safety-llm"
ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import sys
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration
from langchain_gemini_pool import GeminiDiskCache, UsageLedger

cache_dir, ledger_dir, run = sys.argv[1], sys.argv[2], int(sys.argv[3])
cache = GeminiDiskCache(cache_dir)
ledger = UsageLedger(ledger_dir)
step = 0
while True:
    name = f"r{run}-s{step}"
    print(f"begin {step}", flush=True)
    cache.update(name, "crash-safety-llm", [ChatGeneration(message=AIMessage(content=name * 40))])
    message = AIMessage(
        content=name,
        usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        response_metadata={"model_name": "gemini-2.5-flash", "key_index": step % 3,
                           "project": f"p{step % 3}"},
    )
    ledger.record(message, user=f"u{run}")
    if ledger.problem is not None or cache.stats()["errors"]:
        print("PROBLEM", ledger.problem, flush=True)
        raise SystemExit(3)
    print(step, flush=True)
    step += 1
"""


def run_and_kill(
    cache_dir: Path, ledger_dir: Path, run: int, rng: random.Random
) -> tuple[int, bool]:
    """Start a writer and SIGKILL it inside a step: how many steps it acknowledged, and
    whether the kill landed between a step's start and its acknowledgement."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", CHILD, str(cache_dir), str(ledger_dir), str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdout is not None
    wanted = rng.randint(15, 60)
    lines: list[str] = []
    acks: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line)
        if not line.startswith("begin"):
            acks.append(time.monotonic())
        elif len(acks) >= wanted:
            break  # a step has just begun: kill somewhere inside it
    gaps = sorted(b - a for a, b in itertools.pairwise(acks))
    time.sleep(rng.uniform(0, 0.6) * gaps[len(gaps) // 2])
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    out = child.stdout.read()  # through the same buffer readline used (communicate would not)
    err = child.stderr.read() if child.stderr is not None else ""
    assert child.returncode == -signal.SIGKILL, (child.returncode, err[-2000:])
    lines += out.splitlines(keepends=True)
    complete = [line.strip() for line in lines if line.endswith("\n")]
    assert "PROBLEM" not in "".join(complete), complete
    steps = [line for line in complete if not line.startswith("begin")]
    assert len(steps) >= wanted, f"the writer stopped early: {err[-2000:]}"
    assert steps == [str(i) for i in range(len(steps))], (steps[-5:], complete[-5:], err[-500:])
    return len(steps), complete[-1].startswith("begin")


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])


def cached_steps(cache_dir: Path, run: int) -> set[int]:
    """The steps of ``run`` whose entry is in the cache, read back the public way."""
    cache = GeminiDiskCache(cache_dir)
    found = set()
    step = 0
    misses = 0
    while misses < 3:  # steps are written in order: past the last, a few misses in a row
        if cache.lookup(f"r{run}-s{step}", LLM) is not None:
            found.add(step)
            misses = 0
        else:
            misses += 1
        step += 1
    cache.close()
    return found


def test_sigkill_mid_write_loses_at_most_the_write_in_flight(tmp_path: Path) -> None:
    cache_dir, ledger_dir = tmp_path / "cache", tmp_path / "ledger"
    rng = random.Random(20261130)
    acked: dict[int, int] = {}
    inside = 0
    for run in range(KILLS):
        acked[run], mid_step = run_and_kill(cache_dir, ledger_dir, run, rng)
        inside += mid_step
        assert integrity(cache_dir / "cache.db") == "ok"
        assert integrity(ledger_dir / "cache.db") == "ok"
        with UsageLedger(ledger_dir) as ledger:
            assert ledger.problem is None
            for earlier in range(run + 1):
                n = acked[earlier]
                requests = ledger.totals(user=f"u{earlier}").requests
                assert n <= requests <= n + 1, (earlier, n, requests)
                tokens = ledger.totals(user=f"u{earlier}", period="day").total_tokens
                assert tokens == 10 * requests  # a record is all there or not at all
                by_key = sum(
                    ledger.totals(user=f"u{earlier}", key_index=k).requests for k in range(3)
                )
                assert by_key == requests  # every grouping of one record committed together
        for earlier in range(run + 1):
            steps = cached_steps(cache_dir, earlier)
            n = acked[earlier]
            assert set(range(n)) <= steps <= set(range(n + 1)), (earlier, n, sorted(steps)[-3:])
    with sqlite3.connect(cache_dir / "cache.db") as con:  # entries are the hashed keys
        keys = {row[0] for row in con.execute("SELECT key FROM Cache")}
    assert entry_key("r0-s0", LLM) in keys
    assert sum(acked.values()) >= KILLS * 15
    assert inside >= 2, f"only {inside} of {KILLS} kills landed inside a step"

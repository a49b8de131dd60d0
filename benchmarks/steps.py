"""The pool's own work per request, with the HTTP call taken out.

Run: ``python benchmarks/steps.py`` (about 30 s; starts a private ``redis-server`` when one
is installed, or pass ``--redis URL``).

Each request's steps (``ChatGeminiPool._steps``) are performed by the real ``drive`` /
``adrive`` against the real scheduler and state backend; only the call to Google is a
canned reply, so the figure is the pool's overhead per request (choosing a key, the
backend's ``admit`` and ``settle``, stamping the answer), sync and async, per backend.
Back to back, a sync settle that DiskState or RedisState writes behind the caller
(``_state_behind``) is waited for by the next request's admit, so it is counted here; most
admits claim slots leased ahead (``_state_lease``).
Best (and median) of 7 rounds, in microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from langchain_gemini_pool import ChatGeminiPool, DiskState, InMemoryState, QuotaLimits, RedisState
from langchain_gemini_pool._driver import adrive, aresult_of, drive, result_of

KEYS = [f"bench-key-{i:04d}" for i in range(10)]
MESSAGES = [HumanMessage("benchmark prompt")]
LIMITS = QuotaLimits(rpm=10**6, tpm=10**12, rpd=10**9)
ROUNDS = 7


def reply(_member: Any) -> ChatResult:
    usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    message = AIMessage("ok", usage_metadata=usage)  # type: ignore[arg-type]
    return ChatResult(generations=[ChatGeneration(message=message)])


async def areply(member: Any) -> ChatResult:
    return reply(member)


def sync_us(pool: ChatGeminiPool, n: int) -> list[float]:
    out = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            result_of(drive(pool._steps(MESSAGES, "u", "call"), reply, pool._clock))
        out.append((time.perf_counter() - start) / n * 1e6)
    return out


def async_us(pool: ChatGeminiPool, n: int) -> list[float]:
    async def rounds() -> list[float]:
        out = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(n):
                steps = pool._steps(MESSAGES, "u", "call")
                await aresult_of(adrive(steps, areply, pool._clock))
            out.append((time.perf_counter() - start) / n * 1e6)
        return out

    return asyncio.run(rounds())


@contextmanager
def redis_server(url: str | None) -> Iterator[str | None]:
    if url or shutil.which("redis-server") is None:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="bench-steps-redis-")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(  # noqa: S603 (a fixed argv)
        [*cmd, "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL to use instead of starting one")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-steps-")
    with redis_server(args.redis) as url:
        contenders: list[tuple[str, Callable[[], Any], int]] = [
            ("no state, no limits", lambda: None, 20000),
            ("no state, limits", lambda: None, 20000),
            ("InMemoryState", InMemoryState, 20000),
            ("DiskState", lambda: DiskState(f"{tmp}/state"), 1000),
        ]
        if url:
            contenders.append(("RedisState", lambda: RedisState(url, prefix="bench-steps"), 2000))
        print(f"Pool steps per request, canned reply, best (median) of {ROUNDS}, us")
        for name, make, n in contenders:
            limits = None if name == "no state, no limits" else LIMITS
            pool = ChatGeminiPool(model="gemini-2.5-flash", api_keys=KEYS, limits=limits)
            state = make()
            if state is not None:
                pool = ChatGeminiPool(
                    model="gemini-2.5-flash", api_keys=KEYS, limits=limits, state=state
                )
            sync_us(pool, max(1, n // 10))  # warm up
            sync = sync_us(pool, n)
            asyn = async_us(pool, max(1, n // 2))
            if state is not None:
                state.close()  # leased slots back while the backend is still there
            print(
                f"  {name:<22} sync {min(sync):8.1f} ({statistics.median(sync):8.1f})"
                f"   async {min(asyn):8.1f} ({statistics.median(asyn):8.1f})"
            )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What the pool costs: construction, and per-call overhead against a bare model.

Run: ``python benchmarks/overhead.py`` (about 30 s; stops by itself).

1. Construction: one ``ChatGoogleGenerativeAI``; 100 of them built eagerly (what a naive pool
   does); a ``ChatGeminiPool`` of 100 keys. Target: the pool within 2x of one model.
2. Per-call overhead: ``invoke`` through a 10-key pool vs a bare ``ChatGoogleGenerativeAI``,
   both against the local emulator at zero added latency, calls interleaved so both see the
   same machine. Target: pool median within 3% of the bare median.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from langchain_google_genai import ChatGoogleGenerativeAI

from langchain_gemini_pool import ChatGeminiPool
from langchain_gemini_pool.testing import FakeGeminiServer

MODEL = "gemini-2.5-flash"
KEYS = [f"bench-key-{i:04d}" for i in range(100)]


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def construction(repeat: int) -> None:
    ChatGoogleGenerativeAI(model=MODEL, google_api_key=KEYS[0])  # import-time warm-up
    ChatGeminiPool(model=MODEL, api_keys=KEYS)
    one = statistics.median(
        timed(lambda: ChatGoogleGenerativeAI(model=MODEL, google_api_key=KEYS[0]), repeat)
    )
    eager = statistics.median(
        timed(
            lambda: [ChatGoogleGenerativeAI(model=MODEL, google_api_key=k) for k in KEYS],
            max(2, repeat // 10),
        )
    )
    pool = statistics.median(timed(lambda: ChatGeminiPool(model=MODEL, api_keys=KEYS), repeat))
    print("Construction (median)")
    print(f"  one ChatGoogleGenerativeAI            {one * 1e3:8.1f} ms   1.00x")
    print(f"  100 ChatGoogleGenerativeAI, eagerly   {eager * 1e3:8.1f} ms  {eager / one:5.2f}x")
    print(
        f"  ChatGeminiPool of 100 keys            {pool * 1e3:8.1f} ms  {pool / one:5.2f}x"
        f"   (target <= 2x: {'met' if pool / one <= 2 else 'MISSED'})"
    )


def per_call(calls: int) -> None:
    with FakeGeminiServer() as server:
        bare = ChatGoogleGenerativeAI(
            model=MODEL, google_api_key=KEYS[0], base_url=server.base_url, max_retries=1
        )
        contenders = {
            "bare ChatGoogleGenerativeAI": bare,
            "ChatGeminiPool, 1 key": ChatGeminiPool(
                model=MODEL, api_keys=KEYS[:1], base_url=server.base_url
            ),
            "ChatGeminiPool, 10 keys": ChatGeminiPool(
                model=MODEL, api_keys=KEYS[:10], base_url=server.base_url
            ),
        }
        for i in range(50):  # warm every connection and member
            for model in contenders.values():
                model.invoke(f"warm {i}")
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders.items())
        for i in range(calls):
            prompt = f"benchmark prompt number {i}"
            for name, model in order[i % 3 :] + order[: i % 3]:  # rotate who goes first
                start = time.perf_counter()
                model.invoke(prompt)
                samples[name].append(time.perf_counter() - start)
    base = statistics.median(samples["bare ChatGoogleGenerativeAI"])
    print(f"\nPer-call invoke against the emulator, zero latency, {calls} calls each (median)")
    for name, values in samples.items():
        median = statistics.median(values)
        overhead = median / base - 1
        verdict = ""
        if name != "bare ChatGoogleGenerativeAI":
            verdict = f"  {overhead * 100:+6.2f} %  {(median - base) * 1e6:+7.1f} us"
            verdict += f"   (target within 3%: {'met' if overhead <= 0.03 else 'MISSED'})"
        print(f"  {name:30s} {median * 1e3:8.3f} ms{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    construction(args.repeat)
    per_call(args.calls)


if __name__ == "__main__":
    main()

"""Benchmark: GeminiDiskCache lookups against LangChain's SQLiteCache, and cached invokes.

Run: ``python benchmarks/cache.py``. Stops by itself in well under a minute.

Part 1 stores the same 2,000 realistic entries (a one-message prompt as LangChain
serialises it, a chat model's ``llm_string``, a ChatGeneration of ~200 characters with
usage and response metadata) in each cache, then times every lookup (hits, shuffled):
``GeminiDiskCache``; ``SQLiteCache`` from ``langchain_community.cache`` (bench dependency:
``pip install langchain-community``); plain ``diskcache.Cache`` / ``FanoutCache`` + ``loads``
as the floor of what any diskcache + ``loads`` design costs. GeminiDiskCache sits below that
floor because it builds its ``loads`` allowlist once instead of on every call. Cache and
FanoutCache measure the same for lookups, so GeminiDiskCache uses a single Cache.
Target: GeminiDiskCache median at least 4x faster than SQLiteCache.

Part 2 (when ``ChatGeminiPool`` and ``FakeGeminiServer`` import) times ``pool.invoke`` over
300 prompts against the local emulator, served from a warm GeminiDiskCache versus uncached
(``cache=False``). Target: at least 10x.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
from langchain_core.load import dumps, loads
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, Generation

from langchain_gemini_pool import GeminiDiskCache

N = 2_000
POOL_PROMPTS = 300
ALLOWED: list[Any] = [ChatGeneration, Generation, AIMessage]


def llm_string() -> str:
    """What a ChatGoogleGenerativeAI's cache key really looks like."""
    from langchain_google_genai import ChatGoogleGenerativeAI

    model = ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", google_api_key="bench-not-a-key", temperature=0.2
    )
    return model._get_llm_string()


def workload() -> tuple[list[str], str, list[ChatGeneration]]:
    rng = random.Random(7)
    words = [
        "quota",
        "key",
        "pool",
        "model",
        "token",
        "cache",
        "retry",
        "gemini",
        "window",
        "project",
        "answer",
    ]
    prompts, values = [], []
    for i in range(N):
        question = f"Q{i}: " + " ".join(rng.choice(words) for _ in range(12)) + "?"
        prompts.append(dumps([HumanMessage(content=question)]))
        answer = (f"A{i}: " + " ".join(rng.choice(words) for _ in range(40)))[:200]
        values.append(
            ChatGeneration(
                message=AIMessage(
                    content=answer,
                    usage_metadata={"input_tokens": 20, "output_tokens": 50, "total_tokens": 70},
                    response_metadata={
                        "model_name": "gemini-2.5-flash",
                        "finish_reason": "STOP",
                        "pool_key": "…0001",
                        "safety_ratings": [],
                    },
                    id=f"run-{i:06d}",
                )
            )
        )
    return prompts, llm_string(), values


def time_lookups(lookup: Callable[[str], object], prompts: list[str]) -> list[float]:
    order = list(range(len(prompts)))
    random.Random(11).shuffle(order)
    for i in order[:50]:  # warm the connection and page cache
        lookup(prompts[i])
    samples = []
    for i in order:
        start = time.perf_counter_ns()
        found = lookup(prompts[i])
        samples.append((time.perf_counter_ns() - start) / 1_000)
        if not found:
            raise SystemExit(f"benchmark bug: a miss on prompt {i}")
    return samples


def plain_diskcache(cache: Any, llm: str) -> Callable[[str], object]:
    def lookup(prompt: str) -> object:
        key = hashlib.sha256((prompt + llm).encode()).hexdigest()
        text = cache.get(key)
        return None if text is None else loads(text, allowed_objects=ALLOWED)

    return lookup


def fill_plain(cache: Any, prompts: list[str], llm: str, values: list[ChatGeneration]) -> None:
    for prompt, value in zip(prompts, values, strict=True):
        cache.set(hashlib.sha256((prompt + llm).encode()).hexdigest(), dumps([value]))


def part_one(root: Path) -> None:
    prompts, llm, values = workload()
    rows: list[tuple[str, list[float]]] = []

    ours = GeminiDiskCache(root / "gemini")
    for prompt, value in zip(prompts, values, strict=True):
        ours.update(prompt, llm, [value])
    rows.append(("GeminiDiskCache", time_lookups(lambda p: ours.lookup(p, llm), prompts)))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.cache import SQLiteCache
    except ImportError:
        print("langchain-community is not installed: pip install langchain-community")
        sqlite_cache = None
    else:
        sqlite_cache = SQLiteCache(str(root / "langchain.db"))
        for prompt, value in zip(prompts, values, strict=True):
            sqlite_cache.update(prompt, llm, [value])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLiteCache's loads() warns about defaults
            rows.append(
                ("SQLiteCache", time_lookups(lambda p: sqlite_cache.lookup(p, llm), prompts))
            )

    with diskcache.Cache(str(root / "plain")) as plain:
        fill_plain(plain, prompts, llm, values)
        rows.append(("diskcache.Cache + loads", time_lookups(plain_diskcache(plain, llm), prompts)))
    with diskcache.FanoutCache(str(root / "fanout"), shards=8) as fan:
        fill_plain(fan, prompts, llm, values)
        rows.append(("FanoutCache(8) + loads", time_lookups(plain_diskcache(fan, llm), prompts)))

    print(f"\nLookup latency, {N} hits each, microseconds")
    print(f"{'cache':<26}{'median':>10}{'p95':>10}")
    for name, samples in rows:
        p95 = statistics.quantiles(samples, n=20)[18]
        print(f"{name:<26}{statistics.median(samples):>10.1f}{p95:>10.1f}")
    if sqlite_cache is not None:
        ratio = statistics.median(rows[1][1]) / statistics.median(rows[0][1])
        verdict = "meets" if ratio >= 4 else "MISSES"
        print(f"SQLiteCache / GeminiDiskCache median: {ratio:.1f}x ({verdict} the 4x target)")


def part_two(root: Path) -> None:
    try:
        from langchain_gemini_pool import ChatGeminiPool
        from langchain_gemini_pool.testing import FakeGeminiServer
    except ImportError as exc:
        print(f"\nCached vs uncached invoke: skipped ({exc})")
        return
    prompts = [f"Benchmark question number {i}: how do quotas reset?" for i in range(POOL_PROMPTS)]
    keys = ["fake-key-0001", "fake-key-0002"]
    with FakeGeminiServer() as server:
        common: dict[str, Any] = {
            "model": "gemini-2.5-flash",
            "api_keys": keys,
            "base_url": server.base_url,
        }
        uncached_pool = ChatGeminiPool(**common, cache=False)
        cached_pool = ChatGeminiPool(**common, cache=GeminiDiskCache(root / "pool"))
        for prompt in prompts:  # warm: each prompt sent once, then stored
            cached_pool.invoke(prompt)

        def timed(pool: Any) -> list[float]:
            samples = []
            for prompt in prompts:
                start = time.perf_counter_ns()
                pool.invoke(prompt)
                samples.append((time.perf_counter_ns() - start) / 1_000)
            return samples

        uncached = timed(uncached_pool)
        cached = timed(cached_pool)
    print(f"\nChatGeminiPool.invoke against the local emulator, {POOL_PROMPTS} prompts, µs")
    print(f"{'invoke':<26}{'median':>10}{'p95':>10}")
    for name, samples in (("uncached (cache=False)", uncached), ("from GeminiDiskCache", cached)):
        p95 = statistics.quantiles(samples, n=20)[18]
        print(f"{name:<26}{statistics.median(samples):>10.1f}{p95:>10.1f}")
    ratio = statistics.median(uncached) / statistics.median(cached)
    verdict = "meets" if ratio >= 10 else "MISSES"
    print(f"uncached / cached median: {ratio:.1f}x ({verdict} the 10x target)")


def main() -> None:
    warnings.filterwarnings("ignore", message="The function `loads` is in beta")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gemini-cache-bench-") as tmp:
        part_one(Path(tmp))
        part_two(Path(tmp))
    print(f"\n(total {time.monotonic() - began:.1f} s, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()

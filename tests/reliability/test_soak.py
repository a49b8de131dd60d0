"""Soak: 1,000 mixed requests, 50 at a time, against an emulator that fails often.

Ten keys in four projects; the emulator answers 10% 503, 5% 500, 10% 429 and 3% dropped
connections, with latency jitter, and cuts 2% of streams mid-way. Callers mix ``invoke``,
``stream``, ``ainvoke`` and ``astream``; a share of async calls run under client timeouts
(``asyncio.wait_for``) and a share of sync streams are abandoned after their first chunk.

What must hold, independent of how fast the machine is:
- every request ends as a success or one exception of a documented type;
- no stream yields duplicated text (a success is the whole reply, a failure a prefix of it);
- nothing hangs;
- the ledger equals the emulator's stats exactly, key by key and project by project (a
  request the caller cancelled or abandoned is not in the ledger: its own traffic, which
  the emulator counts under the request's label, is set aside);
- afterwards nothing is in flight and every window is back to full room (today's count
  is what was sent);
- resident memory does not grow between the warm-up and the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
from google.genai import errors as genai_errors
from langchain_google_genai.chat_models import ChatGoogleGenerativeAIError

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    QuotaLimits,
    UsageLedger,
    UsageTotals,
    mask_key,
)
from langchain_gemini_pool._quota import WINDOW_MARGIN_S
from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

N = 1000
WARM_UP = 300
CONCURRENCY = 50
KEYS = [f"soak-fake-key-{i:02d}" for i in range(10)]
PROJECTS = {"p0": KEYS[0:3], "p1": KEYS[3:6], "p2": KEYS[6:8], "p3": KEYS[8:10]}
LIMITS = QuotaLimits(rpm=400, tpm=2_000_000, rpd=100_000, window_s=1.0)
QUOTA = Quota(rpm=400, tpm=2_000_000)  # the injected 429s name it: the pool keeps its limits
FAULTS = Faults(
    unavailable_rate=0.10,
    error_rate=0.05,
    rate_limit_rate=0.10,
    reset_rate=0.03,
    cut_rate=0.02,
    latency_s=0.002,
    jitter_s=0.02,
    seed=11,
)
RSS_MARGIN = 16 * 2**20
"""Allowed growth of resident memory over the 700 requests after the warm-up (measured:
about 5 MiB, levelling off as thread arenas and connection pools reach their size)."""

DOCUMENTED = (
    AllKeysRateLimitedError,  # no key freed within max_wait
    ChatGoogleGenerativeAIError,  # langchain-google's errors, re-raised unchanged
    genai_errors.APIError,  # 5xx after max_attempts, a stream cut after output
    httpx2.TransportError,  # a connection dropped on every attempt (sync)
    aiohttp.ClientError,  # the same, async
    asyncio.TimeoutError,  # the caller's own client timeout
)


@dataclass
class Spec:
    i: int
    kind: str  # invoke | stream | ainvoke | astream
    timeout: float | None = None
    abandon: bool = False

    @property
    def special(self) -> bool:
        return self.timeout is not None or self.abandon

    @property
    def prompt(self) -> str:
        return f"{'s' if self.special else 'p'}{self.i} tell me about request {self.i} please"

    @property
    def user(self) -> str:
        return f"u{self.i}" if self.special else "soak"


@dataclass
class Outcome:
    spec: Spec
    result: str  # ok | error | timeout | abandoned
    text: str = ""
    error: BaseException | None = None


@dataclass
class Soak:
    pool: ChatGeminiPool
    executor: ThreadPoolExecutor
    outcomes: list[Outcome] = field(default_factory=list)

    def sync_call(self, spec: Spec, config: Any) -> Outcome:
        try:
            if spec.kind == "invoke":
                return Outcome(spec, "ok", str(self.pool.invoke(spec.prompt, config).content))
            pieces: list[str] = []
            try:
                for chunk in self.pool.stream(spec.prompt, config):
                    pieces.append(str(chunk.content))
                    if spec.abandon:
                        break  # the caller stops reading
            except Exception as exc:
                return Outcome(spec, "error", "".join(pieces), exc)
            return Outcome(spec, "abandoned" if spec.abandon else "ok", "".join(pieces))
        except Exception as exc:
            return Outcome(spec, "error", error=exc)

    async def async_call(self, spec: Spec, config: Any) -> Outcome:
        pieces: list[str] = []

        async def call() -> str:
            if spec.kind == "ainvoke":
                return str((await self.pool.ainvoke(spec.prompt, config)).content)
            async for chunk in self.pool.astream(spec.prompt, config):
                pieces.append(str(chunk.content))
            return "".join(pieces)

        try:
            text = await (
                call() if spec.timeout is None else asyncio.wait_for(call(), spec.timeout)
            )
        except asyncio.TimeoutError:
            return Outcome(spec, "timeout", "".join(pieces))
        except Exception as exc:
            return Outcome(spec, "error", "".join(pieces), exc)
        return Outcome(spec, "ok", text)

    async def run(self, specs: list[Spec]) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def one(spec: Spec) -> Outcome:
            config: Any = {"metadata": {"user_id": spec.user}}
            async with gate:
                if spec.kind in ("invoke", "stream"):
                    return await loop.run_in_executor(self.executor, self.sync_call, spec, config)
                return await self.async_call(spec, config)

        done = await asyncio.wait_for(asyncio.gather(*(one(s) for s in specs)), timeout=240)
        self.outcomes.extend(done)


def make_specs(rng: random.Random) -> list[Spec]:
    specs = []
    for i in range(N):
        kind = rng.choice(["invoke", "stream", "ainvoke", "astream"])
        spec = Spec(i, kind)
        if kind in ("ainvoke", "astream") and rng.random() < 0.2:
            spec.timeout = rng.uniform(0.005, 2.0)  # some fire, some do not
        elif kind == "stream" and rng.random() < 0.05:
            spec.abandon = True
        specs.append(spec)
    return specs


def rss() -> int:
    """Resident memory of this process, after freed memory went back to the OS (glibc)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def label(body: dict[str, Any]) -> str | None:
    word = body["contents"][-1]["parts"][0]["text"].split()[0]
    return word if word.startswith("s") else None


FIELDS = ("requests", "ok", "prompt_tokens", "total_tokens")


def as_stats(t: UsageTotals) -> dict[str, int]:
    return {
        "requests": t.attempts,
        "ok": t.successful_requests,
        "prompt_tokens": t.input_tokens,
        "total_tokens": t.total_tokens,
    }


def minus(row: dict[str, Any], *others: dict[str, Any] | None) -> dict[str, int]:
    return {f: row.get(f, 0) - sum((o or {}).get(f, 0) for o in others) for f in FIELDS}


async def wait_until_quiet(server: FakeGeminiServer) -> None:
    """Let requests already on the wire reach the emulator (their callers are gone)."""
    seen, calm = -1, 0
    while calm < 5:
        now = server.stats()["total"]["requests"]
        calm = calm + 1 if now == seen else 0
        seen = now
        await asyncio.sleep(0.05)


async def test_soak() -> None:
    started = time.monotonic()
    rng = random.Random(5)
    specs = make_specs(rng)
    ledger = UsageLedger.in_memory()
    with (
        FakeGeminiServer(
            keys=PROJECTS, quotas=QUOTA, faults=FAULTS, window_s=1.0, label=label
        ) as server,
        ThreadPoolExecutor(CONCURRENCY) as executor,
    ):
        pool = ChatGeminiPool(
            model="gemini-2.5-flash",
            api_keys=PROJECTS,
            base_url=server.base_url,
            limits=LIMITS,
            max_wait=5,
            rate_limit_cooldown=0.5,
            ledger=ledger,
        )
        soak = Soak(pool, executor)
        await soak.run(specs[:WARM_UP])
        warm = rss()
        await soak.run(specs[WARM_UP:])
        end = rss()
        await wait_until_quiet(server)
        stats = server.stats()
        await pool.aclose()
    elapsed = time.monotonic() - started

    outcomes = soak.outcomes
    assert len(outcomes) == N  # nothing hung, nothing lost
    results = Counter(o.result for o in outcomes)
    errors = Counter(type(o.error).__name__ for o in outcomes if o.error is not None)
    print(f"\nsoak: {N} requests in {elapsed:.1f} s; {dict(results)}; errors {dict(errors)}")
    print(f"soak: RSS {warm / 2**20:.1f} MiB after warm-up, {end / 2**20:.1f} MiB at the end")
    print(f"soak: emulator {stats['total']}")

    # every request ends as a success or one exception of a documented type
    for o in outcomes:
        if o.result == "error":
            assert isinstance(o.error, DOCUMENTED), repr(o.error)
    assert results["ok"] > N * 0.8
    assert results["timeout"] > 0 and results["abandoned"] > 0  # both paths were taken
    timed = [o for o in outcomes if o.spec.timeout is not None]
    assert any(o.result != "timeout" for o in timed)  # and some timed calls finished
    total = stats["total"]
    assert total["server_errors"] > 0 and total["rate_limited"] > 0 and total["resets"] > 0

    # no stream yields duplicated text: the whole reply on success, a prefix of it otherwise
    for o in outcomes:
        expected = f"Echo: {o.spec.prompt}"
        if o.result == "ok":
            assert o.text == expected, (o.spec, o.text)
        else:
            assert expected.startswith(o.text), (o.spec, o.text)

    # the ledger equals the emulator's stats, once requests the caller gave up on are set aside
    unrecorded = [
        stats["labels"].get(f"s{o.spec.i}")
        for o in outcomes
        if o.spec.special and ledger.totals(user=o.spec.user).requests == 0
    ]
    gone = [u for u in unrecorded if u is not None]
    index_of = {mask_key(k): i for i, k in enumerate(KEYS)}
    for fp, row in stats["keys"].items():
        expected_row = minus(row, *(g["keys"].get(fp) for g in gone))
        assert as_stats(ledger.totals(key_index=index_of[fp])) == expected_row, fp
    for project, row in stats["projects"].items():
        expected_row = minus(row, *(g["projects"].get(project) for g in gone))
        assert as_stats(ledger.totals(project=project)) == expected_row, project
    assert as_stats(ledger.totals()) == minus(total, *(g["total"] for g in gone))

    # idle: nothing in flight; one window on, every window has full room again; today's
    # count is what was sent (a cancelled call may have left before reaching the emulator)
    cancelled = results["timeout"] + results["abandoned"]
    span = LIMITS.window_s + min(WINDOW_MARGIN_S, 0.01 * LIMITS.window_s)
    rows = pool._scheduler.status(pool._clock.now() + span + 0.01)
    for r in rows:
        assert r["in_flight"] == 0, r
        assert r["room"]["rpm"] == LIMITS.rpm and r["room"]["tpm"] == LIMITS.tpm, r
        assert LIMITS.rpd is not None
        used = LIMITS.rpd - r["room"]["rpd"]
        assert 0 <= used - stats["projects"][r["project"]]["requests"] <= cancelled, r

    # memory does not grow with the number of requests served
    assert end - warm < RSS_MARGIN, (warm, end)

"""Benchmark (issue #4): throughput under per-project quotas, pool versus the usual set-ups.

Run: ``python benchmarks/quota_throughput.py``. Stops by itself in about two minutes and
prints two tables: part 1 below, in one process; part 2 (``benchmarks/quota_processes.py``),
the same quota shared by 4 worker processes on ``DiskState``, ``RedisState`` and, as the
contrast, ``InMemoryState`` (``--processes 0`` skips it, ``--only-processes`` runs only it).
LiteLLM is optional (``pip install litellm``, the ``bench`` extra); without it its row says
why it was not run.

Set-up, the same for every contender: K projects of one key each on the local emulator
(``FakeGeminiServer`` on the real clock), each limited to N requests per W-second window (a
minute scaled down), windows aligned at multiples of W as Google aligns minutes at :00. Each
contender gets a fresh emulator and fresh stats, builds its clients, then starts exactly at
a window boundary and sends the same 3·K·N prompts from 20 threads (``invoke`` per prompt).
A request is a caller-visible error when the caller got an exception after everything the
contender does by itself (retries, failover, waiting).

Contenders:
  (a) ``ChatGeminiPool`` reacting to 429s only (no ``limits``), ``max_wait=2·W``;
  (b) ``ChatGeminiPool`` with ``limits=QuotaLimits(rpm=N, window_s=W)``, ``max_wait=2·W``;
  (c) LangChain alone: ``llms[0].with_fallbacks(llms[1:])`` over one
      ``ChatGoogleGenerativeAI(max_retries=1)`` per key;
  (d) LiteLLM ``Router``, one deployment per key (``gemini/gemini-2.5-flash``, ``api_base``
      = emulator + ``/v1beta``), default retries and cooldowns; run twice, without and with
      its client-side ``rpm`` per deployment, and the better run is shown.

Achieved rate: successes / (W x whole windows from the aligned start to the last answer, at
least 3) / (K·N/W). At exactly the limit the 3·K·N requests need 3 windows, so 100% means
every window was used in full. Counting whole windows avoids two biases of
"successes / seconds to the last success": a contender that sends each window's share in a
burst at the window's start finishes ~2 windows + a burst after the start (which would read
~150%), and one that gives up early with errors finishes in a fraction of a second (which
would read far above 100%). The floor of 3 windows charges giving up as lost throughput.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from langchain_google_genai import ChatGoogleGenerativeAI

from langchain_gemini_pool import ChatGeminiPool, QuotaLimits
from langchain_gemini_pool.testing import FakeGeminiServer, Quota

K = 5  # projects, one key each
N = 10  # requests per project per window
W = 4.0  # seconds per window (a minute scaled down 15x)
REQUESTS = 3 * K * N
CONCURRENCY = 20
MIN_WINDOWS = 3  # the workload at exactly the limit spans 3 windows
MODEL = "gemini-2.5-flash"
KEYS = [f"AIzaBench-project-{i}-{'k' * 20}{i:04d}" for i in range(K)]
PROMPTS = [f"Question {i}: in one word, what is {i} squared?" for i in range(REQUESTS)]

Call = Callable[[str], Any]


@dataclass
class Row:
    """One contender's line in the table."""

    name: str
    rate: float | None = None
    errors: int | None = None
    calls: int | None = None
    rate_limited: int | None = None
    seconds: float | None = None
    note: str = ""
    error_kinds: Counter[str] = field(default_factory=Counter)

    @property
    def calls_per_success(self) -> float | None:
        if self.calls is None or self.rate is None or self.errors is None:
            return None
        successes = REQUESTS - self.errors
        return self.calls / successes if successes else math.inf


def emulator() -> FakeGeminiServer:
    """A fresh emulator: K projects of one key, N requests per W-second window each."""
    projects = {f"project-{i}": [key] for i, key in enumerate(KEYS)}
    return FakeGeminiServer(keys=projects, quotas=Quota(rpm=N), window_s=W)


def warm_up(build: Callable[[FakeGeminiServer], Call]) -> None:
    """One call on a throwaway, unlimited emulator, so lazy imports do not land in the run."""
    with FakeGeminiServer() as server:
        build(server)("warm up")


def run(name: str, build: Callable[[FakeGeminiServer], Call], note: str = "") -> Row:
    """Build a contender against a fresh emulator, start at a window boundary, send the load."""
    warm_up(build)
    with emulator() as server:
        call = build(server)
        start = (math.floor(time.time() / W) + 1) * W
        time.sleep(start - time.time())
        answers: list[tuple[float, bool]] = []
        kinds: Counter[str] = Counter()

        def one(prompt: str) -> None:
            try:
                call(prompt)
                ok = True
            except Exception as exc:
                ok = False
                kinds[type(exc).__name__] += 1
            answers.append((time.time(), ok))

        with ThreadPoolExecutor(CONCURRENCY) as executor:
            list(executor.map(one, PROMPTS))
        total = server.stats()["total"]
    last = max(t for t, _ in answers)
    windows = max(MIN_WINDOWS, math.ceil((last - start) / W))
    successes = sum(ok for _, ok in answers)
    return Row(
        name,
        rate=successes / (windows * W) / (K * N / W),
        errors=len(answers) - successes,
        calls=total["requests"],
        rate_limited=total["rate_limited"],
        seconds=last - start,
        note=note,
        error_kinds=kinds,
    )


def pool(limits: QuotaLimits | None) -> Callable[[FakeGeminiServer], Call]:
    def build(server: FakeGeminiServer) -> Call:
        llm = ChatGeminiPool(
            model=MODEL,
            api_keys={f"project-{i}": [key] for i, key in enumerate(KEYS)},
            base_url=server.base_url,
            limits=limits,
            max_wait=2 * W,
        )
        return llm.invoke

    return build


def with_fallbacks(server: FakeGeminiServer) -> Call:
    llms = [
        ChatGoogleGenerativeAI(
            model=MODEL, google_api_key=key, base_url=server.base_url, max_retries=1
        )
        for key in KEYS
    ]
    return llms[0].with_fallbacks(llms[1:]).invoke


def litellm_router(rpm: int | None) -> Callable[[FakeGeminiServer], Call]:
    def build(server: FakeGeminiServer) -> Call:
        from litellm.router import Router

        extra = {} if rpm is None else {"rpm": rpm}
        router = Router(
            model_list=[
                {
                    "model_name": "gemini",
                    "litellm_params": {
                        "model": f"gemini/{MODEL}",
                        "api_key": key,
                        "api_base": server.base_url + "/v1beta",
                        **extra,
                    },
                }
                for key in KEYS
            ],
            routing_strategy="usage-based-routing-v2" if rpm is not None else "simple-shuffle",
        )

        def call(prompt: str) -> Any:
            return router.completion(model="gemini", messages=[{"role": "user", "content": prompt}])

        return call

    return build


def litellm_rows() -> Row:
    """LiteLLM's better run of the two, or a row saying why it could not run."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    try:
        import litellm
    except ImportError as exc:
        return Row("(d) LiteLLM Router", note=f"not run: litellm not importable ({exc})")
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        plain = run("(d) LiteLLM Router", litellm_router(None))
        if plain.calls == 0:
            return Row("(d) LiteLLM Router", note="not run: no request reached the emulator")
        scaled_rpm = round(N * 60 / W)
        limited = run("(d) LiteLLM Router", litellm_router(scaled_rpm))
    except Exception as exc:
        return Row("(d) LiteLLM Router", note=f"not run: {type(exc).__name__}: {exc}"[:200])
    plain.note = f"litellm {version('litellm')}, defaults, no rpm"
    limited.note = f"usage-based-routing-v2, rpm={scaled_rpm}/deployment"
    better, other = sorted([plain, limited], key=lambda r: (-(r.rate or 0), r.errors, r.calls))
    better.note += (
        f"; better of 2 runs (other, {other.note}: {100 * (other.rate or 0):.1f}%, "
        f"{other.errors} errors, {other.calls} calls, {other.rate_limited} 429s)"
    )
    return better


def table(rows: list[Row]) -> str:
    limit = K * N / W
    head = (
        f"Quota throughput: {K} projects x 1 key, each {N} requests / {W:g} s window "
        f"(limit {limit:g} req/s); {REQUESTS} requests at concurrency {CONCURRENCY}"
    )
    cols = (
        "contender",
        "achieved/limit",
        "caller errors",
        "HTTP calls",
        "calls/success",
        "429s",
        "wall s",
    )
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(value: Any, spec: str = "") -> str:
        return "—" if value is None else format(value, spec)

    for r in rows:
        rate = "—" if r.rate is None else f"{100 * r.rate:.1f}%"
        lines.append(
            f"| {r.name} | {rate} | {fmt(r.errors)} | {fmt(r.calls)} | "
            f"{fmt(r.calls_per_success, '.2f')} | {fmt(r.rate_limited)} | "
            f"{fmt(r.seconds, '.1f')} |"
        )
    lines.append("")
    for r in rows:
        kinds = ", ".join(f"{n} {name}" for name, n in r.error_kinds.most_common())
        text = "; ".join(part for part in (r.note, kinds and f"errors: {kinds}") if part)
        if text:
            lines.append(f"{r.name}: {text}")
    lines += [
        "",
        f"achieved/limit = successes / (W x whole {W:g}-s windows from the aligned start to the",
        f"last answer, at least {MIN_WINDOWS}) / {limit:g} req/s; each contender starts on a "
        "window boundary.",
        "caller errors = exceptions the caller got after the contender's own retries and waits;",
        "HTTP calls and 429s = what the emulator saw; calls/success = HTTP calls / successes;",
        "wall s = start to last answer (short when a contender gives up instead of waiting).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--processes", type=int, default=4, help="worker processes in part 2 (0 skips it)"
    )
    parser.add_argument("--only-processes", action="store_true", help="run part 2 only")
    parser.add_argument("--redis", help="a Redis URL for part 2 instead of starting one")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("langchain_gemini_pool").setLevel(logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # LiteLLM's leftover tasks at exit
    if not args.only_processes:
        part1()
    if args.processes > 0:
        import quota_processes  # benchmarks/quota_processes.py

        setup = quota_processes.Setup(tuple(KEYS), N, W, MODEL, CONCURRENCY, args.processes)
        print("\n" + quota_processes.part2(setup, args.redis))
        sys.stdout.flush()


def part1() -> None:
    rows = [
        run("(a) ChatGeminiPool, reactive", pool(None), f"max_wait={2 * W:g}"),
        run(
            "(b) ChatGeminiPool + QuotaLimits",
            pool(QuotaLimits(rpm=N, window_s=W)),
            f"limits=QuotaLimits(rpm={N}, window_s={W:g}), max_wait={2 * W:g}",
        ),
        run(
            "(c) LangChain with_fallbacks",
            with_fallbacks,
            "llms[0].with_fallbacks(llms[1:]), max_retries=1 each",
        ),
        litellm_rows(),
    ]
    print(table(rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

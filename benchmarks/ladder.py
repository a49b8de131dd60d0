"""Benchmark (issue #12): a day's burst of pro-heavy traffic on free-tier-shaped quotas.

Run: ``python benchmarks/ladder.py`` (about a minute; LiteLLM optional, its row says why if
it did not run). Prints one table.

Set-up, the same for every contender: the local emulator with four projects of one key each.
Per project and Pacific day: ``gemini-2.5-pro`` 50 requests (project 4: quota 0, no free tier
for pro), ``gemini-2.5-flash`` 100, ``gemini-2.5-flash-lite`` 300. Every contender asks for
pro, then falls back to flash, then flash-lite; each sends the same ``REQUESTS`` prompts one
after another, all within one Pacific day (the emulator's clock does not move). So the day
holds 150 pro + 400 flash + 1200 lite answers; the burst of 900 needs pro and flash spent and
lite to take the rest.

Contenders:
  (a) ``ChatGeminiPool(model=pro, fallback_models=[flash, flash-lite])``: one pool;
  (b) LangChain by hand: ``with_fallbacks`` over the three models, each model a
      ``with_fallbacks`` over one ``ChatGoogleGenerativeAI(max_retries=1)`` per key;
  (c) three ``ChatGeminiPool`` (one per model) in ``with_fallbacks``;
  (d) LiteLLM ``Router``: a model group per model (one deployment per key) and
      ``fallbacks=[{pro: [flash, flash-lite]}]``, default cooldowns.

Figures: answers served of the burst, the models that served them, HTTP calls the emulator
received per answer (1.00 is no wasted call), 429s received, and seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from typing import Any

from langchain_core.runnables import Runnable
from langchain_google_genai import ChatGoogleGenerativeAI

from langchain_gemini_pool import ChatGeminiPool, ManualClock
from langchain_gemini_pool.testing import FakeGeminiServer, Quota

PRO, FLASH, LITE = "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"
LADDER = [PRO, FLASH, LITE]
PROJECTS = {f"p{i}": [f"fake-bench-key-{i:04d}"] for i in range(1, 5)}
KEYS = [k for keys in PROJECTS.values() for k in keys]
REQUESTS = 900
# 08:00 Pacific: the whole burst falls within one Pacific day
T0 = datetime(2026, 3, 2, 16, 0, 0, tzinfo=timezone.utc).timestamp()


def quotas() -> dict[str, Any]:
    day = {PRO: Quota(rpd=50), FLASH: Quota(rpd=100), LITE: Quota(rpd=300)}
    spec: dict[str, Any] = {p: dict(day) for p in PROJECTS}
    spec["p4"][PRO] = Quota(rpd=0)
    return spec


@dataclass
class Row:
    name: str
    answers: int = 0
    by_model: str = ""
    calls: int = 0
    rate_limited: int = 0
    seconds: float = 0.0
    note: str = ""


def run(name: str, build: Callable[[FakeGeminiServer, ManualClock], Callable[[str], str]]) -> Row:
    clock = ManualClock(T0)
    with FakeGeminiServer(keys=PROJECTS, quotas=quotas(), clock=clock) as server:
        call = build(server, clock)
        served: dict[str, int] = {}
        start = time.perf_counter()
        for i in range(REQUESTS):
            try:
                model = call(f"question number {i}")
            except Exception:  # a caller-visible failure: no answer
                model = "failed"
            served[model] = served.get(model, 0) + 1
        seconds = time.perf_counter() - start
        total = server.stats()["total"]
    answers = sum(n for m, n in served.items() if m != "failed")
    return Row(
        name,
        answers,
        " / ".join(str(served.get(m, 0)) for m in LADDER),
        total["requests"],
        total["rate_limited"],
        seconds,
    )


def _name(message: Any) -> str:
    name = str(message.response_metadata.get("model_name", "?"))
    return next((m for m in reversed(LADDER) if name.startswith(m)), name)


def pool_ladder(server: FakeGeminiServer, clock: ManualClock) -> Callable[[str], str]:
    pool = ChatGeminiPool(
        model=PRO,
        fallback_models=[FLASH, LITE],
        api_keys=PROJECTS,
        base_url=server.base_url,
        clock=clock,
        max_wait=0,
    )
    return lambda prompt: _name(pool.invoke(prompt))


def by_hand(server: FakeGeminiServer, clock: ManualClock) -> Callable[[str], str]:
    def model_chain(model: str) -> Runnable[Any, Any]:
        llms = [
            ChatGoogleGenerativeAI(
                model=model, google_api_key=key, base_url=server.base_url, max_retries=1
            )
            for key in KEYS
        ]
        return llms[0].with_fallbacks(llms[1:])

    chains = [model_chain(m) for m in LADDER]
    chain = chains[0].with_fallbacks(chains[1:])
    return lambda prompt: _name(chain.invoke(prompt))


def pools_by_hand(server: FakeGeminiServer, clock: ManualClock) -> Callable[[str], str]:
    pools = [
        ChatGeminiPool(
            model=m, api_keys=PROJECTS, base_url=server.base_url, clock=clock, max_wait=0
        )
        for m in LADDER
    ]
    chain = pools[0].with_fallbacks(pools[1:])
    return lambda prompt: _name(chain.invoke(prompt))


def litellm_router(server: FakeGeminiServer, clock: ManualClock) -> Callable[[str], str]:
    from litellm.router import Router

    router = Router(
        model_list=[
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"gemini/{model}",
                    "api_key": key,
                    "api_base": server.base_url + "/v1beta",
                },
            }
            for model in LADDER
            for key in KEYS
        ],
        fallbacks=[{PRO: [FLASH, LITE]}],
    )

    def call(prompt: str) -> str:
        reply = router.completion(model=PRO, messages=[{"role": "user", "content": prompt}])
        return next((m for m in reversed(LADDER) if str(reply.model).endswith(m)), reply.model)

    return call


def litellm_row() -> Row:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    name = "(d) LiteLLM Router fallbacks"
    try:
        import litellm
    except ImportError as exc:
        return Row(name, note=f"not run: litellm not importable ({exc})")
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    for logger in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    try:
        row = run(name, litellm_router)
    except Exception as exc:
        return Row(name, note=f"not run: {type(exc).__name__}: {exc}"[:200])
    row.note = f"litellm {version('litellm')}, default cooldowns"
    return row


def table(rows: list[Row]) -> str:
    head = (
        f"{'contender':<38} {'answers':>9} {'pro / flash / lite':>20} {'HTTP/answer':>12} "
        f"{'429s':>6} {'s':>6}  note"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        per = f"{r.calls / r.answers:.2f}" if r.answers else "-"
        lines.append(
            f"{r.name:<38} {r.answers:>4}/{REQUESTS:<4} {r.by_model:>20} {per:>12} "
            f"{r.rate_limited:>6} {r.seconds:>6.1f}  {r.note}"
        )
    return "\n".join(lines)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("langchain_gemini_pool").setLevel(logging.ERROR)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("google_genai").setLevel(logging.WARNING)
    rows = [
        run("(a) ChatGeminiPool ladder", pool_ladder),
        run("(b) with_fallbacks, 3 models x 4 keys", by_hand),
        run("(c) 3 ChatGeminiPool in with_fallbacks", pools_by_hand),
        litellm_row(),
    ]
    print(f"{REQUESTS} requests for pro, one Pacific day; capacity 150 pro, 400 flash, 1200 lite")
    print(table(rows))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

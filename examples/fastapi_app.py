"""A small FastAPI service: one ``ChatGeminiPool`` per worker, one state for all of them.

Run it with four workers sharing one ``DiskState`` (cooldowns, quarantines and quota windows
hold for the whole service, not per worker):

    GEMINI_API_KEYS="key1,key2" GEMINI_POOL_STATE=/var/lib/myapp/gemini-state \\
    GEMINI_POOL_RPM=10 uvicorn examples.fastapi_app:app --workers 4

Settings, all from the environment:
    GEMINI_API_KEYS (or GEMINI_API_KEY_1 ...): the keys.
    GEMINI_POOL_STATE: a DiskState directory or a redis:// URL (the pool reads it itself).
    GEMINI_POOL_RPM / GEMINI_POOL_WINDOW_S: each project's request limit and its window.
    GEMINI_POOL_CACHE_DIR / GEMINI_POOL_LEDGER_DIR: the response cache and the usage ledger
        (both process-safe; defaults: the user cache directory).
    GEMINI_MODEL: default gemini-2.5-flash. GEMINI_BASE_URL: another endpoint (the emulator).

Endpoints: ``POST /chat`` ``{"prompt": "...", "user": "alice"}`` -> ``{"text", "key",
"cache_hit"}``; ``GET /status`` -> ``pool_status()`` (deployment-wide with a shared state);
``GET /usage`` -> this month's totals of the shared ledger.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from langchain_gemini_pool import ChatGeminiPool, GeminiDiskCache, QuotaLimits, UsageLedger

app = FastAPI(title="gemini-pool example")


class Ask(BaseModel):
    prompt: str
    user: str = "anonymous"


@lru_cache(maxsize=1)
def pool() -> ChatGeminiPool:
    """The worker's pool, built on first use (each worker process builds its own)."""
    rpm = os.environ.get("GEMINI_POOL_RPM")
    window = float(os.environ.get("GEMINI_POOL_WINDOW_S", "60"))
    return ChatGeminiPool(
        model=os.environ.get("GEMINI_MODEL", "gemini-2.5-flash"),
        base_url=os.environ.get("GEMINI_BASE_URL") or None,
        limits=QuotaLimits(rpm=int(rpm), window_s=window) if rpm else None,
        cache=GeminiDiskCache(os.environ.get("GEMINI_POOL_CACHE_DIR")),
        ledger=UsageLedger(os.environ.get("GEMINI_POOL_LEDGER_DIR")),
        max_wait=float(os.environ.get("GEMINI_POOL_MAX_WAIT", "120")),
    )


@app.post("/chat")
async def chat(ask: Ask) -> dict[str, Any]:
    reply = await pool().ainvoke(ask.prompt, config={"metadata": {"user_id": ask.user}})
    meta = reply.response_metadata
    return {
        "text": reply.content,
        "key": meta.get("key_fingerprint"),
        "cache_hit": bool(meta.get("cache_hit")),
        "pid": os.getpid(),
    }


@app.get("/status")
def status() -> list[dict[str, Any]]:
    return pool().pool_status()


@app.get("/usage")
def usage() -> Any:
    ledger = pool()._ledger
    return ledger.totals(period="month") if ledger is not None else {}

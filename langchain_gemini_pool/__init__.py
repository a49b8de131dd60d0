"""langchain-gemini-pool: a drop-in ``ChatGoogleGenerativeAI`` over a pool of Gemini API keys.

Every public name lives here; the modules behind it are private. Names are imported on first
use (PEP 562), so ``import langchain_gemini_pool`` — and the ``gemini-pool`` command's start-up —
does not pay for LangChain, google-genai or the emulator until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_gemini_pool._cache import GeminiDiskCache
    from langchain_gemini_pool._clock import Clock, ManualClock, SystemClock
    from langchain_gemini_pool._errors import AllKeysRateLimitedError, NoValidKeysError
    from langchain_gemini_pool._keys import load_api_keys, mask_key
    from langchain_gemini_pool._quota import QuotaLimits
    from langchain_gemini_pool._state_disk import DiskState
    from langchain_gemini_pool._state_memory import InMemoryState
    from langchain_gemini_pool._state_redis import RedisState
    from langchain_gemini_pool._usage_handler import (
        GeminiUsageCallbackHandler,
        get_gemini_usage_callback,
    )
    from langchain_gemini_pool._usage_ledger import UsageLedger
    from langchain_gemini_pool._usage_limits import (
        UsageLimitExceededError,
        UsageLimits,
        check_usage,
        compute_overage,
        resolve_limits,
    )
    from langchain_gemini_pool._usage_prices import DEFAULT_PRICES, ModelPrice, estimate_cost
    from langchain_gemini_pool._usage_record import UsageRecord, UsageTotals
    from langchain_gemini_pool.chat_models import ChatGeminiPool
    from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

__version__ = "0.1.0"

_WHERE = {
    "GeminiDiskCache": "_cache",
    "Clock": "_clock",
    "ManualClock": "_clock",
    "SystemClock": "_clock",
    "AllKeysRateLimitedError": "_errors",
    "NoValidKeysError": "_errors",
    "load_api_keys": "_keys",
    "mask_key": "_keys",
    "QuotaLimits": "_quota",
    "DiskState": "_state_disk",
    "InMemoryState": "_state_memory",
    "RedisState": "_state_redis",
    "GeminiUsageCallbackHandler": "_usage_handler",
    "get_gemini_usage_callback": "_usage_handler",
    "UsageLedger": "_usage_ledger",
    "UsageLimitExceededError": "_usage_limits",
    "UsageLimits": "_usage_limits",
    "check_usage": "_usage_limits",
    "compute_overage": "_usage_limits",
    "resolve_limits": "_usage_limits",
    "DEFAULT_PRICES": "_usage_prices",
    "ModelPrice": "_usage_prices",
    "estimate_cost": "_usage_prices",
    "UsageRecord": "_usage_record",
    "UsageTotals": "_usage_record",
    "ChatGeminiPool": "chat_models",
    "FakeGeminiServer": "testing",
    "Faults": "testing",
    "Quota": "testing",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_gemini_pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"langchain_gemini_pool.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DEFAULT_PRICES",
    "AllKeysRateLimitedError",
    "ChatGeminiPool",
    "Clock",
    "DiskState",
    "FakeGeminiServer",
    "Faults",
    "GeminiDiskCache",
    "GeminiUsageCallbackHandler",
    "InMemoryState",
    "ManualClock",
    "ModelPrice",
    "NoValidKeysError",
    "Quota",
    "QuotaLimits",
    "RedisState",
    "SystemClock",
    "UsageLedger",
    "UsageLimitExceededError",
    "UsageLimits",
    "UsageRecord",
    "UsageTotals",
    "__version__",
    "check_usage",
    "compute_overage",
    "estimate_cost",
    "get_gemini_usage_callback",
    "load_api_keys",
    "mask_key",
    "resolve_limits",
]

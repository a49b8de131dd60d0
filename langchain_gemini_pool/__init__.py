"""langchain-gemini-pool: a drop-in ``ChatGoogleGenerativeAI`` over a pool of Gemini API keys.

Every public name lives here; the modules behind it are private. The emulator's names
(``FakeGeminiServer``, ``Faults``, ``Quota``) are loaded from ``langchain_gemini_pool.testing``
on first use, so importing the package never loads the emulator.
"""

from typing import TYPE_CHECKING, Any

from langchain_gemini_pool._cache import GeminiDiskCache
from langchain_gemini_pool._clock import Clock, ManualClock, SystemClock
from langchain_gemini_pool._errors import AllKeysRateLimitedError, NoValidKeysError
from langchain_gemini_pool._keys import load_api_keys, mask_key
from langchain_gemini_pool._quota import QuotaLimits
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

if TYPE_CHECKING:
    from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

__version__ = "0.1.0"

_FROM_TESTING = frozenset({"FakeGeminiServer", "Faults", "Quota"})


def __getattr__(name: str) -> Any:
    """Load the emulator's names on first use (PEP 562)."""
    if name in _FROM_TESTING:
        from langchain_gemini_pool import testing

        value = getattr(testing, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PRICES",
    "AllKeysRateLimitedError",
    "ChatGeminiPool",
    "Clock",
    "FakeGeminiServer",
    "Faults",
    "GeminiDiskCache",
    "GeminiUsageCallbackHandler",
    "ManualClock",
    "ModelPrice",
    "NoValidKeysError",
    "Quota",
    "QuotaLimits",
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

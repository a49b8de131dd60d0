"""One import point for the usage accounting the pool calls (prices, records, ledger, limits).

The code lives in ``_usage_prices``, ``_usage_record``, ``_usage_ledger``, ``_usage_limits`` and
``_usage_handler``; this module only gathers it.
"""

from langchain_gemini_pool._usage_handler import (
    GeminiUsageCallbackHandler,
    get_gemini_usage_callback,
)
from langchain_gemini_pool._usage_ledger import UsageLedger, default_ledger_dir
from langchain_gemini_pool._usage_limits import (
    UsageLimitExceededError,
    UsageLimits,
    check_usage,
    compute_overage,
    resolve_limits,
)
from langchain_gemini_pool._usage_prices import DEFAULT_PRICES, ModelPrice, estimate_cost
from langchain_gemini_pool._usage_record import UsageRecord, UsageTotals, usage_record

__all__ = [
    "DEFAULT_PRICES",
    "GeminiUsageCallbackHandler",
    "ModelPrice",
    "UsageLedger",
    "UsageLimitExceededError",
    "UsageLimits",
    "UsageRecord",
    "UsageTotals",
    "check_usage",
    "compute_overage",
    "default_ledger_dir",
    "estimate_cost",
    "get_gemini_usage_callback",
    "resolve_limits",
    "usage_record",
]

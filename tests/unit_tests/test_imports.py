"""The public face: exactly these names, all importable from the package itself."""

from __future__ import annotations

import subprocess
import sys

import langchain_gemini_pool
from langchain_gemini_pool import testing

EXPECTED_ALL = {
    "AllKeysRateLimitedError",
    "ChatGeminiPool",
    "Clock",
    "DiskState",
    "DEFAULT_PRICES",
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
}


def test_all_is_exactly_the_public_face() -> None:
    assert set(langchain_gemini_pool.__all__) == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert getattr(langchain_gemini_pool, name) is not None


def test_the_emulator_names_are_the_same_objects_at_both_addresses() -> None:
    for name in ("FakeGeminiServer", "Faults", "Quota"):
        assert getattr(langchain_gemini_pool, name) is getattr(testing, name)


def test_exceptions_are_langchain_model_errors() -> None:
    from langchain_core.exceptions import ModelAuthenticationError, ModelRateLimitError

    assert issubclass(langchain_gemini_pool.AllKeysRateLimitedError, ModelRateLimitError)
    assert issubclass(langchain_gemini_pool.NoValidKeysError, ModelAuthenticationError)
    assert issubclass(langchain_gemini_pool.UsageLimitExceededError, ModelRateLimitError)


def test_importing_the_package_does_not_load_the_emulator() -> None:
    code = (
        "import sys, langchain_gemini_pool as p\n"
        "assert 'langchain_gemini_pool.testing._server' not in sys.modules, 'eager'\n"
        "assert 'FakeGeminiServer' in p.__all__\n"
        "from langchain_gemini_pool import FakeGeminiServer, Faults, Quota\n"
        "assert 'langchain_gemini_pool.testing._server' in sys.modules, 'not loaded on use'\n"
        "from langchain_gemini_pool.testing import FakeGeminiServer as F\n"
        "assert F is FakeGeminiServer and p.Quota is Quota\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'FakeServer'"):
        _ = langchain_gemini_pool.FakeServer  # type: ignore[attr-defined]

"""The classifier's edges, found open by mutation testing (``benchmarks/mutation.sh``).

Transport errors are the real exception classes of every HTTP stack the SDK can sit on;
API errors are the SDK's own, built from real HTTP responses.
"""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import h11
import httpcore
import httpcore2
import httpx
import httpx2
import pytest
from google.genai import errors as genai_errors

from langchain_gemini_pool import AllKeysRateLimitedError, NoValidKeysError
from langchain_gemini_pool._errors import FailureKind, QuotaViolation, classify
from tests.unit_tests.test_errors import sdk_error

RPM = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"


@pytest.mark.parametrize(
    "exc",
    [
        httpx.NetworkError("net"),
        httpx.ReadError("read"),
        httpx.WriteError("write"),
        httpx.TransportError("transport"),
        httpx2.NetworkError("net"),
        httpcore.ReadError("read"),
        httpcore.WriteError("write"),
        httpcore.NetworkError("net"),
        httpcore2.ReadError("read"),
        httpcore2.NetworkError("net"),
        h11.RemoteProtocolError("bad response", 400),
        aiohttp.ClientOSError(104, "reset"),
    ],
    ids=lambda e: f"{type(e).__module__.split('.')[0]}.{type(e).__name__}",
)
def test_every_stacks_transport_errors_are_server_faults(exc: BaseException) -> None:
    failure = classify(exc)
    assert failure.kind is FailureKind.SERVER_FAULT
    assert failure.reason == f"transport: {type(exc).__name__}"


@pytest.mark.parametrize(
    "exc",
    [httpx.DecodingError("bad gzip"), httpx2.DecodingError("bad gzip"), ValueError("x")],
    ids=lambda e: f"{type(e).__module__.split('.')[0]}.{type(e).__name__}",
)
def test_other_errors_of_those_stacks_are_not_transport_failures(exc: BaseException) -> None:
    assert classify(exc).kind is FailureKind.BAD_REQUEST


def rate_limited(violations: list[Any], message: str = "quota") -> genai_errors.APIError:
    body = {
        "error": {
            "code": 429,
            "message": message,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations}
            ],
        }
    }
    return sdk_error((429, body))


def test_junk_before_a_violation_does_not_hide_it() -> None:
    good = {"quotaMetric": METRIC, "quotaId": RPM, "quotaValue": "10"}
    assert classify(rate_limited(["junk", good])).violations == (QuotaViolation(RPM, 10),)


def test_a_violation_without_a_quota_id_names_no_quota() -> None:
    failure = classify(rate_limited([{"quotaMetric": METRIC, "quotaValue": "3"}]))
    assert failure.violations == (QuotaViolation("", 3),)
    assert failure.reason == "rate limited"


def test_401_is_a_bad_key_with_its_status_or_unauthenticated() -> None:
    plain = sdk_error((401, {"error": {"code": 401, "message": "no", "status": "SOME_STATUS"}}))
    assert (classify(plain).kind, classify(plain).reason) == (
        FailureKind.BAD_KEY,
        "401 SOME_STATUS",
    )
    bare = sdk_error((401, {"error": {"code": 401, "message": "no"}}))
    assert classify(bare).reason == "401 UNAUTHENTICATED"


def test_an_error_without_a_status_has_only_its_code_as_reason() -> None:
    error = genai_errors.ServerError(503, {"error": {"code": 503, "message": "busy"}})
    assert error.status is None
    assert (classify(error).kind, classify(error).reason) == (FailureKind.SERVER_FAULT, "503")


def test_the_pools_own_errors_say_what_to_do() -> None:
    never = str(AllKeysRateLimitedError(math.inf))
    assert never == (
        "All Gemini API keys are rate limited and none will free: every project left has a "
        "limit of 0 for this model. Wait and retry, raise max_wait, or add keys of another "
        "project."
    )
    soon = str(AllKeysRateLimitedError(12.34))
    assert soon.startswith("All Gemini API keys are rate limited; the next key frees in 12.3 ")
    assert "()" not in soon
    assert str(AllKeysRateLimitedError(1, "…aaaa cooling")).count("(…aaaa cooling).") == 1
    none_left = str(NoValidKeysError({}))
    assert none_left == (
        "No valid Gemini API key is left in the pool (no keys). Replace the keys "
        "(pool.add_keys / reload_keys) or lift a quarantine with pool.reset_key."
    )

"""The classifier against Google's own bodies, not ours.

Every body in ``tests/fixtures/google_errors`` was quoted in a public bug report (its link is
in the file). Each one goes through the real SDK (``APIError.raise_for_response`` on a real
``httpx2.Response``) and through langchain-google-genai's own error wrappers, exactly as a
failed call on a member model would raise it, and must be classified as the pool's table says.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from google.genai import errors as genai_errors
from langchain_google_genai import chat_models as lc

from langchain_gemini_pool._errors import FailureKind, QuotaViolation, classify
from tests.google_errors import load, names
from tests.unit_tests.test_errors import URL, langchain_error

RPM = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
RPD = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
TPM = "GenerateContentInputTokensPerModelPerMinute-FreeTier"

K = FailureKind
EXPECTED: dict[str, tuple[FailureKind, str]] = {
    "429_input_tokens_per_minute": (K.RATE_LIMITED, f"rate limited ({TPM})"),
    "429_requests_per_day": (K.RATE_LIMITED, f"rate limited ({RPD})"),
    "429_quota_zero": (K.RATE_LIMITED, f"rate limited ({TPM}, {RPD}, {RPM})"),
    "400_api_key_invalid": (K.BAD_KEY, "400 API_KEY_INVALID"),
    "400_api_key_expired": (K.BAD_KEY, "400 API_KEY_INVALID"),
    "403_key_leaked": (K.BAD_KEY, "403 leaked"),
    "403_consumer_suspended": (K.BAD_KEY, "403 CONSUMER_SUSPENDED"),
    "403_service_disabled": (K.BAD_KEY, "403 SERVICE_DISABLED"),
    "403_api_key_service_blocked": (K.BAD_KEY, "403 API_KEY_SERVICE_BLOCKED"),
    # one model refused to a key that serves others: not a dead key, never quarantined
    "403_caller_lacks_permission": (K.BAD_REQUEST, "403 PERMISSION_DENIED"),
    "404_model_not_found": (K.BAD_REQUEST, "404 NOT_FOUND"),
    "500_internal": (K.SERVER_FAULT, "500 INTERNAL"),
    "503_overloaded": (K.SERVER_FAULT, "503 UNAVAILABLE"),
}
# The exception langchain-google-genai raises for each status (re-raised ``from`` the SDK's).
WRAPPERS = {
    400: lc.GoogleInvalidRequestError,
    403: lc.GooglePermissionDeniedError,
    404: lc.GoogleModelNotFoundError,
    429: lc.GoogleRateLimitError,
    500: lc.GoogleAPIError,
    503: lc.GoogleAPIError,
}


def real_error(name: str) -> genai_errors.APIError:
    """The SDK's own exception for the fixture's HTTP response."""
    doc = load(name)
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(doc["http_status"], json=doc["body"], request=request)
    with pytest.raises(genai_errors.APIError) as info:
        genai_errors.APIError.raise_for_response(response)
    return info.value


def test_every_fixture_is_expected_and_names_its_source() -> None:
    assert set(names()) == set(EXPECTED)
    for name in names():
        doc = load(name)
        assert doc["source"].startswith("https://"), name
        assert doc["quoted_as"] and doc["note"], name
        body: dict[str, Any] = doc["body"]
        assert body["error"]["code"] == doc["http_status"], name
        assert "AIza" not in str(body).replace("AIza…REDACTED", ""), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_bodies_are_classified_through_the_sdk_and_langchain(name: str) -> None:
    kind, reason = EXPECTED[name]
    error = real_error(name)
    code = load(name)["http_status"]
    expected_sdk = genai_errors.ClientError if code < 500 else genai_errors.ServerError
    assert type(error) is expected_sdk
    wrapped = langchain_error(error)
    assert type(wrapped) is WRAPPERS[code]
    for exc in (error, wrapped):
        failure = classify(exc)
        assert (failure.kind, failure.reason) == (kind, reason)


def test_real_429s_give_their_waits_and_quotas() -> None:
    tokens = classify(real_error("429_input_tokens_per_minute"))
    assert tokens.retry_after_s == 26.0  # RetryInfo: this message has no "retry in"
    assert tokens.violations == (QuotaViolation(TPM, 250_000),)
    assert tokens.violations[0].dimension == "tpm"
    assert not tokens.per_day

    daily = classify(real_error("429_requests_per_day"))
    assert daily.per_day
    assert daily.violations == (QuotaViolation(RPD, 250),)
    assert daily.violations[0].dimension == "rpd"

    zero = classify(real_error("429_quota_zero"))
    assert zero.retry_after_s == pytest.approx(10.689924287)  # the message beats "10s"
    assert zero.per_day
    # no quotaValue in any violation: the 0 comes from the message's "limit: 0" lines
    assert zero.violations == (
        QuotaViolation(RPD, 0),
        QuotaViolation(RPM, 0),
        QuotaViolation(TPM, 0),
    )
    assert [v.dimension for v in zero.violations] == ["rpd", "rpm", "tpm"]


def test_a_message_limit_never_overrides_a_quota_value_or_guesses_between_two() -> None:
    doc = load("429_input_tokens_per_minute")
    error = doc["body"]["error"]
    metric = error["details"][0]["violations"][0]["quotaMetric"]
    error["message"] += f"\n* Quota exceeded for metric: {metric}, limit: 9, model: m\n"
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(429, json=doc["body"], request=request)
    with pytest.raises(genai_errors.APIError) as info:
        genai_errors.APIError.raise_for_response(response)
    assert classify(info.value).violations == (QuotaViolation(TPM, 250_000),)
    del error["details"][0]["violations"][0]["quotaValue"]
    error["message"] += f"* Quota exceeded for metric: {metric}, limit: 8, model: m\n"
    response = httpx2.Response(429, json=doc["body"], request=request)
    with pytest.raises(genai_errors.APIError) as info:
        genai_errors.APIError.raise_for_response(response)
    assert classify(info.value).violations == (QuotaViolation(TPM, None),)

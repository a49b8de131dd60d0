"""The emulator's error bodies have the shape of Google's real ones.

For each case the emulator models, its body (served over loopback HTTP) is compared with the
real body in ``tests/fixtures/google_errors``: same HTTP status and ``status``; every detail
``@type`` the real body has, with the same field names (ErrorInfo: same reason and its
metadata keys; QuotaFailure: the same keys per violation, so a ``quotaValue`` Google leaves
out is left out too); and the same message where Google's is a fixed text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from langchain_gemini_pool import FakeGeminiServer, Faults, ManualClock, Quota
from tests.google_errors import load, names

T0 = 1_760_000_000.0
KEY = "fake-key-shape"
MODEL = "gemini-2.5-flash"

Ask = Callable[[FakeGeminiServer], httpx2.Response]


def post(server: FakeGeminiServer, *, model: str = MODEL, text: str = "hi") -> httpx2.Response:
    with httpx2.Client(base_url=server.base_url) as http:
        return http.post(
            f"/v1beta/models/{model}:generateContent",
            headers={"x-goog-api-key": KEY},
            json={"contents": [{"role": "user", "parts": [{"text": text}]}]},
        )


def second(server: FakeGeminiServer) -> httpx2.Response:
    assert post(server).status_code == 200
    return post(server)


def bad(kind: str) -> dict[str, Any]:
    return {"bad_keys": {KEY: kind}}


# case -> (FakeGeminiServer arguments, how to provoke the error, extra detail types allowed)
CASES: dict[str, tuple[dict[str, Any], Ask, set[str]]] = {
    "429_input_tokens_per_minute": (
        {"quotas": Quota(tpm=10)},
        lambda s: post(s, text="x" * 200),
        set(),
    ),
    "429_requests_per_day": ({"quotas": Quota(rpd=1)}, second, set()),
    "429_quota_zero": ({"zero_quota_models": [MODEL]}, post, set()),
    "400_api_key_invalid": (bad("invalid"), post, set()),
    "400_api_key_expired": (bad("expired"), post, set()),
    "403_key_leaked": (bad("leaked"), post, set()),
    "403_consumer_suspended": (bad("suspended"), post, set()),
    # newer SERVICE_DISABLED bodies of other Google APIs also carry a LocalizedMessage
    "403_service_disabled": (bad("service_disabled"), post, {"LocalizedMessage"}),
    "404_model_not_found": (
        {"unknown_models": ["gemini-2.0-flash-live-001"]},
        lambda s: post(s, model="gemini-2.0-flash-live-001"),
        set(),
    ),
    "500_internal": ({"faults": Faults(schedule=[500])}, post, set()),
    "503_overloaded": ({"faults": Faults(schedule=[503])}, post, set()),
}
NOT_EMULATED = {
    "403_api_key_service_blocked": "the emulator has no API-restricted keys",
    "403_caller_lacks_permission": "the emulator has no per-model permissions",
}
FIXED_TEXT = {
    "400_api_key_invalid",
    "400_api_key_expired",
    "403_key_leaked",
    "500_internal",
    "503_overloaded",
}


def short(detail: dict[str, Any]) -> str:
    return str(detail["@type"]).rsplit(".", 1)[-1]


def shape(body: dict[str, Any]) -> dict[str, Any]:
    """What must match: status, and per detail type its fields (and their inner keys)."""
    error = body["error"]
    details: dict[str, Any] = {}
    for detail in error.get("details", []):
        fields: dict[str, Any] = {"fields": set(detail)}
        if short(detail) == "ErrorInfo":
            fields |= {"reason": detail["reason"], "metadata": set(detail["metadata"])}
        if short(detail) == "QuotaFailure":
            fields["violations"] = {frozenset(v) for v in detail["violations"]}
            fields["dimensions"] = {frozenset(v["quotaDimensions"]) for v in detail["violations"]}
        if short(detail) == "Help":
            fields["links"] = {frozenset(link) for link in detail["links"]}
        details[short(detail)] = fields
    return {"code": error["code"], "status": error["status"], "details": details}


def test_every_fixture_is_emulated_or_says_why_not() -> None:
    assert set(CASES) | set(NOT_EMULATED) == set(names())
    assert not set(CASES) & set(NOT_EMULATED)


@pytest.mark.parametrize("name", sorted(CASES))
def test_emulator_body_has_the_shape_of_googles(name: str) -> None:
    kwargs, ask, extra_types = CASES[name]
    real = load(name)
    with FakeGeminiServer(clock=ManualClock(T0), **kwargs) as server:
        answer = ask(server)
    assert answer.status_code == real["http_status"]
    assert answer.headers["content-type"].startswith("application/json")
    ours, theirs = shape(answer.json()), shape(real["body"])
    assert (ours["code"], ours["status"]) == (theirs["code"], theirs["status"])
    assert set(ours["details"]) - set(theirs["details"]) <= extra_types
    for kind, real_fields in theirs["details"].items():
        assert kind in ours["details"], f"{name}: no {kind} detail"
        mine = ours["details"][kind]
        assert mine["fields"] == real_fields["fields"], f"{name}: {kind} fields"
        for part in ("reason", "violations", "dimensions", "links"):
            assert mine.get(part) == real_fields.get(part), f"{name}: {kind} {part}"
        if "metadata" in real_fields:
            assert real_fields["metadata"] <= mine["metadata"], f"{name}: {kind} metadata"
    if name in FIXED_TEXT:
        assert answer.json()["error"]["message"] == real["body"]["error"]["message"]

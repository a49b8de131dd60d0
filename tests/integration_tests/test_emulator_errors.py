"""Each Google error body, as the emulator sends it, surfaces as the LangChain exception the
real body produces: sync and async, over aiohttp and httpx2. Raw bodies are checked too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import (
    GoogleAPIError,
    GoogleInvalidRequestError,
    GoogleModelNotFoundError,
    GooglePermissionDeniedError,
    GoogleRateLimitError,
)

from langchain_gemini_pool import ManualClock
from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

MODEL = "gemini-2.5-flash"
T0 = 1_772_445_610.0  # 2026-03-02 10:00:10 UTC: a 60 s window has 50 s left
GOOD = "fake-key-0001"
BAD = {
    "invalid": "fake-key-inv1",
    "expired": "fake-key-exp2",
    "leaked": "fake-key-lek3",
    "service_disabled": "fake-key-svc4",
    "suspended": "fake-key-sus5",
    "denied": "fake-key-den6",
}
UNKNOWN = "gemini-9-ultra"

# (name, key, model, faults, expected exception, expected HTTP code)
CASES: list[tuple[str, str, str, Faults | None, type[Exception], int]] = [
    ("rate_limited", GOOD, MODEL, Faults(schedule=[429]), GoogleRateLimitError, 429),
    ("invalid", BAD["invalid"], MODEL, None, GoogleInvalidRequestError, 400),
    ("expired", BAD["expired"], MODEL, None, GoogleInvalidRequestError, 400),
    ("leaked", BAD["leaked"], MODEL, None, GooglePermissionDeniedError, 403),
    ("service_disabled", BAD["service_disabled"], MODEL, None, GooglePermissionDeniedError, 403),
    ("suspended", BAD["suspended"], MODEL, None, GooglePermissionDeniedError, 403),
    ("denied", BAD["denied"], MODEL, None, GooglePermissionDeniedError, 403),
    ("unknown_model", GOOD, UNKNOWN, None, GoogleModelNotFoundError, 404),
    ("internal", GOOD, MODEL, Faults(schedule=[500]), GoogleAPIError, 500),
    ("unavailable", GOOD, MODEL, Faults(schedule=[503]), GoogleAPIError, 503),
]


def _server(faults: Faults | None) -> FakeGeminiServer:
    return FakeGeminiServer(
        bad_keys={key: kind for kind, key in BAD.items()},
        unknown_models=[UNKNOWN],
        faults=faults,
        clock=ManualClock(T0),
    )


def _llm(server: FakeGeminiServer, key: str, model: str, transport: str) -> Any:
    extra: dict[str, Any] = {}
    if transport == "httpx2":
        extra["client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    return ChatGoogleGenerativeAI(
        model=model, base_url=server.base_url, google_api_key=key, max_retries=1, **extra
    )


def _check(exc: BaseException, expected: type[Exception], code: int) -> None:
    assert type(exc) is expected
    cause = exc if isinstance(exc, GoogleAPIError) else exc.__cause__
    assert cause is not None
    assert cause.code == code  # type: ignore[attr-defined]
    body = cause.details  # type: ignore[attr-defined]
    assert body["error"]["code"] == code
    if code == 429:
        details = body["error"]["details"]
        retry = next(d for d in details if d["@type"].endswith("RetryInfo"))
        assert retry["retryDelay"] == "50s"
        assert body["error"]["message"].endswith("Please retry in 50.00s.")


@pytest.mark.parametrize(("name", "key", "model", "faults", "expected", "code"), CASES)
def test_sync_invoke_and_stream_raise_the_matching_exception(
    name: str, key: str, model: str, faults: Faults | None, expected: type[Exception], code: int
) -> None:
    calls: list[Callable[[Any], Any]] = [
        lambda llm: llm.invoke("hi"),
        lambda llm: list(llm.stream("hi")),
    ]
    with _server(faults) as server:
        for call in calls:
            server.faults = faults or Faults()
            with pytest.raises(expected) as info:
                call(_llm(server, key, model, "sync"))
            _check(info.value, expected, code)
        assert server.stats()["total"]["requests"] == 2


@pytest.mark.parametrize("transport", ["aiohttp", "httpx2"])
@pytest.mark.parametrize(("name", "key", "model", "faults", "expected", "code"), CASES)
async def test_async_invoke_and_stream_raise_the_matching_exception(
    name: str,
    key: str,
    model: str,
    faults: Faults | None,
    expected: type[Exception],
    code: int,
    transport: str,
) -> None:
    with _server(faults) as server:
        llm = _llm(server, key, model, transport)
        with pytest.raises(expected) as info:
            await llm.ainvoke("hi")
        _check(info.value, expected, code)
        server.faults = faults or Faults()
        with pytest.raises(expected) as info:
            async for _ in llm.astream("hi"):
                pass
        _check(info.value, expected, code)


def _post(server: FakeGeminiServer, key: str | None, body: bytes = b"", path: str = "") -> Any:
    headers = {"x-goog-api-key": key} if key else {}
    path = path or f"/v1/models/{MODEL}:generateContent"
    content = body or b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
    with httpx2.Client(base_url=server.base_url) as http:
        return http.post(path, headers=headers, content=content)


def test_bad_key_bodies_are_googles() -> None:
    with _server(None) as server:
        invalid = _post(server, BAD["invalid"])
        assert invalid.status_code == 400
        assert invalid.headers["content-type"].startswith("application/json")
        error = invalid.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["message"] == "API key not valid. Please pass a valid API key."
        info, localized = error["details"]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
        assert info["reason"] == "API_KEY_INVALID"
        assert info["domain"] == "googleapis.com"
        assert info["metadata"] == {"service": "generativelanguage.googleapis.com"}
        assert localized["@type"] == "type.googleapis.com/google.rpc.LocalizedMessage"
        expired = _post(server, BAD["expired"]).json()["error"]
        assert expired["message"] == "API key expired. Please renew the API key."
        leaked = _post(server, BAD["leaked"]).json()["error"]
        assert leaked == {
            "code": 403,
            "message": "Your API key was reported as leaked. Please use another API key.",
            "status": "PERMISSION_DENIED",
        }
        disabled = _post(server, BAD["service_disabled"]).json()["error"]
        assert disabled["details"][0]["reason"] == "SERVICE_DISABLED"
        assert disabled["details"][0]["metadata"]["consumer"].startswith("projects/")
        suspended = _post(server, BAD["suspended"]).json()["error"]
        assert suspended["details"][0]["reason"] == "CONSUMER_SUSPENDED"
        denied = _post(server, BAD["denied"]).json()["error"]
        assert denied["message"] == "Your project has been denied access."
        missing = _post(server, None)
        assert missing.status_code == 403
        assert "unregistered callers" in missing.json()["error"]["message"]
        with httpx2.Client(base_url=server.base_url) as http:
            by_query = http.post(
                f"/v1beta/models/{MODEL}:generateContent?key={BAD['leaked']}",
                content=b'{"contents": [{"parts": [{"text": "hi"}]}]}',
            )
        assert by_query.status_code == 403
        stats = server.stats()
        assert stats["total"]["client_errors"] == 8
        assert all(BAD["invalid"] not in fp for fp in stats["keys"])


def test_listed_keys_only_and_unknown_keys_get_api_key_invalid() -> None:
    with FakeGeminiServer(keys=["fake-key-aaaa"]) as server:
        assert _post(server, "fake-key-aaaa").status_code == 200
        refused = _post(server, "fake-key-zzzz")
        assert refused.status_code == 400
        assert refused.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        assert server.stats()["keys"]["…zzzz"]["project"] is None


def test_malformed_json_unknown_path_and_wrong_method_are_google_shaped() -> None:
    with FakeGeminiServer() as server:
        bad_json = _post(server, GOOD, body=b"{not json")
        assert bad_json.status_code == 400
        assert bad_json.headers["content-type"].startswith("application/json")
        assert bad_json.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert "Invalid JSON payload" in bad_json.json()["error"]["message"]
        empty = _post(server, GOOD, body=b'{"contents": []}')
        assert empty.status_code == 400
        assert "contents is not specified" in empty.json()["error"]["message"]
        with httpx2.Client(base_url=server.base_url) as http:
            nowhere = http.get("/v2/whatever", headers={"x-goog-api-key": GOOD})
            wrong = http.delete(f"/v1/models/{MODEL}", headers={"x-goog-api-key": GOOD})
            verb = http.post(f"/v1/models/{MODEL}:explode", headers={"x-goog-api-key": GOOD})
        for response in (nowhere, wrong, verb):
            assert response.status_code == 404
            assert response.json()["error"]["status"] == "NOT_FOUND"
            assert "Traceback" not in response.text


def test_bad_configuration_is_refused_clearly_without_showing_keys() -> None:
    with pytest.raises(ValueError, match="one of invalid, expired") as info:
        FakeGeminiServer(bad_keys={"secret-key-1234": "stolen"})
    assert "secret-key" not in str(info.value)
    assert "…1234" in str(info.value)
    with pytest.raises(TypeError, match="wrap a single key in a list"):
        FakeGeminiServer(keys="secret-key-1234")
    with pytest.raises(ValueError, match="whole number"):
        Quota(rpm=-1)
    with pytest.raises(TypeError, match="quotas= takes"):
        FakeGeminiServer(quotas={"p": 5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="add up to at most 1"):
        Faults(error_rate=0.7, unavailable_rate=0.7)
    with pytest.raises(ValueError, match="schedule items"):
        Faults(schedule=[418])
    with pytest.raises(RuntimeError, match="not running"):
        _ = FakeGeminiServer().base_url

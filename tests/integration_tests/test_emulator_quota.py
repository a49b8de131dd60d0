"""Quotas per project and model on a ManualClock: windows, tokens, days, shared projects."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleRateLimitError

from langchain_gemini_pool import ManualClock
from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool.testing import FakeGeminiServer, Quota, count_tokens

MODEL = "gemini-2.5-flash"
T0 = 1_772_445_610.0  # 2026-03-02 10:00:10 UTC: a 60 s window has 50 s left
RPM = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
TPM = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
RPD = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


def ask(server: FakeGeminiServer, key: str, text: str = "hi", model: str = MODEL) -> Any:
    with httpx2.Client(base_url=server.base_url) as http:
        return http.post(
            f"/v1/models/{model}:generateContent",
            headers={"x-goog-api-key": key},
            json={"contents": [{"role": "user", "parts": [{"text": text}]}]},
        )


def details(response: Any) -> dict[str, Any]:
    """The 429's rpc details by short type name."""
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    return {d["@type"].rsplit(".", 1)[-1]: d for d in error["details"]} | {"message": error}


def test_requests_per_window_refuse_then_recover_with_exact_retry_info() -> None:
    clock = ManualClock(T0)
    with FakeGeminiServer(quotas=Quota(rpm=2), clock=clock) as server:
        assert [ask(server, "fake-key-0001").status_code for _ in range(2)] == [200, 200]
        refused = details(ask(server, "fake-key-0001"))
        (violation,) = refused["QuotaFailure"]["violations"]
        assert violation == {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": RPM,
            "quotaDimensions": {"location": "global", "model": MODEL},
            "quotaValue": "2",
        }
        assert refused["RetryInfo"]["retryDelay"] == "50s"
        assert refused["message"]["message"].endswith("Please retry in 50.00s.")
        assert "links" in refused["Help"]
        clock.advance(17.25)
        later = details(ask(server, "fake-key-0001"))
        assert later["RetryInfo"]["retryDelay"] == "32s"
        assert later["message"]["message"].endswith("Please retry in 32.75s.")
        clock.advance(32.75)  # exactly the next window
        assert ask(server, "fake-key-0001").status_code == 200
        total = server.stats()["total"]
        assert (total["requests"], total["ok"], total["rate_limited"]) == (5, 3, 2)


def test_input_tokens_per_window() -> None:
    clock = ManualClock(T0)
    prompt = "x" * 32  # 8 tokens
    assert count_tokens(prompt) == 8
    with FakeGeminiServer(quotas=Quota(tpm=10), clock=clock) as server:
        assert ask(server, "fake-key-0001", prompt).status_code == 200
        refused = details(ask(server, "fake-key-0001", prompt))
        assert [v["quotaId"] for v in refused["QuotaFailure"]["violations"]] == [TPM]
        assert refused["QuotaFailure"]["violations"][0]["quotaValue"] == "10"
        assert ask(server, "fake-key-0001", "xx").status_code == 200  # 1 token still fits
        clock.advance(50)
        assert ask(server, "fake-key-0001", prompt).status_code == 200


def test_requests_per_day_reset_at_pacific_midnight() -> None:
    clock = ManualClock(T0)
    with FakeGeminiServer(quotas=Quota(rpd=2), clock=clock) as server:
        assert ask(server, "fake-key-0001").status_code == 200
        clock.advance(120)
        assert ask(server, "fake-key-0001").status_code == 200
        clock.advance(3600)
        refused = details(ask(server, "fake-key-0001"))
        assert [v["quotaId"] for v in refused["QuotaFailure"]["violations"]] == [RPD]
        midnight = next_pacific_midnight(clock.now())
        assert refused["RetryInfo"]["retryDelay"] == f"{int(midnight - clock.now())}s"
        clock.set(midnight - 1)
        assert ask(server, "fake-key-0001").status_code == 429
        clock.set(midnight)
        assert ask(server, "fake-key-0001").status_code == 200


def test_keys_of_one_project_share_its_quota_and_models_count_apart() -> None:
    clock = ManualClock(T0)
    keys = {"team": ["fake-key-aaaa", "fake-key-bbbb"], "solo": ["fake-key-cccc"]}
    quotas = {"team": {MODEL: Quota(rpm=1), "*": Quota(rpm=3)}, "*": Quota(rpm=1)}
    with FakeGeminiServer(keys=keys, quotas=quotas, clock=clock) as server:
        assert ask(server, "fake-key-aaaa").status_code == 200
        assert ask(server, "fake-key-bbbb").status_code == 429  # same project, same model
        assert ask(server, "fake-key-cccc").status_code == 200  # another project
        other = "gemini-2.5-pro"
        assert [ask(server, "fake-key-bbbb", model=other).status_code for _ in range(4)] == [
            200,
            200,
            200,
            429,
        ]
        stats = server.stats()
        assert stats["keys"]["…bbbb"]["project"] == "team"
        assert stats["projects"]["team"]["rate_limited"] == 2
        assert stats["projects"]["solo"]["ok"] == 1


def test_zero_quota_model_has_no_free_tier() -> None:
    with FakeGeminiServer(zero_quota_models=["gemini-2.5-pro"], clock=ManualClock(T0)) as server:
        answer = ask(server, "fake-key-0001", model="gemini-2.5-pro")
        refused = details(answer)
        # like Google's: a proto3 zero is left out, the 0 shows only in the message
        violations = refused["QuotaFailure"]["violations"]
        assert {v["quotaId"] for v in violations} == {TPM, RPM, RPD}
        assert all("quotaValue" not in v for v in violations)
        assert answer.json()["error"]["message"].count("limit: 0, model: gemini-2.5-pro") == 3
        assert ask(server, "fake-key-0001").status_code == 200


def test_scaled_down_window_and_unlimited_side_routes() -> None:
    clock = ManualClock(T0)
    with FakeGeminiServer(quotas=Quota(rpm=1), window_s=2.0, clock=clock) as server:
        assert ask(server, "fake-key-0001").status_code == 200
        refused = details(ask(server, "fake-key-0001"))
        assert refused["RetryInfo"]["retryDelay"] == "2s"  # 10 % 2 == 0: a whole window left
        with httpx2.Client(base_url=server.base_url) as http:
            head = {"x-goog-api-key": "fake-key-0001"}
            body = {"contents": [{"parts": [{"text": "hi"}]}]}
            for _ in range(5):
                assert http.post(f"/v1/models/{MODEL}:countTokens", headers=head, json=body)
                assert http.get("/v1/models", headers=head).status_code == 200
                assert http.get(f"/v1/models/{MODEL}", headers=head).status_code == 200
        clock.advance(2)
        assert ask(server, "fake-key-0001").status_code == 200
        assert server.stats()["total"]["requests"] == 3


@pytest.mark.parametrize("transport", ["sync", "aiohttp", "httpx2"])
async def test_the_sdk_surfaces_a_quota_429_with_readable_retry_info(transport: str) -> None:
    extra: dict[str, Any] = {}
    if transport == "httpx2":
        extra["client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    with FakeGeminiServer(quotas=Quota(rpm=1), clock=ManualClock(T0)) as server:
        llm = ChatGoogleGenerativeAI(
            model=MODEL,
            base_url=server.base_url,
            google_api_key="fake-key-0001",
            max_retries=1,
            **extra,
        )
        run = llm.invoke if transport == "sync" else None
        if run is not None:
            run("one")
            with pytest.raises(GoogleRateLimitError) as info:
                run("two")
        else:
            await llm.ainvoke("one")
            with pytest.raises(GoogleRateLimitError) as info:
                await llm.ainvoke("two")
        rpc = info.value.__cause__.details["error"]["details"]  # type: ignore[union-attr]
        retry = next(d for d in rpc if d["@type"].endswith("RetryInfo"))
        assert retry["retryDelay"] == "50s"
        assert server.stats()["total"]["requests"] == 2  # max_retries=1: no hidden retry

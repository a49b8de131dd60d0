"""The emulator's random 429s and stream cuts, and stats counted per request label."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from langchain_gemini_pool import mask_key
from langchain_gemini_pool.testing import FakeGeminiServer, Faults

MODEL = "gemini-2.5-flash"
KEY = "fake-key-0001"


def body(text: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def test_random_429s_and_cuts_are_drawn_seeded_and_cuts_hit_only_streams() -> None:
    faults = Faults(rate_limit_rate=0.3, cut_rate=0.3, seed=3)
    runs = []
    for _ in range(2):
        with (
            FakeGeminiServer(faults=faults) as server,
            httpx2.Client(base_url=server.base_url, headers={"x-goog-api-key": KEY}) as http,
        ):
            seen = []
            for i in range(60):
                stream = i % 2 == 1
                verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
                r = http.post(f"/v1/models/{MODEL}:{verb}", json=body("one two three four"))
                cut = stream and r.status_code == 200 and '"error"' in r.text
                seen.append("cut" if cut else str(r.status_code))
                if not stream:
                    assert r.status_code in (200, 429)
            stats = server.stats()["total"]
            assert stats["rate_limited"] == seen.count("429")
            assert stats["server_errors"] == seen.count("cut")
            runs.append(seen)
    assert runs[0] == runs[1]
    assert {"200", "429", "cut"} <= set(runs[0])


def test_rates_still_add_up_to_at_most_one() -> None:
    with pytest.raises(ValueError, match=r"rate_limit_rate=0\.6, cut_rate=0\.5"):
        Faults(rate_limit_rate=0.6, cut_rate=0.5)


def test_stats_are_also_counted_under_each_requests_label() -> None:
    def label(request: dict[str, Any]) -> str | None:
        word = request["contents"][-1]["parts"][0]["text"].split()[0]
        return word if word.startswith("r") else None

    with (
        FakeGeminiServer(faults=Faults(schedule=[503]), label=label) as server,
        httpx2.Client(base_url=server.base_url, headers={"x-goog-api-key": KEY}) as http,
    ):
        for text in ["r1 hello", "r1 again", "r2 more", "plain"]:
            http.post(f"/v1/models/{MODEL}:generateContent", json=body(text))
        stats = server.stats()
    labels = stats["labels"]
    assert set(labels) == {"r1", "r2"}
    r1 = labels["r1"]["keys"][mask_key(KEY)]
    assert (r1["requests"], r1["server_errors"], r1["ok"]) == (2, 1, 1)
    assert labels["r2"]["total"]["ok"] == 1
    assert (
        labels["r1"]["total"]["prompt_tokens"] + labels["r2"]["total"]["prompt_tokens"]
        < (stats["total"]["prompt_tokens"])
    )


def test_a_failing_label_callable_counts_the_request_unlabelled() -> None:
    def broken(request: dict[str, Any]) -> str:
        raise RuntimeError("oops")

    with (
        FakeGeminiServer(label=broken) as server,
        httpx2.Client(base_url=server.base_url, headers={"x-goog-api-key": KEY}) as http,
    ):
        assert http.post(f"/v1/models/{MODEL}:generateContent", json=body("hi")).status_code == 200
        assert server.stats()["labels"] == {}
        assert server.stats()["total"]["ok"] == 1
    with pytest.raises(TypeError, match="label must be"):
        FakeGeminiServer(label="r1")  # type: ignore[arg-type]

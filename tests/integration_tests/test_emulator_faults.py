"""Faults, streams cut mid-way, stats, concurrency, lifecycle and the command line."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any

import httpx2
import pytest
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import GoogleAPIError

from langchain_gemini_pool.testing import FakeGeminiServer, Faults, count_tokens

MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
LONG = " ".join(f"word{i}" for i in range(12))  # a reply long enough for several chunks


def outcomes(server: FakeGeminiServer, count: int, key: str = "fake-key-0001") -> list[str]:
    """The status (or "reset") of ``count`` sequential generate requests."""
    seen = []
    with httpx2.Client(base_url=server.base_url) as http:
        for _ in range(count):
            try:
                response = http.post(
                    f"/v1/models/{MODEL}:generateContent",
                    headers={"x-goog-api-key": key},
                    json=BODY,
                )
                seen.append(str(response.status_code))
            except httpx2.TransportError:
                seen.append("reset")
    return seen


def test_seeded_faults_repeat_and_schedule_comes_first() -> None:
    faults = Faults(error_rate=0.2, unavailable_rate=0.2, reset_rate=0.1, seed=7)
    runs = []
    for _ in range(2):
        with FakeGeminiServer(faults=faults) as server:
            runs.append(outcomes(server, 40))
            stats = server.stats()["total"]
            assert stats["resets"] == runs[-1].count("reset")
            assert stats["server_errors"] == runs[-1].count("500") + runs[-1].count("503")
    assert runs[0] == runs[1]
    assert {"200", "500", "503", "reset"} <= set(runs[0])
    with FakeGeminiServer(faults=Faults(schedule=[None, 500, 503, 429, "reset"])) as server:
        assert outcomes(server, 6) == ["200", "500", "503", "429", "reset", "200"]
        server.faults = Faults(schedule=["cut", 503])  # a new plan starts its own schedule
        assert outcomes(server, 3) == ["reset", "503", "200"]


def test_a_dropped_connection_reaches_the_sdk_as_an_error() -> None:
    with FakeGeminiServer(faults=Faults(schedule=["reset"])) as server:
        llm = ChatGoogleGenerativeAI(
            model=MODEL, base_url=server.base_url, google_api_key="fake-key-0001", max_retries=1
        )
        with pytest.raises(httpx2.RemoteProtocolError, match="disconnected"):
            llm.invoke("hi")
        assert llm.invoke("hi").text == "Echo: hi"
        assert server.stats()["total"]["resets"] == 1


@pytest.mark.parametrize("transport", ["sync", "aiohttp", "httpx2"])
async def test_stream_cut_after_k_chunks_raises_after_k_chunks(transport: str) -> None:
    extra: dict[str, Any] = {}
    if transport == "httpx2":
        extra["client_args"] = {"transport": httpx2.AsyncHTTPTransport()}
    with FakeGeminiServer(faults=Faults(stream_cut_after=2)) as server:
        llm = ChatGoogleGenerativeAI(
            model=MODEL,
            base_url=server.base_url,
            google_api_key="fake-key-0001",
            max_retries=1,
            **extra,
        )
        got: list[str] = []

        async def consume() -> None:
            if transport == "sync":
                for chunk in llm.stream(LONG):
                    got.append(chunk.text)
            else:
                async for achunk in llm.astream(LONG):
                    got.append(achunk.text)

        with pytest.raises(GoogleAPIError) as info:
            await consume()
        assert info.value.code == 503
        assert len([t for t in got if t]) == 2
        reply = "Echo: " + LONG
        assert reply.startswith("".join(got))
        total = server.stats()["total"]
        assert total["server_errors"] == 1
        assert total["candidates_tokens"] == count_tokens("".join(got))
        assert total["prompt_tokens"] == count_tokens(LONG)


def test_raw_stream_is_sse_with_running_totals_and_a_final_error_event() -> None:
    with (
        FakeGeminiServer(faults=Faults(schedule=[None, "cut"])) as server,
        httpx2.Client(base_url=server.base_url) as http,
    ):
        events = []
        for _ in range(2):
            response = http.post(
                f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                headers={"x-goog-api-key": "fake-key-0001"},
                json={"contents": [{"role": "user", "parts": [{"text": LONG}]}]},
            )
            assert response.headers["content-type"] == "text/event-stream"
            assert response.text.endswith("\r\n\r\n")
            events.append([json.loads(e[6:]) for e in response.text.split("\r\n\r\n") if e])
        full, cut = events
        assert len(full) >= 3
        usage = [e["usageMetadata"]["candidatesTokenCount"] for e in full]
        assert usage == sorted(usage)
        assert [("finishReason" in e["candidates"][0]) for e in full] == [False] * (
            len(full) - 1
        ) + [True]
        assert all(e["responseId"] == full[0]["responseId"] for e in full)
        assert list(cut[-1]) == ["error"]
        assert cut[-1]["error"]["code"] == 503
        assert len(cut) - 1 == len(full) // 2


def test_latency_is_real_and_jitter_bounded() -> None:
    with FakeGeminiServer(faults=Faults(latency_s=0.15, jitter_s=0.05)) as server:
        start = time.perf_counter()
        assert outcomes(server, 2) == ["200", "200"]
        elapsed = time.perf_counter() - start
        assert 0.3 <= elapsed < 1.5


async def test_500_concurrent_requests_over_20_keys_none_dropped() -> None:
    keys = [f"fake-key-{i:04d}" for i in range(20)]
    with FakeGeminiServer(keys=keys) as server:
        limits = httpx2.Limits(max_connections=500, max_keepalive_connections=500)
        async with httpx2.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as http:

            async def one(i: int) -> int:
                response = await http.post(
                    f"/v1/models/{MODEL}:generateContent",
                    headers={"x-goog-api-key": keys[i % 20]},
                    json={"contents": [{"role": "user", "parts": [{"text": f"n{i}"}]}]},
                )
                return response.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(500)))
        assert statuses == [200] * 500
        stats = server.stats()
        assert stats["total"]["ok"] == stats["total"]["requests"] == 500
        assert {row["ok"] for row in stats["keys"].values()} == {25}
        assert len(stats["projects"]) == 20


def test_stats_are_exact_and_served_over_http() -> None:
    with FakeGeminiServer(
        keys={"p1": ["fake-key-aaaa", "fake-key-bbbb"]},
        bad_keys={"fake-key-cccc": "leaked"},
        faults=Faults(schedule=[None, 503, None]),
    ) as server:
        assert outcomes(server, 1, "fake-key-aaaa") == ["200"]
        assert outcomes(server, 2, "fake-key-bbbb") == ["503", "200"]
        assert outcomes(server, 1, "fake-key-cccc") == ["403"]
        stats = server.stats()
        per_reply = {"prompt": count_tokens("hi"), "candidates": count_tokens("Echo: hi")}
        assert stats["keys"]["…aaaa"] == {
            "requests": 1,
            "ok": 1,
            "rate_limited": 0,
            "client_errors": 0,
            "server_errors": 0,
            "resets": 0,
            "prompt_tokens": per_reply["prompt"],
            "candidates_tokens": per_reply["candidates"],
            "thoughts_tokens": 0,
            "total_tokens": per_reply["prompt"] + per_reply["candidates"],
            "project": "p1",
        }
        assert stats["projects"]["p1"]["requests"] == 3
        assert stats["projects"]["p1"]["server_errors"] == 1
        assert stats["projects"]["p1"]["total_tokens"] == 2 * (
            per_reply["prompt"] + per_reply["candidates"]
        )
        assert stats["total"]["client_errors"] == 1
        with httpx2.Client(base_url=server.base_url) as http:
            assert http.get("/_emulator/stats").json() == stats
        text = json.dumps(stats) + repr(server)
        assert "fake-key" not in text
        server.reset_stats()
        assert server.stats()["total"]["requests"] == 0


async def test_start_stop_from_async_code() -> None:
    server = FakeGeminiServer().start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
        async with httpx2.AsyncClient(base_url=server.base_url) as http:
            response = await http.post(
                f"/v1/models/{MODEL}:generateContent",
                headers={"x-goog-api-key": "fake-key-0001"},
                json=BODY,
            )
        assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == "Echo: hi"
    finally:
        server.stop()
        server.stop()
    assert "stopped" in repr(server)


def test_command_line_serves_until_stopped() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed args
        [
            sys.executable,
            "-m",
            "langchain_gemini_pool.testing",
            "--port",
            str(port),
            "--key",
            "fake-key-0001",
            "--rpm",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as http:

            def status(verb: str, key: str) -> int:
                return http.post(
                    f"/v1/models/{MODEL}:{verb}", headers={"x-goog-api-key": key}, json=BODY
                ).status_code

            assert status("countTokens", "fake-key-0001") == 200  # serving, key accepted
            assert status("generateContent", "fake-key-0001") == 429  # --rpm 0: never room
            assert status("generateContent", "fake-key-0002") == 400  # --key: others refused
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0

"""``examples/fastapi_app.py`` under ``uvicorn --workers 4`` sharing one ``DiskState``,
driven over HTTP against the emulator; the emulator's stats are the ground truth."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from langchain_gemini_pool.testing import FakeGeminiServer, Quota

pytest.importorskip("fastapi", reason="pip install -e '.[test]' (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="pip install -e '.[test]' (fastapi, uvicorn)")
httpx = pytest.importorskip("httpx")

ROOT = Path(__file__).resolve().parents[2]
KEY = "fake-key-fastapi-0001"
N, WINDOW, REQUESTS = 10, 10.0, 20  # 10 s windows: a 0.1 s margin for a busy machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, FakeGeminiServer]]:
    server = FakeGeminiServer(keys=[KEY], quotas=Quota(rpm=N), window_s=WINDOW).start()
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if "API_KEY" not in k},
        "PYTHONPATH": str(ROOT),
        "GEMINI_API_KEYS": KEY,
        "GEMINI_BASE_URL": server.base_url,
        "GEMINI_POOL_STATE": str(tmp_path / "state"),
        "GEMINI_POOL_CACHE_DIR": str(tmp_path / "cache"),
        "GEMINI_POOL_LEDGER_DIR": str(tmp_path / "ledger"),
        "GEMINI_POOL_RPM": str(N),
        "GEMINI_POOL_WINDOW_S": str(WINDOW),
    }
    cmd = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--workers", "4"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)  # noqa: S603 (fixed argv)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/status", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert proc.poll() is None, "uvicorn exited"
            time.sleep(0.2)
        yield base, server
    finally:
        proc.terminate()
        proc.wait(20)
        server.stop()


def test_four_uvicorn_workers_share_one_limit_cache_and_ledger(
    service: tuple[str, FakeGeminiServer],
) -> None:
    base, server = service

    def ask(i: int) -> dict[str, object]:
        reply = httpx.post(
            f"{base}/chat", json={"prompt": f"question {i}", "user": "alice"}, timeout=120
        )
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    with ThreadPoolExecutor(16) as executor:
        answers = list(executor.map(ask, range(REQUESTS)))
    assert all(a["text"] for a in answers)
    assert len({a["pid"] for a in answers}) >= 2  # several workers served
    total = server.stats()["total"]
    assert total["rate_limited"] == 0  # the workers held the limit together
    assert total["ok"] == REQUESTS
    again = ask(3)  # served from the shared disk cache, whichever worker answers
    assert again["cache_hit"] is True
    assert server.stats()["total"]["requests"] == REQUESTS
    usage = httpx.get(f"{base}/usage", timeout=30).json()
    # one ledger for every worker: each answer once, the cache hit as a cache hit
    assert (usage["successful_requests"], usage["cached_requests"]) == (REQUESTS, 1)
    assert usage["attempts"] == REQUESTS
    rows = httpx.get(f"{base}/status", timeout=30).json()
    assert rows[0]["shared"] is True and rows[0]["in_flight"] == 0

"""Hostile storage and scale: 10,000 keys, corrupt, read-only and impossible directories.

Each case is driven the way a user meets it — a pool over the real SDK against the emulator,
or the ``gemini-pool`` command in a subprocess — and must end in a clear error naming the
path and the remedy, or in a WARNING and a request that succeeds, never a traceback and never
lost usage. Read-only directories are read-only bind mounts (root ignores file modes), skipped
with the reason where mounting is not permitted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_gemini_pool import ChatGeminiPool, GeminiDiskCache, UsageLedger, UsageLimits
from langchain_gemini_pool.testing import FakeGeminiServer
from tests.unit_tests.test_cache import read_only_view

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemini-2.5-flash"
KEYS = ["fake-hostile-key-0001", "fake-hostile-key-0002"]


@pytest.fixture
def server() -> Iterator[FakeGeminiServer]:
    with FakeGeminiServer() as running:
        yield running


def corrupt(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cache.db").write_bytes(b"\x00not a database, whatever it was\xff" * 300)
    return directory


def no_traceback_logged(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [sys.executable, "-m", "langchain_gemini_pool", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
        check=False,
    )


# -- scale --------------------------------------------------------------------------------------


async def test_ten_thousand_keys_build_and_serve(server: FakeGeminiServer) -> None:
    keys = [f"fake-hostile-many-{i:05d}" for i in range(10_000)]
    pool = ChatGeminiPool(api_keys=keys, model=MODEL, base_url=server.base_url)
    assert len(pool.pool_status()) == 10_000
    for _ in range(10):
        assert pool.invoke("hello").content
    for _ in range(10):
        assert (await pool.ainvoke("hello")).content
    served = [row["index"] for row in pool.pool_status() if row["successes"]]
    assert served == list(range(20))  # round robin from index 0, one request each
    assert server.stats()["total"]["ok"] == 20


# -- directories that cannot work: a clear error at construction --------------------------------


@pytest.mark.parametrize("kind", ["ledger", "cache"])
@pytest.mark.parametrize("where", ["file", "through-file"])
def test_a_directory_that_is_a_file_is_one_clear_error(
    tmp_path: Path, kind: str, where: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker if where == "file" else blocker / "sub"
    with pytest.raises(ValueError, match="directory") as caught:
        UsageLedger(path) if kind == "ledger" else GeminiDiskCache(path)
    message = str(caught.value)
    assert str(path) in message
    assert "sqlite" not in message.lower()
    assert ("in_memory()" if kind == "ledger" else "cache=False") in message


def test_the_cli_on_a_file_says_so_without_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = cli("usage", "--directory", str(blocker))
    assert result.returncode == 1  # a problem found (issue 13's exit codes), not a usage error
    assert "Traceback" not in result.stderr
    assert str(blocker) in result.stderr
    assert "nothing was created" in result.stderr
    assert blocker.read_text() == "x"


# -- corrupt directories: WARNING and continue --------------------------------------------------


async def test_a_pool_on_a_corrupt_ledger_and_cache_serves_and_counts(
    tmp_path: Path, server: FakeGeminiServer, caplog: pytest.LogCaptureFixture
) -> None:
    ledger_dir, cache_dir = corrupt(tmp_path / "ledger"), corrupt(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger = UsageLedger(ledger_dir)
        pool = ChatGeminiPool(
            api_keys=KEYS,
            model=MODEL,
            base_url=server.base_url,
            ledger=ledger,
            cache=GeminiDiskCache(cache_dir),
            usage_limits=UsageLimits(requests_per_day=100),
        )
        assert pool.invoke("first").content
        assert (await pool.ainvoke("second")).content
        assert "".join(str(c.content) for c in pool.stream("third"))
    assert ledger.totals().requests == 3  # kept in memory, exact
    assert ledger.totals(key_index=0).requests + ledger.totals(key_index=1).requests == 3
    assert server.stats()["total"]["ok"] == 3
    assert ledger.problem is not None
    text = caplog.text
    assert f"UsageLedger: The usage ledger at {str(ledger_dir)!r} cannot be opened" in text
    assert "GeminiDiskCache: cache directory" in text
    assert text.count("move it aside") >= 2
    assert "Could not record usage" not in text
    no_traceback_logged(caplog)
    (ledger_dir / "cache.db").unlink()  # the remedy; close() saves what was kept
    ledger.close()
    with UsageLedger(ledger_dir) as reopened:
        assert reopened.totals().requests == 3


def test_the_cli_on_a_corrupt_ledger_warns_and_exits_nonzero(tmp_path: Path) -> None:
    result = cli("usage", "--directory", str(corrupt(tmp_path / "ledger")))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "WARNING" in result.stderr
    assert "move it aside" in result.stderr
    assert "requests" in result.stdout


# -- read-only directories: WARNING, read what is there, continue ------------------------------


def test_a_pool_on_read_only_directories_serves_and_reads_totals(
    tmp_path: Path, server: FakeGeminiServer, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "ledger"
    with UsageLedger(source) as writable:
        pool = ChatGeminiPool(api_keys=KEYS, model=MODEL, base_url=server.base_url, ledger=writable)
        pool.invoke("before")
    (tmp_path / "cache").mkdir()
    with (
        read_only_view(source, tmp_path / "ro-ledger") as ledger_view,
        read_only_view(tmp_path / "cache", tmp_path / "ro-cache") as cache_view,
        caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"),
    ):
        ledger = UsageLedger(ledger_view)
        cache = GeminiDiskCache(cache_view)
        pool = ChatGeminiPool(
            api_keys=KEYS,
            model=MODEL,
            base_url=server.base_url,
            ledger=ledger,
            cache=cache,
            usage_limits=UsageLimits(requests_per_day=100),
        )
        assert pool.invoke("after").content
        assert pool.invoke("after").content  # the cache cannot store it: sent again
        assert ledger.totals().requests == 3  # 1 read from the directory + 2 kept here
        problem = ledger.problem
        ledger.close()
        cache.close()
    assert problem is not None
    assert "read-only" in problem
    assert server.stats()["total"]["ok"] == 3
    assert "Could not record usage" not in caplog.text
    no_traceback_logged(caplog)
    with UsageLedger(source) as unchanged:
        assert unchanged.totals().requests == 1


def test_the_cli_on_a_read_only_ledger_prints_its_totals(tmp_path: Path) -> None:
    source = tmp_path / "ledger"
    with UsageLedger(source) as ledger:
        for _ in range(2):
            ledger.record(error=RuntimeError("x"), user="ro-user")
    with read_only_view(source, tmp_path / "ro") as view:
        result = cli("usage", "--directory", str(view), "--user", "ro-user")
        as_json = cli("usage", "--directory", str(view), "--user", "ro-user", "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "read-only" in result.stderr
    assert "ro-user" in result.stdout
    assert as_json.returncode == 1
    totals = json.loads(as_json.stdout)["total"]
    assert totals["requests"] == 2 and totals["failed_requests"] == 2
    assert "read-only" in json.loads(as_json.stdout)["problem"]

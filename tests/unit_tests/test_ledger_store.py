"""The disk ledger on bad directories: a clear error for a setting, a WARNING for the rest.

Real directories, real SQLite (diskcache). Read-only directories are read-only bind mounts
(tests run as root, which ignores file modes), skipped with the reason where mounting is not
permitted. The clock is moved, never slept on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from langchain_gemini_pool import ManualClock, UsageLedger, UsageLimits, check_usage
from langchain_gemini_pool import _ledger_store as store_module
from langchain_gemini_pool.cli import main as cli_main
from tests.unit_tests.test_cache import read_only_view, write_lock_held


def served(key: int = 0, project: str = "p0", tokens: int = 100) -> AIMessage:
    return AIMessage(
        content="ok",
        usage_metadata={"input_tokens": tokens - 20, "output_tokens": 20, "total_tokens": tokens},
        response_metadata={"model_name": "gemini-2.5-flash", "key_index": key, "project": project},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_780_000_000.0)


def corrupt(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cache.db").write_bytes(b"this is not an sqlite database" * 200)


# -- settings that cannot work: ValueError at construction --------------------------------------


@pytest.mark.parametrize("where", ["file", "through-file"])
def test_a_directory_that_is_a_file_is_a_clear_value_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker if where == "file" else blocker / "ledger"
    with pytest.raises(ValueError, match="as the usage ledger directory") as caught:
        UsageLedger(path)
    message = str(caught.value)
    assert str(path) in message
    assert "it is a file, or its path runs through one" in message
    assert "UsageLedger.in_memory()" in message
    assert "GEMINI_POOL_LEDGER_DIR" in message


# -- a corrupt database: WARNING, memory, recovery ----------------------------------------------


def test_a_corrupt_database_warns_keeps_counting_and_recovers(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger = UsageLedger(tmp_path, clock=clock)
    warning = caplog.text
    assert "UsageLedger" in warning
    assert str(tmp_path) in warning
    assert "cannot be opened" in warning
    assert "DatabaseError" in warning
    assert "move it aside" in warning
    assert ledger.problem is not None
    assert "move it aside" in ledger.problem
    for _ in range(3):
        ledger.record(served(tokens=10), user="alice")  # never raises into the request
    assert ledger.totals(user="alice").total_tokens == 30  # exact in this process
    check_usage(ledger, "alice", UsageLimits(tokens_per_day=1_000))  # the hot path reads too
    (tmp_path / "cache.db").rename(tmp_path.parent / f"{tmp_path.name}-cache.db.broken")
    ledger.record(served(tokens=10), user="alice")  # too soon to retry: still in memory
    assert not (tmp_path / "cache.db").exists()
    clock.advance(store_module.RETRY_S)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger.record(served(tokens=10), user="alice")  # reopens and saves what was kept
    assert "works again" in caplog.text
    assert ledger.problem is None
    assert ledger.totals(user="alice").total_tokens == 50
    ledger.close()
    with UsageLedger(tmp_path, clock=clock) as fresh:  # on disk, nothing lost
        assert fresh.totals(user="alice").requests == 5
        assert fresh.totals(user="alice", period="day").total_tokens == 50
        assert fresh.totals(key_index=0, project="p0").requests == 5


def test_corruption_while_open_is_a_warning_not_an_exception(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(tmp_path, clock=clock)
    ledger.record(served(tokens=10), user="bob")
    ledger.close()  # the connection is reopened on next use, onto a broken file
    corrupt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger.record(served(tokens=10), user="bob")
        totals = ledger.totals(user="bob")
        ledger.breakdown()
    assert "UsageLedger" in caplog.text
    assert "move it aside" in caplog.text
    assert totals.total_tokens == 10  # the directory cannot be read: what was kept here
    assert ledger.problem is not None


def test_the_cli_says_what_is_wrong_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(tmp_path / "bad")
    assert cli_main(["usage", "--directory", str(tmp_path / "bad")]) == 1
    captured = capsys.readouterr()
    assert "requests" in captured.out
    assert "Traceback" not in captured.err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli_main(["usage", "--directory", str(blocker)]) == 1  # a problem, not a usage error
    captured = capsys.readouterr()
    assert str(blocker) in captured.err and "nothing was created" in captured.err
    assert "Traceback" not in captured.err


# -- locks, pickles, warnings -------------------------------------------------------------------


def test_a_held_lock_keeps_the_usage_in_memory_and_saves_it_later(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_LOCK_TIMEOUT_S", 0.05)
    ledger = UsageLedger(tmp_path, clock=clock)
    ledger.record(served(tokens=10), user="carol")
    with write_lock_held(tmp_path):
        ledger.record(served(tokens=10), user="carol")  # waits 0.05 s, then keeps it
        assert ledger.totals(user="carol").requests == 2  # readers are not blocked
        assert ledger.problem is not None
    clock.advance(store_module.RETRY_S)
    ledger.record(served(tokens=10), user="carol")
    ledger.close()
    with UsageLedger(tmp_path, clock=clock) as fresh:
        assert fresh.totals(user="carol").requests == 3


def test_close_saves_what_was_kept_when_the_directory_is_back(
    tmp_path: Path, clock: ManualClock
) -> None:
    corrupt(tmp_path)
    ledger = UsageLedger(tmp_path, clock=clock)
    ledger.record(served(tokens=10), user="dan")
    (tmp_path / "cache.db").unlink()
    ledger.close()  # no wait for the retry: closing is the last chance to save
    with UsageLedger(tmp_path, clock=clock) as fresh:
        assert fresh.totals(user="dan").requests == 1


class Boom:
    def __reduce__(self) -> Any:
        return (exec, ("raise SystemExit('unpickled')",))


def test_a_planted_pickle_row_is_never_unpickled(tmp_path: Path, clock: ManualClock) -> None:
    ledger = UsageLedger(tmp_path, clock=clock)
    ledger.record(served(tokens=10), user="eve")
    key = json.dumps(["all", "", "user", "eve"])
    with sqlite3.connect(tmp_path / "cache.db") as db:
        db.execute(
            "UPDATE Cache SET value = ?, mode = 4 WHERE key = ?",
            (pickle.dumps(Boom()), key),
        )
    assert ledger.totals(user="eve").requests == 0  # a foreign row is no entry
    assert ledger.totals().requests == 1


def test_warnings_repeat_at_most_once_a_minute(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt(tmp_path)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger = UsageLedger(tmp_path, clock=clock)
        for _ in range(10):
            clock.advance(store_module.RETRY_S)
            ledger.record(served(), user="f")
    assert caplog.text.count("cannot be opened") == 1
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        ledger.record(served(), user="f")
    assert caplog.text.count("cannot be opened") == 2
    assert ledger.totals(user="f").requests == 11


# -- read-only directories ----------------------------------------------------------------------


def test_a_read_only_directory_reads_totals_and_keeps_new_usage_in_memory(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "ledger"
    with UsageLedger(source, clock=clock) as writable:
        for _ in range(4):
            writable.record(served(tokens=10), user="gil")
    before = (source / "cache.db").read_bytes()
    with read_only_view(source, tmp_path / "ro") as view:
        with pytest.raises(OSError, match=r"Read-only|Permission"):
            (view / "probe").write_text("x")
        with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
            ledger = UsageLedger(view, clock=clock)
            assert ledger.totals(user="gil").requests == 4  # read from the directory
            ledger.record(served(tokens=10), user="gil")
            assert ledger.totals(user="gil").total_tokens == 50
            assert ledger.totals(user="gil", model="gemini-2.5-flash").requests == 5
            assert ledger.breakdown()["user"]["gil"].requests == 5
            problem = ledger.problem
            ledger.close()  # cannot save: says so, does not raise
    assert problem is not None
    assert "read-only" in problem
    assert str(view) in caplog.text
    assert "could not be saved" in caplog.text
    assert (source / "cache.db").read_bytes() == before  # nothing was damaged


def test_an_empty_read_only_directory_counts_in_memory(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "empty").mkdir()
    with (
        read_only_view(tmp_path / "empty", tmp_path / "ro") as view,
        caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"),
    ):
        ledger = UsageLedger(view, clock=clock)
        assert ledger.totals().requests == 0
        ledger.record(served(), user="hal")
        assert ledger.totals(user="hal").requests == 1
        ledger.close()
    assert "cannot be opened" in caplog.text


def test_a_long_outage_of_many_users_is_saved_in_one_go(tmp_path: Path, clock: ManualClock) -> None:
    corrupt(tmp_path)
    ledger = UsageLedger(tmp_path, clock=clock)
    for n in range(300):  # about 2,000 distinct entries kept in memory
        ledger.record(served(key=n % 4, project=f"p{n % 4}", tokens=10), user=f"user-{n}")
    (tmp_path / "cache.db").unlink()
    clock.advance(store_module.RETRY_S)
    ledger.record(served(tokens=10), user="user-0")
    assert ledger.problem is None
    ledger.close()
    with UsageLedger(tmp_path, clock=clock) as fresh:
        assert fresh.totals().requests == 301
        assert fresh.totals(user="user-0").requests == 2
        assert fresh.totals(user="user-299", project="p3", period="month").total_tokens == 10
        assert len(fresh.breakdown()["user"]) == 300


EXIT_CHILD = r"""
import sys
from pathlib import Path
from langchain_core.messages import AIMessage
from langchain_gemini_pool import UsageLedger

directory = Path(sys.argv[1])
ledger = UsageLedger(directory)
message = AIMessage(content="x", response_metadata={"model_name": "gemini-2.5-flash"})
for _ in range(3):
    ledger.record(message, user="exiting")
assert ledger.problem is not None
(directory / "cache.db").unlink()  # the remedy, then exit without close()
"""


def test_usage_kept_in_memory_is_saved_at_exit(tmp_path: Path) -> None:
    corrupt(tmp_path)
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", EXIT_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with UsageLedger(tmp_path) as after:
        assert after.totals(user="exiting").requests == 3


def _record_in_child(ledger: UsageLedger, clock: ManualClock) -> None:
    clock.advance(store_module.RETRY_S)
    ledger.record(served(tokens=10), user="forked")
    ledger.close()


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
def test_a_forked_child_never_saves_what_its_parent_kept(
    tmp_path: Path, clock: ManualClock
) -> None:
    corrupt(tmp_path)
    ledger = UsageLedger(tmp_path, clock=clock)
    for _ in range(2):
        ledger.record(served(tokens=10), user="forked")
    (tmp_path / "cache.db").unlink()
    child = multiprocessing.get_context("fork").Process(
        target=_record_in_child, args=(ledger, clock)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    clock.advance(store_module.RETRY_S)
    ledger.record(served(tokens=10), user="forked")
    ledger.close()
    with UsageLedger(tmp_path, clock=clock) as after:
        assert after.totals(user="forked").requests == 4  # 2 + 1 here, 1 in the child

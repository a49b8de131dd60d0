"""Keys in ChatGeminiPool: where they come from, changing them while serving, never leaking."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from langchain_core.load import dumps
from langchain_google_genai.chat_models import GoogleModelNotFoundError
from pydantic import SecretStr

from langchain_gemini_pool import (
    AllKeysRateLimitedError,
    ChatGeminiPool,
    ManualClock,
    NoValidKeysError,
)
from langchain_gemini_pool.testing import FakeGeminiServer, Faults, Quota

from .conftest import KEYS, MODEL

Emulator = Callable[..., FakeGeminiServer]
MakePool = Callable[..., ChatGeminiPool]

_ENV_NAMES = ("GEMINI_API_KEY", "GEMINI_API_KEYS", "GOOGLE_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name in _ENV_NAMES or name.startswith("GEMINI_API_KEY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env above the test


def test_construction_logs_the_key_count(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="langchain_gemini_pool"):
        ChatGeminiPool(model=MODEL, api_keys=KEYS)
    assert "Gemini API configured with 4 API keys" in caplog.text


def test_keys_from_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emulator: Emulator
) -> None:
    (tmp_path / ".env").write_text(
        'GEMINI_API_KEY_2="fake-key-2222"\nGEMINI_API_KEY_10=fake-key-1010\n'
        "GEMINI_API_KEY_1=from-dotenv-1111\n"
    )
    monkeypatch.setenv("GEMINI_API_KEY_1", "fake-key-1111")  # the environment wins
    server = emulator()
    pool = ChatGeminiPool(model=MODEL, base_url=server.base_url)
    assert [row["fingerprint"] for row in pool.pool_status()] == ["…1111", "…2222", "…1010"]
    import os

    assert "GEMINI_API_KEY_2" not in os.environ  # loading never writes os.environ
    pool.invoke("hi")
    assert "…1111" in server.stats()["keys"]


def test_env_file_argument(tmp_path: Path) -> None:
    env = tmp_path / "keys.env"
    env.write_text("GEMINI_API_KEYS= fake-key-aaaa , 'fake-key-bbbb',\n")
    pool = ChatGeminiPool(model=MODEL, env_file=str(env))
    assert [row["fingerprint"] for row in pool.pool_status()] == ["…aaaa", "…bbbb"]


def test_no_key_anywhere_names_the_variables() -> None:
    with pytest.raises(ValueError, match="GEMINI_API_KEY") as info:
        ChatGeminiPool(model=MODEL)
    assert "GOOGLE_API_KEY" in str(info.value)


def test_duplicates_are_dropped_with_a_masked_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_gemini_pool"):
        pool = ChatGeminiPool(model=MODEL, api_keys=[KEYS[0], f" {KEYS[0]} ", KEYS[1], ""])
    assert len(pool.pool_status()) == 2
    assert "…aaaa" in caplog.text
    assert KEYS[0] not in caplog.text


def test_projects_mapping_groups_keys() -> None:
    pool = ChatGeminiPool(model=MODEL, api_keys={"team": KEYS[:2], "free": [SecretStr(KEYS[2])]})
    assert [row["project"] for row in pool.pool_status()] == ["team", "team", "free"]


def test_malformed_keys_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="str or a pydantic SecretStr"):
        ChatGeminiPool(model=MODEL, api_keys=[KEYS[0], 12345])
    with pytest.raises(ValueError, match="no usable key"):
        ChatGeminiPool(model=MODEL, api_keys=["", "  "])


def test_add_remove_reload_keep_indices_and_counters(
    monkeypatch: pytest.MonkeyPatch, emulator: Emulator, make_pool: MakePool
) -> None:
    server = emulator()
    monkeypatch.setenv("GEMINI_API_KEYS", ",".join(KEYS[:2]))
    pool = ChatGeminiPool(model=MODEL, base_url=server.base_url)
    pool.invoke("one")
    pool.invoke("two")
    assert pool.add_keys([KEYS[2]]) == [2]
    pool.remove_key(KEYS[0])
    assert [row["index"] for row in pool.pool_status()] == [1, 2]
    assert pool.add_keys({"extra": [KEYS[3]]}) == [3]  # index 0 is never reused
    pool.remove_key(3)
    with pytest.raises(KeyError, match="…aaaa"):
        pool.remove_key(KEYS[0])
    monkeypatch.setenv("GEMINI_API_KEYS", ",".join([KEYS[1], KEYS[3]]))
    changes = pool.reload_keys()
    assert changes["removed"] == [2]
    rows = {row["fingerprint"]: row for row in pool.pool_status()}
    assert rows["…bbbb"]["index"] == 1 and rows["…bbbb"]["requests"] == 1  # kept its counters
    assert rows["…dddd"]["index"] == 4
    served = {pool.invoke(f"q{i}").response_metadata["key_index"] for i in range(4)}
    assert served == {1, 4}


def test_rotation_is_logged_at_debug_by_index(
    emulator: Emulator, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(emulator())
    with caplog.at_level(logging.DEBUG, logger="langchain_gemini_pool"):
        pool.invoke("a")
        pool.invoke("b")
    assert "Rotated to API key index 0" in caplog.text
    assert "Rotated to API key index 1" in caplog.text


def test_no_key_text_anywhere(
    emulator: Emulator, make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    """Logs, repr, str, every exception the pool raises, dumps and pickle: masked only."""
    clock = ManualClock()
    server = emulator(
        bad_keys={KEYS[0]: "invalid", KEYS[1]: "leaked"},
        quotas=Quota(rpm=1),
        clock=clock,
        unknown_models=["gemini-0-nope"],
    )
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        pool = make_pool(server, api_keys=KEYS, clock=clock, max_wait=0)
        texts += [repr(pool), str(pool), dumps(pool), dumps(pool, pretty=True)]
        texts.append(str(pool.model_dump()))
        texts.append(str(pool.pool_status()))
        for call in range(4):
            try:
                message = pool.invoke(f"hello {call}")
                texts.append(repr(message))
            except AllKeysRateLimitedError as exc:
                texts += [str(exc), repr(exc)]
        server.faults = Faults(unavailable_rate=1.0)
        pool.reset_key(2)
        pool.reset_key(3)
        clock.advance(120)
        for exc_type in (Exception,):
            with pytest.raises(exc_type) as info:
                pool.invoke("boom")
            texts += [str(info.value), repr(info.value), repr(info.value.__cause__)]
        bad = make_pool(server, api_keys=KEYS[:2], clock=clock)
        with pytest.raises(NoValidKeysError) as no_keys:
            bad.invoke("x")
        texts += [str(no_keys.value), repr(no_keys.value)]
        wrong = make_pool(emulator(unknown_models=["gemini-0-nope"]), model="gemini-0-nope")
        with pytest.raises(GoogleModelNotFoundError) as not_found:
            wrong.invoke("x")
        texts += [str(not_found.value), repr(not_found.value)]
        with pytest.raises(TypeError, match="cannot be pickled") as pickled:
            pickle.dumps(pool)
        texts.append(str(pickled.value))
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    blob = "\n".join(texts)
    assert "…aaaa" in blob  # the masked forms are there...
    for key in KEYS:
        assert key not in blob  # ...and the keys are not

"""``dumps``/``loads`` of a pool keeps every key (as a secret) and every setting (issue 10,
cause 4); every way of asking for Vertex AI gets the same clear error (cause 3).

No request is sent: building a pool touches no network.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.load import dumpd, dumps, loads

from langchain_gemini_pool import ChatGeminiPool, QuotaLimits, UsageLimits

MODEL = "gemini-2.5-flash"
KEYS = ["fake-serial-key-0001", "fake-serial-key-0002", "fake-serial-key-0003"]
LOAD = {"valid_namespaces": ["langchain_gemini_pool"], "allowed_objects": [ChatGeminiPool]}
SETTINGS: dict[str, Any] = {
    "strategy": "least_used",
    "max_wait": 12.5,
    "rate_limit_cooldown": 30.0,
    "max_attempts": 4,
    "limits": QuotaLimits(rpm=10, tpm=250_000, rpd=250),
    "usage_limits": {"alice": UsageLimits(requests_per_day=5, hard=False)},
    "temperature": 0.2,
    "additional_headers": {"x-team": "search"},
}


def fingerprints(pool: ChatGeminiPool) -> list[str]:
    return [row["fingerprint"] for row in pool.pool_status()]


def settings_of(pool: ChatGeminiPool) -> dict[str, Any]:
    return {name: getattr(pool, name) for name in SETTINGS}


def assert_no_key_text(text: str) -> None:
    for key in KEYS:
        for start in range(len(key) - 7):
            assert key[start : start + 8] not in text


@pytest.fixture
def pool() -> ChatGeminiPool:
    return ChatGeminiPool(model=MODEL, api_keys=KEYS, **SETTINGS)


@pytest.mark.parametrize(
    "secret",
    [",".join(KEYS), KEYS, {"team-a": KEYS[:2], "team-b": KEYS[2]}],
    ids=["comma-string", "list", "project-mapping"],
)
def test_round_trip_restores_every_key_and_setting(pool: ChatGeminiPool, secret: Any) -> None:
    text = dumps(pool)
    assert_no_key_text(text)
    assert json.loads(text)["kwargs"]["api_keys"] == {
        "lc": 1,
        "type": "secret",
        "id": ["GEMINI_API_KEYS"],
    }
    loaded = loads(text, secrets_map={"GEMINI_API_KEYS": secret}, **LOAD)
    assert isinstance(loaded, ChatGeminiPool)
    assert fingerprints(loaded) == fingerprints(pool) == ["…0001", "…0002", "…0003"]
    assert settings_of(loaded) == settings_of(pool)
    assert loaded.google_api_key is not None
    assert loaded.google_api_key.get_secret_value() == KEYS[0]
    assert_no_key_text(dumps(loaded))
    if isinstance(secret, dict):
        assert [row["project"] for row in loaded.pool_status()] == ["team-a", "team-a", "team-b"]


def test_per_project_limits_round_trip() -> None:
    limits = {"team-a": QuotaLimits(rpm=5, priority=0), "team-b": QuotaLimits(rpd=9, priority=1)}
    pool = ChatGeminiPool(
        model=MODEL, api_keys={"team-a": KEYS[:2], "team-b": KEYS[2:]}, limits=limits
    )
    secret = {"team-a": KEYS[:2], "team-b": KEYS[2:]}
    loaded = loads(dumps(pool), secrets_map={"GEMINI_API_KEYS": secret}, **LOAD)
    assert loaded.limits == limits


def test_without_the_secret_keys_come_from_the_environment(
    pool: ChatGeminiPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY_1"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEYS", ",".join(KEYS))
    loaded = loads(dumps(pool), **LOAD)
    assert fingerprints(loaded) == ["…0001", "…0002", "…0003"]
    from_env = loads(dumps(pool), secrets_from_env=True, **LOAD)
    assert fingerprints(from_env) == ["…0001", "…0002", "…0003"]


def test_max_retries_is_dumped_only_when_given() -> None:
    default = dumpd(ChatGeminiPool(model=MODEL, api_keys=KEYS))
    explicit = ChatGeminiPool(model=MODEL, api_keys=KEYS, max_retries=6)
    assert "max_retries" not in default["kwargs"]
    loaded = loads(dumps(explicit), secrets_map={"GEMINI_API_KEYS": KEYS}, **LOAD)
    assert loaded._attempts_allowed(3) == 6
    assert ChatGeminiPool(model=MODEL, api_keys=KEYS)._attempts_allowed(3) == 3


def test_loading_needs_the_class_allowed(pool: ChatGeminiPool) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        loads(dumps(pool), secrets_map={"GEMINI_API_KEYS": KEYS})


# --- Vertex AI (cause 3) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"vertexai": True}, "vertexai=True"),
        ({"credentials": object()}, "credentials="),
        ({"project": "my-gcp-project"}, "project="),
        ({"project": "my-gcp-project", "location": "us-central1"}, "project="),
        ({"vertexai": True, "location": "us-central1"}, "vertexai=True"),
    ],
)
def test_every_vertex_setting_gets_the_same_error(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match="does not support Vertex AI") as raised:
        ChatGeminiPool(model=MODEL, api_keys=KEYS, **settings)
    assert named in str(raised.value)
    assert "ChatGoogleGenerativeAI" in str(raised.value)


@pytest.mark.parametrize("value", ["true", "1", "YES"])
def test_vertex_from_the_environment_gets_the_same_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", value)
    with pytest.raises(ValueError, match="does not support Vertex AI") as raised:
        ChatGeminiPool(model=MODEL, api_keys=KEYS)
    assert "GOOGLE_GENAI_USE_VERTEXAI" in str(raised.value)


def test_an_explicit_developer_api_wins_as_for_the_bare_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the bare class runs on the Developer API, the pool accepts: ``vertexai=False``
    over the environment and over ``project=``; the variable saying false; ``location=``
    alone."""
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")  # ambient, not asked for
    built = [ChatGeminiPool(model=MODEL, api_keys=KEYS, vertexai=False, project="p")]
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "false")
    built.append(ChatGeminiPool(model=MODEL, api_keys=KEYS, project="p"))
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI")
    built.append(ChatGeminiPool(model=MODEL, api_keys=KEYS, location="europe-west4"))
    assert [pool._use_vertexai for pool in built] == [False] * 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="credentials="):
        ChatGeminiPool(model=MODEL, api_keys=KEYS, vertexai=False, credentials=object())

"""Secret scan: distinctive keys, every public path, no 8-character window of a key anywhere.

Paths covered: construction errors (pydantic and the pool's own), every failure kind the
emulator can produce on every call path (invoke, stream, ainvoke, astream, get_num_tokens),
the exceptions let out (``str``/``repr``, ``args``, attributes, ``__cause__``/``__context__``,
responses, requests and headers, pickles), DEBUG logging of every logger, the pool's
``repr``/``str``/``dumps``/``model_dump``/``pool_status``/pickle/deepcopy, results and their
metadata, the disk cache and ledger files, and the ``gemini-pool`` command line.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.load import dumps
from pydantic import SecretStr

from langchain_gemini_pool import (
    ChatGeminiPool,
    FakeGeminiServer,
    Faults,
    GeminiDiskCache,
    ManualClock,
    UsageLedger,
    mask_key,
)
from langchain_gemini_pool._keys import KeyEntry
from tests.reliability._scan import (
    SCAN_KEYS,
    assert_exception_clean,
    assert_no_leak_in_text,
    find_in_graph,
    leaks_in_bytes,
)

MODEL = "gemini-2.5-flash"
T0 = 1_772_445_610.0  # 2026-03-02 10:00:10 UTC
ROOT = Path(__file__).resolve().parents[2]
# A key that slipped past the checks (built directly, as a bug or a monkeypatch could):
# its line break makes it unsendable. Its text must not leak either.
SLIPPED = "QZslipped7Kq2Vn9Xw\nQZhidden4Rt8Lm3Bz-0009"
ALL_KEYS = (*SCAN_KEYS, SLIPPED, *SLIPPED.split("\n"))


class EagerLog(logging.Handler):
    """Formats each record when it is emitted (as a real handler would, before anything
    could change the objects it refers to) and keeps the text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[tuple[str, str]] = []
        self.exempt: tuple[str, ...] = ()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@pytest.fixture(autouse=True)
def debug_logging() -> Iterator[EagerLog]:
    """Every logger at DEBUG; at the end, no record (message, args or traceback, formatted
    when it was logged) holds key text."""
    root = logging.getLogger()
    handler, level = EagerLog(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    for name, text in handler.lines:
        if not name.startswith(handler.exempt):
            assert_no_leak_in_text(text, ALL_KEYS, f"log record of {name}")


def _pool(server: FakeGeminiServer, keys: Any = None, **kwargs: Any) -> ChatGeminiPool:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("clock", ManualClock(T0))
    kwargs.setdefault("max_wait", 0)
    return ChatGeminiPool(
        api_keys=list(SCAN_KEYS[:2]) if keys is None else keys,
        base_url=server.base_url,
        **kwargs,
    )


def _every_path(pool: ChatGeminiPool) -> list[tuple[str, BaseException | Any]]:
    """Each call path once: its exception, or its result."""

    async def astream() -> list[Any]:
        return [chunk async for chunk in pool.astream("tell me a story of some length")]

    calls: list[tuple[str, Callable[[], Any]]] = [
        ("invoke", lambda: pool.invoke("hello")),
        ("stream", lambda: list(pool.stream("tell me a story of some length"))),
        ("ainvoke", lambda: asyncio.run(pool.ainvoke("hello"))),
        ("astream", lambda: asyncio.run(astream())),
        ("batch", lambda: pool.batch(["a", "b"], return_exceptions=True)),
        ("get_num_tokens", lambda: pool.get_num_tokens("count these words")),
    ]
    outcomes: list[tuple[str, Any]] = []
    for name, call in calls:
        try:
            outcomes.append((name, call()))
        except Exception as exc:
            outcomes.append((name, exc))
    return outcomes


def _scan_outcomes(outcomes: list[tuple[str, Any]], what: str) -> tuple[int, int]:
    """Scan every exception and result; returns (exceptions scanned, pickled)."""
    errors = pickled = 0
    for name, outcome in outcomes:
        results = outcome if isinstance(outcome, list) else [outcome]
        for result in results:
            if isinstance(result, BaseException):
                errors += 1
                pickled += assert_exception_clean(result, ALL_KEYS, f"{what}/{name}")
            else:
                assert not find_in_graph(result, ALL_KEYS), f"{what}/{name}: result"
                if hasattr(result, "content"):
                    assert_no_leak_in_text(dumps(result), ALL_KEYS, f"{what}/{name}: dumps")
    return errors, pickled


# -- failures on every call path ---------------------------------------------------------------

FAILURES: dict[str, dict[str, Any]] = {
    "bad key 400 invalid": {"bad_keys": dict.fromkeys(SCAN_KEYS, "invalid")},
    "bad key 400 expired": {"bad_keys": dict.fromkeys(SCAN_KEYS, "expired")},
    "403 leaked": {"bad_keys": dict.fromkeys(SCAN_KEYS, "leaked")},
    "403 service disabled": {"bad_keys": dict.fromkeys(SCAN_KEYS, "service_disabled")},
    "403 suspended": {"bad_keys": dict.fromkeys(SCAN_KEYS, "suspended")},
    "403 denied": {"bad_keys": dict.fromkeys(SCAN_KEYS, "denied")},
    "429": {"faults": Faults(schedule=[429] * 40)},
    "429 zero quota": {"zero_quota_models": [MODEL]},
    "500": {"faults": Faults(error_rate=1.0)},
    "503": {"faults": Faults(unavailable_rate=1.0)},
    "connection reset": {"faults": Faults(reset_rate=1.0)},
    "stream cut": {"faults": Faults(stream_cut_after=1)},
    "404 unknown model": {"unknown_models": [MODEL]},
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_no_failure_kind_lets_key_text_out(
    kind: str, emulator: Callable[..., FakeGeminiServer], debug_logging: EagerLog
) -> None:
    server = emulator(**FAILURES[kind])
    pool = _pool(server, max_attempts=2)
    outcomes = _every_path(pool)
    errors, _ = _scan_outcomes(outcomes, kind)
    assert errors >= 1, f"{kind}: the emulator should have made something fail"
    loggers = {name.split(".")[0] for name, _ in debug_logging.lines}
    assert {"langchain_gemini_pool", "httpcore2"} <= loggers  # DEBUG records were scanned
    for row in pool.pool_status():
        assert_no_leak_in_text(repr(row), ALL_KEYS, f"{kind}: pool_status")


def test_a_mixed_fault_storm_lets_no_key_text_out(
    emulator: Callable[..., FakeGeminiServer],
) -> None:
    server = emulator(
        faults=Faults(error_rate=0.25, unavailable_rate=0.25, reset_rate=0.2, seed=7),
    )
    pool = _pool(server, keys=list(SCAN_KEYS), max_attempts=2)
    errors = pickled = 0
    for _ in range(4):
        e, p = _scan_outcomes(_every_path(pool), "storm")
        errors, pickled = errors + e, pickled + p
    assert errors > 0
    assert pickled > 0  # the sync paths' errors pickle; their pickles were scanned


def test_errors_let_out_keep_type_and_message_with_the_header_masked(
    emulator: Callable[..., FakeGeminiServer],
) -> None:
    server = emulator(faults=Faults(error_rate=1.0))
    pool = _pool(server, keys=[SCAN_KEYS[0]], max_attempts=1)
    with pytest.raises(Exception) as sync_info:
        pool.invoke("hello")
    error = sync_info.value
    assert type(error).__name__ == "GoogleAPIError"
    assert str(error).startswith("500 INTERNAL.")
    headers = error.response.request.headers  # type: ignore[attr-defined]
    assert headers["x-goog-api-key"] == mask_key(SCAN_KEYS[0]).replace("…", "...")
    assert error.__cause__ is not None
    assert type(error.__cause__).__name__ == "ServerError"

    with pytest.raises(Exception) as async_info:
        asyncio.run(pool.ainvoke("hello"))
    info = async_info.value.response.request_info  # type: ignore[attr-defined]
    assert info.headers["x-goog-api-key"] == mask_key(SCAN_KEYS[0]).replace("…", "...")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_that_cannot_be_sent_is_quarantined_and_never_shown(
    mode: str, emulator: Callable[..., FakeGeminiServer], debug_logging: EagerLog
) -> None:
    """A key the HTTP client refuses as a header (h11 ``Illegal header value`` in sync,
    aiohttp's header-injection ValueError in async) is a bad key: quarantined, the request
    moves on, and neither key appears in anything the pool lets out.

    Known limit: httpcore's own DEBUG trace logs h11's error, key included, before the pool
    sees it. Keys are checked when they enter the pool, so only a key that bypassed
    ``normalize_keys`` (as this test does on purpose) can get that far.
    """
    debug_logging.exempt = ("httpcore",)
    server = emulator()
    pool = _pool(server, keys=[SCAN_KEYS[0]])
    pool._add_entries([KeyEntry(SecretStr(SLIPPED), "slipped")])
    pool.reset_key(0)
    calls = 0
    for _ in range(2):
        result = pool.invoke("hi") if mode == "sync" else asyncio.run(pool.ainvoke("hi"))
        calls += 1
        assert result.response_metadata["key_index"] == 0
    status = {row["index"]: row for row in pool.pool_status()}
    assert status[1]["state"] == "invalid"
    assert "HTTP header" in status[1]["reason"]
    assert server.stats()["total"]["requests"] == calls  # the bad key never reached the wire

    only_bad = _pool(server, keys=[SCAN_KEYS[1]])
    only_bad._add_entries([KeyEntry(SecretStr(SLIPPED), "slipped")])
    only_bad.remove_key(0)
    outcomes = _every_path(only_bad)
    errors, _ = _scan_outcomes(outcomes, f"slipped key {mode}")
    assert errors >= 4
    names = {type(o).__name__ for _, o in outcomes if isinstance(o, BaseException)}
    assert names == {"NoValidKeysError"}


# -- construction ---------------------------------------------------------------------------

K = SCAN_KEYS[0]
CONSTRUCTION: dict[str, dict[str, Any]] = {
    "max_wait=-1": {"api_keys": [K], "max_wait": -1},
    "max_wait=nan": {"api_keys": [K], "max_wait": float("nan")},
    "rate_limit_cooldown=-1": {"api_keys": [K], "rate_limit_cooldown": -1},
    "temperature=5": {"api_keys": [K], "temperature": 5},
    "top_p=3": {"api_keys": [K], "top_p": 3},
    "vertexai=True": {"api_keys": [K], "vertexai": True},
    "empty project name": {"api_keys": {"": [K]}},
    "blank project name": {"api_keys": {"  ": [K, SCAN_KEYS[1]]}},
    "model missing": {"api_keys": [K], "model": None},
    "max_attempts=0": {"api_keys": {"team": [K]}, "max_attempts": 0},
    "limits wrong type": {"api_keys": [K], "limits": {"p": 3}},
    "strategy unknown": {"api_keys": [K], "strategy": "random"},
    "google_api_key and bad field": {"google_api_key": K, "top_k": -4},
    "SecretStr and bad field": {"api_keys": [SecretStr(K)], "temperature": -1},
    "newline in key": {"api_keys": [f"{K}\n{SCAN_KEYS[1]}"]},
    "space in key": {"api_keys": [f"{K} {SCAN_KEYS[1]}"]},
    "non-ASCII in key": {"api_keys": [f"{K}é"]},
    "NUL in key": {"api_keys": [f"{K}\x00"]},
    "key in a header too": {"api_keys": [K], "additional_headers": {"x-goog-api-key": f"{K}\n"}},
    "key in client_args": {"api_keys": [K], "client_args": {"token": K}, "top_p": 9},
    "api_keys=123": {"api_keys": 123},
    "api_keys=bytes": {"api_keys": K.encode()},
}


@pytest.mark.parametrize("case", list(CONSTRUCTION))
def test_construction_errors_hold_no_key_text(case: str) -> None:
    kwargs = dict(CONSTRUCTION[case])
    if kwargs.get("model", MODEL) is None:
        kwargs.pop("model")
    else:
        kwargs["model"] = MODEL
    with pytest.raises((ValueError, TypeError)) as info:
        ChatGeminiPool(**kwargs)
    error = info.value
    assert_exception_clean(error, ALL_KEYS, case)
    assert error.__context__ is None
    if hasattr(error, "errors"):
        assert_no_leak_in_text(error.json(), ALL_KEYS, f"{case}: json()")
        assert_no_leak_in_text(repr(error.errors()), ALL_KEYS, f"{case}: errors()")
        assert not find_in_graph(error.errors(), ALL_KEYS), f"{case}: errors() objects"
        back = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert back.errors()[0]["loc"] == error.errors()[0]["loc"]


def test_a_sanitized_validation_error_keeps_its_type_locations_and_messages() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        ChatGeminiPool(model=MODEL, api_keys=[K], temperature=5)
    (detail,) = info.value.errors()
    assert detail["type"] == "value_error"
    assert "temperature must be in the range [0.0, 2.0]" in detail["msg"]
    assert detail["input"]["api_keys"] == [mask_key(K)]
    assert detail["input"]["temperature"] == 5
    assert info.value.title == "ChatGeminiPool"

    with pytest.raises(ValidationError) as info:
        ChatGeminiPool.model_validate({"model": MODEL, "api_keys": [K], "max_wait": -1})
    assert "max_wait must be a number of seconds >= 0" in str(info.value)
    assert_exception_clean(info.value, ALL_KEYS, "model_validate")


def test_construction_errors_hold_no_key_loaded_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("GEMINI_API_KEY", "GOOGLE_API_KEY")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GEMINI_API_KEYS", "\n".join(SCAN_KEYS))
    for bad in ({"max_wait": -1}, {"temperature": 9}, {"limits": 5}):
        with pytest.raises((ValueError, TypeError)) as info:
            ChatGeminiPool(model=MODEL, **bad)
        assert_exception_clean(info.value, ALL_KEYS, f"env keys {bad}")
    monkeypatch.setenv("GEMINI_API_KEYS", f"{K},{SCAN_KEYS[1]}\t{SCAN_KEYS[2]}")
    with pytest.raises(ValueError, match=r"GEMINI_API_KEYS \(item 2\) contains a tab") as info:
        ChatGeminiPool(model=MODEL)
    assert_exception_clean(info.value, ALL_KEYS, "env key with a tab")


# -- the pool's own faces, cache and ledger files ---------------------------------------------


def test_pool_faces_cache_and_ledger_files_hold_no_key_text(
    emulator: Callable[..., FakeGeminiServer], tmp_path: Path
) -> None:
    server = emulator(faults=Faults(schedule=[None, 503, None, "reset", None]))
    cache_dir, ledger_dir = tmp_path / "cache", tmp_path / "ledger"
    pool = _pool(
        server,
        keys={"team-a": list(SCAN_KEYS[:2]), "team-b": list(SCAN_KEYS[2:])},
        cache=GeminiDiskCache(cache_dir),
        ledger=UsageLedger(ledger_dir),
        max_wait=30,
    )
    _scan_outcomes(_every_path(pool), "cached pool")
    _scan_outcomes(_every_path(pool), "cached pool, second pass (hits)")
    faces = {
        "repr": repr(pool),
        "str": str(pool),
        "dumps": dumps(pool),
        "dumps pretty": dumps(pool, pretty=True),
        "model_dump": repr(pool.model_dump()),
        "model_dump_json": pool.model_dump_json(),
        "pool_status": repr(pool.pool_status()),
        "to_json": repr(pool.to_json()),
    }
    for what, text in faces.items():
        assert_no_leak_in_text(text, ALL_KEYS, what)
    for refused in (pickle.dumps, copy.deepcopy):
        with pytest.raises(TypeError) as info:
            refused(pool)
        assert_exception_clean(info.value, ALL_KEYS, refused.__name__)
    files = [p for p in (*cache_dir.rglob("*"), *ledger_dir.rglob("*")) if p.is_file()]
    assert any(p.stat().st_size > 0 for p in files)
    for path in files:
        leaked = leaks_in_bytes(path.read_bytes(), ALL_KEYS)
        assert not leaked, f"{path}: key text {leaked[:3]}"


# -- the command line -------------------------------------------------------------------------


def _cli(args: list[str], env_file: Path | None, extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "GOOGLE_API"))}
    env.update(extra_env, PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "langchain_gemini_pool", *args]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=env_file.parent if env_file else None,
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("good", "GEMINI_API_KEYS=" + ",".join(SCAN_KEYS) + "\n"),
        ("multi-line", 'GEMINI_API_KEYS="' + "\n".join(SCAN_KEYS) + '"\n'),
        ("hash comment", f"GEMINI_API_KEY_1={SCAN_KEYS[0]}#{SCAN_KEYS[1]}\n"),
        ("duplicate", f"GEMINI_API_KEY_1={SCAN_KEYS[0]}\nGEMINI_API_KEY_1={SCAN_KEYS[1]}\n"),
        ("space inside", f"GEMINI_API_KEY_1='{SCAN_KEYS[0]} {SCAN_KEYS[1]}'\n"),
        ("broken line", f"GEMINI_API_KEY_1={SCAN_KEYS[0]}\n{SCAN_KEYS[1]} oops\n"),
        ("latin-1", f"GEMINI_API_KEY_1={SCAN_KEYS[0]}\xe9\n"),
    ],
)
def test_cli_keys_output_holds_no_key_text(name: str, content: str, tmp_path: Path) -> None:
    env_file = tmp_path / "keys.env"
    env_file.write_bytes(content.encode("latin-1" if name == "latin-1" else "utf-8"))
    output = _cli(["keys"], env_file, {})
    assert output.strip(), f"{name}: the command said nothing"
    assert "Traceback" not in output
    assert_no_leak_in_text(output, ALL_KEYS, f"gemini-pool keys ({name})")


def test_cli_usage_output_holds_no_key_text(
    emulator: Callable[..., FakeGeminiServer], tmp_path: Path
) -> None:
    server = emulator(faults=Faults(schedule=[None, 500]))
    pool = _pool(server, keys=list(SCAN_KEYS), ledger=UsageLedger(tmp_path / "ledger"))
    _every_path(pool)
    output = _cli(["usage", "--directory", str(tmp_path / "ledger")], None, {})
    assert "requests" in output
    assert_no_leak_in_text(output, ALL_KEYS, "gemini-pool usage")

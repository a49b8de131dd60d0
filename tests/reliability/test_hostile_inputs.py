"""Hostile inputs: each gives the clear error or the WARNING-and-continue it documents.

Every case is one row of a table: what is tried, and what must happen — ``error`` (the type,
a message saying what is wrong, raised from the pool's own code rather than deep inside a
library, and no key text), ``warning`` (a WARNING saying what was done, and the pool or the
keys still work), or ``ok``. Rows cover the constructor (wrong types, out-of-range numbers,
keys that cannot be keys), ``add_keys``, ``.env`` oddities (CRLF, BOM, ``export``, quotes,
``#`` comments, duplicate variables, latin-1 bytes, multi-line key lists), deep copies and
pickles, and corrupt or impossible cache directories (nothing the user had is destroyed).
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

import langchain_gemini_pool
from langchain_gemini_pool import (
    ChatGeminiPool,
    FakeGeminiServer,
    GeminiDiskCache,
    QuotaLimits,
    load_api_keys,
)
from tests.reliability._scan import SCAN_KEYS, leaks_in_text

MODEL = "gemini-2.5-flash"
K1, K2, K3 = SCAN_KEYS[:3]
PACKAGE_DIR = str(Path(langchain_gemini_pool.__file__).parent)


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[Path], Any]
    expect: str  # "error", "warning" or "ok"
    error: type[BaseException] | None = None
    match: str = ""
    check: Callable[[Any], bool] | None = None


def _pool(**kwargs: Any) -> ChatGeminiPool:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("api_keys", [K1, K2])
    return ChatGeminiPool(**kwargs)


def _env(content: str | bytes) -> Callable[[Path], list[str]]:
    def run(tmp: Path) -> list[str]:
        path = tmp / "keys.env"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return [k.get_secret_value() for k in load_api_keys(path)]

    return run


def _env_pool(content: str) -> Callable[[Path], ChatGeminiPool]:
    def run(tmp: Path) -> ChatGeminiPool:
        path = tmp / "keys.env"
        path.write_text(content, encoding="utf-8")
        return ChatGeminiPool(model=MODEL, env_file=str(path))

    return run


def _size(pool: ChatGeminiPool) -> int:
    return len(pool.pool_status())


def _add_keys_all_or_nothing(keys: Any) -> Callable[[Path], Any]:
    def run(tmp: Path) -> Any:
        pool = _pool()
        try:
            pool.add_keys(keys)
        finally:
            assert _size(pool) == 2  # a refused batch adds none of its keys
        return pool

    return run


def _reload_with_a_bad_key(tmp: Path) -> Any:
    env = tmp / "keys.env"
    env.write_text(f"GEMINI_API_KEYS={K1},{K2}\n", encoding="utf-8")
    pool = ChatGeminiPool(model=MODEL, env_file=str(env))
    env.write_text(f"GEMINI_API_KEYS={K1}\nGEMINI_API_KEY_1='{K3} x'\n", encoding="utf-8")
    try:
        pool.reload_keys()
    finally:
        assert _size(pool) == 2  # the pool keeps its keys when the new file is refused


def _corrupt_cache(tmp: Path) -> Any:
    directory = tmp / "cache"
    directory.mkdir()
    garbage = b"this is not a database " * 200
    (directory / "cache.db").write_bytes(garbage)
    with FakeGeminiServer() as server:
        pool = _pool(base_url=server.base_url, cache=GeminiDiskCache(directory))
        first = pool.invoke("hello").content
        second = pool.invoke("hello").content
    return first == second == "Echo: hello" and (directory / "cache.db").read_bytes() == garbage


def _limits_unknown_project(tmp: Path) -> Any:
    with FakeGeminiServer() as server:
        pool = ChatGeminiPool(
            model=MODEL,
            api_keys={"team-a": [K1], "team-b": [K2]},
            base_url=server.base_url,
            limits={"team-a": QuotaLimits(rpm=5), "team-c": QuotaLimits(rpm=1)},
        )
        return pool.invoke("hi").content == "Echo: hi"


CASES = [
    # -- constructor: wrong types --------------------------------------------------------
    Case(
        "api_keys=123",
        lambda t: _pool(api_keys=123),
        "error",
        TypeError,
        r"api_keys must be a key \(str or SecretStr\), a list of keys, or a mapping .*got int",
    ),
    Case(
        "api_keys=bytes",
        lambda t: _pool(api_keys=K1.encode()),
        "error",
        TypeError,
        r"api_keys must be .*got bytes",
    ),
    Case(
        "api_keys=[None]",
        lambda t: _pool(api_keys=[K1, None]),
        "error",
        TypeError,
        r"str or a pydantic SecretStr, not NoneType",
    ),
    Case(
        "api_keys={'p': 5}",
        lambda t: _pool(api_keys={"p": 5}),
        "error",
        TypeError,
        r"api_keys\['p'\] must be .*got int",
    ),
    Case(
        "api_keys={3: [k]}",
        lambda t: _pool(api_keys={3: [K1]}),
        "error",
        ValueError,
        r"Project names in api_keys must be non-empty strings",
    ),
    Case(
        "api_keys=[]",
        lambda t: _pool(api_keys=[]),
        "error",
        ValueError,
        r"api_keys holds no usable key",
    ),
    Case(
        "api_keys=['', ' ']",
        lambda t: _pool(api_keys=["", " "]),
        "error",
        ValueError,
        r"no usable key",
    ),
    Case(
        "limits=5",
        lambda t: _pool(limits=5),
        "error",
        TypeError,
        r"limits must be a QuotaLimits or a mapping .*got a int",
    ),
    Case(
        "limits={'p': 5}",
        lambda t: _pool(limits={"p": 5}),
        "error",
        TypeError,
        r"got a dict of int",
    ),
    Case(
        "additional_headers newline",
        lambda t: _pool(additional_headers={"x-a": "1\n2"}),
        "error",
        ValueError,
        r"additional_headers\['x-a'\] holds a line break",
    ),
    # -- constructor: numbers out of range -----------------------------------------------
    Case(
        "max_wait=-1",
        lambda t: _pool(max_wait=-1),
        "error",
        ValueError,
        r"max_wait must be a number of seconds >= 0; got -1",
    ),
    Case(
        "max_wait=nan",
        lambda t: _pool(max_wait=float("nan")),
        "error",
        ValueError,
        r"max_wait must be a finite number of seconds >= 0; got nan",
    ),
    Case(
        "max_wait=inf",
        lambda t: _pool(max_wait=float("inf")),
        "error",
        ValueError,
        r"max_wait must be a finite number",
    ),
    Case(
        "max_wait='soon'",
        lambda t: _pool(max_wait="soon"),
        "error",
        ValueError,
        r"max_wait\s+Input should be a valid number",
    ),
    Case(
        "rate_limit_cooldown=-5",
        lambda t: _pool(rate_limit_cooldown=-5),
        "error",
        ValueError,
        r"rate_limit_cooldown must be a number of seconds >= 0; got -5",
    ),
    Case(
        "rate_limit_cooldown=nan",
        lambda t: _pool(rate_limit_cooldown=float("nan")),
        "error",
        ValueError,
        r"rate_limit_cooldown must be a finite number",
    ),
    Case(
        "max_attempts=0",
        lambda t: _pool(max_attempts=0),
        "error",
        ValueError,
        r"max_attempts must be at least 1",
    ),
    Case(
        "temperature=5",
        lambda t: _pool(temperature=5),
        "error",
        ValueError,
        r"temperature must be in the range \[0.0, 2.0\]",
    ),
    Case(
        "top_p=3",
        lambda t: _pool(top_p=3),
        "error",
        ValueError,
        r"top_p must be in the range \[0.0, 1.0\]",
    ),
    Case(
        "vertexai=True",
        lambda t: _pool(vertexai=True),
        "error",
        ValueError,
        r"does not support Vertex AI \(asked for by vertexai=True\)",
    ),
    Case(
        "strategy='random'",
        lambda t: _pool(strategy="random"),
        "error",
        ValueError,
        r"strategy\s+Input should be 'round_robin' or 'least_used'",
    ),
    # -- keys that cannot be keys ----------------------------------------------------------
    Case(
        "newline inside a list item",
        lambda t: _pool(api_keys=[f"{K1}\n{K2}"]),
        "error",
        ValueError,
        r"api_keys\[0\] contains a line break at character 30",
    ),
    Case(
        "space inside",
        lambda t: _pool(api_keys=[K1, f"{K2} {K3}"]),
        "error",
        ValueError,
        r"api_keys\[1\] contains a space",
    ),
    Case(
        "NUL inside",
        lambda t: _pool(api_keys={"t": [f"{K1}\x00"]}),
        "error",
        ValueError,
        r"api_keys\['t'\]\[0\] contains a NUL character",
    ),
    Case(
        "non-ASCII",
        lambda t: _pool(api_keys=[f"{K1}\u00e9x"]),
        "error",
        ValueError,
        r"contains a non-ASCII character \(U\+00E9\)",
    ),
    Case(
        "zero-width space",
        lambda t: _pool(api_keys=[f"{K1[:9]}\u200b{K1[9:]}"]),
        "error",
        ValueError,
        r"contains a non-ASCII character \(U\+200B\)",
    ),
    Case(
        "'#' in a key in code",
        lambda t: _pool(api_keys=[f"{K1}#note"]),
        "error",
        ValueError,
        r"contains a '#'",
    ),
    Case(
        "newline-separated string",
        lambda t: _size(_pool(api_keys=f"{K1}\n{K2}\r\n{K3}\n")),
        "ok",
        check=lambda n: n == 3,
    ),
    Case(
        "google_api_key with a tab",
        lambda t: _pool(api_keys=None, google_api_key=f"{K1}\t{K2}"),
        "error",
        ValueError,
        r"google_api_key contains a tab",
    ),
    # -- add_keys: all or nothing ------------------------------------------------------------
    Case(
        "add_keys(123)",
        _add_keys_all_or_nothing(123),
        "error",
        TypeError,
        r"add_keys\(keys\) must be .*got int",
    ),
    Case(
        "add_keys with a bad second key",
        _add_keys_all_or_nothing([K3, f"{K3}x y"]),
        "error",
        ValueError,
        r"add_keys\(keys\)\[1\] contains a space",
    ),
    Case(
        "reload_keys with a bad key",
        _reload_with_a_bad_key,
        "error",
        ValueError,
        r"in GEMINI_API_KEY_1 contains a space",
    ),
    # -- copies ---------------------------------------------------------------------------
    Case(
        "copy.deepcopy(pool)",
        lambda t: copy.deepcopy(_pool()),
        "error",
        TypeError,
        r"cannot be deep-copied\. Share the pool .*model_copy\(\)",
    ),
    Case(
        "pickle.dumps(pool)",
        lambda t: pickle.dumps(_pool()),
        "error",
        TypeError,
        r"cannot be pickled",
    ),
    Case("pool.model_copy()", lambda t: _size(_pool().model_copy()), "ok", check=lambda n: n == 2),
    Case("copy.copy(pool)", lambda t: _size(copy.copy(_pool())), "ok", check=lambda n: n == 2),
    # -- limits naming a project no key belongs to ------------------------------------------
    Case(
        "limits for an unknown project",
        _limits_unknown_project,
        "warning",
        match=r"limits name project\(s\) 'team-c' that no key belongs to.*"
        r"Known projects: 'team-a', 'team-b'",
        check=bool,
    ),
    # -- .env oddities ---------------------------------------------------------------------
    Case(
        ".env CRLF",
        _env(f"GEMINI_API_KEY_1={K1}\r\nGEMINI_API_KEY_2={K2}\r\n"),
        "ok",
        check=lambda keys: keys == [K1, K2],
    ),
    Case(
        ".env BOM",
        _env(f"\ufeffGEMINI_API_KEY_1={K1}\nGEMINI_API_KEY_2={K2}\n"),
        "ok",
        check=lambda keys: keys == [K1, K2],
    ),
    Case(
        ".env export",
        _env(f"export GEMINI_API_KEY_1={K1}\nexport GEMINI_API_KEY_2={K2}\n"),
        "ok",
        check=lambda keys: keys == [K1, K2],
    ),
    Case(
        ".env quotes",
        _env(f"GEMINI_API_KEY_1='{K1}'\nGEMINI_API_KEY_2=\"{K2}\"\n"),
        "ok",
        check=lambda keys: keys == [K1, K2],
    ),
    Case(
        ".env quoted multi-line list",
        _env(f'GEMINI_API_KEYS="{K1}\n{K2}\n{K3}"\n'),
        "ok",
        check=lambda keys: keys == [K1, K2, K3],
    ),
    Case(
        ".env unquoted multi-line list",
        _env(f"GEMINI_API_KEYS={K1}\n{K2}\nX=1\n"),
        "warning",
        match=r"line\(s\) 2 with no '='; they are ignored. If they continue a list",
        check=lambda keys: keys == [K1],
    ),
    Case(
        ".env hash without a space",
        _env(f"GEMINI_API_KEY_1={K1}#old key\n"),
        "warning",
        match=r"GEMINI_API_KEY_1 has a '#' in its value; the text from the '#' on is ignored",
        check=lambda keys: keys == [K1],
    ),
    Case(
        ".env duplicate variable",
        _env(f"GEMINI_API_KEY_1={K1}\nGEMINI_API_KEY_1={K2}\n"),
        "warning",
        match=r"sets GEMINI_API_KEY_1 more than once \(lines 1, 2\); the last",
        check=lambda keys: keys == [K2],
    ),
    Case(
        ".env latin-1 bytes",
        _env(f"# caf\xe9\nGEMINI_API_KEY_1={K1}\n".encode("latin-1")),
        "error",
        ValueError,
        r"not UTF-8 text \(byte 0xE9 on line 1\)",
    ),
    Case(
        ".env space inside a quoted key",
        _env(f"GEMINI_API_KEY_2='{K1} {K2}'\n"),
        "error",
        ValueError,
        r"in GEMINI_API_KEY_2 contains a space",
    ),
    Case(".env empty", _env(""), "error", ValueError, r"No Gemini API key found"),
    Case(
        ".env is a directory",
        lambda t: load_api_keys(t),
        "error",
        ValueError,
        r"does not exist or is not a file",
    ),
    Case(
        "pool from a CRLF .env with a BOM",
        _env_pool(f"\ufeffGEMINI_API_KEYS={K1},{K2}\r\nexport GEMINI_API_KEY_1='{K3}'\r\n"),
        "ok",
        check=lambda pool: _size(pool) == 3,
    ),
    # -- cache directories ------------------------------------------------------------------
    Case(
        "cache directory is a file",
        lambda t: GeminiDiskCache(Path(__file__)),
        "error",
        ValueError,
        r"cannot create its directory .*test_hostile_inputs\.py",
    ),
    Case(
        "cache directory under a file",
        lambda t: GeminiDiskCache(Path(__file__) / "sub"),
        "error",
        ValueError,
        r"Not a directory\. Pass directory= a writable folder",
    ),
    Case("corrupt cache.db", _corrupt_cache, "warning", match=r"cannot be opened", check=bool),
]


@pytest.fixture(autouse=True)
def no_key_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if re.match(r"^(GEMINI_API_KEY(_\d+|S)?|GOOGLE_API_KEY)$", name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    if case.expect == "error":
        assert case.error is not None
        with pytest.raises(case.error, match=case.match) as info:
            case.run(tmp_path)
        error = info.value
        # raised by the pool's own code, with what is wrong, not from deep inside a library
        last_frame = traceback.extract_tb(error.__traceback__)[-1]
        assert last_frame.filename.startswith(PACKAGE_DIR), last_frame
        assert error.__context__ is None or not leaks_in_text(repr(error.__context__), SCAN_KEYS)
        assert not leaks_in_text(str(error), SCAN_KEYS)
        return
    result = case.run(tmp_path)
    if case.check is not None:
        assert case.check(result), f"{case.name}: got {result!r}"
    ours = [r for r in caplog.records if r.name.startswith("langchain_gemini_pool")]
    warnings = [r.getMessage() for r in ours if r.levelno >= logging.WARNING]
    if case.expect == "warning":
        assert any(re.search(case.match, w) for w in warnings), warnings
    else:
        assert not warnings, f"{case.name}: an ok case warned"
    assert not leaks_in_text(caplog.text, SCAN_KEYS)


def test_secret_str_keys_are_checked_like_text() -> None:
    with pytest.raises(ValueError, match=r"api_keys\[0\] contains a line break"):
        _pool(api_keys=[SecretStr(f"{K1}\n{K2}")])

"""The gemini-pool command line, as a user runs it: every command, bad input, --json parsed back.

Commands run in-process through ``main(argv, out=, err=, stdin=)`` (the console script's entry)
against the real emulator over loopback HTTP, with real ledger and cache directories; a few run
as a subprocess, as a shell would.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from langchain_gemini_pool import GeminiDiskCache, UsageLedger, __version__
from langchain_gemini_pool.cli import build_parser, main

KEY_A = "cli-test-key-aaaa1111"
KEY_B = "cli-test-key-bbbb2222"
KEY_BAD = "cli-test-key-dead9999"


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


def cli(*argv: str, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err, stdin=io.StringIO(stdin))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No keys from the machine, a fresh working directory, ledger and cache in tmp."""
    for name in list(os.environ):
        if "API_KEY" in name:
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GEMINI_POOL_LEDGER_DIR", str(tmp_path / "ledger"))
    monkeypatch.delenv("GEMINI_POOL_STATE", raising=False)
    monkeypatch.setenv("GEMINI_POOL_CACHE_DIR", str(tmp_path / "cache"))
    return work


def no_key_text(run: Run, *keys: str) -> None:
    for key in keys:
        assert key not in run.out and key not in run.err
        assert key[:-4] not in run.out + run.err  # not even the unmasked head


# -- the command itself ------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    seen = 0
    for one in _parsers(parser):
        for action in one._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{one.prog} {action.option_strings or action.dest} has no help"
            seen += 1
    assert seen > 40


def test_help_names_every_command_and_the_exit_codes() -> None:
    run = cli("--help")
    assert run.code == 0
    for command in ("demo", "keys", "status", "usage", "cache", "emulator"):
        assert command in run.out
    assert "exit status" in run.out


def test_version() -> None:
    run = cli("--version")
    assert run.code == 0
    assert run.out.strip() == f"gemini-pool {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("frobnicate",),
        ("demo", "--requests", "many"),
        ("usage", "--period", "week"),
        ("cache",),
        ("emulator", "--port", "http"),
    ],
)
def test_usage_errors_exit_2(argv: tuple[str, ...]) -> None:
    assert cli(*argv).code == 2


def test_help_and_keys_list_start_fast_without_langchain() -> None:
    """Start-up stays small: --help and keys list import no LangChain, google-genai or pool."""
    code = (
        "import sys, io\n"
        "from langchain_gemini_pool.cli import main\n"
        "main(['keys', 'list', '--json'], out=io.StringIO(), err=io.StringIO())\n"
        "heavy = ('langchain_core', 'google.genai', 'langchain_google_genai',"
        " 'langchain_gemini_pool.chat_models', 'langchain_gemini_pool.testing')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "GEMINI_API_KEY": KEY_A}
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


# -- demo ----------------------------------------------------------------------------------------


def test_demo_against_the_embedded_emulator() -> None:
    run = cli("demo", "--emulator", "--requests", "6")
    assert run.code == 0, run.err
    assert "No Gemini API keys configured" in run.out
    assert run.out.count("served by key") == 6
    assert "burst 1" in run.out and "burst 2" in run.out  # a progress bar for each burst
    assert "invalid" in run.out  # the demo's bad key was quarantined
    assert "0 answered 429" in run.out  # the quota-aware burst stayed under the limits
    assert "6 of 6 answered from the disk cache" in run.out
    assert "0 HTTP calls" in run.out
    assert "Usage per key" in run.out and "Usage per user" in run.out
    for user in ("alice", "bob", "carol"):
        assert user in run.out
    assert "demo-key" not in run.out  # keys are shown masked only


def test_demo_emulator_with_keys_set_does_not_claim_there_are_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY_A)
    run = cli("demo", "--emulator", "--requests", "3")
    assert run.code == 0, run.err
    assert "No Gemini API keys configured" not in run.out
    assert "1 configured key(s) are not used" in run.out
    no_key_text(run, KEY_A)


def test_demo_uses_the_emulator_when_no_key_is_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k}
    result = subprocess.run(
        [sys.executable, "-m", "langchain_gemini_pool", "demo", "--requests", "3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded emulator" in result.stdout


def test_demo_real_exchange_reads_the_env_file(emulator: Any, clean_env: Path) -> None:
    server = emulator(keys=[KEY_B])
    env_file = clean_env / "other.env"
    env_file.write_text(f"GEMINI_API_KEY_1={KEY_B}\n")
    run = cli("demo", "--env-file", str(env_file), "--base-url", server.base_url)
    assert run.code == 0, run.err
    assert "1 key(s) configured (…2222)" in run.out
    assert "Echo:" in run.out  # the emulator's reply reached the user
    assert server.stats()["total"]["ok"] == 2  # one invoke, one stream
    no_key_text(run, KEY_B)


def test_demo_real_failure_is_one_paragraph_with_the_masked_key(
    emulator: Any, clean_env: Path
) -> None:
    server = emulator(keys=[KEY_A], bad_keys={KEY_BAD: "invalid"})
    (clean_env / ".env").write_text(f"GEMINI_API_KEY={KEY_BAD}\n")
    run = cli("demo", "--base-url", server.base_url)
    assert run.code == 1
    assert "Traceback" not in run.err
    assert "…9999" in run.err
    assert "keys check" in run.err  # what to try
    no_key_text(run, KEY_BAD)


def test_demo_unreachable_endpoint_is_a_clear_paragraph(clean_env: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (clean_env / ".env").write_text(f"GEMINI_API_KEY={KEY_A}\n")
    run = cli("demo", "--base-url", f"http://127.0.0.1:{port}")
    assert run.code == 1
    assert "Could not reach the Gemini API" in run.err
    assert "…1111" in run.err
    assert "Traceback" not in run.err
    debug = cli("--debug", "demo", "--base-url", f"http://127.0.0.1:{port}")
    assert "Traceback" in debug.err  # --debug shows it
    no_key_text(run, KEY_A)


def test_demo_env_file_that_does_not_exist_is_a_usage_error() -> None:
    run = cli("demo", "--env-file", "no-such.env")
    assert run.code == 2
    assert "no-such.env" in run.err


# -- keys ----------------------------------------------------------------------------------------


def test_keys_list_says_where_each_key_came_from(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    (clean_env / ".env").write_text(f"# keys\nGEMINI_API_KEY_2={KEY_B}\n")
    monkeypatch.setenv("GEMINI_API_KEY_1", KEY_A)
    run = cli("keys", "list")
    assert run.code == 0, run.err
    assert "…1111" in run.out and "…2222" in run.out
    no_key_text(run, KEY_A, KEY_B)
    data = cli("keys", "list", "--json").json()
    assert data["keys"] == [
        {
            "index": 0,
            "key": "…1111",
            "source": "GEMINI_API_KEY_1 (environment)",
            "project": "project-…1111",
        },
        {
            "index": 1,
            "key": "…2222",
            "source": "GEMINI_API_KEY_2 (.env:2)",
            "project": "project-…2222",
        },
    ]
    assert cli("keys").out == run.out  # 'keys' alone lists


def test_keys_list_without_keys_is_a_problem_that_names_the_variables() -> None:
    run = cli("keys", "list")
    assert run.code == 1
    assert "GEMINI_API_KEY" in run.err


def test_keys_add_appends_numbered_variables_mode_0600(clean_env: Path) -> None:
    env = clean_env / ".env"
    env.write_text(f"OTHER=1\nGEMINI_API_KEY_4={KEY_A}")  # no final newline
    run = cli("keys", "add", KEY_B)
    assert run.code == 0, run.err
    assert "GEMINI_API_KEY_5" in run.out
    no_key_text(run, KEY_A, KEY_B)
    assert env.read_text() == f"OTHER=1\nGEMINI_API_KEY_4={KEY_A}\nGEMINI_API_KEY_5={KEY_B}\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    listed = cli("keys", "list", "--json").json()["keys"]
    assert [k["key"] for k in listed] == ["…2222", "…1111"] or [k["key"] for k in listed] == [
        "…1111",
        "…2222",
    ]


def test_keys_add_reads_stdin_and_creates_the_file_0600(clean_env: Path) -> None:
    run = cli("keys", "add", stdin=f"{KEY_A}\n\n{KEY_B}\n")
    assert run.code == 0, run.err
    env = clean_env / ".env"
    assert env.read_text() == f"GEMINI_API_KEY_1={KEY_A}\nGEMINI_API_KEY_2={KEY_B}\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    no_key_text(run, KEY_A, KEY_B)


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        ([KEY_A, KEY_A], "given twice"),
        (["short"], "malformed"),
        (["has space-in-it-0000"], "malformed"),
        (["naïve-key-00000000"], "malformed"),
        (["key#comment-0000000"], "malformed"),
    ],
)
def test_keys_add_refuses_duplicates_and_malformed_keys(
    keys: list[str], why: str, clean_env: Path
) -> None:
    run = cli("keys", "add", *keys)
    assert run.code == 1
    assert why in run.err
    assert not (clean_env / ".env").exists()  # nothing half-written
    no_key_text(run, *[k for k in keys if len(k) > 8])


def test_keys_add_refuses_a_key_already_configured(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY_A)
    run = cli("keys", "add", KEY_A)
    assert run.code == 1
    assert "already configured" in run.err
    assert not (clean_env / ".env").exists()


def test_keys_add_with_nothing_on_stdin_is_a_usage_error(clean_env: Path) -> None:
    run = cli("keys", "add", stdin="")
    assert run.code == 2
    assert "standard input" in run.err
    assert not (clean_env / ".env").exists()


def test_keys_check_against_the_emulator(emulator: Any, clean_env: Path) -> None:
    server = emulator(keys=[KEY_A, KEY_B], bad_keys={KEY_BAD: "expired"})
    (clean_env / ".env").write_text(
        f"GEMINI_API_KEY_1={KEY_A}\nGEMINI_API_KEY_2={KEY_BAD}\nGEMINI_API_KEY_3={KEY_B}\n"
    )
    run = cli("keys", "check", "--base-url", server.base_url)
    assert run.code == 1  # one key is invalid
    assert "400 API_KEY_INVALID" in run.out  # what Google says of an expired key
    no_key_text(run, KEY_A, KEY_B, KEY_BAD)
    data = cli("keys", "check", "--base-url", server.base_url, "--json").json()
    assert [(k["key"], k["result"]) for k in data["keys"]] == [
        ("…1111", "valid"),
        ("…9999", "invalid"),
        ("…2222", "valid"),
    ]
    assert data["keys"][1]["reason"] == "400 API_KEY_INVALID"
    assert data["ok"] is False
    assert server.stats()["total"]["requests"] == 0  # countTokens is not a generate call


def test_keys_check_all_valid_exits_0(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = emulator(keys=[KEY_A, KEY_B])
    monkeypatch.setenv("GEMINI_API_KEYS", f"{KEY_A},{KEY_B}")
    run = cli("keys", "check", "--base-url", server.base_url, "--json")
    assert run.code == 0, run.err
    assert {k["result"] for k in run.json()["keys"]} == {"valid"}


def test_keys_check_unreachable_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("GEMINI_API_KEY", KEY_A)
    run = cli("keys", "check", "--base-url", f"http://127.0.0.1:{port}", "--json")
    assert run.code == 1
    assert run.json()["keys"][0]["result"] == "unreachable"


# -- status --------------------------------------------------------------------------------------


def test_status_reports_each_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEYS", f"{KEY_A},{KEY_B}")
    run = cli("status")
    assert run.code == 0, run.err
    assert "…1111" in run.out and "ready" in run.out
    assert "no shared state backend" in run.out  # says where the state was read
    no_key_text(run, KEY_A, KEY_B)
    data = cli("status", "--json", "--rpm", "7").json()
    assert data["source"].startswith("this process")
    assert [(k["fingerprint"], k["state"], k["room"]["rpm"]) for k in data["keys"]] == [
        ("…1111", "ready", 7),
        ("…2222", "ready", 7),
    ]


def test_status_without_keys_is_a_problem() -> None:
    run = cli("status")
    assert run.code == 1
    assert "keys list" in run.err


# -- usage ---------------------------------------------------------------------------------------


def _record(ledger: UsageLedger, user: str, key_index: int, tokens: int) -> None:
    from langchain_core.messages import AIMessage

    ledger.record(
        message=AIMessage(
            content="hi",
            usage_metadata={"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens},
            response_metadata={"key_index": key_index, "project": f"p{key_index}"},
        ),
        user=user,
        model="gemini-2.5-flash",
    )


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "my-ledger"
    with UsageLedger(directory) as ledger:
        _record(ledger, "alice", 0, 100)
        _record(ledger, "alice", 1, 50)
        _record(ledger, "bob", 1, 7)
    return directory


def test_usage_json_totals_by_every_grouping(ledger_dir: Path) -> None:
    run = cli("usage", "--directory", str(ledger_dir), "--json")
    assert run.code == 0, run.err
    data = run.json()
    assert data["directory"] == str(ledger_dir)
    assert data["period"] == "month" and len(data["bucket"]) == 7
    assert data["total"]["requests"] == 3 and data["total"]["total_tokens"] == 157
    assert data["by"]["user"]["alice"]["total_tokens"] == 150
    assert data["by"]["user"]["bob"]["total_tokens"] == 7
    assert data["by"]["key"]["1"]["total_tokens"] == 57
    assert data["by"]["project"]["p0"]["total_tokens"] == 100
    assert data["by"]["model"]["gemini-2.5-flash"]["requests"] == 3
    assert data["total"]["cost_usd"] > 0


def test_usage_table_names_the_directory_and_period(ledger_dir: Path) -> None:
    run = cli("usage", "--directory", str(ledger_dir), "--period", "day", "--by", "user")
    assert run.code == 0, run.err
    assert str(ledger_dir) in run.out
    assert "Period: day" in run.out
    assert "alice" in run.out and "bob" in run.out
    assert "by key" not in run.out  # only the grouping asked for


def test_usage_filters_by_user_and_model(ledger_dir: Path) -> None:
    alice = cli("usage", "--directory", str(ledger_dir), "--user", "alice", "--json").json()
    assert alice["total"]["total_tokens"] == 150
    assert list(alice["by"]["user"]) == ["alice"]
    model = cli("usage", "--directory", str(ledger_dir), "--model", "gemini-2.5-flash", "--json")
    assert model.json()["total"]["requests"] == 3
    both = cli(
        "usage", "--directory", str(ledger_dir), "--user", "bob", "--model", "gemini-2.5-flash"
    )
    assert both.code == 0, both.err
    both_json = cli(
        "usage",
        "--directory",
        str(ledger_dir),
        "--user",
        "bob",
        "--model",
        "gemini-2.5-flash",
        "--json",
    ).json()
    assert both_json["total"]["total_tokens"] == 7  # bob's spend on that model, not alice's
    other = cli("usage", "--directory", str(ledger_dir), "--user", "bob", "--model", "m", "--json")
    assert other.json()["total"]["requests"] == 0


def test_usage_overage_against_given_limits(ledger_dir: Path) -> None:
    run = cli("usage", "--directory", str(ledger_dir), "--limit", "tokens_per_month=100", "--json")
    assert run.code == 0, run.err
    assert run.json()["overage"] == {"alice": {"tokens_per_month": 50}}
    assert cli("usage", "--directory", str(ledger_dir), "--limit", "tokens=5").code == 2
    assert cli("usage", "--directory", str(ledger_dir), "--limit", "tokens_per_day=x").code == 2


def test_usage_explicit_directory_without_a_ledger_is_an_error_and_never_created(
    tmp_path: Path,
) -> None:
    typo = tmp_path / "my-ledgr"
    run = cli("usage", "--directory", str(typo))
    assert run.code == 1
    assert "my-ledgr" in run.err and "does not exist" in run.err
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("usage", "--directory", str(empty)).code == 1
    assert list(empty.iterdir()) == []


def test_usage_default_location_with_nothing_recorded(tmp_path: Path) -> None:
    run = cli("usage")
    assert run.code == 0, run.err
    assert "Nothing recorded yet" in run.out
    assert str(tmp_path / "ledger") in run.out
    data = cli("usage", "--json").json()
    assert data["exists"] is False and data["total"]["requests"] == 0
    assert not (tmp_path / "ledger").exists()


# -- cache ---------------------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    from langchain_core.outputs import Generation

    directory = tmp_path / "my-cache"
    cache = GeminiDiskCache(directory)
    cache.update("prompt one", "llm", [Generation(text="one")])
    cache.update("prompt two", "llm", [Generation(text="two")])
    cache.close()
    return directory


def test_cache_stats(cache_dir: Path) -> None:
    data = cli("cache", "stats", "--directory", str(cache_dir), "--json").json()
    assert data["entries"] == 2 and data["exists"] is True and data["bytes"] > 0
    assert data["directory"] == str(cache_dir)
    text = cli("cache", "stats", "--directory", str(cache_dir))
    assert "entries  2" in text.out


def test_cache_stats_of_a_missing_directory(tmp_path: Path) -> None:
    run = cli("cache", "stats", "--directory", str(tmp_path / "nope"))
    assert run.code == 1
    assert not (tmp_path / "nope").exists()
    default = cli("cache", "stats", "--json")
    assert default.code == 0 and default.json()["entries"] == 0


def test_cache_clear_asks_first(cache_dir: Path) -> None:
    refused = cli("cache", "clear", "--directory", str(cache_dir), stdin="n\n")
    assert refused.code == 1 and "Nothing removed" in refused.out
    no_answer = cli("cache", "clear", "--directory", str(cache_dir), stdin="")
    assert no_answer.code == 1 and "--yes" in no_answer.out
    assert cli("cache", "stats", "--directory", str(cache_dir), "--json").json()["entries"] == 2
    agreed = cli("cache", "clear", "--directory", str(cache_dir), stdin="y\n")
    assert agreed.code == 0 and "Removed 2 entries" in agreed.out
    assert cli("cache", "stats", "--directory", str(cache_dir), "--json").json()["entries"] == 0


def test_cache_clear_yes(cache_dir: Path) -> None:
    run = cli("cache", "clear", "--directory", str(cache_dir), "--yes")
    assert run.code == 0
    assert cli("cache", "stats", "--directory", str(cache_dir), "--json").json()["entries"] == 0


# -- emulator ------------------------------------------------------------------------------------


def test_emulator_help_shows_every_option() -> None:
    run = cli("emulator", "--help")
    assert run.code == 0
    for option in (
        "--port", "--host", "--key", "--project", "--bad-key", "--rpm", "--tpm", "--rpd",
        "--window", "--error-rate", "--unavailable-rate", "--reset-rate", "--latency",
        "--jitter", "--stream-cut-after", "--seed", "--unknown-model", "--zero-quota-model",
    ):  # fmt: skip
        assert option in run.out


@pytest.mark.parametrize(
    "argv",
    [
        ("--error-rate", "2"),
        ("--bad-key", "k=stolen"),
        ("--project", "nokeys"),
        ("--window", "0"),
        ("--port", "70000"),
        ("--rpm", "-1"),
    ],
)
def test_emulator_bad_values_are_usage_errors(argv: tuple[str, ...]) -> None:
    run = cli("emulator", *argv)
    assert run.code == 2
    assert "usage error" in run.err


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("dashdash", [False, True], ids=["plain", "after --"])
def test_emulator_serves_with_its_options_until_stopped(dashdash: bool) -> None:
    import httpx

    port = _free_port()
    argv = ["emulator", *(["--"] if dashdash else []), "--port", str(port)]
    argv += ["--project", f"team={KEY_A},{KEY_B}", "--rpm", "0", "--unknown-model", "gone-1"]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, fixed args
        [sys.executable, "-m", "langchain_gemini_pool", *argv], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:

            def post(key: str, model: str = "gemini-2.5-flash") -> int:
                url = f"/v1beta/models/{model}:generateContent"
                return http.post(url, headers={"x-goog-api-key": key}, json=body).status_code

            assert post(KEY_A) == 429  # --rpm 0: the project has no room at all
            assert post(KEY_BAD) == 400  # --project: only its keys are accepted
            assert post(KEY_B, "gone-1") == 404  # --unknown-model
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_emulator_options_reach_the_server() -> None:
    from langchain_gemini_pool._cli._emulator import add_emulator_arguments, build_server
    from langchain_gemini_pool.testing import Faults, Quota

    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    argv = ["--project", f"team={KEY_A},{KEY_B}", "--key", KEY_BAD, "--rpm", "4", "--tpm", "900"]
    argv += ["--rpd", "30", "--window", "7", "--error-rate", "0.1", "--unavailable-rate", "0.2"]
    argv += ["--reset-rate", "0.05", "--latency", "0.5", "--jitter", "0.25"]
    argv += ["--stream-cut-after", "2", "--seed", "9", "--port", "0"]
    server = build_server(parser.parse_args(argv))
    assert server.faults == Faults(
        error_rate=0.1,
        unavailable_rate=0.2,
        reset_rate=0.05,
        latency_s=0.5,
        jitter_s=0.25,
        stream_cut_after=2,
        seed=9,
    )
    assert server.project_of(KEY_A) == server.project_of(KEY_B) == "team"
    assert server.project_of(KEY_BAD) not in (None, "team")  # --key: its own project
    assert server.project_of("some-other-key-0000") is None  # only listed keys are accepted
    book = server._quota  # the quota book: what --rpm/--tpm/--rpd/--window set
    assert book.quota_for("team", "gemini-2.5-flash") == Quota(rpm=4, tpm=900, rpd=30)
    assert book.window_left(70.0) == pytest.approx(7.0)  # 7 s windows aligned at 0, 7, 14, ...


def test_an_unexpected_error_is_scrubbed_of_configured_keys() -> None:
    from langchain_gemini_pool._cli._failures import explain

    text = explain(RuntimeError(f"Illegal header value b'{KEY_A}'"), "", [KEY_A])
    assert KEY_A not in text and "…1111" in text
    assert text.startswith("RuntimeError")

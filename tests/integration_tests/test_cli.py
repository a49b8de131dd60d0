"""The gemini-pool command line, as a user runs it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langchain_gemini_pool import UsageLedger
from langchain_gemini_pool.cli import main


def run(*argv: str) -> str:
    out = io.StringIO()
    assert main(list(argv), out=out) == 0
    return out.getvalue()


def test_demo_against_the_embedded_emulator() -> None:
    text = run("demo", "--emulator", "--requests", "8")
    assert "embedded emulator" in text
    assert text.count("served by key") == 8
    assert "pool_status()" in text
    assert "invalid" in text  # the demo's bad key was quarantined
    assert "demo-key" not in text  # keys are shown masked only
    assert "0 answered 429" in text  # the quota-aware burst stayed under the limits


def test_demo_uses_the_emulator_when_no_key_is_configured(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k}
    result = subprocess.run(
        [sys.executable, "-m", "langchain_gemini_pool", "demo", "--requests", "4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded emulator" in result.stdout


def test_keys_lists_masked_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEMINI_API_KEYS", "cli-key-0001,cli-key-0002")
    text = run("keys")
    assert "…0001" in text
    assert "…0002" in text
    assert "cli-key" not in text


def test_usage_prints_ledger_totals(tmp_path: Path) -> None:
    from langchain_core.messages import AIMessage

    with UsageLedger(tmp_path) as ledger:
        ledger.record(
            message=AIMessage(
                content="hi",
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                response_metadata={
                    "key_index": 0,
                    "project": "p",
                    "model_name": "gemini-2.5-flash",
                },
            ),
            user="alice",
            model="gemini-2.5-flash",
        )
    text = run("usage", "--directory", str(tmp_path), "--user", "alice")
    assert "total_tokens" in text
    assert " 7" in text

"""The one rule the disk cache and the disk ledger share for a failure that repeats."""

from __future__ import annotations

import logging

from langchain_gemini_pool._log_throttle import WARN_EVERY_S, throttled_level


def test_a_kind_warns_once_per_interval_and_debugs_in_between() -> None:
    warned_at: dict[str, float] = {}
    assert throttled_level(warned_at, "read", 1_000.0) == logging.WARNING
    assert throttled_level(warned_at, "read", 1_000.0) == logging.DEBUG
    assert throttled_level(warned_at, "read", 1_000.0 + WARN_EVERY_S - 0.001) == logging.DEBUG
    assert throttled_level(warned_at, "read", 1_000.0 + WARN_EVERY_S) == logging.WARNING
    # the interval counts from the last WARNING, not from the last DEBUG
    assert throttled_level(warned_at, "read", 1_000.0 + WARN_EVERY_S + 30) == logging.DEBUG
    assert throttled_level(warned_at, "read", 1_000.0 + 2 * WARN_EVERY_S) == logging.WARNING


def test_kinds_are_counted_apart() -> None:
    warned_at: dict[str, float] = {}
    assert throttled_level(warned_at, "read", 0.0) == logging.WARNING
    assert throttled_level(warned_at, "write", 1.0) == logging.WARNING
    assert throttled_level(warned_at, "read", 2.0) == logging.DEBUG
    assert warned_at == {"read": 0.0, "write": 1.0}

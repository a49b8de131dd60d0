"""One rule for a failure that repeats: a WARNING now and then, DEBUG in between."""

from __future__ import annotations

import logging

WARN_EVERY_S = 60.0
"""Seconds between repeated WARNINGs of the same kind."""


def throttled_level(warned_at: dict[str, float], kind: str, now: float) -> int:
    """The level to log a failure of ``kind`` at: WARNING the first time and at most once
    per ``WARN_EVERY_S`` after (noted in ``warned_at``), DEBUG in between."""
    last = warned_at.get(kind)
    if last is not None and now - last < WARN_EVERY_S:
        return logging.DEBUG
    warned_at[kind] = now
    return logging.WARNING

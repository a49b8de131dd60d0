"""Real Gemini API error bodies (``tests/fixtures/google_errors``), loaded for the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "google_errors"


def load(name: str) -> dict[str, Any]:
    """One fixture: ``source``, ``quoted_as``, ``note``, ``http_status`` and ``body``."""
    doc: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def names() -> list[str]:
    """Every fixture's name, sorted."""
    return sorted(p.stem for p in FIXTURES.glob("*.json"))

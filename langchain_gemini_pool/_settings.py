"""Checks of the pool's settings at construction: clear errors, never key text.

Each check says what is wrong and what to do; an argument that might be a key is described
by its type and shape, never printed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("langchain_gemini_pool")


def check_seconds(name: str, value: float) -> None:
    """A duration setting must be a finite number of seconds >= 0 (``nan`` and ``inf`` are
    refused: a wait budget of ``inf`` would hang on a project whose limit is 0)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds >= 0; got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0; got {value!r}.")


def describe_shape(value: Any) -> str:
    """What a wrong argument was, without its text (it might be a key)."""
    if isinstance(value, Mapping):
        kinds = sorted({type(v).__name__ for v in value.values()})
        return f"a {type(value).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(value).__name__}"


def warn_unknown_projects(limits: Any, projects: set[str]) -> None:
    """``limits`` naming a project no key belongs to is a WARNING, not an error: keys of that
    project may come later through ``add_keys`` or ``reload_keys``."""
    if not isinstance(limits, Mapping):
        return
    unknown = sorted(str(p) for p in limits if p not in projects)
    if unknown:
        logger.warning(
            "limits name project(s) %s that no key belongs to; they take effect only when keys "
            "of those projects are added. Known projects: %s.",
            ", ".join(repr(p) for p in unknown),
            _listed(sorted(projects)),
        )


def _listed(names: list[str], most: int = 20) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_headers(headers: Any) -> None:
    """``additional_headers`` values must be sendable, or every key would fail the same way
    (and an encoding failure at request time is taken for a bad key)."""
    if not headers:
        return
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"additional_headers must be a mapping name -> value; got {describe_shape(headers)}."
        )
    for name, value in headers.items():
        text = str(value)
        if any(not (" " <= c <= "~" or c == "\t") for c in f"{name}{text}"):
            raise ValueError(
                f"additional_headers[{name!r}] holds a line break, control or non-ASCII "
                "character; HTTP header names and values must be printable ASCII."
            )

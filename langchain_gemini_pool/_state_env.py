"""``GEMINI_POOL_STATE``: pick the shared-state backend from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from langchain_gemini_pool._state_disk import DiskState
from langchain_gemini_pool._state_redis import RedisState
from langchain_gemini_pool._state_redis_codec import safe_url
from langchain_gemini_pool._state_types import StateBackend

ENV_VAR = "GEMINI_POOL_STATE"


def state_from_env(env: Mapping[str, str] | None = None) -> StateBackend | None:
    """The backend ``GEMINI_POOL_STATE`` names, or None when it is unset or empty.

    A ``redis://``, ``rediss://`` or ``unix://`` URL gives a ``RedisState``; any other
    value is a directory for a ``DiskState``.

    Raises:
        ValueError: The value is a URL of another kind, or a directory that cannot be made.
        ConnectionError: The Redis it names cannot be reached.
    """
    value = (os.environ if env is None else env).get(ENV_VAR, "").strip()
    if not value:
        return None
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisState(value)
    if scheme:
        raise ValueError(
            f"{ENV_VAR}={safe_url(value)!r}: use a redis://, rediss:// or unix:// URL, "
            "or a directory path for DiskState."
        )
    return DiskState(value)

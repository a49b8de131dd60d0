"""Where the pool meets what users do with a ``ChatGoogleGenerativeAI``: Vertex AI (refused,
every way of asking for it) and ``dumps``/``loads`` (every key back, no key text written).

A dumped pool names its keys by one secret, ``GEMINI_API_KEYS``; ``loads`` fills it from
``secrets_map`` (a comma-separated string, a list, or a mapping project -> keys) or, when it
is missing, the pool loads its keys from the environment as a new pool would.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._usage_limits import UsageLimits

KEYS_SECRET = "GEMINI_API_KEYS"  # noqa: S105 - the name of a secret, not one
"""The secret a dumped pool's keys are read back from."""

_VERTEX_FIELDS = ("vertexai", "credentials", "project", "location")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def refuse_vertex_ai(values: Mapping[str, Any]) -> None:
    """Raise one clear error for every way of asking for Vertex AI.

    The ways are the bare class's own (``_determine_backend``): ``vertexai=True``;
    ``GOOGLE_GENAI_USE_VERTEXAI=true`` in the environment; ``project=`` (unless
    ``vertexai=False`` or the variable says false, which win as they do for the bare class);
    and ``credentials=`` always (the pool only holds API keys). ``location=`` alone does not
    ask for Vertex AI, and is ignored as the bare class ignores it.
    """
    vertexai = values.get("vertexai")
    env = os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").strip().lower()
    asked = []
    if vertexai:
        asked.append("vertexai=True")
    if values.get("credentials") is not None:
        asked.append("credentials=")
    if vertexai is None and env in _TRUE:
        asked.append(f"GOOGLE_GENAI_USE_VERTEXAI={env} in the environment")
    elif vertexai is None and env not in _FALSE and values.get("project") is not None:
        asked.append("project=")
    if asked:
        raise ValueError(
            "ChatGeminiPool pools Gemini Developer API keys and does not support Vertex AI "
            f"(asked for by {', '.join(asked)}). Use ChatGoogleGenerativeAI for Vertex AI; "
            "for the pool, drop vertexai/credentials/project and unset "
            "GOOGLE_GENAI_USE_VERTEXAI (or pass vertexai=False). Group keys by Google Cloud "
            "project with api_keys={project: [keys]} instead of project=."
        )


def _revive(value: Any, cls: type[Any]) -> Any:
    """``cls`` from its dict form, or ``{name: cls}`` from a mapping of dict forms."""
    if not isinstance(value, Mapping) or not value:
        return value
    names = {f.name for f in dataclasses.fields(cls)}
    if all(isinstance(v, (Mapping, cls)) for v in value.values()):
        return {k: _revive_entry(v, cls, names) for k, v in value.items()}
    if set(value) <= names:
        return cls(**value)
    return value  # left for the pool's own check, which names what is wrong


def _revive_entry(value: Any, cls: type[Any], names: set[str]) -> Any:
    """One project's entry: ``cls``, its dict form, or ``{model: dict form}`` (a ladder)."""
    if not isinstance(value, Mapping):
        return value
    if set(value) <= names:
        return cls(**value)
    return {
        k: cls(**v) if isinstance(v, Mapping) and set(v) <= names else v for k, v in value.items()
    }


def revive_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Accept ``limits`` / ``usage_limits`` in the plain dict form ``dumps`` writes."""
    if "limits" in values:
        values["limits"] = _revive(values["limits"], QuotaLimits)
    if "usage_limits" in values:
        values["usage_limits"] = _revive(values["usage_limits"], UsageLimits)
    return values


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def pool_kwargs(kwargs: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor kwargs of a dumped pool: keys as one secret, settings in plain form.

    Args:
        kwargs: What ``Serializable.to_json`` collected (secrets already references).
        settings: The pool's own settings that ``to_json`` skips (excluded fields), by name;
            ``None`` values are left out.
    """
    out = {k: v for k, v in kwargs.items() if k not in (*_VERTEX_FIELDS, "google_api_key")}
    out.pop("api_key", None)
    for name, value in settings.items():
        if value is not None:
            out[name] = _plain(value)
    out["api_keys"] = {"lc": 1, "type": "secret", "id": [KEYS_SECRET]}
    return out

"""Per-project, per-model quotas enforced the way Google enforces them.

* Requests per window (``rpm``) and input tokens per window (``tpm``) count in fixed windows
  aligned to multiples of ``window_s`` on the emulator clock (with 60 s: each minute from :00).
* Requests per day (``rpd``) count per calendar day in America/Los_Angeles; they reset at
  Pacific midnight on the emulator clock.
* A refused request is not counted. A violation's retry delay is the time left in the window
  that refused it; for a per-day violation, the time left until Pacific midnight.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_gemini_pool._clock import next_pacific_midnight, pacific_day

REQ_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
_TOK_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
RPM_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
TPM_ID = "GenerateContentInputTokensPerModelPerMinute-FreeTier"
RPD_ID = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


@dataclass(frozen=True)
class Quota:
    """Limits for one project and model; ``None`` means unlimited.

    Free-tier numbers move (2026 bodies show gemini-2.5-flash at 10 RPM and 20 RPD); pick
    the ones your test needs, e.g. ``Quota(rpm=10, rpd=20)``.

    Args:
        rpm: Requests per window (per minute with the default ``window_s=60``).
        tpm: Input (prompt) tokens per window.
        rpd: Requests per Pacific calendar day.
    """

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "rpd"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(
                    f"Quota.{name} must be a whole number >= 0 or None (unlimited); got {value!r}."
                )


QuotaSpec = Quota | Mapping[str, Quota | Mapping[str, Quota]] | None
"""``None``; one ``Quota`` for all; project -> Quota; or project -> model -> Quota ("*" = any)."""


def violation(metric: str, quota_id: str, model: str, limit: int) -> dict[str, Any]:
    """One ``QuotaFailure`` violation as Google writes it.

    ``quotaValue`` is a proto3 int64: a limit of 0 is the default value and Google leaves the
    field out (real "no free tier" bodies carry the 0 only in the message's "limit: 0").
    """
    body: dict[str, Any] = {
        "quotaMetric": metric,
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
    }
    if limit:
        body["quotaValue"] = str(limit)
    return body


@dataclass
class _Usage:
    window: int = -1
    requests: int = 0
    tokens: int = 0
    day: str = ""
    day_requests: int = 0


class QuotaBook:
    """Counts usage per (project, model) and refuses what goes over a quota. Thread-safe."""

    def __init__(
        self, spec: QuotaSpec, window_s: float, zero_quota_models: tuple[str, ...] = ()
    ) -> None:
        if not (isinstance(window_s, (int, float)) and window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds; got {window_s!r}.")
        _check_spec(spec)
        self._spec = spec
        self._window_s = float(window_s)
        self._zero = frozenset(zero_quota_models)
        self._usage: dict[tuple[str, str], _Usage] = {}
        self._lock = threading.Lock()

    def quota_for(self, project: str, model: str) -> Quota | None:
        """The quota that applies to ``project`` and ``model``, if any."""
        spec = self._spec
        if spec is None or isinstance(spec, Quota):
            return spec
        entry = spec.get(project, spec.get("*"))
        if entry is None or isinstance(entry, Quota):
            return entry
        return entry.get(model, entry.get("*"))

    def window_left(self, now: float) -> float:
        """Seconds from ``now`` to the end of its per-minute window."""
        return (math.floor(now / self._window_s) + 1) * self._window_s - now

    def admit(
        self, project: str, model: str, prompt_tokens: int, now: float
    ) -> tuple[list[dict[str, Any]], float] | None:
        """Count one generate request, or refuse it.

        Returns:
            ``None`` if admitted (and counted); else the QuotaFailure violations and the
            seconds until the refusing quota frees up.
        """
        window = math.floor(now / self._window_s)
        window_left = self.window_left(now)
        if model in self._zero:
            return [
                violation(_TOK_METRIC, TPM_ID, model, 0),
                violation(REQ_METRIC, RPM_ID, model, 0),
                violation(REQ_METRIC, RPD_ID, model, 0),
            ], window_left
        quota = self.quota_for(project, model)
        if quota is None:
            return None
        day = pacific_day(now)
        with self._lock:
            usage = self._usage.setdefault((project, model), _Usage())
            if usage.window != window:
                usage.window, usage.requests, usage.tokens = window, 0, 0
            if usage.day != day:
                usage.day, usage.day_requests = day, 0
            violations: list[dict[str, Any]] = []
            retry = 0.0
            if quota.rpd is not None and usage.day_requests + 1 > quota.rpd:
                violations.append(violation(REQ_METRIC, RPD_ID, model, quota.rpd))
                retry = max(retry, next_pacific_midnight(now) - now)
            if quota.rpm is not None and usage.requests + 1 > quota.rpm:
                violations.append(violation(REQ_METRIC, RPM_ID, model, quota.rpm))
                retry = max(retry, window_left)
            if quota.tpm is not None and usage.tokens + prompt_tokens > quota.tpm:
                violations.append(violation(_TOK_METRIC, TPM_ID, model, quota.tpm))
                retry = max(retry, window_left)
            if violations:
                return violations, retry
            usage.requests += 1
            usage.tokens += prompt_tokens
            usage.day_requests += 1
            return None


def _check_spec(spec: object) -> None:
    if spec is None or isinstance(spec, Quota):
        return
    hint = (
        "quotas= takes None, a Quota, a dict project -> Quota, or a dict project -> "
        'dict model -> Quota ("*" matches any project or model)'
    )
    if not isinstance(spec, Mapping):
        raise TypeError(f"{hint}; got {type(spec).__name__}.")
    for project, entry in spec.items():
        if isinstance(entry, Quota):
            continue
        if not isinstance(entry, Mapping) or not all(isinstance(q, Quota) for q in entry.values()):
            raise TypeError(f"{hint}; the entry for project {project!r} is neither.")

"""Ground-truth counters of what the emulator received and served, per key and per project.

Counted per generate request (``generateContent`` and ``streamGenerateContent``):
``requests`` (every one received, refused or not), ``ok`` (served in full), ``rate_limited``
(429), ``client_errors`` (other 4xx), ``server_errors`` (5xx, injected or not, and streams cut
by an error event), ``resets`` (connections dropped without a response).

Tokens are billed only for what was served: a full reply bills its ``usageMetadata``; a stream
cut after k chunks bills the running totals of the k-th chunk it sent (nothing if k is 0).
Keys are known only by ``mask_key(key)``; a key no project holds has ``"project": None``; a
request without any key counts only in ``"total"``. countTokens and model routes are not counted.
``"models"`` splits the same counters by model, then project (``stats()["models"][model]
[project]``): Google's quotas are per (project, model).
With ``FakeGeminiServer(label=...)``, a request is also counted in ``"labels"[name]``, a
``stats()`` of its own, so a test can tell what each request (or group of requests) cost.
"""

from __future__ import annotations

import threading
from typing import Any

OUTCOMES = ("ok", "rate_limited", "client_errors", "server_errors", "resets")
TOKENS = ("prompt_tokens", "candidates_tokens", "thoughts_tokens", "total_tokens")
FIELDS = ("requests", *OUTCOMES, *TOKENS)


def _zero() -> dict[str, int]:
    return dict.fromkeys(FIELDS, 0)


class Stats:
    """Thread-safe counters; :meth:`snapshot` gives the ``server.stats()`` JSON."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}
        self._projects: dict[str, dict[str, int]] = {}
        self._total = _zero()
        self._labels: dict[str, Stats] = {}
        self._models: dict[str, dict[str, dict[str, int]]] = {}

    def record(
        self,
        fingerprint: str | None,
        project: str | None,
        outcome: str,
        usage: dict[str, Any] | None = None,
        label: str | None = None,
        model: str | None = None,
    ) -> None:
        """Count one generate request with ``outcome`` (one of ``OUTCOMES``) and its usage,
        also under ``label`` if given."""
        delta = _zero()
        delta["requests"] = 1
        delta[outcome] = 1
        if usage:
            delta["prompt_tokens"] = int(usage.get("promptTokenCount", 0))
            delta["candidates_tokens"] = int(usage.get("candidatesTokenCount", 0))
            delta["thoughts_tokens"] = int(usage.get("thoughtsTokenCount", 0))
            delta["total_tokens"] = int(usage.get("totalTokenCount", 0))
        with self._lock:
            rows: list[dict[str, Any]] = [self._total]
            if fingerprint is not None:
                rows.append(self._keys.setdefault(fingerprint, {**_zero(), "project": project}))
            if project is not None:
                rows.append(self._projects.setdefault(project, _zero()))
                if model is not None:
                    rows.append(self._models.setdefault(model, {}).setdefault(project, _zero()))
            for row in rows:
                for name, value in delta.items():
                    row[name] += value
            if label is not None:  # under the same lock: a snapshot sees both or neither
                self._labels.setdefault(label, Stats()).record(
                    fingerprint, project, outcome, usage, model=model
                )

    def snapshot(self) -> dict[str, Any]:
        """``{"keys": {fp: {..., "project": p}}, "projects": {p: {...}}, "total": {...},
        "labels": {name: {"keys": ..., "projects": ..., "total": ..., "labels": {}}}}``."""
        with self._lock:
            return {
                "keys": {fp: dict(row) for fp, row in self._keys.items()},
                "projects": {p: dict(row) for p, row in self._projects.items()},
                "total": dict(self._total),
                "labels": {name: stats.snapshot() for name, stats in self._labels.items()},
                "models": {
                    m: {p: dict(row) for p, row in rows.items()} for m, rows in self._models.items()
                },
            }

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._keys.clear()
            self._projects.clear()
            self._labels.clear()
            self._models.clear()
            self._total = _zero()

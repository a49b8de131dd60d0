"""What one caller request contributed: decided here, stored elsewhere.

:func:`usage_record` reads a final ``AIMessage`` (or the exception of a failed request) into a
:class:`UsageRecord`; :meth:`UsageRecord.deltas` splits it into the :class:`UsageTotals` to add
under each dimension (total, user, model, key, project). The callback handler adds them to
dictionaries in memory, the ledger to per-period entries on disk; neither decides anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, NamedTuple

from langchain_core.messages import BaseMessage

from langchain_gemini_pool._usage_limits import UsageLimitExceededError
from langchain_gemini_pool._usage_prices import ModelPrice, estimate_cost, normalize_model

__all__ = ["Attempt", "Dimension", "UsageRecord", "UsageTotals", "usage_record"]

Dimension = Literal["total", "user", "model", "key", "project"]
"""The groupings every record is added under."""

UNKNOWN_MODEL = "unknown"
"""The ``by_model`` name of a request whose model could not be told."""


@dataclass
class UsageTotals:
    """Summed usage of some caller requests. Add two with ``+`` or ``add``.

    ``requests`` = ``successful_requests`` + ``failed_requests`` + ``cached_requests`` +
    ``refused_requests``. Under a key or project, ``requests`` counts the caller requests whose
    last attempt went to that key (served there, or failed there), while ``attempts`` counts every
    HTTP attempt sent to it, failovers included.

    A request is *billed* when it was served, or failed after Gemini had already produced output
    (a stream cut mid-way whose exception carries ``gemini_pool_usage``, the usage streamed so
    far); only billed requests carry tokens and cost.

    Cost: ``cost_usd`` is the sum of the costs that are known. A billed request of a model
    missing from the price table adds 1 to ``unknown_cost_requests`` and nothing to the sum; it is
    never priced at 0 silently. ``cost_usd`` is ``None`` only when the totals hold such requests
    and no priced one (nothing could be priced); check ``unknown_cost_requests`` to know whether
    a figure is complete. Cache hits, failed and refused requests cost nothing (0.0).
    """

    requests: int = 0
    """Caller requests (one per invoke/stream/batch item), however they ended."""
    attempts: int = 0
    """HTTP attempts sent to Gemini, failovers and retries included; 0 for cache hits."""
    successful_requests: int = 0
    """Requests answered by Gemini."""
    failed_requests: int = 0
    """Requests that ended in an error (other than a usage limit)."""
    cached_requests: int = 0
    """Requests answered from the response cache: nothing was sent, nothing billed."""
    refused_requests: int = 0
    """Requests refused by a hard usage limit before anything was sent."""
    input_tokens: int = 0
    """Prompt tokens, cached prompt tokens included."""
    output_tokens: int = 0
    """Output tokens, thinking tokens included."""
    reasoning_tokens: int = 0
    """Thinking tokens (part of ``output_tokens``)."""
    cache_read_tokens: int = 0
    """Prompt tokens read from Gemini's context cache (part of ``input_tokens``)."""
    total_tokens: int = 0
    """As Gemini reported it: prompt + output (thinking included)."""
    cost_usd: float | None = 0.0
    """Known cost in US dollars; ``None`` only if nothing here could be priced (see above)."""
    priced_requests: int = 0
    """Billed requests whose cost is known."""
    unknown_cost_requests: int = 0
    """Billed requests whose model (or usage) the price table could not price."""
    quota_warnings: int = 0
    """Requests that took their project to 80% of its daily quota (the pool's
    ``response_metadata["quota_warnings"]``; once per project and Pacific day)."""

    def add(self, other: UsageTotals) -> UsageTotals:
        """Add ``other`` into these totals in place, and return them."""
        for f in fields(self):
            if f.name != "cost_usd":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        known = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        nothing_priced = self.priced_requests == 0 and self.unknown_cost_requests > 0
        self.cost_usd = None if nothing_priced else known
        return self

    def __add__(self, other: UsageTotals) -> UsageTotals:
        if not isinstance(other, UsageTotals):
            return NotImplemented
        return self.copy().add(other)

    def copy(self) -> UsageTotals:
        """An independent copy."""
        return UsageTotals(**asdict(self))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UsageTotals:
        """Rebuild totals from :meth:`to_dict` output; unknown fields are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Attempt(NamedTuple):
    """One HTTP attempt of a request, as the pool reports it in ``attempts``."""

    key_index: int
    project: str
    outcome: str


@dataclass(frozen=True)
class UsageRecord:
    """One caller request, read once; :meth:`deltas` says what to add where."""

    user: str
    model: str
    outcome: Literal["ok", "failed", "cached", "refused"]
    attempts: tuple[Attempt, ...] = ()
    key_index: int | None = None
    """The key that served the request (or saw its last failed attempt)."""
    project: str | None = None
    usage: UsageTotals = field(default_factory=UsageTotals)
    """This request's own contribution to the totals."""

    def deltas(self) -> list[tuple[Dimension, str, UsageTotals]]:
        """``(dimension, name, totals to add)`` for every grouping this request belongs to.

        Keys are named by their index as text (``"0"``); cache hits and refusals touch no key
        or project.
        """
        out: list[tuple[Dimension, str, UsageTotals]] = [
            ("total", "", self.usage),
            ("user", self.user, self.usage),
            ("model", self.model, self.usage),
        ]
        per_key: dict[int, int] = {}
        per_project: dict[str, int] = {}
        for attempt in self.attempts:
            per_key[attempt.key_index] = per_key.get(attempt.key_index, 0) + 1
            per_project[attempt.project] = per_project.get(attempt.project, 0) + 1
        for index, count in per_key.items():
            out.append(("key", str(index), self._share(count, index == self.key_index)))
        for project, count in per_project.items():
            out.append(("project", project, self._share(count, project == self.project)))
        return out

    def cells(self) -> list[tuple[str, str, str, str, UsageTotals]]:
        """``(user, model, key, project, totals to add)``, one per (key, project) pair tried.

        The finest grouping, for queries that combine filters: summed over the cells that
        match a key or a project, they give what :meth:`deltas` gives that key or project.
        The final pair carries the request (with its attempts there); every other pair only
        its attempts. A request with no final pair (a cache hit, a refusal) is one cell with
        key and project ``""``.
        """
        per_pair: dict[tuple[int, str], int] = {}
        for attempt in self.attempts:
            pair = (attempt.key_index, attempt.project)
            per_pair[pair] = per_pair.get(pair, 0) + 1
        final = (self.key_index, self.project)
        out: list[tuple[str, str, str, str, UsageTotals]] = []
        for (index, project), count in per_pair.items():
            share = self._share(count, (index, project) == final)
            out.append((self.user, self.model, str(index), project, share))
        if final not in per_pair:
            share = self.usage.copy()
            share.attempts = 0
            out.append((self.user, self.model, "", "", share))
        return out

    def _share(self, attempts: int, final: bool) -> UsageTotals:
        """What a key or project gets: its attempts, and the request itself if it was final."""
        if final:
            share = self.usage.copy()
            share.attempts = attempts
            return share
        return UsageTotals(attempts=attempts)


def _attempts(raw: object) -> tuple[Attempt, ...]:
    if not isinstance(raw, (list, tuple)):
        return ()
    out: list[Attempt] = []
    for item in raw:
        if isinstance(item, Mapping) and isinstance(item.get("key_index"), int):
            out.append(
                Attempt(item["key_index"], str(item.get("project", "")), str(item.get("outcome")))
            )
    return tuple(out)


def _tokens(usage: Mapping[str, Any], key: str, detail: str | None = None) -> int:
    source: Any = usage.get(key) if detail is None else (usage.get(key) or {}).get(detail)
    return int(source) if isinstance(source, (int, float)) and not isinstance(source, bool) else 0


def is_cache_hit(message: BaseMessage) -> bool:
    """Whether ``message`` came from a cache rather than from Gemini.

    True when the pool marked it (``response_metadata["cache_hit"]``), or when LangChain's own
    cache layer zeroed its cost (``usage_metadata["total_cost"] == 0``, set on every hit).
    """
    if getattr(message, "response_metadata", {}).get("cache_hit") is True:
        return True
    usage = getattr(message, "usage_metadata", None) or {}
    return "total_cost" in usage and usage["total_cost"] == 0


def usage_record(
    message: BaseMessage | None,
    error: BaseException | None = None,
    *,
    user: str = "anonymous",
    model: str | None = None,
    cached: bool = False,
    prices: Mapping[str, ModelPrice] | None = None,
) -> UsageRecord:
    """Read one caller request's outcome into a :class:`UsageRecord` (pure, no I/O).

    Args:
        message: The final (for a stream: merged) message, or ``None`` for a failure.
        error: The exception of a failed request; its ``gemini_pool_attempts`` are read, and
            its ``gemini_pool_usage`` (usage already streamed when a stream broke), if any.
        user: Who made the request.
        model: The requested model (``ls_model_name``); defaults to the message's
            ``response_metadata["model_name"]``.
        cached: Force treating the message as a cache hit.
        prices: Price table; defaults to ``DEFAULT_PRICES``.

    Raises:
        ValueError: If neither a message nor an error is given.
    """
    if message is None and error is None:
        raise ValueError("usage_record needs the final message or the error of the request.")
    if message is None:
        attempts = _attempts(getattr(error, "gemini_pool_attempts", None))
        last = attempts[-1] if attempts else None
        refused = isinstance(error, UsageLimitExceededError) and not attempts
        partial = getattr(error, "gemini_pool_usage", None)
        totals = UsageTotals(
            requests=1,
            attempts=len(attempts),
            failed_requests=0 if refused else 1,
            refused_requests=1 if refused else 0,
        )
        if isinstance(partial, Mapping) and partial:
            totals.add(_billed(partial, model, None, prices))
        return UsageRecord(
            user=user,
            model=normalize_model(model) if model else UNKNOWN_MODEL,
            outcome="refused" if refused else "failed",
            attempts=attempts,
            key_index=last.key_index if last else None,
            project=last.project if last else None,
            usage=totals,
        )
    meta = message.response_metadata or {}
    served_by = meta.get("model_name")
    name = model or (served_by if isinstance(served_by, str) and served_by else None)
    model_name = normalize_model(name) if name else UNKNOWN_MODEL
    if cached or is_cache_hit(message):
        return UsageRecord(
            user=user,
            model=model_name,
            outcome="cached",
            usage=UsageTotals(requests=1, cached_requests=1),
        )
    key_index = meta.get("key_index")
    key_index = key_index if isinstance(key_index, int) else None
    project = meta.get("project") if isinstance(meta.get("project"), str) else None
    attempts = _attempts(meta.get("attempts"))
    if not attempts and key_index is not None:
        attempts = (Attempt(key_index, project or "", "ok"),)
    if attempts:
        key_index = attempts[-1].key_index if key_index is None else key_index
        project = attempts[-1].project if project is None else project
    usage = _billed(getattr(message, "usage_metadata", None), name, served_by, prices)
    warnings = meta.get("quota_warnings")
    usage.add(
        UsageTotals(
            requests=1,
            attempts=len(attempts),
            successful_requests=1,
            quota_warnings=len(warnings) if isinstance(warnings, list) else 0,
        )
    )
    return UsageRecord(
        user=user,
        model=model_name,
        outcome="ok",
        attempts=attempts,
        key_index=key_index,
        project=project,
        usage=usage,
    )


def _billed(
    raw_usage: Mapping[str, Any] | None,
    model: str | None,
    served_by: object,
    prices: Mapping[str, ModelPrice] | None,
) -> UsageTotals:
    """Tokens and cost of one response's ``usage_metadata`` (priced by ``model``, else
    ``served_by``); an unpriceable one counts in ``unknown_cost_requests``."""
    usage: Mapping[str, Any] = raw_usage or {}
    cost = estimate_cost(model, raw_usage, prices) if raw_usage else None
    if cost is None and raw_usage and isinstance(served_by, str):
        cost = estimate_cost(served_by, raw_usage, prices)
    return UsageTotals(
        input_tokens=_tokens(usage, "input_tokens"),
        output_tokens=_tokens(usage, "output_tokens"),
        reasoning_tokens=_tokens(usage, "output_token_details", "reasoning"),
        cache_read_tokens=_tokens(usage, "input_token_details", "cache_read"),
        total_tokens=_tokens(usage, "total_tokens"),
        cost_usd=cost,
        priced_requests=0 if cost is None else 1,
        unknown_cost_requests=1 if cost is None else 0,
    )

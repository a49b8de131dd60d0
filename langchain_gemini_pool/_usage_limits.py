"""Per-user usage limits across all keys: pure checks the pool runs before sending.

Figures come from a :class:`~langchain_gemini_pool.UsageLedger`: ``requests_per_day`` counts the
requests that went to (or at least tried to reach) Gemini — cache hits and refused requests are
free and do not count; token limits count ``total_tokens``; ``cost_per_month`` counts the known
``cost_usd`` (requests of models missing from the price table add nothing: price every model you
use, or use a token limit). Days and months are the ledger's (UTC unless it has a ``tz``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from langchain_core.exceptions import ModelRateLimitError

if TYPE_CHECKING:
    from langchain_gemini_pool._usage_ledger import UsageLedger
    from langchain_gemini_pool._usage_record import UsageTotals

__all__ = [
    "UsageLimitExceededError",
    "UsageLimits",
    "check_usage",
    "compute_overage",
    "resolve_limits",
]

LimitName = Literal["requests_per_day", "tokens_per_day", "tokens_per_month", "cost_per_month"]


class UsageLimitExceededError(ModelRateLimitError):
    """A user reached a hard usage limit; nothing was sent to Gemini.

    A subclass of LangChain's ``ModelRateLimitError`` so that code which already handles rate
    limits (``with_fallbacks(exceptions_to_handle=(ModelRateLimitError,))``, middleware) handles
    this too, but with ``is_retryable = False``: retrying before ``resets_at`` cannot succeed.

    Attributes:
        limit_name: Which limit, e.g. ``"tokens_per_month"``.
        current: The user's figure for the current period: an ``int`` for request and token
            counts, a ``float`` (US dollars) for ``cost_per_month``.
        limit: The configured limit, of the same type as ``current``.
        user: The user it applies to.
        resets_at: When the period (the ledger's day or month) ends and the limit has room
            again: a timezone-aware ``datetime`` (UTC), or ``None`` if unknown. An epoch float
            passed to the constructor is converted.
    """

    is_retryable = False

    def __init__(
        self,
        *,
        limit_name: str,
        current: float,
        limit: float,
        user: str,
        resets_at: datetime | float | None = None,
    ) -> None:
        self.limit_name = limit_name
        self.current = _number(limit_name, current)
        self.limit = _number(limit_name, limit)
        self.user = user
        if isinstance(resets_at, (int, float)) and not isinstance(resets_at, bool):
            resets_at = datetime.fromtimestamp(resets_at, timezone.utc)
        elif resets_at is not None and (
            not isinstance(resets_at, datetime) or resets_at.tzinfo is None
        ):
            raise TypeError("resets_at must be a timezone-aware datetime, epoch seconds or None.")
        self.resets_at: datetime | None = resets_at
        period = "today" if limit_name.endswith("_day") else "this month"
        super().__init__(
            f"User {user!r} reached the usage limit {limit_name}: {_fmt(current)} used "
            f"{period}, limit {_fmt(limit)}. The request was not sent. Wait for the next "
            f"{'day' if period == 'today' else 'month'}, raise the limit in usage_limits=, or "
            "make it soft (UsageLimits(..., hard=False)) to let requests through and report "
            "the overage."
        )

    def __reduce__(self) -> tuple[Callable[..., UsageLimitExceededError], tuple[object, ...]]:
        return (_rebuild, (self.limit_name, self.current, self.limit, self.user, self.resets_at))


def _rebuild(
    limit_name: str, current: float, limit: float, user: str, resets_at: datetime | None
) -> UsageLimitExceededError:
    return UsageLimitExceededError(
        limit_name=limit_name, current=current, limit=limit, user=user, resets_at=resets_at
    )


def _number(limit_name: str, value: float) -> float:
    """Dollars as ``float``; request and token counts as ``int`` (when whole)."""
    if limit_name.startswith("cost"):
        return float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _fmt(value: float) -> str:
    return f"{value:,}" if float(value).is_integer() else f"{value:,.6f}".rstrip("0")


@dataclass(frozen=True)
class UsageLimits:
    """Limits on one user's usage summed over all keys; ``None`` means no limit.

    A hard limit refuses requests (:class:`UsageLimitExceededError`) once the figure has reached
    it; a soft one (``hard=False``) lets them through and reports the overage.
    """

    requests_per_day: int | None = None
    """Requests sent (not cache hits) per day."""
    tokens_per_day: int | None = None
    """``total_tokens`` per day."""
    tokens_per_month: int | None = None
    """``total_tokens`` per calendar month."""
    cost_per_month: float | None = None
    """Known cost in US dollars per calendar month."""
    hard: bool = True
    """Refuse requests at the limit (``True``) or only report overage (``False``)."""

    def __post_init__(self) -> None:
        for name, _, _ in _LIMITS:
            value = getattr(self, name)
            if value is None:
                continue
            bad = isinstance(value, bool) or not isinstance(value, (int, float))
            if bad or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"UsageLimits.{name} must be a non-negative number or None (no limit), "
                    f"got {value!r}."
                )
        if not isinstance(self.hard, bool):
            raise ValueError(f"UsageLimits.hard must be True or False, got {self.hard!r}.")


def _sent_requests(t: UsageTotals) -> float:
    return t.requests - t.cached_requests - t.refused_requests


def _tokens(t: UsageTotals) -> float:
    return t.total_tokens


def _cost(t: UsageTotals) -> float:
    return t.cost_usd or 0.0


_LIMITS: tuple[tuple[LimitName, Literal["day", "month"], Callable[[UsageTotals], float]], ...] = (
    ("requests_per_day", "day", _sent_requests),
    ("tokens_per_day", "day", _tokens),
    ("tokens_per_month", "month", _tokens),
    ("cost_per_month", "month", _cost),
)


def _figures(
    ledger: UsageLedger, user: str, limits: UsageLimits
) -> list[tuple[LimitName, float, float, Literal["day", "month"]]]:
    """``(name, current, limit, period)`` for every limit that is set, reading each period once."""
    cache: dict[str, UsageTotals] = {}
    out: list[tuple[LimitName, float, float, Literal["day", "month"]]] = []
    for name, period, figure in _LIMITS:
        limit = getattr(limits, name)
        if limit is None:
            continue
        if period not in cache:
            cache[period] = ledger.totals(user=user, period=period)
        out.append((name, figure(cache[period]), float(limit), period))
    return out


def check_usage(ledger: UsageLedger, user: str, limits: UsageLimits | None) -> None:
    """Refuse a request before it is sent if ``user`` has reached a hard limit.

    Args:
        ledger: Where the user's usage is recorded.
        user: The user about to make a request.
        limits: The user's limits (see :func:`resolve_limits`); ``None`` or soft limits never
            refuse.

    Raises:
        UsageLimitExceededError: For the first hard limit whose current figure is at or past
            it (checked in the order requests_per_day, tokens_per_day, tokens_per_month,
            cost_per_month).
    """
    if limits is None or not limits.hard:
        return
    for name, current, limit, period in _figures(ledger, user, limits):
        if current >= limit:
            raise UsageLimitExceededError(
                limit_name=name,
                current=current,
                limit=limit,
                user=user,
                resets_at=ledger.period_end(period),
            )


def compute_overage(ledger: UsageLedger, user: str, limits: UsageLimits | None) -> dict[str, float]:
    """How far ``user`` is past each limit in its current period (hard and soft alike).

    Returns:
        Limit name (e.g. ``"tokens_per_month"``) -> amount past it (``current - limit``), for
        every limit strictly exceeded; an empty dict when none is.
    """
    if limits is None:
        return {}
    return {
        name: current - limit
        for name, current, limit, _ in _figures(ledger, user, limits)
        if current > limit
    }


UsageLimitsSpec = UsageLimits | Mapping[str, UsageLimits] | None
"""``usage_limits=``: one ``UsageLimits`` for everyone, or user id -> limits (``"*"``: others)."""


def resolve_limits(usage_limits: UsageLimitsSpec, user: str) -> UsageLimits | None:
    """The limits that apply to ``user``.

    Args:
        usage_limits: ``None`` (no limits), a :class:`UsageLimits` for every user, or a mapping
            user id -> ``UsageLimits`` in which the entry ``"*"``, if present, applies to users
            not listed.

    Raises:
        TypeError: If ``usage_limits`` (or a value in the mapping) is not a ``UsageLimits``.
    """
    if usage_limits is None or isinstance(usage_limits, UsageLimits):
        return usage_limits
    if isinstance(usage_limits, Mapping):
        found = usage_limits.get(user, usage_limits.get("*"))
        if found is None or isinstance(found, UsageLimits):
            return found
        raise TypeError(
            f"usage_limits[{user!r}] must be a UsageLimits, not {type(found).__name__}."
        )
    raise TypeError(
        "usage_limits must be a UsageLimits (for every user), a dict of user id -> UsageLimits "
        f"(with '*' for everyone else), or None; got {type(usage_limits).__name__}."
    )

"""One place that classifies failures, and the pool's own exceptions.

Every exception a member model raises is classified here, once, into one of four kinds;
the pool acts on the kind and never on message text scattered through its code.

==============  ===============================================  =======================
kind            what Google said                                 what the pool does
==============  ===============================================  =======================
rate_limited    429 RESOURCE_EXHAUSTED                           cool key and project,
                                                                 next key at once
bad_key         400 API_KEY_INVALID / expired; 401; 403 leaked,  quarantine the key,
                suspended, service disabled, denied access;      next key
                (before sending) a key the HTTP client cannot
                put in a header (illegal or non-ASCII character)
server_fault    5xx, 408, timeout, connection error              next key, with backoff
bad_request     any other 4xx (incl. any other 403), context     raise at once, unchanged
                overflow, anything that is not an API failure
==============  ===============================================  =======================
"""

from __future__ import annotations

import asyncio
import codecs
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from google.genai import errors as genai_errors
from langchain_core.exceptions import ModelAuthenticationError, ModelRateLimitError


class FailureKind(str, Enum):
    """What kind of failure an attempt met."""

    RATE_LIMITED = "rate_limited"
    BAD_KEY = "bad_key"
    SERVER_FAULT = "server_fault"
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class QuotaViolation:
    """One entry of a 429's ``google.rpc.QuotaFailure``."""

    quota_id: str
    quota_value: int | None = None

    @property
    def per_day(self) -> bool:
        return "PerDay" in self.quota_id

    @property
    def dimension(self) -> str | None:
        """``"rpm"``, ``"tpm"`` or ``"rpd"``: which local limit this quota corresponds to."""
        if self.per_day:
            return "rpd"
        if "Token" in self.quota_id:
            return "tpm"
        if "Request" in self.quota_id:
            return "rpm"
        return None


@dataclass(frozen=True)
class Failure:
    """The classification of one failed attempt."""

    kind: FailureKind
    reason: str
    """A short human reason, safe to log (never holds key text)."""
    retry_after_s: float | None = None
    """For a 429: the server's wait hint (RetryInfo, or the more precise message text)."""
    violations: tuple[QuotaViolation, ...] = field(default=())

    @property
    def per_day(self) -> bool:
        return any(v.per_day for v in self.violations)


_BAD_KEY_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_EXPIRED",
        "SERVICE_DISABLED",
        "CONSUMER_SUSPENDED",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "API_KEY_ANDROID_APP_BLOCKED",
        "API_KEY_IOS_APP_BLOCKED",
        "ACCESS_TOKEN_EXPIRED",
    }
)
_BAD_KEY_MESSAGES = (
    ("api key not valid", "API_KEY_INVALID"),
    ("api key expired", "API_KEY_EXPIRED"),
    ("reported as leaked", "leaked"),
    ("has been suspended", "CONSUMER_SUSPENDED"),
    ("denied access", "denied access"),
    ("has not been used in project", "SERVICE_DISABLED"),
)
# Google writes the wait as a Go duration: "33.27s", but also "708.38ms" and "7h15m5.7s".
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = r"[0-9]+(?:\.[0-9]+)?\s*(?:h|ms|us|µs|ns|m|s)"
_RETRY_IN = re.compile(rf"retry in ((?:{_PART})+)", re.IGNORECASE)
_PARTS = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(h|ms|us|µs|ns|m|s)", re.IGNORECASE)
# Raised before anything is sent, the same on every key: retrying cannot help.
_NOT_TRANSPORT = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_NOT_TRANSPORT_NAMES = frozenset({"UnsupportedProtocol", "LocalProtocolError", "InvalidURL"})
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)s\s*$")
# "* Quota exceeded for metric: <quotaMetric>, limit: <n>, model: <model>" lines of a 429.
_LIMIT_LINE = re.compile(r"for metric: ([^,\s]+), limit: ([0-9]+)")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _api_error(exc: BaseException) -> genai_errors.APIError | None:
    for item in _chain(exc):
        if isinstance(item, genai_errors.APIError):
            return item
    return None


def _rpc_details(error: genai_errors.APIError) -> list[Mapping[str, Any]]:
    body = error.details
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            details = inner.get("details")
            if isinstance(details, list):
                return [d for d in details if isinstance(d, Mapping)]
    return []


def _of_type(details: list[Mapping[str, Any]], suffix: str) -> list[Mapping[str, Any]]:
    return [d for d in details if str(d.get("@type", "")).endswith(suffix)]


def _is_transport_failure(exc: BaseException) -> bool:
    """Timeouts and connection errors from httpx, httpx2, aiohttp or the OS."""
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    if isinstance(exc, _NOT_TRANSPORT) or name in _NOT_TRANSPORT_NAMES:
        return False
    module = type(exc).__module__.split(".")[0]
    if module in {"httpx", "httpx2", "httpcore", "httpcore2", "aiohttp", "h11"}:
        return any(
            word in name
            for word in (
                "Timeout",
                "Connect",
                "Network",
                "Protocol",
                "Read",
                "Write",
                "Disconnected",
                "Payload",
                "ClientOSError",
                "Transport",
            )
        )
    return isinstance(exc, OSError)


def parse_duration(text: object) -> float | None:
    """Seconds from a protobuf Duration string such as ``"33s"`` or ``"1.5s"``."""
    if isinstance(text, str) and (m := _DURATION.match(text)):
        return float(m.group(1))
    return None


def _retry_in(message: str) -> float | None:
    """Seconds from the message's "Please retry in <Go duration>." (None when absent)."""
    if m := _RETRY_IN.search(message):
        return sum(
            float(value) * _UNITS[unit.lower()] for value, unit in _PARTS.findall(m.group(1))
        )
    return None


def _message_limits(message: str) -> dict[str, int]:
    """quotaMetric -> limit, from the message's lines, for metrics given one limit only."""
    seen: dict[str, set[int]] = {}
    for metric, limit in _LIMIT_LINE.findall(message):
        seen.setdefault(metric, set()).add(int(limit))
    return {metric: limits.pop() for metric, limits in seen.items() if len(limits) == 1}


def _classify_rate_limit(error: genai_errors.APIError) -> Failure:
    details = _rpc_details(error)
    message = error.message or ""
    delay: float | None = None
    for info in _of_type(details, "google.rpc.RetryInfo"):
        delay = parse_duration(info.get("retryDelay"))
    if (precise := _retry_in(message)) is not None:
        delay = precise
    # quotaValue is a proto3 int64: Google leaves out a limit of 0, which then shows only in
    # the message ("limit: 0"). A quotaValue present always wins over the message.
    from_message = _message_limits(message)
    violations: list[QuotaViolation] = []
    for failure in _of_type(details, "google.rpc.QuotaFailure"):
        for v in failure.get("violations") or []:
            if not isinstance(v, Mapping):
                continue
            raw = v.get("quotaValue")
            try:
                value = int(str(raw)) if raw is not None else None
            except ValueError:
                value = None
            if raw is None:
                value = from_message.get(str(v.get("quotaMetric", "")))
            violations.append(QuotaViolation(str(v.get("quotaId", "")), value))
    kinds = sorted({v.quota_id for v in violations if v.quota_id})
    reason = "rate limited" + (f" ({', '.join(kinds)})" if kinds else "")
    return Failure(FailureKind.RATE_LIMITED, reason, delay, tuple(violations))


def _bad_key_reason(error: genai_errors.APIError) -> str | None:
    for info in _of_type(_rpc_details(error), "google.rpc.ErrorInfo"):
        reason = str(info.get("reason", ""))
        if reason in _BAD_KEY_REASONS:
            return reason
    message = (error.message or "").lower()
    for needle, reason in _BAD_KEY_MESSAGES:
        if needle in message:
            return reason
    return None


_HEADER_FAILURES = (
    "illegal header value",  # h11, under httpx / httpx2
    "detected in headers",  # aiohttp: "Forbidden control character detected in headers"
    "character detected in http status message or header",  # aiohttp, older
)


_HEADER_CODECS = frozenset({"ascii", "iso8859-1"})  # what HTTP clients encode headers with


def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def _is_key_encoding_failure(exc: BaseException) -> bool:
    """The HTTP client refused to send a header value: the key (``additional_headers`` are
    checked when the pool is built, so the key is the header that can be wrong)."""
    for item in _chain(exc):
        if isinstance(item, UnicodeEncodeError) and _codec(item.encoding) in _HEADER_CODECS:
            return True
        if isinstance(item, ValueError) or type(item).__name__ == "LocalProtocolError":
            text = str(item).lower()
            if any(needle in text for needle in _HEADER_FAILURES):
                return True
    return False


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by one attempt on one key.

    Works on the LangChain exceptions of langchain-google-genai (by reading the SDK error in
    their ``__cause__``), on the SDK's own ``APIError``s and on transport errors.
    """
    error = _api_error(exc)
    if error is None:
        if _is_key_encoding_failure(exc):
            return Failure(
                FailureKind.BAD_KEY,
                f"key cannot be sent as an HTTP header ({type(exc).__name__})",
            )
        if _is_transport_failure(exc):
            return Failure(FailureKind.SERVER_FAULT, f"transport: {type(exc).__name__}")
        return Failure(FailureKind.BAD_REQUEST, f"{type(exc).__name__}")
    code = int(error.code or 0)
    status = error.status or ""
    if code == 429:
        return _classify_rate_limit(error)
    if code >= 500 or code == 408:
        return Failure(FailureKind.SERVER_FAULT, f"{code} {status}".strip())
    if code in (400, 401, 403):
        reason = _bad_key_reason(error)
        if reason is not None and not (
            code == 400 and reason not in ("API_KEY_INVALID", "API_KEY_EXPIRED")
        ):
            return Failure(FailureKind.BAD_KEY, f"{code} {reason}")
        if code == 401:
            return Failure(FailureKind.BAD_KEY, f"401 {status or 'UNAUTHENTICATED'}")
    return Failure(FailureKind.BAD_REQUEST, f"{code} {status}".strip())


def model_not_found(exc: BaseException) -> bool:
    """A 404: the model is not available to this API version or key."""
    error = _api_error(exc)
    return error is not None and int(error.code or 0) == 404


class AllKeysRateLimitedError(ModelRateLimitError):
    """Every key is cooling (or its project is out of room) for longer than ``max_wait``.

    Attributes:
        retry_after: Seconds until the earliest key is ready again.
        detail: Why the keys are waiting (safe to log: masked keys and quota names only).
    """

    def __init__(self, retry_after: float, detail: str = "") -> None:
        self.retry_after = float(retry_after)
        self.detail = detail
        if math.isinf(self.retry_after):
            text = "All Gemini API keys are rate limited and none will free: every project "
            text += "left has a limit of 0 for this model"
        else:
            text = (
                f"All Gemini API keys are rate limited; the next key frees in "
                f"{self.retry_after:.1f} seconds"
            )
        if detail:
            text += f" ({detail})"
        text += ". Wait and retry, raise max_wait, or add keys of another project."
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.retry_after, self.detail))


class NoValidKeysError(ModelAuthenticationError):
    """Every key in the pool has been quarantined as invalid.

    Attributes:
        reasons: ``{masked key: reason}`` for every quarantined key.
    """

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        listed = "; ".join(f"{fp}: {why}" for fp, why in self.reasons.items()) or "no keys"
        super().__init__(
            f"No valid Gemini API key is left in the pool ({listed}). Replace the keys "
            "(pool.add_keys / reload_keys) or lift a quarantine with pool.reset_key."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reasons,))

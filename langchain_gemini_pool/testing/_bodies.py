"""Google-shaped error bodies, byte for byte what the Gemini API sends.

Every builder returns ``(http_status, body)``; the server serialises ``body`` as JSON with
``Content-Type: application/json``. Texts follow ``docs/GEMINI_WIRE.md``; the shapes (status,
detail ``@type``s and their fields) are checked against real bodies quoted in public bug
reports, kept with their links in ``tests/fixtures/google_errors/``.
"""

from __future__ import annotations

from typing import Any

ErrorReply = tuple[int, dict[str, Any]]
"""An HTTP status and the JSON body to send with it."""

SERVICE = "generativelanguage.googleapis.com"
RATE_LIMIT_DOCS = "https://ai.google.dev/gemini-api/docs/rate-limits"
_TYPE = "@type"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_LOCALIZED = "type.googleapis.com/google.rpc.LocalizedMessage"
_HELP = "type.googleapis.com/google.rpc.Help"

BAD_KEY_KINDS = ("invalid", "expired", "leaked", "service_disabled", "suspended", "denied")
"""The values ``bad_keys=`` accepts, one per way Google refuses a key."""


def error(code: int, status: str, message: str, details: list[Any] | None = None) -> ErrorReply:
    """One Google error body: ``{"error": {"code", "message", "status", "details"?}}``."""
    inner: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        inner["details"] = details
    return code, {"error": inner}


def invalid_argument(message: str) -> ErrorReply:
    """A plain 400 INVALID_ARGUMENT (a bad request, not a bad key)."""
    return error(400, "INVALID_ARGUMENT", message)


def not_found_path(path: str) -> ErrorReply:
    """A 404 for a URL the API does not serve."""
    return error(404, "NOT_FOUND", f"Method not found: {path}.")


def method_not_allowed(method: str, path: str) -> ErrorReply:
    """A 404 for a method the path does not serve (Google answers 404, not 405)."""
    return error(404, "NOT_FOUND", f"Method not found: {method} {path}.")


def model_not_found(model: str, version: str, method: str = "generateContent") -> ErrorReply:
    """Google's 404 for an unknown model."""
    return error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported "
        "methods.",
    )


def missing_key() -> ErrorReply:
    """What Google sends when no API key came with the request."""
    return error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API.",
    )


def _localized(message: str) -> dict[str, Any]:
    return {_TYPE: _LOCALIZED, "locale": "en-US", "message": message}


def bad_key(kind: str, project_number: int) -> ErrorReply:
    """The exact body Google sends for a key in state ``kind`` (one of ``BAD_KEY_KINDS``)."""
    if kind in ("invalid", "expired"):
        message = (
            "API key not valid. Please pass a valid API key."
            if kind == "invalid"
            else "API key expired. Please renew the API key."
        )
        info = {
            _TYPE: _ERROR_INFO,
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": SERVICE},
        }
        return error(400, "INVALID_ARGUMENT", message, [info, _localized(message)])
    if kind == "leaked":
        return error(
            403,
            "PERMISSION_DENIED",
            "Your API key was reported as leaked. Please use another API key.",
        )
    if kind == "service_disabled":
        consumer = f"projects/{project_number}"
        activation = (
            "https://console.developers.google.com/apis/api/"
            f"generativelanguage.googleapis.com/overview?project={project_number}"
        )
        message = (
            "Generative Language API has not been used in project "
            f"{project_number} before or it is disabled. Enable it by visiting "
            "https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/"
            f"overview?project={project_number} then retry. If you enabled this API recently, "
            "wait a few minutes for the action to propagate to our systems and retry."
        )
        info = {
            _TYPE: _ERROR_INFO,
            "reason": "SERVICE_DISABLED",
            "domain": "googleapis.com",
            "metadata": {
                "service": SERVICE,
                "consumer": consumer,
                "serviceTitle": "Generative Language API",
                "activationUrl": activation,
            },
        }
        help_ = {
            _TYPE: _HELP,
            "links": [
                {"description": "Google developers console API activation", "url": activation}
            ],
        }
        return error(403, "PERMISSION_DENIED", message, [info, _localized(message), help_])
    if kind == "suspended":
        consumer = f"projects/{project_number}"
        message = f"Permission denied: Consumer '{consumer}' has been suspended."
        info = {
            _TYPE: _ERROR_INFO,
            "reason": "CONSUMER_SUSPENDED",
            "domain": "googleapis.com",
            "metadata": {"service": SERVICE, "consumer": consumer},
        }
        # Google names the consumer as 'api_key:<the key>'; the emulator names the project
        # instead so that no key text ever travels in a body. No LocalizedMessage here.
        return error(403, "PERMISSION_DENIED", message, [info])
    if kind == "denied":
        return error(403, "PERMISSION_DENIED", "Your project has been denied access.")
    raise ValueError(f"Unknown bad-key kind {kind!r}; use one of {', '.join(BAD_KEY_KINDS)}.")


def internal() -> ErrorReply:
    """Google's 500 INTERNAL."""
    return error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def unavailable() -> ErrorReply:
    """Google's 503 UNAVAILABLE (a service state, never a key fault)."""
    return error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def rate_limited(violations: list[dict[str, Any]], retry_s: float) -> ErrorReply:
    """A 429 RESOURCE_EXHAUSTED with QuotaFailure, Help and RetryInfo.

    Args:
        violations: ``google.rpc.QuotaFailure`` violations, the first one named in the message.
        retry_s: Seconds left until the refused quota frees up.
    """
    first = violations[0]
    model = first["quotaDimensions"]["model"]
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: "
        f"{RATE_LIMIT_DOCS}. To monitor your current usage, head to: "
        "https://ai.dev/usage?tab=rate-limit. \n"
        + "".join(
            f"* Quota exceeded for metric: {v['quotaMetric']}, limit: {v.get('quotaValue', 0)}, "
            f"model: {model}\n"
            for v in violations
        )
        + f"Please retry in {retry_s:.2f}s."
    )
    details = [
        {
            _TYPE: _HELP,
            "links": [
                {"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOCS}
            ],
        },
        {_TYPE: "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
        {_TYPE: "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{int(retry_s)}s"},
    ]
    return error(429, "RESOURCE_EXHAUSTED", message, details)

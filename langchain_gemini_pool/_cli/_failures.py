"""One clear paragraph for a failure: what failed, for which masked key, what to try.

Reads the kind from ``_errors.classify`` (the one place that classifies failures) and never
prints key text: any configured key found in a message is replaced by its masked form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret in it (and anything shaped like a Google API key) masked."""
    from langchain_gemini_pool._keys import mask_key

    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, mask_key(secret))
    return _GOOGLE_KEY.sub(lambda m: mask_key(m.group(0)), text)


def configured_secrets(env_file: str | None) -> list[str]:
    """The configured keys' text, to scrub from messages (none if they cannot be loaded)."""
    from langchain_gemini_pool._keys import load_api_keys

    try:
        return [k.get_secret_value() for k in load_api_keys(env_file)]
    except Exception:  # a message is still shown, scrubbed of key-shaped text
        return []


def explain(exc: BaseException, keys: str = "", secrets: Iterable[str] = ()) -> str:
    """A paragraph about ``exc``; ``keys`` names the masked keys involved, if known."""
    from langchain_gemini_pool._errors import (
        AllKeysRateLimitedError,
        FailureKind,
        NoValidKeysError,
        classify,
    )
    from langchain_gemini_pool._usage_limits import UsageLimitExceededError

    on = f" (key {keys})" if keys else ""
    if isinstance(exc, (NoValidKeysError, AllKeysRateLimitedError, UsageLimitExceededError)):
        return scrub(str(exc), secrets) + " Diagnose with: gemini-pool keys check."
    if isinstance(exc, ValueError) and "API key" in str(exc):
        return scrub(str(exc), secrets) + " List what is loaded with: gemini-pool keys list."
    failure = classify(exc)
    kind = failure.kind
    if kind is FailureKind.SERVER_FAULT and failure.reason.startswith("transport"):
        what = (
            f"Could not reach the Gemini API{on}: {type(exc).__name__}"
            f"{': ' + scrub(str(exc), secrets) if str(exc) else ''}. "
            "Check the network connection, a proxy (HTTPS_PROXY) or a firewall; "
            "`gemini-pool demo --emulator` runs offline."
        )
    elif kind is FailureKind.SERVER_FAULT:
        what = (
            f"The Gemini API answered with a server error ({failure.reason}){on}. This is "
            "usually transient: wait a minute and try again."
        )
    elif kind is FailureKind.BAD_KEY:
        what = (
            f"Google refused the API key{on}: {failure.reason}. Check the key in Google AI "
            "Studio (it may be invalid, expired, leaked or its project suspended), replace it "
            "in .env, and run `gemini-pool keys check`."
        )
    elif kind is FailureKind.RATE_LIMITED:
        wait = (
            f"; Google asks to wait {failure.retry_after_s:.0f} s" if failure.retry_after_s else ""
        )
        what = (
            f"The request was rate limited{on}: {failure.reason}{wait}. Keys of one project "
            "share its quota; see `gemini-pool status` and the README's 'Quotas are per "
            "project' section."
        )
    else:
        what = f"{type(exc).__name__}{on}: {scrub(str(exc), secrets)}"
    return what

"""Keeping key text out of the exceptions the pool lets out.

Two kinds of exception could carry a key:

* failures of a request: the HTTP client keeps the request it sent (headers included) on its
  response and its errors, so ``e.response.request.headers["x-goog-api-key"]`` held the key,
  and so did any pickle of ``e`` (multiprocessing, Celery, error trackers). ``redact_exception``
  masks the ``x-goog-api-key`` header and any ``key=`` query parameter in place, on the
  exception and every ``__cause__``/``__context__``, keeping each exception's type, message
  and attributes so callers' handling is unchanged;
* validation errors at construction: pydantic puts the caller's whole input, keys included,
  in the error's message, ``errors()``, ``json()`` and pickle. ``clean_validation_error``
  rebuilds the same error (same type, locations and messages) from masked input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import SecretStr, ValidationError

from langchain_gemini_pool._keys import KeyEntry, mask_key

SECRET_HEADERS = frozenset({"x-goog-api-key", "authorization", "x-api-key"})
"""Request headers whose values are masked on every exception the pool lets out."""

_SECRET_FIELDS = frozenset({"api_keys", "google_api_key", "api_key"})
_SECRET_NAME = re.compile(r"(api[_-]?key|secret|token|password|authorization)", re.IGNORECASE)
_HEADER_VALUE = re.compile(r"(Illegal header value )(b?(['\"]).*\3|\S+)", re.DOTALL)
_KEY_PARAM = re.compile(r"([?&]key=)[^&#\s'\"]+")
# Attributes through which an exception reaches the request it was raised for.
_FOLLOW = frozenset(
    {
        "response",
        "_response",
        "request",
        "_request",
        "response_stream",
        "history",
        "_history",
        "stream",  # httpx response -> httpcore stream -> the httpcore request it was for
        "_stream",
        "_httpcore_stream",
    }
)
_INFO_ATTRS = ("_request_info", "request_info")
_URL_ATTRS = ("url", "_url", "real_url", "_real_url")
_REDACTED = "[redacted]"


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its ``__cause__``/``__context__`` chain, each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend(e for e in (current.__context__, current.__cause__) if e is not None)


# -- failures of a request ---------------------------------------------------------------


def redact_exception(exc: BaseException) -> BaseException:
    """Mask key headers and ``key=`` parameters on ``exc`` and its chain, in place.

    Never raises: a part it cannot rewrite is left as it is.
    """
    for item in chain(exc):
        try:
            _redact_one(item)
        except Exception:  # noqa: S112 - redaction must never replace the caller's error
            continue
    return exc


def _redact_one(exc: BaseException) -> None:
    if isinstance(exc, UnicodeEncodeError):
        # ``object`` is the text being encoded (a header value: the key). Keep the
        # offending characters, so the message stays the same, and blank the rest.
        text, start, end = exc.object, exc.start, exc.end
        exc.object = "*" * start + text[start:end] + "*" * (len(text) - end)
    elif exc.args:
        args = tuple(_scrub_message(a) if isinstance(a, str) else a for a in exc.args)
        if args != exc.args:
            exc.args = args
    seen: set[int] = set()
    for name, value in list(_attrs(exc)):
        _visit(exc, name, value, 0, seen)


def _scrub_message(text: str) -> str:
    text = _HEADER_VALUE.sub(lambda m: m.group(1) + _REDACTED, text)
    return _KEY_PARAM.sub(lambda m: m.group(1) + _REDACTED, text)


def _attrs(obj: object) -> Iterable[tuple[str, Any]]:
    found = dict(getattr(obj, "__dict__", None) or {})
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in found and hasattr(obj, name):
                found[name] = getattr(obj, name)
    return found.items()


def _visit(owner: object, name: str, value: Any, depth: int, seen: set[int]) -> None:
    if depth > 8 or id(value) in seen:
        return
    seen.add(id(value))
    if name in _INFO_ATTRS and _is_request_info(value):
        object.__setattr__(owner, name, _clean_request_info(value))
        return
    if name in _URL_ATTRS:
        clean = _clean_url(value)
        if clean is not value:
            object.__setattr__(owner, name, clean)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _visit_object(item, depth + 1, seen)
        return
    if name in _FOLLOW or depth == 0:
        _visit_object(value, depth + 1, seen)


def _visit_object(obj: object, depth: int, seen: set[int]) -> None:
    if obj is None or isinstance(obj, (str, bytes, int, float)):
        return
    if _is_request(obj):
        headers = getattr(obj, "headers", None)
        if isinstance(headers, list):  # httpcore: [(name, value), ...] as bytes
            object.__setattr__(obj, "headers", _clean_header_list(headers))
        else:
            _clean_headers(headers)
    for name, value in list(_attrs(obj)):
        if name in _FOLLOW or name in _INFO_ATTRS or name in _URL_ATTRS:
            _visit(obj, name, value, depth, seen)


def _is_request(obj: object) -> bool:
    """An httpx/httpx2 ``Request`` (its headers are the ones sent)."""
    return type(obj).__name__ == "Request" and hasattr(obj, "headers") and hasattr(obj, "url")


def _clean_headers(headers: Any) -> None:
    if headers is None or not hasattr(headers, "keys"):
        return
    for name in list(headers.keys()):
        if str(name).lower() in SECRET_HEADERS:
            headers[name] = _ascii_mask(str(headers[name]))


def _clean_header_list(headers: list[Any]) -> list[Any]:
    clean = []
    for name, value in headers:
        text = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if text.lower() in SECRET_HEADERS:
            raw = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            masked = _ascii_mask(raw)
            value = masked.encode("ascii") if isinstance(value, bytes) else masked
        clean.append((name, value))
    return clean


def _ascii_mask(value: str) -> str:
    """``mask_key`` in ASCII (``...`` for ``…``): HTTP clients encode headers as ASCII."""
    return mask_key(value).replace("…", "...")


def _is_request_info(value: object) -> bool:
    return hasattr(value, "_replace") and hasattr(value, "headers") and hasattr(value, "url")


def _clean_request_info(info: Any) -> Any:
    """An aiohttp ``RequestInfo`` (a frozen tuple) rebuilt with masked headers and URLs."""
    headers = info.headers
    if any(str(k).lower() in SECRET_HEADERS for k in headers):
        from multidict import CIMultiDict, CIMultiDictProxy

        copy = CIMultiDict(headers)
        _clean_headers(copy)
        headers = CIMultiDictProxy(copy)
    return info._replace(
        headers=headers,
        url=_clean_url(info.url),
        real_url=_clean_url(getattr(info, "real_url", info.url)),
    )


def _clean_url(url: Any) -> Any:
    """``url`` with a ``key=`` query parameter masked (httpx, httpx2 and yarl URLs)."""
    try:
        if hasattr(url, "copy_set_param") and "key" in url.params:  # httpx
            return url.copy_set_param("key", _ascii_mask(str(url.params["key"])))
        if hasattr(url, "update_query") and "key" in url.query:  # yarl (aiohttp)
            return url.update_query(key=_ascii_mask(str(url.query["key"])))
    except Exception:  # noqa: S110 - an unusual URL object is left as it is
        pass
    return url


# -- validation errors at construction ---------------------------------------------------


def secrets_in(values: Any) -> set[str]:
    """Key texts found in constructor arguments (under ``api_keys``, ``google_api_key``,
    ``api_key``, or any field named like a key or token)."""
    found: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, KeyEntry):
            value = value.secret.get_secret_value()
        if isinstance(value, str):
            found.update(p.strip() for p in re.split(r"[,\s]+", value) if len(p.strip()) > 4)
            if len(value.strip()) > 4:
                found.add(value.strip())
        elif isinstance(value, Mapping):
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for v in value:
                collect(v)

    if isinstance(values, Mapping):
        for name, value in values.items():
            if name in _SECRET_FIELDS or (isinstance(name, str) and _SECRET_NAME.search(name)):
                collect(value)
            elif isinstance(value, Mapping):
                found |= secrets_in(value)
    return found


def scrub(value: Any, secrets: set[str]) -> Any:
    """A copy of ``value`` safe to keep in an error: key fields masked, known key text
    replaced in strings, objects other than plain data replaced by their type name."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, KeyEntry):
        return value.fingerprint
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, mask_key(secret))
        return value
    if isinstance(value, Mapping):
        return {
            scrub(k, secrets): _masked(v)
            if k in _SECRET_FIELDS or (isinstance(k, str) and _SECRET_NAME.search(k))
            else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v, secrets) for v in value)
    return f"<{type(value).__name__}>"


def _masked(value: Any) -> Any:
    """A key field's value with every key masked, its shape kept."""
    if isinstance(value, (str, SecretStr)):
        return mask_key(value)
    if isinstance(value, KeyEntry):
        return value.fingerprint
    if isinstance(value, Mapping):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_masked(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float)) else "<masked>"


def _clean_ctx(ctx: Mapping[str, Any], secrets: set[str]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name, value in ctx.items():
        if isinstance(value, BaseException):
            text = scrub(str(value), secrets)
            try:
                value = type(value)(text)
            except Exception:
                value = ValueError(text)
        else:
            value = scrub(value, secrets)
        clean[name] = value
    return clean


def clean_validation_error(error: ValidationError, secrets: set[str]) -> ValidationError:
    """The same ``ValidationError`` (title, types, locations, messages) from masked input."""
    details: list[Any] = []
    for item in error.errors():
        detail: dict[str, Any] = {
            "type": item["type"],
            "loc": item["loc"],
            "input": scrub(item.get("input"), secrets),
        }
        if "ctx" in item:
            detail["ctx"] = _clean_ctx(item["ctx"], secrets)
        details.append(detail)
    try:
        return ValidationError.from_exception_data(error.title, details)
    except Exception:  # an error type that cannot be rebuilt: keep the messages only
        text = scrub(str(error), secrets)
        return ValidationError.from_exception_data(
            error.title,
            [
                {
                    "type": "value_error",
                    "loc": (),
                    "input": "<masked>",
                    "ctx": {"error": ValueError(text)},
                }
            ],
        )


def clean_exception(exc: Exception, secrets: set[str]) -> Exception:
    """An exception raised while building the pool, made safe to let out: a
    ``ValidationError`` is rebuilt from masked input; any other loses its chain (which may
    hold the caller's arguments) and has known key text masked in its message."""
    if isinstance(exc, ValidationError):
        return clean_validation_error(exc, secrets)
    exc.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in exc.args)
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc

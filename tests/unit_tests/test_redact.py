"""Redaction of exceptions, and the classification of keys the HTTP client cannot send.

The exceptions here are the real ones the HTTP libraries raise or build (httpx2 requests and
responses, aiohttp's RequestInfo, h11's refusal of a header value), made on the spot.
"""

from __future__ import annotations

import pickle

import h11
import httpx2
import pytest
from aiohttp.client_reqrep import RequestInfo
from google.genai import errors as genai_errors
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from langchain_gemini_pool._errors import FailureKind, classify
from langchain_gemini_pool._redact import redact_exception

KEY = "QZunit7Hd3Mx9Pq2Lw5Vb8-0042"
MASK = "...0042"


def _no_key(obj: object) -> None:
    assert KEY[:8] not in repr(obj)
    assert KEY[-12:] not in repr(obj)


def _httpx_error(url: str = "http://127.0.0.1:9/v1/models/m:generateContent") -> Exception:
    request = httpx2.Request("POST", url, headers={"x-goog-api-key": KEY, "accept": "*/*"})
    response = httpx2.Response(500, request=request, json={"error": {"code": 500}})
    error = genai_errors.ServerError(500, {"error": {"code": 500, "message": "boom"}}, response)
    try:
        try:
            raise error
        except genai_errors.ServerError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        return outer


def test_the_header_is_masked_on_the_whole_chain_keeping_type_and_message() -> None:
    error = _httpx_error()
    cause = error.__cause__
    assert isinstance(cause, genai_errors.ServerError)
    message = str(cause)
    assert redact_exception(error) is error
    assert type(cause) is genai_errors.ServerError
    assert str(cause) == message
    assert cause.code == 500
    headers = cause.response.request.headers
    assert headers["x-goog-api-key"] == MASK
    assert headers["accept"] == "*/*"
    _no_key(headers)
    assert KEY.encode() not in pickle.dumps(cause)


def test_a_key_query_parameter_is_masked() -> None:
    error = _httpx_error(f"http://127.0.0.1:9/v1/models/m:generateContent?alt=sse&key={KEY}")
    redact_exception(error)
    url = error.__cause__.response.request.url  # type: ignore[union-attr]
    assert url.params["key"] == MASK
    assert url.params["alt"] == "sse"
    _no_key(url)


def test_an_aiohttp_request_info_is_rebuilt_masked() -> None:
    class AsyncResponseError(Exception):
        def __init__(self, info: RequestInfo) -> None:
            super().__init__("503 UNAVAILABLE")
            self.request_info = info

    url = URL(f"http://127.0.0.1:9/v1/x?key={KEY}")
    info = RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict({"x-goog-api-key": KEY})), url)
    error = AsyncResponseError(info)
    redact_exception(error)
    assert error.request_info.headers["x-goog-api-key"] == MASK
    assert error.request_info.url.query["key"] == MASK
    assert error.request_info.method == "POST"
    _no_key(error.request_info)
    assert str(error) == "503 UNAVAILABLE"


def test_h11_refusing_a_header_value_loses_the_value_not_the_type() -> None:
    with pytest.raises(h11.LocalProtocolError) as info:
        h11.Request(
            method="POST", target="/", headers=[("host", "x"), ("x-goog-api-key", f"{KEY}\nx")]
        )
    error = info.value
    assert KEY in str(error)  # what h11 says, before redaction
    redact_exception(error)
    assert type(error) is h11.LocalProtocolError
    assert str(error) == "Illegal header value [redacted]"
    _no_key(error.args)


def test_a_unicode_encode_error_keeps_its_message_and_loses_the_key() -> None:
    with pytest.raises(UnicodeEncodeError) as info:
        f"{KEY}é".encode("ascii")
    error = info.value
    message = str(error)
    redact_exception(error)
    assert str(error) == message
    assert error.object == "*" * len(KEY) + "é"
    _no_key(error.object)


# -- classification ---------------------------------------------------------------------------


def test_a_header_the_http_client_refuses_is_a_bad_key() -> None:
    with pytest.raises(h11.LocalProtocolError) as h11_info:
        h11.Request(method="GET", target="/", headers=[("host", "x"), ("x-goog-api-key", "a\nb")])
    wrapped = httpx2.LocalProtocolError(str(h11_info.value))
    wrapped.__context__ = h11_info.value
    with pytest.raises(UnicodeEncodeError) as enc_info:
        "key-é".encode("ascii")
    aiohttp_refusal = ValueError(
        "Forbidden control character detected in headers. Potential header injection attack."
    )
    for error in (h11_info.value, wrapped, enc_info.value, aiohttp_refusal):
        failure = classify(error)
        assert failure.kind is FailureKind.BAD_KEY, error
        assert "HTTP header" in failure.reason
        assert "a\nb" not in failure.reason


def test_other_encoding_and_value_errors_stay_caller_errors() -> None:
    with pytest.raises(UnicodeEncodeError) as surrogate:
        "\ud800".encode()  # a lone surrogate in a prompt: the caller's to fix
    for error in (surrogate.value, ValueError("bad temperature"), TypeError("x")):
        assert classify(error).kind is FailureKind.BAD_REQUEST

"""Failure classification on real SDK errors, real LangChain wrappers and real transport errors.

SDK errors are built the way the SDK builds them: a real ``httpx2.Response`` carrying Google's
exact body (the emulator's builders in ``testing/_bodies.py``) handed to
``APIError.raise_for_response``. LangChain's wrappers come from langchain-google-genai's own
``_handle_client_error`` / ``_handle_server_error``. Transport errors come from real sockets
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx2
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAuthenticationError,
    ModelRateLimitError,
)
from langchain_google_genai import chat_models as lc

from langchain_gemini_pool import AllKeysRateLimitedError, NoValidKeysError
from langchain_gemini_pool._errors import (
    Failure,
    FailureKind,
    QuotaViolation,
    classify,
    parse_duration,
)
from langchain_gemini_pool.testing import _bodies as bodies
from langchain_gemini_pool.testing._quota import (
    REQ_METRIC,
    RPD_ID,
    RPM_ID,
    TPM_ID,
    violation,
)

URL = "http://127.0.0.1:9/v1/models/gemini-2.5-flash:generateContent"
TOK_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_input_token_count"
MODEL = "gemini-2.5-flash"

# -- building real errors -----------------------------------------------------------------------


def sdk_error(reply: tuple[int, Any], *, text: str | None = None) -> genai_errors.APIError:
    """The SDK's own error for an HTTP reply, raised by the SDK's own code."""
    code, body = reply
    request = httpx2.Request("POST", URL)
    if text is None:
        response = httpx2.Response(code, json=body, request=request)
    else:
        response = httpx2.Response(code, text=text, request=request)
    with pytest.raises(genai_errors.APIError) as info:
        genai_errors.APIError.raise_for_response(response)
    return info.value


def langchain_error(error: genai_errors.APIError) -> BaseException:
    """What ``ChatGoogleGenerativeAI`` raises for ``error`` (re-raised ``from`` it)."""
    try:
        try:
            raise error
        except genai_errors.ClientError as e:
            lc._handle_client_error(e, {"model": "m"})
        except genai_errors.ServerError as e:
            lc._handle_server_error(e)
    except Exception as exc:
        wrapped = exc
    else:
        raise AssertionError("langchain-google-genai did not re-raise the error")
    assert wrapped.__cause__ is error
    return wrapped


def both(reply: tuple[int, Any]) -> list[BaseException]:
    """The SDK error and its LangChain wrapper: classify must agree on both."""
    error = sdk_error(reply)
    return [error, langchain_error(error)]


def rpm_429(retry_s: float = 33.27, limit: int = 10) -> tuple[int, Any]:
    return bodies.rate_limited([violation(REQ_METRIC, RPM_ID, MODEL, limit)], retry_s)


# -- 429 ----------------------------------------------------------------------------------------


def test_per_minute_429_is_rate_limited_with_the_precise_delay_and_violation() -> None:
    for exc in both(rpm_429(33.27)):
        failure = classify(exc)
        assert failure.kind is FailureKind.RATE_LIMITED
        assert failure.retry_after_s == pytest.approx(33.27)
        assert failure.violations == (QuotaViolation(RPM_ID, 10),)
        assert failure.violations[0].dimension == "rpm"
        assert not failure.per_day
        assert RPM_ID in failure.reason


def test_the_wrapper_is_a_langchain_rate_limit_error_without_code() -> None:
    wrapped = langchain_error(sdk_error(rpm_429()))
    assert isinstance(wrapped, ModelRateLimitError)
    assert not hasattr(wrapped, "code")
    assert classify(wrapped).kind is FailureKind.RATE_LIMITED


def test_retry_delay_is_used_when_the_message_has_no_precise_wait() -> None:
    code, body = rpm_429(12.9)
    body["error"]["message"] = "Resource has been exhausted (e.g. check quota)."
    failure = classify(sdk_error((code, body)))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == 12.0


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [
        ("33.27s", 33.27),
        ("708.383239ms", 0.708383239),
        ("1m30s", 90.0),
        ("7h15m5.72624757s", 26105.72624757),
        ("0s", 0.0),
    ],
)
def test_the_message_wait_is_read_as_a_go_duration(wait: str, seconds: float) -> None:
    code, body = rpm_429(5)
    text = body["error"]["message"].rsplit("Please retry in", 1)[0]
    body["error"]["message"] = f"{text}Please retry in {wait}."
    assert classify(sdk_error((code, body))).retry_after_s == pytest.approx(seconds)


def test_details_in_any_order_and_several_violations() -> None:
    code, body = bodies.rate_limited(
        [
            violation(REQ_METRIC, RPM_ID, MODEL, 5),
            violation(TOK_METRIC, TPM_ID, MODEL, 250_000),
        ],
        41.5,
    )
    body["error"]["details"].reverse()
    failure = classify(sdk_error((code, body)))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == pytest.approx(41.5)
    assert [(v.quota_id, v.quota_value, v.dimension) for v in failure.violations] == [
        (RPM_ID, 5, "rpm"),
        (TPM_ID, 250_000, "tpm"),
    ]
    assert not failure.per_day


def test_per_day_429_is_per_day_even_beside_a_per_minute_violation() -> None:
    reply = bodies.rate_limited(
        [violation(REQ_METRIC, RPM_ID, MODEL, 10), violation(REQ_METRIC, RPD_ID, MODEL, 20)],
        3600,
    )
    for exc in both(reply):
        failure = classify(exc)
        assert failure.kind is FailureKind.RATE_LIMITED
        assert failure.per_day
        assert [v.dimension for v in failure.violations] == ["rpm", "rpd"]
        assert failure.violations[1].quota_value == 20


def test_quota_value_zero_means_no_free_tier() -> None:
    reply = bodies.rate_limited([violation(REQ_METRIC, RPD_ID, MODEL, 0)], 59.99)
    failure = classify(sdk_error(reply))
    assert failure.violations == (QuotaViolation(RPD_ID, 0),)


def test_a_violation_without_or_with_a_strange_quota_value() -> None:
    first = violation(REQ_METRIC, RPM_ID, MODEL, 1)
    del first["quotaValue"]
    second = violation(TOK_METRIC, TPM_ID, MODEL, 1)
    second["quotaValue"] = "lots"
    code, body = bodies.rate_limited([violation(REQ_METRIC, RPM_ID, MODEL, 7)], 3)
    body["error"]["details"][1]["violations"] = [first, second, "junk"]
    failure = classify(sdk_error((code, body)))
    # the message's "limit: 7" line for the request metric stands in for the missing value
    assert failure.violations == (QuotaViolation(RPM_ID, 7), QuotaViolation(TPM_ID, None))
    body["error"]["message"] = "You exceeded your current quota."
    failure = classify(sdk_error((code, body)))
    assert failure.violations == (QuotaViolation(RPM_ID, None), QuotaViolation(TPM_ID, None))


def test_429_with_a_non_json_body_is_rate_limited_without_a_delay() -> None:
    error = sdk_error((429, None), text="<html>Too Many Requests</html>")
    for exc in (error, langchain_error(error)):
        failure = classify(exc)
        assert failure.kind is FailureKind.RATE_LIMITED
        assert failure.retry_after_s is None
        assert failure.violations == ()


def test_429_bare_resource_exhausted_has_no_delay() -> None:
    reply = bodies.error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.")
    failure = classify(sdk_error(reply))
    assert failure == Failure(FailureKind.RATE_LIMITED, "rate limited", None, ())


def test_an_error_event_inside_a_stream_is_classified_like_a_response() -> None:
    # The SDK raises a stream's {"error": {...}} event by its code, with that JSON as details.
    code, body = rpm_429(8.5)
    with pytest.raises(genai_errors.APIError) as info:
        genai_errors.APIError.raise_error(code, body["error"], None)
    failure = classify(info.value)
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after_s == pytest.approx(8.5)
    assert failure.violations[0].quota_id == RPM_ID


# -- bad keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", bodies.BAD_KEY_KINDS)
def test_every_way_google_refuses_a_key_is_bad_key(kind: str) -> None:
    for exc in both(bodies.bad_key(kind, 123456789)):
        failure = classify(exc)
        assert failure.kind is FailureKind.BAD_KEY, (kind, failure)
        assert failure.reason.split()[0] in ("400", "403")


def test_bad_key_reasons_name_what_google_said() -> None:
    reasons = {
        kind: classify(sdk_error(bodies.bad_key(kind, 42))).reason for kind in bodies.BAD_KEY_KINDS
    }
    assert reasons == {
        "invalid": "400 API_KEY_INVALID",
        "expired": "400 API_KEY_INVALID",
        "leaked": "403 leaked",
        "service_disabled": "403 SERVICE_DISABLED",
        "suspended": "403 CONSUMER_SUSPENDED",
        "denied": "403 denied access",
    }


def test_an_expired_key_without_error_info_is_bad_key_by_its_message() -> None:
    reply = bodies.error(400, "INVALID_ARGUMENT", "API key expired. Please renew the API key.")
    assert classify(sdk_error(reply)) == Failure(FailureKind.BAD_KEY, "400 API_KEY_EXPIRED")


def test_401_is_bad_key() -> None:
    reply = bodies.error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    for exc in both(reply):
        assert classify(exc).kind is FailureKind.BAD_KEY
    assert isinstance(langchain_error(sdk_error(reply)), ModelAuthenticationError)


@pytest.mark.parametrize(
    "reply",
    [
        bodies.missing_key(),
        bodies.error(403, "PERMISSION_DENIED", "The caller does not have permission"),
        bodies.error(
            403,
            "PERMISSION_DENIED",
            "Permission denied on resource project x.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "IAM_PERMISSION"}],
        ),
    ],
    ids=["unregistered-caller", "no-permission", "iam"],
)
def test_any_other_403_is_a_bad_request(reply: tuple[int, Any]) -> None:
    for exc in both(reply):
        assert classify(exc).kind is FailureKind.BAD_REQUEST


def test_a_400_never_becomes_bad_key_by_a_403_reason() -> None:
    # SERVICE_DISABLED is a key fault only on a 403; on a 400 it is the request's fault.
    _, body = bodies.bad_key("service_disabled", 7)
    body["error"]["code"] = 400
    body["error"]["status"] = "INVALID_ARGUMENT"
    assert classify(sdk_error((400, body))).kind is FailureKind.BAD_REQUEST


@pytest.mark.parametrize("code", [429, 500, 503, 504, 408])
def test_never_bad_key_on_429_5xx_or_408_even_with_a_bad_key_body(code: int) -> None:
    _, body = bodies.bad_key("invalid", 1)
    body["error"]["code"] = code
    failure = classify(sdk_error((code, body)))
    assert failure.kind is not FailureKind.BAD_KEY
    expected = FailureKind.RATE_LIMITED if code == 429 else FailureKind.SERVER_FAULT
    assert failure.kind is expected


# -- bad requests -------------------------------------------------------------------------------


def test_other_400_404_and_context_overflow_are_bad_requests() -> None:
    replies = [
        bodies.invalid_argument("Request contains an invalid argument."),
        bodies.model_not_found("gemini-9", "v1"),
        bodies.not_found_path("/v1/nothing"),
        bodies.invalid_argument(
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576)."
        ),
    ]
    for reply in replies:
        for exc in both(reply):
            assert classify(exc).kind is FailureKind.BAD_REQUEST, reply
    overflow = langchain_error(sdk_error(replies[-1]))
    assert isinstance(overflow, ContextOverflowError)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        KeyError("x"),
        TypeError("y"),
        FileNotFoundError(2, "No such file", "photo.png"),
        PermissionError(13, "Permission denied", "photo.png"),
        httpx2.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
        RuntimeError("x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_is_a_bad_request(exc: BaseException) -> None:
    failure = classify(exc)
    assert failure.kind is FailureKind.BAD_REQUEST
    assert failure.reason == type(exc).__name__


# -- server faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        bodies.internal(),
        bodies.unavailable(),
        bodies.error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
        bodies.error(408, "DEADLINE_EXCEEDED", "Request timed out."),
    ],
    ids=["500", "503", "504", "408"],
)
def test_5xx_and_408_are_server_faults(reply: tuple[int, Any]) -> None:
    for exc in both(reply):
        failure = classify(exc)
        assert failure.kind is FailureKind.SERVER_FAULT
        assert failure.reason.startswith(str(reply[0]))


def test_500_wrapper_keeps_code_and_is_a_server_fault() -> None:
    wrapped = langchain_error(sdk_error(bodies.internal()))
    assert isinstance(wrapped, lc.GoogleAPIError)
    assert classify(wrapped).reason == "500 INTERNAL"


@pytest.mark.parametrize(
    "exc",
    [
        httpx2.ReadTimeout("timed out"),
        httpx2.ConnectError("refused"),
        httpx2.RemoteProtocolError("Server disconnected without sending a response."),
        httpx2.PoolTimeout("pool"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ConnectionTimeoutError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        TimeoutError(),
        asyncio.TimeoutError(),
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        BrokenPipeError(32, "Broken pipe"),
        socket.gaierror(-3, "Temporary failure in name resolution"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_server_faults(exc: BaseException) -> None:
    failure = classify(exc)
    assert failure.kind is FailureKind.SERVER_FAULT
    assert failure.reason == f"transport: {type(exc).__name__}"


def read_request(conn: socket.socket) -> None:
    """Read one whole HTTP request (headers and a Content-Length body)."""
    conn.settimeout(2.0)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.fixture
def silent_server() -> Iterator[tuple[int, threading.Event]]:
    """A loopback port that accepts connections, then either stays silent or hangs up."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    hang_up = threading.Event()
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if hang_up.is_set():
                read_request(conn)
                conn.close()  # a clean FIN; unread bytes would make it a reset instead
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], hang_up
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_real_httpx2_connect_error_and_read_timeout(
    silent_server: tuple[int, threading.Event],
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(httpx2.ConnectError) as refused:
        httpx2.get(f"http://127.0.0.1:{closed_port}/", timeout=1.0)
    port, _ = silent_server
    with pytest.raises(httpx2.ReadTimeout) as slow:
        httpx2.get(f"http://127.0.0.1:{port}/", timeout=0.1)
    for info in (refused, slow):
        assert classify(info.value).kind is FailureKind.SERVER_FAULT


def test_real_disconnects_from_httpx2_and_aiohttp(
    silent_server: tuple[int, threading.Event],
) -> None:
    port, hang_up = silent_server
    hang_up.set()
    with pytest.raises(httpx2.RemoteProtocolError) as sync_info:
        httpx2.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=2.0)

    async def fetch() -> None:
        async with aiohttp.ClientSession() as session:
            await session.post(f"http://127.0.0.1:{port}/", data=b"{}")

    with pytest.raises(aiohttp.ServerDisconnectedError) as async_info:
        asyncio.run(fetch())
    assert classify(sync_info.value).kind is FailureKind.SERVER_FAULT
    assert classify(async_info.value).kind is FailureKind.SERVER_FAULT


def raised_while_handling(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised inside ``except inner`` (so ``inner`` is its ``__context__``)."""
    try:
        try:
            raise inner
        except type(inner):
            raise outer  # noqa: B904 - the implicit context is the point
    except type(outer) as exc:
        return exc


def test_an_api_error_in_the_context_chain_is_found() -> None:
    outer = raised_while_handling(sdk_error(bodies.unavailable()), ValueError("wrapped"))
    assert outer.__context__ is not None
    assert classify(outer).kind is FailureKind.SERVER_FAULT
    outer = raised_while_handling(sdk_error(rpm_429(2.0)), RuntimeError("while handling"))
    assert classify(outer).retry_after_s == pytest.approx(2.0)


def test_a_self_referencing_chain_terminates() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a).kind is FailureKind.BAD_REQUEST


# -- reasons never carry key text ---------------------------------------------------------------


def test_reasons_never_hold_the_key_even_when_the_body_echoes_it() -> None:
    key = "AIzaSyFAKE-secret-echo-9876"
    replies = [
        bodies.error(400, "INVALID_ARGUMENT", f"API key not valid: {key}"),
        bodies.error(403, "PERMISSION_DENIED", f"Key {key} was reported as leaked."),
        bodies.error(429, "RESOURCE_EXHAUSTED", f"Quota for {key}. Please retry in 3s."),
        bodies.error(500, "INTERNAL", f"oops {key}"),
        bodies.error(404, "NOT_FOUND", f"nothing for {key}"),
    ]
    for reply in replies:
        for exc in both(reply):
            failure = classify(exc)
            assert key not in failure.reason
            assert key[-8:] not in repr(failure)


# -- durations ----------------------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("33s") == 33.0
    assert parse_duration(" 1.5s ") == 1.5
    assert parse_duration("0s") == 0.0
    assert parse_duration("33") is None
    assert parse_duration("1m") is None
    assert parse_duration(33) is None
    assert parse_duration(None) is None


# -- the pool's own exceptions ------------------------------------------------------------------


def test_all_keys_rate_limited_error_says_when_and_what_to_do() -> None:
    exc = AllKeysRateLimitedError(12.345, "rate limited (" + RPM_ID + ")")
    assert isinstance(exc, ModelRateLimitError)
    assert exc.retry_after == 12.345
    text = str(exc)
    assert "12.3 seconds" in text
    assert RPM_ID in text
    assert "max_wait" in text
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert type(again) is AllKeysRateLimitedError
    assert again.retry_after == 12.345
    assert str(again) == text


def test_no_valid_keys_error_lists_masked_keys_and_pickles() -> None:
    exc = NoValidKeysError({"#0 …0001": "400 API_KEY_INVALID", "#1 …0002": "403 leaked"})
    assert isinstance(exc, ModelAuthenticationError)
    text = str(exc)
    assert "#0 …0001: 400 API_KEY_INVALID; #1 …0002: 403 leaked" in text
    assert "reset_key" in text
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert again.reasons == exc.reasons
    assert str(again) == text
    assert "no keys" in str(NoValidKeysError({}))

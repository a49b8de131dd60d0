"""The emulator: configuration, lifecycle, and what to answer (no socket code here).

:class:`FakeGeminiServer` decides each answer in :meth:`FakeGeminiServer.answer`, a pure
function of the request and the emulator's state; ``_http.py`` reads requests off the socket
and writes the answers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._keys import mask_key
from langchain_gemini_pool.testing import _bodies as bodies
from langchain_gemini_pool.testing._faults import FaultPlan, Faults
from langchain_gemini_pool.testing._quota import REQ_METRIC, RPM_ID, QuotaBook, QuotaSpec, violation
from langchain_gemini_pool.testing._received import Received
from langchain_gemini_pool.testing._replies import (
    ReplyFn,
    ReplyValue,
    make_reply,
    prompt_tokens,
    response_body,
    stream_bodies,
)
from langchain_gemini_pool.testing._stats import Stats

KeysSpec = Iterable[str] | Mapping[str, Iterable[str]] | None
"""``None`` (any key), a list of keys (each its own project) or project -> keys."""

VERSIONS = ("v1", "v1beta")
CATALOGUE = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash", 1_048_576, 65_536),
    ("gemini-2.5-pro", "Gemini 2.5 Pro", 1_048_576, 65_536),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite", 1_048_576, 65_536),
    ("gemini-2.0-flash", "Gemini 2.0 Flash", 1_048_576, 8_192),
    ("gemini-3-pro-preview", "Gemini 3 Pro Preview", 1_048_576, 65_536),
)
_VERBS = ("generateContent", "streamGenerateContent", "countTokens")
_METHODS = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]


@dataclass
class JsonAnswer:
    """Send ``body`` as JSON with ``status``."""

    status: int
    body: dict[str, Any]
    delay: float = 0.0


@dataclass
class StreamAnswer:
    """Send ``chunks`` as SSE events, then ``error`` as a last event if set."""

    chunks: list[dict[str, Any]]
    error: dict[str, Any] | None = None
    delay: float = 0.0


@dataclass
class ResetAnswer:
    """Drop the connection without a response."""

    delay: float = 0.0


Answer = JsonAnswer | StreamAnswer | ResetAnswer


def _err(reply: bodies.ErrorReply) -> JsonAnswer:
    return JsonAnswer(reply[0], reply[1])


def _model_json(name: str, display: str, inp: int, out: int) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": display,
        "description": f"{display} (emulated).",
        "inputTokenLimit": inp,
        "outputTokenLimit": out,
        "supportedGenerationMethods": list(_METHODS),
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2.0,
        "thinking": True,
    }


@dataclass
class _Request:
    method: str
    version: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)


class FakeGeminiServer:
    """A local Gemini Developer API that the real google-genai SDK cannot tell from Google.

    Runs in its own daemon thread on ``host:port``; use it as a context manager or call
    :meth:`start` / :meth:`stop` (works from sync code, async tests and notebooks alike).
    ``_replies.py`` documents replies and the token rule, ``_stats.py`` what is counted.

    Args:
        keys: ``None`` accepts any key, each its own project (named ``mask_key(key)``); a
            list accepts only those keys, each its own project (named ``mask_key(key)``);
            a dict maps project name -> keys sharing that project's quota. Any other key
            gets Google's 400 ``API_KEY_INVALID``.
        quotas: ``None`` (unlimited), one :class:`Quota` for every project and model, a dict
            project -> Quota, or project -> model -> Quota; ``"*"`` matches any project or
            model.
        bad_keys: Key -> ``"invalid"``, ``"expired"``, ``"leaked"``, ``"service_disabled"``,
            ``"suspended"`` or ``"denied"``: the key gets Google's exact 400/403 body.
        unknown_models: Models that get Google's 404 ``NOT_FOUND``.
        zero_quota_models: Models with no free tier: every request gets a 429 whose
            violations carry no ``quotaValue`` and whose message says "limit: 0", as Google's do.
        faults: Injected faults (:class:`Faults`); replace later with ``server.faults = ...``.
        clock: The clock quota windows and days are measured on (``ManualClock`` in tests).
        reply: ``callable(request_json) -> str | dict`` making replies instead of the
            default (scripted replies still come first).
        label: ``callable(request_json) -> str | None`` naming a group a generate request
            is also counted under, in ``stats()["labels"][name]`` (same shape as
            ``stats()``): e.g. a test's request id, to tell apart what each request cost.
        window_s: Length of the per-minute window; smaller scales time down.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one (read it back from :attr:`base_url`).
        seed: Seed of the response ids.
    """

    def __init__(
        self,
        keys: KeysSpec = None,
        quotas: QuotaSpec = None,
        bad_keys: Mapping[str, str] | None = None,
        unknown_models: Iterable[str] = (),
        zero_quota_models: Iterable[str] = (),
        faults: Faults | None = None,
        clock: Clock | None = None,
        reply: ReplyFn | None = None,
        label: Callable[[dict[str, Any]], str | None] | None = None,
        window_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self._projects = _projects(keys)
        self._bad = dict(bad_keys or {})
        for key, kind in self._bad.items():
            if kind not in bodies.BAD_KEY_KINDS:
                raise ValueError(
                    f"bad_keys[{mask_key(key)}] is {kind!r}; use one of "
                    f"{', '.join(bodies.BAD_KEY_KINDS)}."
                )
        if isinstance(unknown_models, str) or isinstance(zero_quota_models, str):
            raise TypeError("unknown_models and zero_quota_models take a list of model names.")
        self._unknown = frozenset(_bare(m) for m in unknown_models)
        self._quota = QuotaBook(quotas, window_s, tuple(_bare(m) for m in zero_quota_models))
        self._plan = FaultPlan(faults or Faults())
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError("clock must be a Clock (with now()), e.g. ManualClock().")
        self._clock: Clock = clock or SystemClock()
        if reply is not None and not callable(reply):
            raise TypeError("reply must be None or a callable(request_json) -> str | dict.")
        self._reply_fn = reply
        if label is not None and not callable(label):
            raise TypeError("label must be None or a callable(request_json) -> str | None.")
        self._label = label
        self._host, self._port, self._seed = host, port, seed
        self._script: deque[ReplyValue] = deque()
        self._stats = Stats()
        self._received = Received()
        self._counter = 0
        self._lock = threading.Lock()
        self._http: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeGeminiServer:
        """Bind the socket and serve in a daemon thread. Returns ``self``."""
        from langchain_gemini_pool.testing._http import make_http_server

        if self._http is not None:
            raise RuntimeError("This FakeGeminiServer is already running; stop() it first.")
        self._http = make_http_server(self, self._host, self._port)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-gemini-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (safe to call twice)."""
        http, self._http = self._http, None
        if http is not None:
            http.shutdown()
            http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGeminiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._http is not None else "stopped"
        return f"FakeGeminiServer({where}, projects={len(self._projects) or 'any'})"

    # -- public state ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``: pass it as ``base_url`` to ``ChatGoogleGenerativeAI``."""
        if self._http is None:
            raise RuntimeError(
                "The server is not running; use `with FakeGeminiServer()` or start()."
            )
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def clock(self) -> Clock:
        """The clock quotas are measured on."""
        return self._clock

    @property
    def faults(self) -> Faults:
        """The faults in force; assign a new :class:`Faults` to change them while running."""
        return self._plan.faults

    @faults.setter
    def faults(self, value: Faults | None) -> None:
        if value is not None and not isinstance(value, Faults):
            raise TypeError("server.faults takes a Faults(...) or None.")
        self._plan = FaultPlan(value or Faults())

    def script(self, *replies: ReplyValue) -> None:
        """Queue replies served, in order, before the default or ``reply=`` callable."""
        self._script.extend(replies)

    def stats(self) -> dict[str, Any]:
        """What the server received and served (see ``_stats.py``)."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter (and forget the received requests)."""
        self._stats.reset()
        self._received.clear()

    def received(self) -> list[dict[str, Any]]:
        """The last 1,000 requests as received, oldest first: ``method``, ``path``,
        ``headers`` (every line, in order, key values masked), ``body`` (parsed JSON) and
        ``key`` (masked). See ``_received.py``."""
        return self._received.snapshot()

    # -- deciding answers (no I/O) -----------------------------------------------------------

    def answer(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        """The answer to one HTTP request."""
        url = urlsplit(target)
        if url.path.rstrip("/") == "/_emulator/stats" and method == "GET":
            return JsonAnswer(200, self.stats())
        segments = url.path.strip("/").split("/", 1)
        if len(segments) != 2 or segments[0] not in VERSIONS:
            return _err(bodies.not_found_path(url.path))
        req = _Request(method, segments[0], segments[1], parse_qs(url.query))
        key = headers.get("x-goog-api-key") or (req.query.get("key") or [""])[0]
        resource, _, verb = req.path.partition(":")
        if resource == "models":
            if method != "GET":
                return _err(bodies.method_not_allowed(method, url.path))
            return self._guard(key, None) or self._list_models(req)
        if not resource.startswith("models/") or "/" in resource[7:] or not resource[7:]:
            return _err(bodies.not_found_path(url.path))
        model = resource[7:]
        if verb == "" and method == "GET":
            return self._guard(key, None) or self._get_model(model, req.version)
        if method != "POST" or verb not in (
            "generateContent",
            "streamGenerateContent",
            "countTokens",
        ):
            return _err(bodies.method_not_allowed(method, url.path))
        if verb == "countTokens":
            return self._guard(key, None) or self._count(model, req.version, raw)
        return self._generate(key, model, req, raw, stream=verb == "streamGenerateContent")

    def _guard(self, key: str, project_out: list[str | None] | None) -> JsonAnswer | None:
        """An error for a missing, unknown or bad key, else ``None``."""
        if not key:
            return _err(bodies.missing_key())
        project = self.project_of(key)
        if project_out is not None:
            project_out.append(project)
        if key in self._bad:
            return _err(bodies.bad_key(self._bad[key], _project_number(project or key)))
        if project is None:
            return _err(bodies.bad_key("invalid", 0))
        return None

    def project_of(self, key: str) -> str | None:
        """The project a key belongs to (``mask_key(key)`` when keys are not grouped)."""
        if not self._projects:
            return mask_key(key)
        return self._projects.get(key) or (mask_key(key) if key in self._bad else None)

    def _list_models(self, req: _Request) -> JsonAnswer:
        try:
            size = int((req.query.get("pageSize") or ["50"])[0])
            start = int((req.query.get("pageToken") or ["0"])[0] or 0)
        except ValueError:
            return _err(bodies.invalid_argument("pageSize and pageToken must be whole numbers."))
        size = max(1, min(size, 1000))
        rows = [_model_json(*row) for row in CATALOGUE if row[0] not in self._unknown]
        page: dict[str, Any] = {"models": rows[start : start + size]}
        if start + size < len(rows):
            page["nextPageToken"] = str(start + size)
        return JsonAnswer(200, page)

    def _get_model(self, model: str, version: str) -> JsonAnswer:
        if model in self._unknown:
            return _err(bodies.model_not_found(model, version, "get"))
        for row in CATALOGUE:
            if row[0] == model:
                return JsonAnswer(200, _model_json(*row))
        return JsonAnswer(200, _model_json(model, model, 1_048_576, 65_536))

    def _count(self, model: str, version: str, raw: bytes) -> JsonAnswer:
        if model in self._unknown:
            return _err(bodies.model_not_found(model, version, "countTokens"))
        body = _parse(raw)
        if isinstance(body, JsonAnswer):
            return body
        inner = body.get("generateContentRequest")
        tokens = prompt_tokens(inner if isinstance(inner, dict) else body)
        return JsonAnswer(
            200,
            {
                "totalTokens": tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
            },
        )

    def _generate(self, key: str, model: str, req: _Request, raw: bytes, *, stream: bool) -> Answer:
        found: list[str | None] = []
        refused = self._guard(key, found)
        fp = mask_key(key) if key else None
        project = found[0] if found else None
        record = functools.partial(self._stats.record, model=model)
        if refused is not None:
            record(fp, project, "client_errors")
            return refused
        assert project is not None
        if model in self._unknown:
            record(fp, project, "client_errors")
            return _err(bodies.model_not_found(model, req.version))
        body = _parse(raw)
        if isinstance(body, JsonAnswer):
            record(fp, project, "client_errors")
            return body
        if self._label is not None:
            record = functools.partial(record, label=self._label_of(body))
        plan = self._plan
        delay = plan.delay()
        fault = plan.decide(stream)
        now = self._clock.now()
        if fault == "reset" or (fault == "cut" and not stream):
            record(fp, project, "resets")
            return ResetAnswer(delay)
        if fault in ("500", "503"):
            record(fp, project, "server_errors")
            failure = bodies.internal() if fault == "500" else bodies.unavailable()
            return JsonAnswer(failure[0], failure[1], delay)
        if fault == "429":
            quota = self._quota.quota_for(project, model)
            limit = quota.rpm if quota is not None and quota.rpm is not None else 10
            left = self._quota.window_left(now)
            record(fp, project, "rate_limited")
            body_429 = bodies.rate_limited([violation(REQ_METRIC, RPM_ID, model, limit)], left)
            return JsonAnswer(*body_429, delay=delay)
        refusal = self._quota.admit(project, model, prompt_tokens(body), now)
        if refusal is not None:
            record(fp, project, "rate_limited")
            return JsonAnswer(*bodies.rate_limited(*refusal), delay=delay)
        try:
            scripted = self._script.popleft()
        except IndexError:
            scripted = None
        try:
            reply = make_reply(body, scripted, self._reply_fn)
        except Exception as exc:  # a user's reply callable failed: say so, Google-shaped
            record(fp, project, "server_errors")
            return JsonAnswer(500, bodies.error(500, "INTERNAL", f"reply= raised {exc!r}")[1])
        rid = self._response_id()
        if not stream:
            out = response_body(reply, model, rid)
            record(fp, project, "ok", out["usageMetadata"])
            return JsonAnswer(200, out, delay)
        chunks = stream_bodies(reply, model, rid)
        cut = self.faults.stream_cut_after
        if fault == "cut":
            cut = len(chunks) // 2
        if cut is not None and cut < len(chunks):
            sent = chunks[:cut]
            record(fp, project, "server_errors", sent[-1]["usageMetadata"] if sent else None)
            return StreamAnswer(sent, bodies.unavailable()[1], delay)
        record(fp, project, "ok", chunks[-1]["usageMetadata"])
        return StreamAnswer(chunks, None, delay)

    def _label_of(self, body: dict[str, Any]) -> str | None:
        assert self._label is not None
        try:
            name = self._label(body)
        except Exception:  # a user's label callable failed: count the request unlabelled
            return None
        return None if name is None else str(name)

    def _response_id(self) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        digest = hashlib.sha256(f"{self._seed}:{n}".encode()).hexdigest()
        return digest[:22]


def _bare(model: str) -> str:
    return model[7:] if model.startswith("models/") else model


def _project_number(name: str) -> int:
    return 100_000_000_000 + zlib.crc32(name.encode()) % 900_000_000_000


def _projects(keys: KeysSpec) -> dict[str, str]:
    """Key -> project; empty means any key, each its own project."""
    if keys is None:
        return {}
    hint = "keys= takes None, a list of keys, or a dict project name -> list of keys"
    if isinstance(keys, str):
        raise TypeError(f"{hint}; got one string (wrap a single key in a list).")
    out: dict[str, str] = {}
    if isinstance(keys, Mapping):
        for project, members in keys.items():
            if isinstance(members, str):
                raise TypeError(f"{hint}; project {project!r} maps to a string, not a list.")
            for key in members:
                out[str(key)] = str(project)
    else:
        for key in keys:
            out[str(key)] = mask_key(str(key))
    if not out:
        raise ValueError(f"{hint}; it is empty, so no key could be valid (use None for any key).")
    return out


def _parse(raw: bytes) -> dict[str, Any] | JsonAnswer:
    try:
        body = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _err(
            bodies.invalid_argument(
                f"Invalid JSON payload received. {exc.args[0] if exc.args else 'Unexpected token'}."
            )
        )
    if not isinstance(body, dict):
        return _err(bodies.invalid_argument("Invalid JSON payload received. Expected an object."))
    inner = body.get("generateContentRequest")
    contents = body.get("contents") or (inner.get("contents") if isinstance(inner, dict) else None)
    if not contents:
        return _err(
            bodies.invalid_argument(
                "* GenerateContentRequest.contents: contents is not specified\n"
            )
        )
    return body

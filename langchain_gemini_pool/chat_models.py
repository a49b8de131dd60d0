"""``ChatGeminiPool``: a drop-in ``ChatGoogleGenerativeAI`` over a pool of API keys.

The pool is itself a ``ChatGoogleGenerativeAI`` (so every helper that checks the type keeps
working) whose calls all go through its own client, each with the key of its member (see
``_members.py``). Which key, and what happens after a
failure, is decided by the scheduler and the request plan; this module only wires those
decisions to the members and keeps ``_generate``/``_agenerate``/``_stream``/``_astream`` thin.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import math
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from google.genai.types import GenerateContentConfig
from langchain_core.caches import BaseCache
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import LanguageModelInput
from langchain_core.load import dumps
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import Field, PrivateAttr, SecretStr, model_validator
from typing_extensions import Self

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._driver import (
    Close,
    Detached,
    Emit,
    Io,
    Op,
    Pull,
    Send,
    Sleep,
    Steps,
    adrive,
    aresult_of,
    drive,
    result_of,
)
from langchain_gemini_pool._dropin import pool_kwargs, refuse_vertex_ai, revive_settings
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._keys import (
    KeyEntry,
    load_api_keys,
    mask_key,
    normalize_keys,
)
from langchain_gemini_pool._ladder import (
    LadderPick,
    LadderPlan,
    LadderScheduler,
    RungFactory,
    adapt_config,
    from_fallback,
    limits_for_model,
    served_model,
)
from langchain_gemini_pool._members import (
    KEY_KWARG,
    MODEL_KWARG,
    Member,
    Members,
    put_key,
    set_client_key,
)
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._redact import clean_exception, secrets_in
from langchain_gemini_pool._scheduler import LimitsArg, Pick, Scheduler, Strategy
from langchain_gemini_pool._settings import (
    check_headers,
    check_seconds,
    describe_shape,
    warn_unknown_projects,
)
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool._state_env import ENV_VAR, state_from_env
from langchain_gemini_pool._state_types import StateBackend
from langchain_gemini_pool._streams import StreamCache, StreamTally, replay
from langchain_gemini_pool._usage_ledger import UsageLedger
from langchain_gemini_pool._usage_limits import check_usage, compute_overage, resolve_limits

logger = logging.getLogger("langchain_gemini_pool")

_USER_KW = "_gemini_pool_user"
_POOL_METADATA = ("key_index", "key_fingerprint", "project", "attempts")
_DEFAULT_USER = "anonymous"
_T = TypeVar("_T")


@dataclass
class _Call:
    """What one pass through ``_generate_with_cache`` learned: who asked, whether we sent."""

    user: str
    sent: bool = False


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "gemini_pool_call", default=None
)


def _estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """A cheap local estimate of input tokens (about four characters a token)."""
    chars = 0
    for message in messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        else:
            for block in content:
                if isinstance(block, str):
                    chars += len(block)
                elif isinstance(block, dict) and isinstance(block.get("text"), str):
                    chars += len(block["text"])
    return max(1, math.ceil(chars / 4))


def _limits_entry(value: object) -> bool:
    """A project's limits: a ``QuotaLimits``, or a mapping model -> ``QuotaLimits``."""
    if isinstance(value, QuotaLimits):
        return True
    return isinstance(value, Mapping) and all(isinstance(v, QuotaLimits) for v in value.values())


def _user_of(metadata: Mapping[str, Any] | None) -> str:
    user = (metadata or {}).get("user_id")
    return str(user) if user not in (None, "") else _DEFAULT_USER


def _caller(run_manager: Any, kwargs: dict[str, Any], default: str = _DEFAULT_USER) -> str:
    """Who asked: the user ``stream`` passed along (popped, so it never reaches the cache
    key), else the run's metadata, else ``default``."""
    passed = kwargs.pop(_USER_KW, None)
    if passed:
        return str(passed)
    metadata = getattr(run_manager, "metadata", None)
    return _user_of(metadata) if metadata else default


class ChatGeminiPool(ChatGoogleGenerativeAI):
    """``ChatGoogleGenerativeAI`` over several Gemini API keys.

    Requests rotate over the keys; a key that is rate limited cools down (with every key of
    its project), a key Google rejects is quarantined, a server fault moves on to the next
    key with backoff, and a request that cannot succeed is raised at once. Google's limits
    apply per project, not per key: the pool spreads load and fails over across keys you
    legitimately hold; it does not multiply quota.

    No error the pool raises holds key text: construction errors are rebuilt from masked
    input, and a failure it lets out has its ``x-goog-api-key`` header (and any ``key=``
    parameter) masked, keeping its type and message. The pool refuses ``pickle`` and
    ``copy.deepcopy`` (it holds keys, locks and connections); ``model_copy()`` shares them.

    Example:
        ```python
        from langchain_gemini_pool import ChatGeminiPool

        llm = ChatGeminiPool(model="gemini-2.5-flash")  # keys from GEMINI_API_KEY_1, _2, ...
        llm.invoke("Hello")
        llm.pool_status()
        ```
    """

    api_keys: Any = Field(default=None, repr=False, exclude=True)
    """Keys: a list (each key its own project), a string of keys separated by commas or line
    breaks, or a mapping project -> keys. Default: loaded from the environment and ``.env``
    (see ``load_api_keys``). A key must be printable ASCII without whitespace or ``#``;
    anything else is a ``ValueError`` naming its position, the key masked."""

    env_file: str | None = Field(default=None, exclude=True)
    """The ``.env`` file to read keys from (default: the nearest one upward from the cwd)."""

    strategy: Literal["round_robin", "least_used"] = "round_robin"
    """How to choose among ready keys."""

    max_attempts: int | None = None
    """Attempts that may end in a server fault per request (default: an explicitly given
    ``max_retries``, else each key once, at least 3). Rate-limit and bad-key failovers do
    not count."""

    max_wait: float = 60.0
    """Seconds a request may wait for a cooling key to free before
    ``AllKeysRateLimitedError`` is raised (finite, >= 0)."""

    rate_limit_cooldown: float = 60.0
    """Cooldown in seconds after a 429 that carries no RetryInfo (finite, >= 0)."""

    limits: Any = Field(default=None, exclude=True)
    """Client-side quota: a ``QuotaLimits`` for every project, or ``{project: QuotaLimits}``.
    A project in the mapping that no key belongs to is a WARNING listing the known projects
    (not an error: its keys may be added later with ``add_keys``)."""

    fallback_models: list[str] | None = None
    """The model ladder: models to fall back to, in order, when ``model`` has no key with
    room (Google's quotas are per project and model). A fallback model answers differently:
    leave this unset if you need one model only."""

    prefer: Literal["fallback", "wait"] = "fallback"
    """With ``fallback_models``: ``"fallback"`` takes the first model with a key ready now;
    ``"wait"`` the first model that frees within ``max_wait``."""

    clock: Any = Field(default=None, exclude=True, repr=False)
    """A ``Clock`` for cooldowns, windows and waits (default: the system clock)."""

    ledger: Any = Field(default=None, exclude=True)
    """A ``UsageLedger`` that records every request (default: an in-memory one)."""

    usage_limits: Any = Field(default=None, exclude=True)
    """``UsageLimits`` for every user, or ``{user_id: UsageLimits}``."""

    state: Any = Field(default=None, exclude=True, repr=False)
    """Where cooldowns, quarantines and quota windows live: ``InMemoryState()`` (this
    process), ``DiskState(directory)`` (every process of this machine) or
    ``RedisState(url)`` (every process of every machine); a string is read as
    ``GEMINI_POOL_STATE`` is. Default: ``GEMINI_POOL_STATE`` if set, else this process
    alone (the fastest path)."""

    _scheduler: Scheduler | SharedScheduler | LadderScheduler = PrivateAttr()
    _state: StateBackend | None = PrivateAttr(default=None)
    _members: Members = PrivateAttr()
    _clock: Clock = PrivateAttr()
    _ledger: Any = PrivateAttr(default=None)

    # --- construction ----------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        # No exception raised while building may hold key text: pydantic's errors carry the
        # caller's whole input (keys included) in str(), errors(), json() and pickles.
        error: Exception | None = None
        try:
            super().__init__(**kwargs)
        except Exception as exc:
            error = clean_exception(exc, secrets_in(kwargs))
        if error is not None:
            raise error  # outside the except: no __context__ holding the original

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """``BaseModel.model_validate``, with errors masked as in ``__init__``."""
        error: Exception | None = None
        try:
            return super().model_validate(obj, *args, **kwargs)
        except Exception as exc:
            error = clean_exception(exc, secrets_in(obj))
        raise error

    @model_validator(mode="before")
    @classmethod
    def _resolve_keys(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        refuse_vertex_ai(values)
        api_keys, source = values.get("api_keys"), "api_keys"
        google_api_key, api_key = values.pop("google_api_key", None), values.pop("api_key", None)
        if api_keys is None and google_api_key:
            api_keys, source = google_api_key, "google_api_key"
        elif api_keys is None and api_key:
            api_keys, source = api_key, "api_key"
        elif api_keys is None:
            api_keys, source = load_api_keys(values.get("env_file")), "the environment"
        entries = normalize_keys(api_keys, source)
        check_headers(values.get("additional_headers"))
        values["api_keys"] = entries
        values["google_api_key"] = entries[0].secret
        values["vertexai"] = False
        return values

    @model_validator(mode="before")
    @classmethod
    def _revive_settings(cls, values: Any) -> Any:
        return revive_settings(dict(values)) if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _build_pool(self) -> Self:
        entries = cast("list[KeyEntry]", self.api_keys)
        self.api_keys = None  # key text lives only in the members, never in a field
        check_seconds("max_wait", self.max_wait)
        check_seconds("rate_limit_cooldown", self.rate_limit_cooldown)
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or self.max_attempts < 1
        ):
            raise ValueError("max_attempts must be at least 1 (or None: each key once, >= 3).")
        limits = self.limits
        valid = (
            limits is None
            or isinstance(limits, QuotaLimits)
            or (isinstance(limits, Mapping) and all(_limits_entry(v) for v in limits.values()))
        )
        if not valid:
            raise TypeError(
                "limits must be a QuotaLimits or a mapping project name -> QuotaLimits "
                f"(or -> {{model: QuotaLimits}}); got {describe_shape(limits)}."
            )
        self._clock = self.clock if self.clock is not None else SystemClock()
        self._state = _resolve_state(self.state)
        if self.fallback_models:
            models = list(dict.fromkeys([self.model, *self.fallback_models]))
            self._scheduler = LadderScheduler(
                models,
                self.prefer,
                self.strategy,
                limits,
                self.rate_limit_cooldown,
                _shared_rungs(self._state, self.strategy, self.rate_limit_cooldown),
            )
        elif self._state is None:  # one process: today's scheduler, no I/O per decision
            own = limits_for_model(limits, self.model)
            self._scheduler = Scheduler(self.strategy, own, self.rate_limit_cooldown)
        else:
            own = limits_for_model(limits, self.model)
            self._scheduler = SharedScheduler(
                self._state, self.model, self.strategy, own, self.rate_limit_cooldown
            )
        self._members = Members()
        self._add_entries(entries)
        warn_unknown_projects(limits, {e.project for e in entries})
        self._ledger = self.ledger
        if self._ledger is None and self.usage_limits is not None:
            self._ledger = self._default_ledger()
        logger.info("Gemini API configured with %d API keys", len(entries))
        return self

    def _add_entries(self, entries: Sequence[KeyEntry]) -> list[int]:
        known = self._members.secret_texts()
        fresh = []
        for entry in entries:
            if entry.secret.get_secret_value() in known:
                logger.warning("Key %s is already in the pool; not added again.", entry.fingerprint)
                continue
            fresh.append(entry)
        indices = self._scheduler.add_entries(fresh)
        for index, entry in zip(indices, fresh, strict=True):
            self._members.add(index, entry.secret)
        return indices

    def _default_ledger(self) -> UsageLedger:
        """Where usage is kept when ``usage_limits`` are set without a ``ledger``: with the
        shared state (so the limits hold for every process using it), else in memory."""
        if self._state is not None:
            return UsageLedger.from_state(self._state)
        return UsageLedger.in_memory(clock=self._clock)

    @property
    def _llm_type(self) -> str:
        return "chat-gemini-pool"

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_gemini_pool", "chat_models"]

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"google_api_key": "GOOGLE_API_KEY", "api_keys": "GEMINI_API_KEYS"}

    def to_json(self) -> Any:
        """``dumps`` form: every key as the one secret ``GEMINI_API_KEYS``, no key text.

        ``loads(text, secrets_map={"GEMINI_API_KEYS": keys}, valid_namespaces=
        ["langchain_gemini_pool"], allowed_objects=[ChatGeminiPool])`` rebuilds the pool with
        its settings; ``keys`` may be a comma-separated string, a list or a mapping
        project -> keys. Without that secret the keys are loaded from the environment.
        """
        data = super().to_json()
        if data["type"] != "constructor":
            return data
        kwargs = dict(data["kwargs"])
        if "max_retries" not in self.model_fields_set:
            kwargs.pop("max_retries", None)  # only an explicit one means pool attempts
        if not self.fallback_models:
            kwargs.pop("prefer", None)  # means something only with a ladder
        settings = {
            "limits": self.limits,
            "usage_limits": self.usage_limits,
            "env_file": self.env_file,
        }
        return {**data, "kwargs": pool_kwargs(kwargs, settings)}

    def __reduce__(self) -> Any:
        raise TypeError(
            "ChatGeminiPool holds API keys and cannot be pickled. Serialize it with "
            "langchain_core.load.dumps (keys become secret references) or rebuild it."
        )

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        raise TypeError(
            "ChatGeminiPool holds API keys, locks and live connections and cannot be "
            "deep-copied. Share the pool (it is thread-safe), take a shallow copy with "
            "pool.model_copy(), or build another pool with the same arguments."
        )

    # --- keys while serving ----------------------------------------------------------------

    def add_keys(self, keys: Any) -> list[int]:
        """Add keys (a list, or a mapping project -> keys); returns their new indices."""
        indices = self._add_entries(normalize_keys(keys, "add_keys(keys)"))
        self._follow_first_key()
        return indices

    def remove_key(self, key_or_index: int | str | SecretStr) -> None:
        """Remove a key, given by its index or its text. Its index is never reused.

        The pool's own ``google_api_key`` and ``client`` then hold the first remaining key
        (or none), never the removed one.
        """
        index = self._index_of(key_or_index)
        self._scheduler.remove_key(index)
        self._members.remove(index)
        self._follow_first_key()

    def _follow_first_key(self) -> None:
        first = self._members.first()
        if (
            first is None
            or self.google_api_key is None
            or (first.get_secret_value() != self.google_api_key.get_secret_value())
        ):
            object.__setattr__(self, "google_api_key", first)
            set_client_key(self.client, first)

    def reload_keys(self) -> dict[str, list[int]]:
        """Re-read keys from the environment and ``.env``: add new ones, remove gone ones.

        Keys that stay keep their index, counters and state.
        """
        fresh = {k.get_secret_value() for k in load_api_keys(self.env_file)}
        current = self._members.secret_texts()
        removed = []
        for text in current - fresh:
            index = self._members.index_of_text(text)
            if index is not None:
                self.remove_key(index)
                removed.append(index)
        added = self.add_keys([t for t in fresh if t not in current]) if fresh - current else []
        return {"added": added, "removed": sorted(removed)}

    def reset_key(self, key_or_index: int | str | SecretStr) -> None:
        """Lift a quarantine or cooldown."""
        self._scheduler.reset(self._index_of(key_or_index))

    def _index_of(self, key_or_index: int | str | SecretStr) -> int:
        if isinstance(key_or_index, bool):
            raise TypeError("Give a key index (int) or the key text.")
        if isinstance(key_or_index, int):
            if key_or_index not in self._scheduler.active_indices():
                raise KeyError(f"No key with index {key_or_index} in the pool.")
            return key_or_index
        text = (
            key_or_index.get_secret_value()
            if isinstance(key_or_index, SecretStr)
            else key_or_index.strip()
        )
        index = self._members.index_of_text(text)
        if index is None:
            raise KeyError(f"The key {mask_key(text)} is not in the pool.")
        return index

    def pool_status(self) -> list[dict[str, Any]]:
        """One dict per key: index, fingerprint, project, state, ready_in_s, requests,
        successes, rate_limited, errors, reason, in_flight (requests sent or waiting for a
        booked slot right now), room, shared.

        With a shared ``state`` (``shared`` is True) state, ready_in_s, reason, in_flight and
        room are read from the backend: deployment-wide, so a cooldown or quarantine another
        process set shows here with its reason. requests, successes, rate_limited and errors
        always count this process's attempts."""
        return self._scheduler.status(self._clock.now())

    def _repr_html_(self) -> str:
        """Jupyter: the keys as a table (states in colour, cooldowns, room); keys masked."""
        from langchain_gemini_pool._html import pool_html

        return pool_html(self)

    def watch(self, interval: float = 1.0, **kwargs: Any) -> Any:
        """A live view of the keys while a block runs: ``with pool.watch(): pool.batch(...)``.

        Refreshes an HTML table in place in a notebook, prints a plain-text table on change
        elsewhere (``out=`` a stream, default stdout; ``html=`` forces either).
        """
        from langchain_gemini_pool._html import PoolWatch

        return PoolWatch(self, interval, **kwargs)

    def overage(self, user_id: str = _DEFAULT_USER) -> dict[str, float]:
        """For soft usage limits: each exceeded limit's name -> amount past it now."""
        limits = resolve_limits(self.usage_limits, user_id)
        if limits is None or self._ledger is None:
            return {}
        return compute_overage(self._ledger, user_id, limits)

    # --- shared decisions ------------------------------------------------------------------

    def _plan(self, messages: Sequence[BaseMessage] | None, reserve: bool = True) -> RequestPlan:
        tokens = _estimate_tokens(messages) if messages and self.limits is not None else 0
        keys = self._scheduler.size
        if isinstance(self._scheduler, LadderScheduler):
            return LadderPlan(
                self._scheduler,
                self._clock.now,
                max_attempts=self._attempts_allowed(keys),
                max_wait=self.max_wait,
                tokens=tokens,
                reserve=reserve,
            )
        return RequestPlan(
            self._scheduler,
            self._clock.now,
            max_attempts=self._attempts_allowed(keys),
            max_wait=self.max_wait,
            tokens=tokens,
            reserve=reserve,
        )

    def _attempts_allowed(self, keys: int) -> int:
        """``max_attempts``; else an explicitly given ``max_retries`` (the bare class's
        attempts, here spread over keys); else each key once, at least 3."""
        if self.max_attempts is not None:
            return self.max_attempts
        if "max_retries" in self.model_fields_set:
            return max(1, self.max_retries)
        return max(3, keys)

    def _begin(self, user: str) -> None:
        """A request is about to be sent: mark it (not a cache hit) and check usage limits."""
        call = _CALL.get()
        if call is not None:
            call.sent = True
        if self.usage_limits is not None and self._ledger is not None:
            limits = resolve_limits(self.usage_limits, user)
            if limits is not None:
                check_usage(self._ledger, user, limits)

    def _record(
        self,
        user: str,
        message: BaseMessage | None,
        error: BaseException | None,
        *,
        cached: bool = False,
    ) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.record(
                message=message,
                error=error,
                user=user,
                model=served_model(message) or self.model,
                cached=cached,
            )
        except Exception:  # the ledger must never break a request
            logger.warning("Could not record usage in the ledger.", exc_info=True)

    def _stamp(self, message: BaseMessage, pick: Pick, plan: RequestPlan) -> None:
        """Say on the message which key served it, how, and any quota warning it caused."""
        attempts = list(plan.attempts)
        if (
            not attempts or attempts[-1]["outcome"] != "ok"
        ):  # a stream stamps before the books close
            attempts.append(
                {
                    "key_index": pick.index,
                    "project": self._scheduler.project_of(pick.index),
                    "outcome": "ok",
                    **({"model": pick.model} if isinstance(pick, LadderPick) else {}),
                }
            )
        if isinstance(pick, LadderPick) and pick.rung:
            message.response_metadata["fallback_from"] = self.model
        message.response_metadata.update(
            key_index=pick.index,
            key_fingerprint=self._scheduler.fingerprint_of(pick.index),
            project=self._scheduler.project_of(pick.index),
            attempts=attempts,
        )
        if plan.quota_warnings:
            message.response_metadata["quota_warnings"] = list(plan.quota_warnings)

    def _prepare_request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The bare class's request, sent to the ladder model a member passed (if any)."""
        model = kwargs.pop(MODEL_KWARG, None)
        request: dict[str, Any] = super()._prepare_request(*args, **kwargs)
        if model is not None:
            request["model"] = model
            adapt_config(model, request["config"])
        return request

    def _build_request_config(self, *args: Any, **kwargs: Any) -> GenerateContentConfig:
        """The bare class's request config, with the key a member passed as its header."""
        key = kwargs.pop(KEY_KWARG, None)
        caller_options = kwargs.get("http_options")
        config = super()._build_request_config(*args, **kwargs)
        if key is not None:
            put_key(config, key, caller_options)
        return config

    def _rotated(self, pick: Pick) -> Member:
        logger.debug("Rotated to API key index %d", pick.index)
        model = pick.model if isinstance(pick, LadderPick) and pick.rung else None
        return self._members.sender(self, pick.index, model)

    @staticmethod
    def _user(run_manager: Any, kwargs: dict[str, Any]) -> str:
        call = _CALL.get()  # set by _generate_with_cache, whose run manager knew the user
        return _caller(run_manager, kwargs, call.user if call is not None else _DEFAULT_USER)

    # --- one request, for every entry point -------------------------------------------------

    def _steps(self, messages: list[BaseMessage] | None, user: str, kind: str) -> Steps:
        """What one request does, in order, with no I/O of its own (see ``_driver``):
        ``kind`` is "call" (one result), "stream" (its chunks) or "count" (tokens)."""
        io, ledger = self._scheduler.blocking, self._ledger is not None
        plan: RequestPlan | None = None
        try:
            if kind != "count":
                yield Io(self._begin, (user,), ledger and self.usage_limits is not None)
            plan = self._plan(messages, reserve=kind != "count")
            step, reply = yield from self._attempts(plan, stream=kind == "stream")
            if kind == "call":
                yield Io(self._finish, (plan, step, reply), io)
                yield Io(self._record, (user, reply.generations[0].message, None), ledger)
            elif kind == "count":
                yield Io(plan.succeeded, (step, None), io)
        except Exception as exc:
            if kind != "count":
                yield Io(self._record, (user, None, exc), ledger)
            raise
        finally:
            if plan is not None and plan.booked:  # a slot booked and never used: give it back
                yield Detached(plan.close, (), io)
        if kind == "stream":
            yield from self._stream_steps(plan, step, reply, user)
        else:
            yield Emit(reply)

    def _attempts(self, plan: RequestPlan, *, stream: bool) -> Generator[Op, Any, tuple[Pick, Any]]:
        """Attempts until one succeeds (its pick and reply: for a stream, the stream and its
        first chunk); raises what the plan will not retry."""
        io = self._scheduler.blocking
        while True:
            step = yield Io(plan.next, (), io)
            if not isinstance(step, Pick):
                yield Sleep(step)
                continue
            try:
                member = self._rotated(step)
            except BaseException:  # nothing was sent: give the slot back whole
                yield Detached(functools.partial(plan.cancelled, step, sent=False), (), io)
                raise
            try:
                reply = yield Send(member)
                if stream:  # a stream's failures before its first chunk are retried
                    reply = (reply, (yield Pull(reply)))
            except Exception as exc:
                if not (yield Io(plan.retry, (step, exc), io)):
                    raise
                continue
            except BaseException:  # cancelled or interrupted mid-call: no outcome
                yield Detached(plan.cancelled, (step,), io)
                raise
            return step, reply

    def _stream_steps(self, plan: RequestPlan, step: Pick, opened: Any, user: str) -> Steps:
        """A stream after its first chunk: hand on every chunk, then the pool's last one."""
        io, ledger = self._scheduler.blocking, self._ledger is not None
        chunks, chunk = opened
        tally = StreamTally(plan, step, functools.partial(self._stamp, pick=step, plan=plan))
        try:
            while chunk is not None:
                yield Emit(tally.see(chunk))
                chunk = yield Pull(chunks)
        except Exception as exc:
            yield Io(tally.failed, (exc,), io)
            yield Io(self._record, (user, None, exc), ledger)
            raise
        except BaseException:  # abandoned (GeneratorExit), cancelled or interrupted
            yield Detached(tally.abandoned, (), io)
            yield Close(chunks)  # a generator: let go of its connection
            raise
        last, summary = yield Io(tally.done, (), io)
        yield Io(self._record, (user, summary, None), ledger)
        yield Emit(last)

    def _finish(self, plan: RequestPlan, step: Pick, result: ChatResult) -> None:
        message = result.generations[0].message
        usage = getattr(message, "usage_metadata", None)
        plan.succeeded(step, usage["input_tokens"] if usage else None)
        for generation in result.generations:
            self._stamp(generation.message, step, plan)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        steps = self._steps(messages, self._user(run_manager, kwargs), "call")

        def call(member: Member) -> ChatResult:
            return member._generate(messages, stop=stop, run_manager=run_manager, **kwargs)

        return cast("ChatResult", result_of(drive(steps, call, self._clock)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        steps = self._steps(messages, self._user(run_manager, kwargs), "call")

        async def call(member: Member) -> ChatResult:
            return await member._agenerate(messages, stop=stop, run_manager=run_manager, **kwargs)

        return cast("ChatResult", await aresult_of(adrive(steps, call, self._clock)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        steps = self._steps(messages, self._user(run_manager, kwargs), "stream")

        def call(member: Member) -> Iterator[ChatGenerationChunk]:
            return member._stream(messages, stop=stop, run_manager=run_manager, **kwargs)

        yield from drive(steps, call, self._clock)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        steps = self._steps(messages, self._user(run_manager, kwargs), "stream")

        async def call(member: Member) -> AsyncIterator[ChatGenerationChunk]:
            return member._astream(messages, stop=stop, run_manager=run_manager, **kwargs)

        async with contextlib.aclosing(adrive(steps, call, self._clock)) as chunks:
            async for chunk in chunks:  # closed with this generator: the key is given back
                yield chunk

    # --- cache -----------------------------------------------------------------------------

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = _Call(_caller(run_manager, kwargs))
        token = _CALL.set(call)
        try:
            result = super()._generate_with_cache(messages, stop, run_manager, **kwargs)
            if not call.sent and from_fallback(result):  # never served: ask the ladder again
                result = self._generate(messages, stop, run_manager, **kwargs)
                self._recache(messages, stop, kwargs, result)
        finally:
            _CALL.reset(token)
        return result if call.sent else self._cache_hit(result, call.user)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = _Call(_caller(run_manager, kwargs))
        token = _CALL.set(call)
        try:
            result = await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)
            if not call.sent and from_fallback(result):  # never served: ask the ladder again
                result = await self._agenerate(messages, stop, run_manager, **kwargs)
                await asyncio.to_thread(self._recache, messages, stop, kwargs, result)
        finally:
            _CALL.reset(token)
        return result if call.sent else self._cache_hit(result, call.user)

    def _recache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        result: ChatResult,
    ) -> None:
        """Replace a cached fallback answer with the answer the ladder gave now."""
        cache = self._stream_cache(messages, stop, kwargs)
        if cache is not None:
            try:
                cache.put(result.generations)
            except Exception:
                logger.warning("Could not store an answer in the cache.", exc_info=True)

    def _cache_hit(self, result: ChatResult, user: str) -> ChatResult:
        """Mark a result served from the cache: no key served it, nothing was billed."""
        for generation in result.generations:
            metadata = {
                k: v
                for k, v in generation.message.response_metadata.items()
                if k not in _POOL_METADATA
            }
            metadata["cache_hit"] = True
            generation.message = generation.message.model_copy(
                update={"response_metadata": metadata}
            )
        if result.generations:
            self._record(user, result.generations[0].message, None, cached=True)
        return result

    def _stream_cache(
        self, input: LanguageModelInput, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> StreamCache | None:
        """The cache a stream may be served from, at the address ``invoke`` would use."""
        if self.cache is False:
            return None
        cache = self.cache if isinstance(self.cache, BaseCache) else get_llm_cache()
        if cache is None:
            return None
        messages = self._convert_input(input).to_messages()
        normalized = [
            m.model_copy(update={"id": None}) if getattr(m, "id", None) is not None else m
            for m in messages
        ]
        return StreamCache(cache, dumps(normalized), self._get_llm_string(stop=stop, **kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream as ``ChatGoogleGenerativeAI`` does, but served from and stored in the cache."""
        config = ensure_config(config)
        cache = self._stream_cache(input, stop, kwargs)
        if cache is not None and cache.hit():
            yield from replay(self.invoke(input, config, stop=stop, **kwargs))
            return
        user = _user_of(config.get("metadata"))
        collected: list[AIMessageChunk] = []
        for chunk in super().stream(input, config, stop=stop, **{**kwargs, _USER_KW: user}):
            collected.append(chunk)
            yield chunk
        if cache is not None and collected:
            cache.store(collected)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async ``stream``, served from and stored in the cache (off the event loop)."""
        config = ensure_config(config)
        cache = self._stream_cache(input, stop, kwargs)
        if cache is not None and await cache.ahit():
            for chunk in replay(await self.ainvoke(input, config, stop=stop, **kwargs)):
                yield chunk
            return
        user = _user_of(config.get("metadata"))
        collected: list[AIMessageChunk] = []
        async for chunk in super().astream(input, config, stop=stop, **{**kwargs, _USER_KW: user}):
            collected.append(chunk)
            yield chunk
        if cache is not None and collected:
            await cache.astore(collected)

    # --- other calls that use a key --------------------------------------------------------

    def get_num_tokens(self, text: str) -> int:
        """Count tokens with the model's tokenizer, on the next key in the rotation."""
        steps = self._steps(None, _DEFAULT_USER, "count")
        return cast("int", result_of(drive(steps, lambda m: m.get_num_tokens(text), self._clock)))

    async def aclose(self) -> None:
        """Close the pool's client, which every key shares (call before the event loop
        used exits)."""
        await super().aclose()


def _shared_rungs(
    state: StateBackend | None, strategy: Strategy, cooldown: float
) -> RungFactory | None:
    """The ladder's rungs over ``state``: one ``SharedScheduler`` per model (None: in-process)."""
    if state is None:
        return None

    def make_rung(model: str, limits: LimitsArg) -> SharedScheduler:
        return SharedScheduler(state, model, strategy, limits, cooldown)

    return make_rung


def _resolve_state(state: Any) -> StateBackend | None:
    """The ``state`` field as a backend: given, named by a string, or from the environment."""
    if state is None:
        return state_from_env()
    if isinstance(state, str):
        named = state_from_env({ENV_VAR: state})
        if named is None:
            raise ValueError("state is an empty string: pass a backend, a URL or a directory.")
        return named
    if not isinstance(state, StateBackend):
        raise TypeError(
            "state must be InMemoryState(), DiskState(directory) or RedisState(url) "
            f"(or a redis:// URL or a directory path); got {type(state).__name__}."
        )
    return state

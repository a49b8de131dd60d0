"""``ChatGeminiPool``: a drop-in ``ChatGoogleGenerativeAI`` over a pool of API keys.

The pool is itself a ``ChatGoogleGenerativeAI`` (so every helper that checks the type keeps
working) whose calls all go through its own client, each with the key of its member (see
``_members.py``). Which key, and what happens after a failure, is decided by the scheduler
and the request plan. This module holds the fields, construction and the four thin entry
points; the rest of the class is in its parts: ``_pool_request`` (one request's steps, which
``_driver`` performs sync or async), ``_pool_keys`` (keys while serving), ``_pool_cache``
(the cache) and ``_pool_build`` (assembly).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import Field, PrivateAttr, model_validator
from typing_extensions import Self

from langchain_gemini_pool._clock import Clock, SystemClock
from langchain_gemini_pool._driver import adrive, aresult_of, drive, result_of
from langchain_gemini_pool._dropin import pool_kwargs, refuse_vertex_ai, revive_settings
from langchain_gemini_pool._keys import KeyEntry, load_api_keys, normalize_keys
from langchain_gemini_pool._ladder import LadderScheduler
from langchain_gemini_pool._members import Member, Members
from langchain_gemini_pool._pool_build import check_limits, make_scheduler, resolve_state
from langchain_gemini_pool._pool_cache import PoolCache
from langchain_gemini_pool._pool_keys import KeysFrom, PoolKeys, PoolKeySet, adopt, remember
from langchain_gemini_pool._pool_request import DEFAULT_USER, PoolRequest
from langchain_gemini_pool._redact import clean_exception, secrets_in
from langchain_gemini_pool._scheduler import Scheduler
from langchain_gemini_pool._settings import check_headers, check_seconds, warn_unknown_projects
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool._state_types import StateBackend
from langchain_gemini_pool._usage_ledger import UsageLedger

logger = logging.getLogger("langchain_gemini_pool")

__all__ = ["ChatGeminiPool"]


class ChatGeminiPool(PoolRequest, PoolKeys, PoolCache, ChatGoogleGenerativeAI):
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
    anything else is a ``ValueError`` naming its position, the key masked. Once built, a
    ``PoolKeySet``: the pool's keys by project, live, never shown (a model LangChain rebuilds
    from the fields, as ``configurable_fields`` does, gets them all)."""

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
    _derived: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    """Books of pools LangChain rebuilt from this one with other settings (``adopt``)."""

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
        if isinstance(api_keys, PoolKeySet):  # rebuilt from a pool's fields (configurable)
            entries = KeysFrom(entries, api_keys.pool)
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
        self.api_keys = PoolKeySet(self)  # key text lives only in the members: a live view
        check_seconds("max_wait", self.max_wait)
        check_seconds("rate_limit_cooldown", self.rate_limit_cooldown)
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or self.max_attempts < 1
        ):
            raise ValueError("max_attempts must be at least 1 (or None: each key once, >= 3).")
        limits = self.limits
        check_limits(limits)
        if isinstance(entries, KeysFrom) and adopt(self, entries.pool):
            return self
        self._clock = self.clock if self.clock is not None else SystemClock()
        self._state = resolve_state(self.state)
        self._scheduler = make_scheduler(
            self.model,
            self.fallback_models,
            self.prefer,
            self.strategy,
            limits,
            self.rate_limit_cooldown,
            self._state,
        )
        self._members = Members()
        self._add_entries(entries)
        warn_unknown_projects(limits, {e.project for e in entries})
        self._ledger = self.ledger
        if self._ledger is None and self.usage_limits is not None:
            self._ledger = self._default_ledger()
        if isinstance(entries, KeysFrom):
            remember(self, entries.pool)
        logger.info("Gemini API configured with %d API keys", len(entries))
        return self

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

    # --- other calls that use a key --------------------------------------------------------

    def get_num_tokens(self, text: str) -> int:
        """Count tokens with the model's tokenizer, on the next key in the rotation."""
        steps = self._steps(None, DEFAULT_USER, "count")
        return cast("int", result_of(drive(steps, lambda m: m.get_num_tokens(text), self._clock)))

    async def aclose(self) -> None:
        """Close the pool's client, which every key shares (call before the event loop
        used exits)."""
        await super().aclose()

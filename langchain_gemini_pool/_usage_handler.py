"""A LangChain callback handler that accounts Gemini usage per key, project, model and user.

It counts each caller request once, when it ends (``on_llm_end`` with the final — for a stream,
the merged — message, or ``on_llm_error``), reading the user from the run metadata seen at
``on_chat_model_start`` (``config={"metadata": {"user_id": ...}}``).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook

from langchain_gemini_pool._ladder import served_model
from langchain_gemini_pool._usage_prices import ModelPrice
from langchain_gemini_pool._usage_record import UsageRecord, UsageTotals, usage_record

__all__ = ["USER_METADATA_KEY", "GeminiUsageCallbackHandler", "get_gemini_usage_callback"]

USER_METADATA_KEY = "user_id"
"""The run-metadata key naming the user; requests without it belong to ``"anonymous"``."""
ANONYMOUS = "anonymous"


def _run_info(metadata: Mapping[str, Any] | None) -> tuple[str, str | None]:
    metadata = metadata or {}
    user = metadata.get(USER_METADATA_KEY)
    user_id = str(user) if user is not None and str(user).strip() else ANONYMOUS
    model = metadata.get("ls_model_name")
    return user_id, model if isinstance(model, str) and model else None


def _final_message(response: LLMResult) -> BaseMessage | None:
    try:
        generation = response.generations[0][0]
    except IndexError:
        return None
    return generation.message if isinstance(generation, ChatGeneration) else None


class GeminiUsageCallbackHandler(BaseCallbackHandler):
    """Totals of every chat-model call it sees: overall and per key, project, model and user.

    Thread-safe and usable from async code (its work is a few dict updates under a lock, run
    inline). Read the live figures from ``total``, ``by_key``, ``by_project``, ``by_model`` and
    ``by_user``, or take a consistent copy with :meth:`snapshot`.

    Per key (and project): ``attempts`` counts every HTTP attempt sent through it; tokens, cost
    and ``successful_requests`` go only to the key that served the request. Cache hits count under
    ``total``, their user and their model only (``requests`` and ``cached_requests``).

    A run is counted only if the handler saw it start, and only once even when the handler is
    attached twice (say, in ``callbacks=`` and through :func:`get_gemini_usage_callback`).

    Args:
        prices: Price table for ``cost_usd``; defaults to ``DEFAULT_PRICES``.

    Example:
        >>> with get_gemini_usage_callback() as usage:
        ...     pool.invoke("Hi", config={"metadata": {"user_id": "alice"}})
        >>> usage.by_user["alice"].total_tokens
    """

    run_inline = True
    raise_error = False

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        super().__init__()
        self._prices = prices
        self._lock = threading.Lock()
        self._runs: dict[UUID, tuple[str, str | None]] = {}
        self.total = UsageTotals()
        """Everything seen."""
        self.by_key: dict[int, UsageTotals] = {}
        """Key index (position in the pool) -> totals."""
        self.by_project: dict[str, UsageTotals] = {}
        """Project name -> totals."""
        self.by_model: dict[str, UsageTotals] = {}
        """Model name (requested, without ``models/``) -> totals."""
        self.by_user: dict[str, UsageTotals] = {}
        """User id (run metadata ``user_id``, default ``"anonymous"``) -> totals."""

    def __repr__(self) -> str:
        t = self.total
        return (
            f"GeminiUsageCallbackHandler(requests={t.requests}, attempts={t.attempts}, "
            f"total_tokens={t.total_tokens}, cost_usd={t.cost_usd!r})"
        )

    def _repr_html_(self) -> str:
        """Jupyter: usage by key, project, model and user as tables."""
        from langchain_gemini_pool._html import handler_html

        return handler_html(self)

    # -- callbacks ---------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember who runs ``run_id`` and on which model."""
        with self._lock:
            self._runs[run_id] = _run_info(metadata)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Same as :meth:`on_chat_model_start`, for completion-style models."""
        with self._lock:
            self._runs[run_id] = _run_info(metadata)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        """Count the finished request once, from its final message."""
        message = _final_message(response)
        with self._lock:
            info = self._runs.pop(run_id, None)
        if info is None or message is None:
            return  # a run it did not see start, or already counted (attached twice)
        user, model = info
        model = served_model(message) or model  # the ladder model that answered, if it moved
        self.add(usage_record(message, None, user=user, model=model, prices=self._prices))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Count the failed request: its attempts per key, no tokens."""
        with self._lock:
            info = self._runs.pop(run_id, None)
        if info is None:
            return
        user, model = info
        self.add(usage_record(None, error, user=user, model=model, prices=self._prices))

    # -- state -------------------------------------------------------------------------------

    def add(self, record: UsageRecord) -> None:
        """Add one request's record to every grouping it belongs to."""
        with self._lock:
            for dimension, name, delta in record.deltas():
                if dimension == "total":
                    self.total.add(delta)
                elif dimension == "key":
                    self.by_key.setdefault(int(name), UsageTotals()).add(delta)
                else:
                    group = {"user": self.by_user, "model": self.by_model}.get(
                        dimension, self.by_project
                    )
                    group.setdefault(name, UsageTotals()).add(delta)

    def snapshot(self) -> dict[str, Any]:
        """A consistent, JSON-ready copy of all figures."""
        with self._lock:
            return {
                "total": self.total.to_dict(),
                "by_key": {k: v.to_dict() for k, v in self.by_key.items()},
                "by_project": {k: v.to_dict() for k, v in self.by_project.items()},
                "by_model": {k: v.to_dict() for k, v in self.by_model.items()},
                "by_user": {k: v.to_dict() for k, v in self.by_user.items()},
            }

    def reset(self) -> None:
        """Forget every figure (runs in flight are still counted when they end)."""
        with self._lock:
            self.total = UsageTotals()
            self.by_key, self.by_project, self.by_model, self.by_user = {}, {}, {}, {}


class _FanOut(BaseCallbackHandler):
    """Forwards to every handler of the nested ``get_gemini_usage_callback`` blocks."""

    run_inline = True
    raise_error = False

    def __init__(self, handlers: tuple[GeminiUsageCallbackHandler, ...]) -> None:
        super().__init__()
        self.handlers = handlers

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        for h in self.handlers:
            h.on_chat_model_start(*args, **kwargs)

    def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
        for h in self.handlers:
            h.on_llm_start(*args, **kwargs)

    def on_llm_end(self, *args: Any, **kwargs: Any) -> None:
        for h in self.handlers:
            h.on_llm_end(*args, **kwargs)

    def on_llm_error(self, *args: Any, **kwargs: Any) -> None:
        for h in self.handlers:
            h.on_llm_error(*args, **kwargs)


_active: ContextVar[_FanOut | None] = ContextVar("gemini_usage_callback", default=None)
_registered = False
_register_lock = threading.Lock()


@contextmanager
def get_gemini_usage_callback(
    prices: Mapping[str, ModelPrice] | None = None,
) -> Generator[GeminiUsageCallbackHandler, None, None]:
    """Count the usage of every chat-model call made inside the ``with`` block.

    Like ``langchain_core.callbacks.get_usage_metadata_callback``: the handler is attached to
    every run configured in this context (threads and tasks started inside it inherit it through
    ``contextvars``). Blocks nest; each handler sees the calls made inside its own block. One
    context variable serves all blocks, so entering many blocks registers nothing more.

    Args:
        prices: Price table for ``cost_usd``; defaults to ``DEFAULT_PRICES``.

    Yields:
        The :class:`GeminiUsageCallbackHandler` collecting the figures.
    """
    global _registered
    with _register_lock:
        if not _registered:
            register_configure_hook(_active, inheritable=True)
            _registered = True
    handler = GeminiUsageCallbackHandler(prices=prices)
    outer = _active.get()
    token = _active.set(_FanOut((*(outer.handlers if outer else ()), handler)))
    try:
        yield handler
    finally:
        _active.reset(token)

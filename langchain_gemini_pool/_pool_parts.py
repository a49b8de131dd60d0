"""What the parts of ``ChatGeminiPool`` (``_pool_request``, ``_pool_keys``, ``_pool_cache``)
may rely on of the whole: for the type checker only; at run time they are plain mixins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_google_genai import ChatGoogleGenerativeAI

    from langchain_gemini_pool._clock import Clock
    from langchain_gemini_pool._ladder import LadderScheduler
    from langchain_gemini_pool._members import Members
    from langchain_gemini_pool._scheduler import Scheduler
    from langchain_gemini_pool._shared_scheduler import SharedScheduler
    from langchain_gemini_pool._state_types import StateBackend

    class PoolParts(ChatGoogleGenerativeAI):
        _scheduler: Scheduler | SharedScheduler | LadderScheduler
        _state: StateBackend | None
        _members: Members
        _clock: Clock
        _ledger: Any
        _derived: dict[str, dict[str, Any]]
        max_attempts: int | None
        max_wait: float
        limits: Any
        usage_limits: Any
        env_file: str | None

        def _record(
            self,
            user: str,
            message: BaseMessage | None,
            error: BaseException | None,
            *,
            cached: bool = False,
        ) -> None: ...

else:
    PoolParts = object

"""``LadderPlan``: a ``RequestPlan`` over a ``LadderScheduler``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_gemini_pool._driver import IoSteps
from langchain_gemini_pool._errors import classify, model_not_found
from langchain_gemini_pool._failover import RequestPlan
from langchain_gemini_pool._ladder import LadderPick, LadderScheduler
from langchain_gemini_pool._scheduler import Pick


def _rung(pick: Pick) -> int:
    return pick.rung if isinstance(pick, LadderPick) else 0


class LadderPlan(RequestPlan):
    """A ``RequestPlan`` over a ``LadderScheduler``: a 404 model moves down the ladder, and
    each attempt says which model it went to."""

    def __init__(self, scheduler: LadderScheduler, now: Callable[[], float], **kwargs: Any):
        if not isinstance(scheduler, LadderScheduler):
            raise TypeError("LadderPlan needs a LadderScheduler.")
        super().__init__(scheduler, now, **kwargs)
        self._ladder = scheduler
        self._cap *= len(scheduler.models)

    def failed_steps(self, pick: Pick, exc: BaseException) -> IoSteps[float | None]:
        if model_not_found(exc) and self._ladder.drop_model(_rung(pick), "404 NOT_FOUND"):
            yield from self._ladder.release_steps(pick, sent=False)
            self._record(pick, classify(exc).kind.value)
            self._tried.discard(pick.index)
            return 0.0
        return (yield from super().failed_steps(pick, exc))

    def _record(self, pick: Pick, outcome: str) -> None:
        super()._record(pick, outcome)
        self.attempts[-1]["model"] = self._ladder.models[_rung(pick)]

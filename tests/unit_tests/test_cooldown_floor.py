"""A 429 whose RetryInfo rounds to "0s" still cools its project for a floor of 1 s.

Sent in the last milliseconds of a window, a request draws a 429 whose hint is "0s";
retried at once it draws 429 after 429 until the attempt cap raised GoogleRateLimitError
although max_wait had time to spare. Both schedulers (in-process and shared) floor it.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from langchain_gemini_pool import InMemoryState, ManualClock
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._keys import KeyEntry
from langchain_gemini_pool._scheduler import Pick, Scheduler, Wait
from langchain_gemini_pool._scheduler_types import MIN_RATE_LIMIT_COOLDOWN_S
from langchain_gemini_pool._shared_scheduler import SharedScheduler

T = 1_781_118_000.0


def _schedulers(clock: ManualClock) -> list[Scheduler | SharedScheduler]:
    plain = Scheduler(default_cooldown_s=0.0)
    plain.add_key("p", "…aaaa")
    shared = SharedScheduler(InMemoryState(clock), "gemini-2.5-flash", default_cooldown_s=0.0)
    shared.add_entries([KeyEntry(SecretStr("fake-key-floor-aaaa"), "p")])
    return [plain, shared]


@pytest.mark.parametrize("which", [0, 1], ids=["in_process", "shared"])
@pytest.mark.parametrize("hint", [0.0, 0.2, None])
def test_a_zero_retry_hint_still_cools_for_the_floor(which: int, hint: float | None) -> None:
    clock = ManualClock(T)
    scheduler = _schedulers(clock)[which]
    pick = scheduler.choose(clock.now())
    assert isinstance(pick, Pick)
    failure = Failure(FailureKind.RATE_LIMITED, "429 RESOURCE_EXHAUSTED", hint)
    scheduler.on_failure(pick, failure, clock.now())
    wait = scheduler.choose(clock.now())
    assert isinstance(wait, Wait)
    assert wait.until == pytest.approx(T + MIN_RATE_LIMIT_COOLDOWN_S)
    clock.advance(MIN_RATE_LIMIT_COOLDOWN_S)
    assert isinstance(scheduler.choose(clock.now()), Pick)

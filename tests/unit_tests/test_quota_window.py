"""``ProjectWindow`` and ``QuotaLimits`` by example, at the edges the mutation run found open.

Pure arithmetic on timestamps: every test passes ``now`` by hand.
"""

from __future__ import annotations

import pytest

from langchain_gemini_pool._clock import next_pacific_midnight
from langchain_gemini_pool._quota import WINDOW_MARGIN_S, ProjectWindow, QuotaLimits

T0 = 1_760_000_000.0  # a Thursday afternoon, Pacific
SPAN = 60.0 + WINDOW_MARGIN_S


def at(when: float) -> object:
    """Equal to ``when`` within a microsecond (plain ``pytest.approx`` is relative: on epoch
    seconds it would accept half an hour either way)."""
    return pytest.approx(when, rel=0, abs=1e-6)


def test_a_limit_of_zero_is_allowed_and_a_negative_one_is_not() -> None:
    assert QuotaLimits(rpm=0, tpm=0, rpd=0).rpm == 0  # a model with no free tier
    with pytest.raises(ValueError, match=r"^QuotaLimits\.rpd must be a whole number >= 0"):
        QuotaLimits(rpd=-1)
    with pytest.raises(
        ValueError, match=r"^QuotaLimits\.window_s must be a positive number of seconds\.$"
    ):
        QuotaLimits(window_s=0)


def test_a_request_leaves_the_window_exactly_when_ready_at_says() -> None:
    window = ProjectWindow(QuotaLimits(rpm=1))
    window.reserve(T0, 1)
    free_at = window.ready_at(T0, 1)
    assert free_at == at(T0 + SPAN)
    assert window.room(free_at)["rpm"] == 1
    assert window.ready_at(free_at, 1) == free_at


def test_a_correction_of_an_expired_request_changes_nothing() -> None:
    window = ProjectWindow(QuotaLimits(tpm=100))
    old = window.reserve(T0, 10)
    window.reserve(T0 + 50, 20)
    assert window.room(T0 + SPAN + 1)["tpm"] == 80  # the first has left the window
    window.correct(old, 1000)
    assert window.room(T0 + SPAN + 1)["tpm"] == 80


def test_a_full_day_waits_for_pacific_midnight() -> None:
    window = ProjectWindow(QuotaLimits(rpd=1))
    window.reserve(T0, 1)
    assert window.ready_at(T0 + 5, 1) == next_pacific_midnight(T0 + 5)
    assert window.room(T0 + 5)["rpd"] == 0


@pytest.mark.parametrize(
    ("used", "tpm", "ask", "frees_with"),
    [
        ((3, 7), 10, 4, 1),  # the first request alone frees 3 < 4: wait for the second
        ((3, 3, 3), 9, 5, 1),  # 3 + 3 >= 5: the second one's expiry is enough
        ((3, 3), 6, 3, 0),  # exactly enough freed by the first
    ],
)
def test_tokens_wait_for_just_enough_requests_to_expire(
    used: tuple[int, ...], tpm: int, ask: int, frees_with: int
) -> None:
    window = ProjectWindow(QuotaLimits(tpm=tpm))
    for i, tokens in enumerate(used):
        window.reserve(T0 + 10 * i, tokens)
    assert window.ready_at(T0 + 30, ask) == at(T0 + 10 * frees_with + SPAN)


def test_a_booked_earlier_slot_is_kept_in_time_order() -> None:
    window = ProjectWindow(QuotaLimits(rpm=3))
    window.reserve(T0 + 1, 0)
    window.reserve(T0 + 10, 0)
    window.reserve(T0 + 5, 0)  # a slot booked before the last one
    # the window is full; the oldest (T0 + 1) leaves first, then T0 + 5
    assert window.ready_at(T0 + 10, 0) == at(T0 + 1 + SPAN)
    assert window.room(T0 + 1 + SPAN)["rpm"] == 1
    assert window.ready_at(T0 + 1 + SPAN, 0) == T0 + 1 + SPAN
    window.reserve(T0 + 1 + SPAN, 0)
    assert window.ready_at(T0 + 1 + SPAN, 0) == at(T0 + 5 + SPAN)


def test_no_limits_means_no_room_figures_and_no_day_share() -> None:
    window = ProjectWindow(None)
    assert window.room(T0) == {"rpm": None, "tpm": None, "rpd": None}
    assert window.day_fraction(T0) == 0.0
    assert ProjectWindow(QuotaLimits(rpm=5)).day_fraction(T0) == 0.0


def test_room_never_goes_below_zero_and_day_share_counts() -> None:
    window = ProjectWindow(QuotaLimits(rpm=5, tpm=10, rpd=4))
    window.reserve(T0, 30)
    assert window.room(T0) == {"rpm": 4, "tpm": 0, "rpd": 3}
    assert window.day_fraction(T0) == 0.25


def test_one_token_over_the_limit_waits() -> None:
    window = ProjectWindow(QuotaLimits(tpm=10))
    window.reserve(T0, 10)
    assert window.ready_at(T0 + 1, 1) == at(T0 + SPAN)  # 1 token over: wait for the window
    assert window.ready_at(T0 + 1, 0) == T0 + 1  # nothing over: go now

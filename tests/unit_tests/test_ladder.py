"""The ladder's pure decision, and the ladder scheduler, with any sequence of quota states."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_gemini_pool._errors import Failure, FailureKind, QuotaViolation
from langchain_gemini_pool._ladder import LadderPick, LadderScheduler, ladder_choose
from langchain_gemini_pool._scheduler import NoKeys, Pick, Wait

NOW = 1_000.0
DEADLINE = NOW + 60.0

# A rung's state: None = every key quarantined; else when it frees (NOW = ready now,
# inf = never), and whether a future slot can be booked (a window) or not (a cooldown).
rung_state = st.one_of(
    st.none(),
    st.tuples(
        st.one_of(st.just(NOW), st.floats(NOW, NOW + 200, allow_nan=False), st.just(math.inf)),
        st.booleans(),
    ),
)


def oracle(states: list[tuple[float, bool] | None], asked: list[tuple[int, float | None]]):  # type: ignore[no-untyped-def]
    def ask(rung: int, book: float | None) -> Pick | Wait | NoKeys:
        state = states[rung]
        if state is None:
            return NoKeys({f"#{rung}": "invalid"})
        at, bookable = state
        if at <= NOW:
            return Pick(rung, [NOW])
        if book is not None and bookable and at <= book:
            asked.append((rung, at))  # a slot booked
            return Pick(rung, [at], at)
        return Wait(at, f"rung {rung} cooling")

    return ask


@settings(max_examples=400, deadline=None)
@given(st.lists(rung_state, min_size=1, max_size=5), st.sampled_from(["fallback", "wait"]))
def test_the_chosen_model_is_always_the_first_with_room(
    states: list[tuple[float, bool] | None], prefer: str
) -> None:
    asked: list[tuple[int, float | None]] = []
    rungs = list(range(len(states)))
    rung, decision = ladder_choose(rungs, oracle(states, asked), prefer, DEADLINE, NOW)  # type: ignore[arg-type]
    ready = [s[0] if s is not None else math.inf for s in states]
    if prefer == "fallback":
        now_ready = [i for i, at in enumerate(ready) if at <= NOW]
        if now_ready:
            assert rung == now_ready[0] and isinstance(decision, Pick)
        else:
            earliest = min(ready)
            if earliest <= DEADLINE:
                assert rung == ready.index(earliest)  # the first of those freeing first
            else:
                assert rung is None
    else:
        in_time = [i for i, at in enumerate(ready) if at <= DEADLINE]
        if in_time:
            assert rung == in_time[0]
        else:
            assert rung is None
    if rung is None:
        if all(s is None for s in states):
            assert isinstance(decision, NoKeys)
        else:
            assert isinstance(decision, Wait) and decision.until == min(ready)
    # a slot is booked only on the chosen rung: no stray reservation on another model
    booked = {r for r, _ in asked}
    assert booked <= ({rung} if rung is not None else set())
    assert len(asked) <= 1


def _ladder() -> LadderScheduler:
    ladder = LadderScheduler(["pro", "flash", "lite"], "fallback", "round_robin", None, 60.0)
    ladder.add_keys([("p1", "…aaaa"), ("p2", "…bbbb")])
    return ladder


def _per_day() -> Failure:
    violation = QuotaViolation("GenerateRequestsPerDayPerProjectPerModel-FreeTier", 100)
    return Failure(FailureKind.RATE_LIMITED, "rpd", None, (violation,))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1)), max_size=6))
def test_scheduler_picks_the_first_model_with_a_project_left(outs: list[tuple[int, int]]) -> None:
    """Take (model, project) pairs out for the day in any order: every pick is on the first
    model that still has a project, and never on a pair that is out."""
    ladder = _ladder()
    out: set[tuple[int, int]] = set()
    for rung, project in outs:
        pick = None
        for _ in range(4):  # find a pick on that pair (round robin alternates projects)
            candidate = ladder.choose(NOW)
            assert isinstance(candidate, LadderPick)
            ladder.release(candidate)
            if (candidate.rung, candidate.index) == (rung, project):
                pick = candidate
                break
        probe = LadderPick(project, [NOW], model=ladder.models[rung], rung=rung)
        ladder.on_failure(probe, _per_day(), NOW)
        out.add((rung, project))
        del pick
    for _ in range(4):
        choice = ladder.choose(NOW)
        left = [r for r in range(3) if any((r, p) not in out for p in (0, 1))]
        if not left:
            assert isinstance(choice, Wait) and choice.until > NOW
            break
        assert isinstance(choice, LadderPick)
        assert choice.rung == left[0]
        assert (choice.rung, choice.index) not in out
        ladder.on_success(choice)


def test_a_bad_key_is_bad_on_every_rung() -> None:
    ladder = _ladder()
    pick = ladder.choose(NOW)
    assert isinstance(pick, LadderPick) and pick.index == 0
    ladder.on_failure(pick, Failure(FailureKind.BAD_KEY, "403 leaked"), NOW)
    assert ladder.status(NOW)[0]["models"] == {
        "pro": "invalid",
        "flash": "invalid",
        "lite": "invalid",
    }


def test_quota_zero_outs_the_pair_until_pacific_midnight_only() -> None:
    ladder = _ladder()
    zero = QuotaViolation("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", 0)
    pick = ladder.choose(NOW)
    assert isinstance(pick, LadderPick)
    ladder.on_failure(pick, Failure(FailureKind.RATE_LIMITED, "rpm 0", 5.0, (zero,)), NOW)
    row = ladder.status(NOW)[0]
    assert row["models"] == {"pro": "cooling", "flash": "ready", "lite": "ready"}
    assert row["ready_in_s"] > 3600  # not the 5 s the body said: out until midnight


def test_the_last_model_is_never_dropped() -> None:
    ladder = _ladder()
    assert ladder.drop_model(0, "404")
    assert ladder.drop_model(1, "404")
    assert not ladder.drop_model(2, "404")
    assert ladder.live_rungs() == [2]


def test_one_info_line_per_pair_and_day(caplog: pytest.LogCaptureFixture) -> None:
    ladder = _ladder()
    with caplog.at_level(logging.INFO, logger="langchain_gemini_pool"):
        for _ in range(3):  # e.g. three requests in flight when the day ran out
            ladder.on_failure(LadderPick(0, [NOW], model="pro"), _per_day(), NOW)
        ladder.on_failure(LadderPick(0, [NOW], model="flash", rung=1), _per_day(), NOW)
        ladder.on_failure(LadderPick(0, [NOW], model="pro"), _per_day(), NOW + 86_400)
    lines = [r.getMessage() for r in caplog.records if "until midnight" in r.getMessage()]
    assert len(lines) == 3  # (p1, pro), (p1, flash), and (p1, pro) the next day


def test_a_ladder_pool_survives_dumps_and_loads_with_per_model_limits() -> None:
    from langchain_core.load import dumps, loads

    from langchain_gemini_pool import ChatGeminiPool, QuotaLimits

    pro = QuotaLimits(rpm=5, rpd=100)
    pool = ChatGeminiPool(
        model="gemini-2.5-pro",
        fallback_models=["gemini-2.5-flash"],
        prefer="wait",
        api_keys={"free": ["fake-key-aaaa"]},
        limits={"free": {"gemini-2.5-pro": pro}, "paid": QuotaLimits(rpm=9)},
    )
    text = dumps(pool)
    assert "fake-key-aaaa" not in text
    again = loads(
        text,
        secrets_map={"GEMINI_API_KEYS": {"free": ["fake-key-aaaa"]}},
        valid_namespaces=["langchain_gemini_pool"],
        allowed_objects=[ChatGeminiPool],
    )
    assert again.fallback_models == ["gemini-2.5-flash"] and again.prefer == "wait"
    assert again.limits == {"free": {"gemini-2.5-pro": pro}, "paid": QuotaLimits(rpm=9)}
    assert again.pool_status()[0]["room"]["rpd"] == 100  # pro's limits reached pro's rung


def test_limits_of_the_wrong_shape_say_what_is_wanted() -> None:
    from langchain_gemini_pool import ChatGeminiPool

    with pytest.raises(TypeError, match=r"\{model: QuotaLimits\}"):
        ChatGeminiPool(
            model="gemini-2.5-pro", api_keys=["fake-key-aaaa"], limits={"free": {"x": 5}}
        )

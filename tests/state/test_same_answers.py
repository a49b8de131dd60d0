"""The Lua twin and the Python decision give the same answers.

Random sequences of admits, corrections, cancellations, cooldowns, quarantines and learned
limits run against all three backends at once; every decision (its kind and the chosen
candidate) and every room count must agree. Windows are an hour long so that the few
milliseconds between the backends' clocks never matter (only which booked slot frees
first depends on them, so a booking is compared without its candidate).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from langchain_gemini_pool import DiskState, InMemoryState, ManualClock, QuotaLimits, RedisState
from langchain_gemini_pool._state_types import (
    Admit,
    AllQuarantined,
    Candidate,
    Scope,
    Settle,
    StateBackend,
    WaitUntil,
)
from tests.state.conftest import RedisServer

KEYS = [f"fake-diff-key-{i}" for i in range(4)]
SCOPES = [Scope("pa", "m1"), Scope("pa", "m2"), Scope("pb", "m1")]
LIMITS = [
    QuotaLimits(rpm=6, tpm=400, rpd=40, window_s=3600),
    QuotaLimits(rpm=3, window_s=3600),
    QuotaLimits(tpm=250, rpd=9, window_s=3600),
    None,
]


def _summary(decision: object) -> tuple[str, object]:
    if isinstance(decision, Admit):
        if decision.delay > 0:  # which slot frees first depends on each backend's clock
            return ("booked", decision.warning is not None)
        return ("admit", (decision.index, decision.warning is not None))
    if isinstance(decision, WaitUntil):
        return ("wait", decision.reason)
    assert isinstance(decision, AllQuarantined)
    return ("quarantined", sorted(decision.reasons.values()))


@pytest.mark.parametrize("seed", range(1, 7))
def test_three_backends_agree_step_by_step(
    seed: int, tmp_path: Path, shared_redis: RedisServer
) -> None:
    shared_redis.client().flushall()
    clock = ManualClock(time.time())  # near the server's: the same Pacific day and midnight
    states: list[StateBackend] = [
        InMemoryState(clock),
        DiskState(tmp_path / "d", clock),
        RedisState(shared_redis.url, prefix=f"diff{seed}"),
    ]
    rng = random.Random(seed)
    limits_of = {scope: rng.choice(LIMITS) for scope in SCOPES}
    held: list[list[tuple[Candidate, Admit]]] = [[] for _ in states]
    admitted = 0
    for step in range(160):
        picks = rng.sample(range(len(KEYS)), rng.randint(1, 3))
        scopes = [rng.choice(SCOPES) for _ in picks]
        op, tokens, book = rng.random(), rng.choice([0, 10, 60, 120]), rng.choice([None, 10**6])
        which, cancel = rng.random(), rng.random() < 0.4
        answers = []
        for n, state in enumerate(states):
            # the same keys in the same order, as each backend fingerprints them
            cands = [
                Candidate(state.fingerprint(KEYS[k]), s, limits_of[s])
                for k, s in zip(picks, scopes, strict=True)
            ]
            first = cands[0]
            seen: list[tuple[str, object]] = []
            if op < 0.6:
                decision = state.admit(cands, tokens, book_until_s=book)
                seen.append(_summary(decision))
                if isinstance(decision, Admit):
                    held[n].append((cands[decision.index], decision))
            elif op < 0.8 and held[n]:
                c, got = held[n].pop(int(which * len(held[n])))
                outcome = Settle(c.fingerprint, c.scope, got.reservation, 7, cancel=cancel)
                state.settle(outcome)
            elif op < 0.86:
                state.settle(Settle(first.fingerprint, first.scope, cool_scope_s=7200))
            elif op < 0.9:
                state.settle(Settle(first.fingerprint, first.scope, quarantine="403 X"))
            elif op < 0.95:
                state.settle(Settle(first.fingerprint, first.scope, learned={"rpm": 2}))
            else:
                state.reset(first.fingerprint, first.scope)
            rooms = state.snapshot(cands).scopes
            seen.append(
                ("room", sorted((s.project, s.model, str(v.room)) for s, v in rooms.items()))
            )
            answers.append(seen)
        assert answers[0] == answers[1] == answers[2], (step, answers)
        clock.advance(0.002)
        admitted += answers[0][0][0] in ("admit", "booked")
    assert admitted > 30
    for state in states:
        state.close()

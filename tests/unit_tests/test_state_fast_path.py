"""``InMemoryState``'s fast paths answer exactly what the general ones answer: an admit whose
first candidate may send now what ``decide`` answers, ``landed`` what ``settle`` does with a
success's ``Settle`` (compared on random states), and ``fits_now`` what ``ready_at`` says."""

from __future__ import annotations

import random

from langchain_gemini_pool import InMemoryState, ManualClock, QuotaLimits
from langchain_gemini_pool._state_decide import ScopeView, fits_now, ready_at
from langchain_gemini_pool._state_types import Admit, Candidate, Scope, Settle

T = 1_800_000_000.0


class _SlowState(InMemoryState):
    """The same state with the fast path off: every admit goes through ``decide``."""

    def _free(self, cand: Candidate, tokens: int, now: float, day: int) -> tuple[bool, None]:
        return False, None


def _random_limits(rng: random.Random) -> QuotaLimits | None:
    if rng.random() < 0.15:
        return None
    pick = rng.choice
    return QuotaLimits(
        rpm=pick([None, 0, 1, 2, 3, 5]),
        tpm=pick([None, 0, 5, 20, 60]),
        rpd=pick([None, 0, 2, 4, 8, 30]),
        window_s=pick([1.0, 5.0, 60.0]),
    )


def test_the_fast_path_decides_as_decide_on_random_states() -> None:
    rng = random.Random(11)
    fast_takes = 0
    for trial in range(60):
        clock = ManualClock(T + rng.uniform(0, 86400 * 3))
        fast, slow = InMemoryState(clock), _SlowState(clock)
        scopes = [Scope(f"p{i}", "m") for i in range(3)]
        limits = {s: _random_limits(rng) for s in scopes}
        cands = [
            Candidate(f"k:{trial}-{i}", scope, limits[scope])
            for i, scope in enumerate(rng.choices(scopes, k=4))
        ]
        open_: list[tuple[Admit, Admit]] = []
        for _ in range(120):
            roll = rng.random()
            if roll < 0.45:
                order = rng.sample(cands, k=rng.randint(1, len(cands)))
                tokens = rng.choice([0, 1, 3.5, 10, 40, 80])
                book = rng.choice([None, 0.0, 2.0, 100.0])
                a = fast.admit(order, tokens, book_until_s=book)
                b = slow.admit(order, tokens, book_until_s=book)
                assert a == b
                if isinstance(a, Admit) and isinstance(b, Admit):
                    fast_takes += a.index == 0 and a.delay == 0
                    open_.append((a, b))
            elif roll < 0.75 and open_:
                a, b = open_.pop(rng.randrange(len(open_)))
                extra = rng.choice(
                    [
                        {},
                        {"prompt_tokens": rng.randint(0, 50)},
                        {"cancel": True},
                        {"cool_scope_s": rng.uniform(0, 3), "cool_reason": "429"},
                        {"cool_key_s": rng.uniform(0, 3), "cool_reason": "500"},
                        {"quarantine": "400 API_KEY_INVALID"},
                        {"learned": {rng.choice(["rpm", "tpm", "rpd"]): rng.randint(0, 6)}},
                    ]
                )
                r = a.reservation
                if set(extra) <= {"prompt_tokens"}:  # a success: the fast state lands it
                    fast.landed(r.fingerprint, r.scope, r, extra.get("prompt_tokens"))  # type: ignore[arg-type]
                else:
                    fast.settle(Settle(r.fingerprint, r.scope, r, **extra))  # type: ignore[arg-type]
                r = b.reservation
                slow.settle(Settle(r.fingerprint, r.scope, r, **extra))  # type: ignore[arg-type]
            else:
                clock.advance(rng.choice([0.1, 0.5, 1.0, 3.0, 70.0, 20000.0]))
        assert fast.snapshot(cands) == slow.snapshot(cands)
    assert fast_takes > 200  # the fast path was taken, not only the slow one


def test_fits_now_is_true_only_when_ready_at_says_now() -> None:
    rng = random.Random(7)
    agreed = 0
    for _ in range(5000):
        limits = _random_limits(rng)
        now = T + rng.uniform(0, 100)
        events = sorted(
            [[now - rng.uniform(0, 60), rng.randint(0, 30)] for _ in range(rng.randint(0, 6))]
        )
        flying = sorted(
            [[now + rng.uniform(-5, 5), rng.randint(0, 30)] for _ in range(rng.randint(0, 3))]
        )
        token_sum = sum(e[1] for e in events + flying)
        day_count = rng.randint(0, 40)
        tokens = rng.randint(0, 70)
        view = ScopeView(events=events, flying=flying, token_sum=token_sum, day_count=day_count)
        count = len(events) + len(flying)
        if fits_now(limits, count, token_sum, day_count, tokens):
            agreed += 1
            assert ready_at(view, limits, now, tokens) == (now, True)
    assert agreed > 500

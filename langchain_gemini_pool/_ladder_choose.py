"""Which rung of the model ladder takes a request: a pure decision over each rung's answer
(see ``_ladder`` for the rules), as steps whose I/O is each rung's backend ``admit``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from langchain_gemini_pool._driver import IoSteps, done, run_blocking
from langchain_gemini_pool._scheduler import NoKeys, Pick, Wait

Prefer = Literal["fallback", "wait"]
Decision = Pick | Wait | NoKeys


def ladder_choose(
    rungs: Sequence[int],
    ask: Callable[[int, float | None], Decision],
    prefer: Prefer,
    book_until: float | None,
    now: float,
) -> tuple[int | None, Decision]:
    """Which rung takes the request (pure: every quota fact comes from ``ask``).

    Args:
        rungs: The rungs still in the ladder, in ladder order.
        ask: ``ask(rung, book)``: that rung's scheduler decision; with ``book`` set it may
            book a future slot up to then (a ``Pick`` with ``at > now``), else it must not.
        prefer: ``"fallback"`` or ``"wait"`` (see the module doc).
        book_until: The request's wait deadline (None: never wait for a slot).
        now: The current time.

    Returns:
        ``(rung, Pick)``, or ``(rung, Wait)`` to wait for that rung, or ``(None, Wait |
        NoKeys)`` when no rung can take it in time (the Wait's ``until`` is the earliest).
    """

    def asked(rung: int, book: float | None) -> IoSteps[Decision]:
        return done(ask(rung, book))

    return run_blocking(ladder_choose_steps(rungs, asked, prefer, book_until, now))


def ladder_choose_steps(
    rungs: Sequence[int],
    ask: Callable[[int, float | None], IoSteps[Decision]],
    prefer: Prefer,
    book_until: float | None,
    now: float,
) -> IoSteps[tuple[int | None, Decision]]:
    """``ladder_choose`` as steps: ``ask`` gives a rung's ``choose_steps``, whose backend
    I/O is yielded."""
    waits: list[tuple[float, int, str]] = []
    empty: dict[str, str] = {}
    for rung in rungs:
        decision = yield from ask(rung, book_until if prefer == "wait" else None)
        if isinstance(decision, Pick):
            return rung, decision
        if isinstance(decision, NoKeys):
            empty.update(decision.reasons)
            continue
        if prefer == "wait" and book_until is not None and decision.until <= book_until:
            return rung, decision  # the earlier model frees in time: wait for it
        waits.append((decision.until, rung, decision.reason))
    if not waits:
        return None, NoKeys(empty)
    until, rung, _ = min(waits)  # ties: the earlier rung
    if prefer == "fallback" and book_until is not None and until <= book_until:
        return rung, (yield from ask(rung, book_until))
    reason = "; ".join(f"rung {r}: {why}" for _, r, why in sorted(waits, key=lambda w: w[1]))
    return None, Wait(until, reason)

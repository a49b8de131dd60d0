"""Injected faults: server errors, overload, dropped connections, cut streams, latency.

A :class:`Faults` is plain configuration; the server turns it into a :class:`FaultPlan`
(its own seeded random generators and a cursor over ``schedule``) each time it is set, so
the same ``Faults`` over the same request order gives the same faults.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

FaultItem = int | str | None
"""One scheduled outcome: None (normal), 500, 503, 429, "reset" or "cut"."""

Fault = Literal["ok", "500", "503", "429", "reset", "cut"]
_ITEMS: dict[object, Fault] = {
    None: "ok",
    500: "500",
    503: "503",
    429: "429",
    "reset": "reset",
    "cut": "cut",
}


_DRAWN: tuple[Fault, ...] = ("500", "503", "reset", "429", "cut")
"""Random outcomes in the order of ``Faults._rates``."""


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often.

    Args:
        error_rate: Probability of a 500 INTERNAL per generate request.
        unavailable_rate: Probability of a 503 UNAVAILABLE ("The model is overloaded").
        reset_rate: Probability of a dropped connection (the socket closes, no response).
        rate_limit_rate: Probability of a 429 (the per-minute body of ``schedule``'s 429).
        cut_rate: Probability that a stream is cut mid-way (as ``"cut"`` in ``schedule``);
            a non-streaming request drawn in this share is served normally.
        schedule: Outcomes consumed one per generate request, in arrival order, before the
            probabilities apply: ``None`` (normal), ``500``, ``503``, ``429`` (a per-minute
            rate-limit body), ``"reset"``, or ``"cut"`` (a stream sends half its chunks then an
            error event; on a non-streaming request it is a dropped connection).
        latency_s: Seconds every generate request waits before it is answered (real time).
        jitter_s: Extra uniform random wait in ``[0, jitter_s]`` seconds.
        stream_cut_after: If set, every stream sends this many chunks, then an error event
            ``data: {"error": {...503...}}`` instead of the rest.
        seed: Seed of the random generators, so runs repeat.
    """

    error_rate: float = 0.0
    unavailable_rate: float = 0.0
    reset_rate: float = 0.0
    rate_limit_rate: float = 0.0
    cut_rate: float = 0.0
    schedule: Sequence[FaultItem] = field(default=())
    latency_s: float = 0.0
    jitter_s: float = 0.0
    stream_cut_after: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        rates = self._rates()
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0:
            raise ValueError(
                "Faults rates must each be in [0, 1] and add up to at most 1; got "
                f"error_rate={self.error_rate}, unavailable_rate={self.unavailable_rate}, "
                f"reset_rate={self.reset_rate}, rate_limit_rate={self.rate_limit_rate}, "
                f"cut_rate={self.cut_rate}."
            )
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("Faults latency_s and jitter_s must be >= 0 seconds.")
        if self.stream_cut_after is not None and self.stream_cut_after < 0:
            raise ValueError("Faults.stream_cut_after must be None or a number of chunks >= 0.")
        bad = [item for item in self.schedule if item not in _ITEMS]
        if bad:
            raise ValueError(
                f"Faults.schedule items must be None, 500, 503, 429, 'reset' or 'cut'; got {bad!r}."
            )
        object.__setattr__(self, "schedule", tuple(self.schedule))

    def _rates(self) -> tuple[float, float, float, float, float]:
        """The random outcomes' shares, in the order they are drawn."""
        return (
            self.error_rate,
            self.unavailable_rate,
            self.reset_rate,
            self.rate_limit_rate,
            self.cut_rate,
        )


class FaultPlan:
    """A running ``Faults``: decides each request's fate in arrival order. Thread-safe."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._rng = random.Random(faults.seed)
        self._latency_rng = random.Random(faults.seed + 1)
        self._next = 0
        self._lock = threading.Lock()

    def decide(self, stream: bool = False) -> Fault:
        """The outcome of the next generate request (``stream``: a streaming one)."""
        f = self.faults
        rates = f._rates()
        with self._lock:
            if self._next < len(f.schedule):
                item = f.schedule[self._next]
                self._next += 1
                return _ITEMS[item]
            if not any(rates):
                return "ok"
            r = self._rng.random()
        edge = 0.0
        for outcome, rate in zip(_DRAWN, rates, strict=True):
            edge += rate
            if r < edge:
                return "ok" if outcome == "cut" and not stream else outcome
        return "ok"

    def delay(self) -> float:
        """Seconds the next request should wait before its answer."""
        f = self.faults
        if not f.jitter_s:
            return f.latency_s
        with self._lock:
            return f.latency_s + self._latency_rng.uniform(0.0, f.jitter_s)

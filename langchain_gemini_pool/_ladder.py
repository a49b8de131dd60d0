"""The model ladder: when a model's quota is out on every key, fall back to the next model.

Google's quotas are per (project, model). The ladder keeps one scheduler per model (so its
project windows and cooldowns are per (project, model)): an in-process ``Scheduler``, or a
``SharedScheduler`` over the pool's state backend, so every process sees which pairs are out.
Every key is in each, at the same index; a quarantine is shared (a bad key is bad for every
model). For each request the ladder asks the models in order:

- ``prefer="fallback"`` (default): the first model with a key ready now; when none is, the
  model that frees first (ties: the earlier model), if it frees within ``max_wait``;
- ``prefer="wait"``: the first model that frees within ``max_wait``, even if a later one is
  ready now.

``AllKeysRateLimitedError`` is raised only when no model can take the request; its
``retry_after`` is the earliest over the whole ladder. A 429 whose ``quotaValue`` is 0, or a
per-day violation, takes that (project, model) out until the next Pacific midnight (one INFO
line per pair and day); a 404 takes the model out of the ladder for the pool's life (one
WARNING). The decision itself (``ladder_choose``, in ``_ladder_choose``) is pure: it asks each
rung through a callable, whose backend I/O ``choose_steps`` yields (see ``_driver``).
Over one shared backend, ``prefer="fallback"`` is one ``admit`` for every rung's keys in ladder
order, whose rule is the same (the first key that may send now, else the earliest slot):
moving down the ladder costs no extra round trip.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from google.genai.types import GenerateContentConfig

from langchain_gemini_pool._clock import next_pacific_midnight, pacific_day
from langchain_gemini_pool._driver import IoSteps, run_blocking
from langchain_gemini_pool._errors import Failure, FailureKind
from langchain_gemini_pool._ladder_choose import Decision, Prefer, ladder_choose_steps
from langchain_gemini_pool._ladder_choose import ladder_choose as ladder_choose
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._scheduler import LimitsArg, NoKeys, Pick, Scheduler, Strategy
from langchain_gemini_pool._shared_ops import admit_io, booking
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool._state_types import Admit

logger = logging.getLogger("langchain_gemini_pool")


@dataclass(frozen=True)
class LadderPick(Pick):
    """A ``Pick`` on one rung of the ladder: send with ``model``."""

    model: str = field(default="", compare=False)
    rung: int = field(default=0, compare=False)


def limits_for_model(limits: Any, model: str) -> LimitsArg:
    """One model's limits from ``limits`` (a bare ``QuotaLimits`` is every model's)."""
    if limits is None or isinstance(limits, QuotaLimits):
        return limits
    out: dict[str, QuotaLimits] = {}
    for project, value in limits.items():
        if isinstance(value, QuotaLimits):
            out[project] = value
        elif isinstance(value, Mapping) and isinstance(value.get(model), QuotaLimits):
            out[project] = value[model]
    return out


def _thinks(model: str) -> bool:
    name = model.lower().rsplit("/", 1)[-1]
    return "gemini-2.5" in name or "gemini-3" in name


def adapt_config(model: str, config: GenerateContentConfig) -> None:
    """Drop settings ``model`` does not accept (a thinking config for a model without
    thinking; a thinking level for a 2.5 model), with a DEBUG line."""
    thinking = config.thinking_config
    if thinking is None:
        return
    if not _thinks(model):
        logger.debug("Fallback model %s has no thinking: thinking config dropped.", model)
        config.thinking_config = None
    elif "gemini-2.5" in model and getattr(thinking, "thinking_level", None) is not None:
        logger.debug("Fallback model %s takes no thinking_level: dropped.", model)
        config.thinking_config = thinking.model_copy(update={"thinking_level": None})


def served_model(message: Any) -> str | None:
    """The ladder model that served ``message`` (from its attempts), if the ladder moved."""
    metadata = getattr(message, "response_metadata", None) or {}
    if "fallback_from" not in metadata:
        return None
    attempts = metadata.get("attempts") or []
    model = attempts[-1].get("model") if attempts else None
    return model if isinstance(model, str) else None


def from_fallback(result: Any) -> bool:
    """Whether a (cached) result was answered by a fallback model of a ladder.

    The cache rule: the cache serves only answers of the pool's own ``model``. A fallback
    answer may be stored at the request's address, but a lookup that finds one treats it
    as a miss: the request goes to the ladder again, and the new answer replaces it. So a
    cached flash answer is never served, to a request pro could serve or to any other.
    """
    generations = getattr(result, "generations", None) or []
    return any("fallback_from" in getattr(g.message, "response_metadata", {}) for g in generations)


Rung = Scheduler | SharedScheduler
"""One model's scheduler: in-process, or over a shared-state backend."""
RungFactory = Callable[[str, LimitsArg], Rung]
"""``make_rung(model, limits)``: the scheduler of one rung (``limits``: that model's)."""


class LadderScheduler:
    """One scheduler per model of the ladder, each built by ``make_rung`` (default: an
    in-process ``Scheduler``; with a shared state, a ``SharedScheduler`` per model, so each
    rung's windows and cooldowns are the backend's (project, model) and every process of the
    deployment sees which pairs are out).

    Keys, removals and resets go to every rung (a key has the same index on each); ``choose``
    and the outcomes go to the rung a ``LadderPick`` names. A quarantine holds on every rung:
    in process it is copied to the other rungs; in a backend it is per key already.
    """

    def __init__(
        self,
        models: Sequence[str],
        prefer: Prefer,
        strategy: Strategy,
        limits: Any,
        default_cooldown_s: float,
        make_rung: RungFactory | None = None,
    ) -> None:
        if make_rung is None:

            def make_rung(model: str, own: LimitsArg) -> Rung:
                return Scheduler(strategy, own, default_cooldown_s)

        self.models = list(models)
        self.prefer: Prefer = prefer
        self._rungs: list[Rung] = [make_rung(m, limits_for_model(limits, m)) for m in models]
        self.blocking = any(r.blocking for r in self._rungs)
        """Whether a decision does I/O (see ``SharedScheduler.blocking``)."""
        states = {id(r.state): r.state for r in self._rungs if isinstance(r, SharedScheduler)}
        self._state = None
        if len(states) == 1 and all(isinstance(r, SharedScheduler) for r in self._rungs):
            (self._state,) = states.values()  # every rung in one backend: one admit for all
        self._out: set[int] = set()  # rungs taken out for the pool's life (404)
        self._told: set[tuple[str, str, str]] = set()  # (project, model, day) told at INFO
        self._ladder_lock = threading.Lock()

    # --- membership: the same on every rung ---------------------------------------------------

    def add_keys(self, keys: Any) -> list[int]:
        """Add ``(project, fingerprint)`` pairs (in-process rungs only)."""
        keys = list(keys)
        return self._same_on_every_rung(lambda r: _in_process(r).add_keys(keys))

    def add_entries(self, entries: Sequence[Any]) -> list[int]:
        """Add ``KeyEntry`` items to every rung; returns their indices."""
        return self._same_on_every_rung(lambda r: r.add_entries(entries))

    def _same_on_every_rung(self, add: Callable[[Rung], list[int]]) -> list[int]:
        indices = add(self._rungs[0])
        for other in self._rungs[1:]:
            if add(other) != indices:  # pragma: no cover - rungs are only changed together
                raise RuntimeError("The ladder's rungs disagree on key indices.")
        return indices

    def remove_key(self, index: int) -> None:
        for rung in self._rungs:
            rung.remove_key(index)

    def reset(self, index: int) -> None:
        for rung in self._rungs:
            rung.reset(index)

    @property
    def size(self) -> int:
        return self._rungs[0].size

    def active_indices(self) -> list[int]:
        return self._rungs[0].active_indices()

    def project_of(self, index: int) -> str:
        return self._rungs[0].project_of(index)

    def fingerprint_of(self, index: int) -> str:
        return self._rungs[0].fingerprint_of(index)

    def live_rungs(self) -> list[int]:
        with self._ladder_lock:
            return [r for r in range(len(self._rungs)) if r not in self._out]

    # --- choosing and outcomes -----------------------------------------------------------------

    def choose(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> Decision:
        return run_blocking(self.choose_steps(now, tokens, avoid, reserve, book_until))

    def choose_steps(
        self,
        now: float,
        tokens: float = 0.0,
        avoid: Collection[int] = (),
        reserve: bool = True,
        book_until: float | None = None,
    ) -> IoSteps[Decision]:
        """``choose`` as steps: each rung's backend I/O (or the one ``admit``) is yielded."""
        if self._state is not None and self.prefer == "fallback":
            rung, decision = yield from self._one_admit_steps(
                now, tokens, avoid, reserve, book_until
            )
        else:

            def ask(rung: int, book: float | None) -> IoSteps[Decision]:
                return self._rungs[rung].choose_steps(now, tokens, avoid, reserve, book)

            rung, decision = yield from ladder_choose_steps(
                self.live_rungs(), ask, self.prefer, book_until, now
            )
        if rung is None or not isinstance(decision, Pick):
            return decision
        return LadderPick(
            decision.index,
            decision.ticket,
            at=decision.at,
            quota_warning=decision.quota_warning,
            reservation=decision.reservation,
            model=self.models[rung],
            rung=rung,
        )

    def _one_admit_steps(
        self,
        now: float,
        tokens: float,
        avoid: Collection[int],
        reserve: bool,
        book_until: float | None,
    ) -> IoSteps[tuple[int | None, Decision]]:
        """``prefer="fallback"`` over one backend in one round trip: every live rung's keys,
        in ladder order, go to one ``admit``, whose rule is the ladder's (the first key that
        may send now, else the earliest bookable slot, ties to the earlier rung)."""
        assert self._state is not None
        asked = []
        for rung in self.live_rungs():
            scheduler = self._rungs[rung]
            assert isinstance(scheduler, SharedScheduler)
            order, candidates = scheduler.candidates(avoid, reserve)
            asked.append((rung, scheduler, order, candidates))
        every = [c for *_, candidates in asked for c in candidates]
        if not every:
            return None, NoKeys({})
        book_s = booking(now, reserve, book_until)
        need = tokens if reserve else 0
        decision = yield admit_io(self._state, self.blocking, every, need, book_s)
        picked: tuple[int | None, Decision] | None = None
        reasons: dict[str, str] = {}
        start = 0
        for rung, scheduler, order, _ in asked:
            mine = (
                replace(decision, index=decision.index - start)
                if isinstance(decision, Admit)
                else decision
            )
            concluded = scheduler.concluded(order, mine, now, tokens)
            start += len(order)
            if isinstance(concluded, NoKeys):
                reasons.update(concluded.reasons)
            elif picked is None or isinstance(concluded, Pick):
                picked = (rung, concluded)  # a Wait is the same on every rung: the first's
        return picked if picked is not None else (None, NoKeys(reasons))

    def on_success(self, pick: Pick, prompt_tokens: float | None = None) -> None:
        self._rungs[_rung(pick)].on_success(pick, prompt_tokens)

    def on_success_steps(self, pick: Pick, prompt_tokens: float | None = None) -> IoSteps[None]:
        return self._rungs[_rung(pick)].on_success_steps(pick, prompt_tokens)

    def release(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> None:
        self._rungs[_rung(pick)].release(pick, sent=sent, prompt_tokens=prompt_tokens)

    def release_steps(
        self, pick: Pick, *, sent: bool = False, prompt_tokens: float | None = None
    ) -> IoSteps[None]:
        return self._rungs[_rung(pick)].release_steps(pick, sent=sent, prompt_tokens=prompt_tokens)

    def on_failure(self, pick: Pick, failure: Failure, now: float) -> None:
        run_blocking(self.on_failure_steps(pick, failure, now))

    def on_failure_steps(self, pick: Pick, failure: Failure, now: float) -> IoSteps[None]:
        rung = _rung(pick)
        scheduler = self._rungs[rung]
        out = failure.kind is FailureKind.RATE_LIMITED and (
            failure.per_day or any(v.quota_value == 0 for v in failure.violations)
        )
        if out and isinstance(scheduler, SharedScheduler) and not failure.per_day:
            # quota 0: the backend cools the (project, model) for the 429's hint; make the
            # hint "until midnight Pacific" so every process skips the pair for the day
            failure = replace(failure, retry_after_s=next_pacific_midnight(now) - now)
        yield from scheduler.on_failure_steps(pick, failure, now)
        if failure.kind is FailureKind.BAD_KEY:  # a bad key is bad for every model
            for other, each in enumerate(self._rungs):
                if other != rung and isinstance(each, Scheduler):  # a backend's is per key
                    each.quarantine(pick.index, failure.reason)
        elif out:
            self._out_for_day(rung, pick.index, now)

    def _out_for_day(self, rung: int, index: int, now: float) -> None:
        """Take (project, model) out until the next Pacific midnight; other models untouched."""
        scheduler, model = self._rungs[rung], self.models[rung]
        project = scheduler.project_of(index)
        if isinstance(scheduler, Scheduler):  # a backend rung was cooled by its on_failure
            reason = f"{model}: no quota left today (quota 0 or per-day limit)"
            scheduler.cool_project(index, next_pacific_midnight(now), reason)
        told = (project, model, pacific_day(now))
        with self._ladder_lock:
            if told in self._told:
                return
            self._told.add(told)
        logger.info(
            "Project %s is out of %s until midnight Pacific; the ladder uses the next model.",
            project,
            model,
        )

    def drop_model(self, rung: int, reason: str) -> bool:
        """Take a rung out for the pool's life (404). False if it was the last rung."""
        with self._ladder_lock:
            if rung in self._out:
                return len(self._out) < len(self._rungs)
            if len(self._out) + 1 >= len(self._rungs):
                return False
            self._out.add(rung)
        logger.warning(
            "Model %s is not available (%s); taken out of the model ladder.",
            self.models[rung],
            reason,
        )
        return True

    def status(self, now: float) -> list[dict[str, Any]]:
        """The first model's rows, each with ``models``: every ladder model's state."""
        every = [scheduler.status(now) for scheduler in self._rungs]
        rows, out = every[0], self.live_rungs()
        for i, row in enumerate(rows):
            row["models"] = {
                m: (other[i]["state"] if r in out else "unavailable")
                for r, (m, other) in enumerate(zip(self.models, every, strict=True))
            }
        return rows


def _in_process(rung: Rung) -> Scheduler:
    if not isinstance(rung, Scheduler):
        raise TypeError("add_keys needs in-process rungs; use add_entries with a shared state.")
    return rung


def _rung(pick: Pick) -> int:
    return pick.rung if isinstance(pick, LadderPick) else 0

"""How ``ChatGeminiPool`` is assembled: its limits checked, its state backend resolved, its
scheduler chosen (in-process, shared, or a ladder over either)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_gemini_pool._ladder import LadderScheduler, RungFactory, limits_for_model
from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._scheduler import LimitsArg, Scheduler, Strategy
from langchain_gemini_pool._settings import describe_shape
from langchain_gemini_pool._shared_scheduler import SharedScheduler
from langchain_gemini_pool._state_env import ENV_VAR, state_from_env
from langchain_gemini_pool._state_types import StateBackend


def _limits_entry(value: object) -> bool:
    """A project's limits: a ``QuotaLimits``, or a mapping model -> ``QuotaLimits``."""
    if isinstance(value, QuotaLimits):
        return True
    return isinstance(value, Mapping) and all(isinstance(v, QuotaLimits) for v in value.values())


def _shared_rungs(
    state: StateBackend | None, strategy: Strategy, cooldown: float
) -> RungFactory | None:
    """The ladder's rungs over ``state``: one ``SharedScheduler`` per model (None: in-process)."""
    if state is None:
        return None

    def make_rung(model: str, limits: LimitsArg) -> SharedScheduler:
        return SharedScheduler(state, model, strategy, limits, cooldown)

    return make_rung


def resolve_state(state: Any) -> StateBackend | None:
    """The ``state`` field as a backend: given, named by a string, or from the environment."""
    if state is None:
        return state_from_env()
    if isinstance(state, str):
        named = state_from_env({ENV_VAR: state})
        if named is None:
            raise ValueError("state is an empty string: pass a backend, a URL or a directory.")
        return named
    if not isinstance(state, StateBackend):
        raise TypeError(
            "state must be InMemoryState(), DiskState(directory) or RedisState(url) "
            f"(or a redis:// URL or a directory path); got {type(state).__name__}."
        )
    return state


def check_limits(limits: object) -> None:
    """``limits`` is None, a ``QuotaLimits``, or a mapping project -> limits, else TypeError."""
    valid = (
        limits is None
        or isinstance(limits, QuotaLimits)
        or (isinstance(limits, Mapping) and all(_limits_entry(v) for v in limits.values()))
    )
    if not valid:
        raise TypeError(
            "limits must be a QuotaLimits or a mapping project name -> QuotaLimits "
            f"(or -> {{model: QuotaLimits}}); got {describe_shape(limits)}."
        )


def make_scheduler(
    model: str,
    fallback_models: Sequence[str] | None,
    prefer: Literal["fallback", "wait"],
    strategy: Strategy,
    limits: Any,
    cooldown: float,
    state: StateBackend | None,
) -> Scheduler | SharedScheduler | LadderScheduler:
    """The pool's scheduler: a ladder over its models, else one model in this process (no
    I/O per decision) or over the shared ``state``."""
    if fallback_models:
        models = list(dict.fromkeys([model, *fallback_models]))
        rungs = _shared_rungs(state, strategy, cooldown)
        return LadderScheduler(models, prefer, strategy, limits, cooldown, rungs)
    own = limits_for_model(limits, model)
    if state is None:
        return Scheduler(strategy, own, cooldown)
    return SharedScheduler(state, model, strategy, own, cooldown)

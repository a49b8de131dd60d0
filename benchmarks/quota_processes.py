"""Part 2 of ``benchmarks/quota_throughput.py`` (issue #11): one quota, 4 worker processes.

Not run by itself: ``python benchmarks/quota_throughput.py`` runs it after part 1
(``--processes 0`` skips it, ``--only-processes`` runs only it, ``--redis URL`` uses your
Redis instead of starting one).

Set-up: ONE emulator in the parent (the part 1 projects: K one-key projects, N requests per
W-second window each, windows aligned at multiples of W). ``PROCS`` worker processes are
started with ``multiprocessing`` *spawn* (fresh interpreters, as uvicorn/gunicorn workers
without ``--preload``); each builds its own ``ChatGeminiPool(limits=QuotaLimits(rpm=N,
window_s=W), max_wait=2·W, state=...)`` on one shared backend, warms up on another model,
then all start together at a window boundary and send their share of ``WINDOWS``·K·N prompts
from ``CONCURRENCY / PROCS`` threads each. Backends: ``DiskState(directory)`` (one SQLite
file), ``RedisState(url)`` (a ``redis-server`` this script starts on a free loopback port,
or ``--redis URL``), and ``InMemoryState()`` as the contrast: each process then keeps its own
windows, so the deployment offers PROCS·N per window to a project limited to N.

Ground truth is the emulator: its stats (requests, 429s) and the arrival time of every
generate request it received (a subclass that notes ``answer()`` calls), per project. The
table shows, per backend: achieved/limit (as in part 1: successes / whole windows from the
aligned start to the last answer, at least ``WINDOWS``, / the deployment-wide limit), caller
errors, HTTP calls, 429s, and the most requests any project received in any W-long
interval (sliding, every arrival counted, refused or not) against its limit N.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import shutil
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

from langchain_gemini_pool.testing import FakeGeminiServer, Quota

PROCS = 4
WINDOWS = 4  # the load, at exactly the limit, fills this many windows
WARM_MODEL = "gemini-2.5-flash-lite"  # warm-ups go to another (project, model) window


@dataclass(frozen=True)
class Setup:
    """What part 1 and part 2 share (passed to each spawned worker, so it pickles)."""

    keys: tuple[str, ...]
    n: int
    window_s: float
    model: str
    concurrency: int
    procs: int = PROCS

    @property
    def projects(self) -> dict[str, list[str]]:
        return {f"project-{i}": [key] for i, key in enumerate(self.keys)}

    @property
    def requests(self) -> int:
        return WINDOWS * len(self.keys) * self.n


class ArrivalLog(FakeGeminiServer):
    """The emulator, also noting when each generate request arrived, for which project."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[tuple[float, str | None, str, bytes]] = []
        self._arrivals_lock = threading.Lock()

    def answer(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Any:
        now = time.time()
        reply = super().answer(method, target, headers, raw)
        if ":generateContent" in target or ":streamGenerateContent" in target:
            key = headers.get("x-goog-api-key") or ""
            with self._arrivals_lock:
                self.arrivals.append((now, self.project_of(key), target, raw))
        return reply


# -- the worker (runs in a spawned process) -------------------------------------------------


def _state(spec: tuple[str, str]) -> Any:
    from langchain_gemini_pool import DiskState, InMemoryState, RedisState

    kind, where = spec
    if kind == "disk":
        return DiskState(where)
    if kind == "redis":
        return RedisState(where, prefix="bench-quota")
    return InMemoryState()


def _note_slots(state: Any, prompt_of: threading.local) -> dict[str, float]:
    """Note, per prompt, the time of the slot the backend gave it (``Reservation.at``): the
    parent compares it with the request's arrival. Wraps this one instance's ``admit``."""
    slots: dict[str, float] = {}
    admit = state.admit

    def noting(*args: Any, **kwargs: Any) -> Any:
        decision = admit(*args, **kwargs)
        reservation = getattr(decision, "reservation", None)
        prompt = getattr(prompt_of, "prompt", None)
        if reservation is not None and prompt is not None:
            slots[prompt] = reservation.at
        return decision

    state.admit = noting
    return slots


def worker(
    setup: Setup,
    spec: tuple[str, str],
    base_url: str,
    prompts: list[str],
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    """Build a pool on the shared backend, warm up, wait for the start time, send ``prompts``."""
    warnings.filterwarnings("ignore")
    logging.getLogger("langchain_gemini_pool").setLevel(logging.ERROR)
    from langchain_gemini_pool import ChatGeminiPool, QuotaLimits

    state = _state(spec)
    prompt_of = threading.local()
    slots = _note_slots(state, prompt_of)

    def make(model: str) -> ChatGeminiPool:
        return ChatGeminiPool(
            model=model,
            api_keys=setup.projects,
            base_url=base_url,
            limits=QuotaLimits(rpm=setup.n, window_s=setup.window_s),
            max_wait=2 * setup.window_s,
            state=state,
        )

    pool = make(setup.model)
    make(WARM_MODEL).invoke("warm up")  # the SDK's first call and the backend's connection
    ready.put(None)
    start = go.get()
    answers: list[tuple[float, bool, str]] = []

    def one(prompt: str) -> None:
        prompt_of.prompt = prompt
        try:
            pool.invoke(prompt)
            answers.append((time.time(), True, ""))
        except Exception as exc:
            answers.append((time.time(), False, type(exc).__name__))

    time.sleep(max(0.0, start - time.time()))
    with ThreadPoolExecutor(max(1, setup.concurrency // setup.procs)) as executor:
        list(executor.map(one, prompts))
    state.close()
    out.put((answers, slots))


# -- the parent -----------------------------------------------------------------------------


@dataclass
class Result:
    """One backend's line in the table."""

    name: str
    rate: float = 0.0
    errors: int = 0
    calls: int = 0
    rate_limited: int = 0
    max_in_window: int = 0
    tightest: float = math.inf
    lags_ms: list[float] = field(default_factory=list)
    max_slots: int = 0
    """The most slots the backend gave one project in any window (its own time)."""
    seconds: float = 0.0
    windows: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)


def max_in_any_interval(times: list[float], span: float) -> int:
    """The most of ``times`` in any half-open interval ``[t, t + span)``."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - span:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def span(setup: Setup) -> float:
    """How long a settled request counts in the shared windows (``window_s``: it counts from
    its settle, after its arrival; see ``span_of``)."""
    from langchain_gemini_pool import QuotaLimits
    from langchain_gemini_pool._state_types import span_of

    return span_of(QuotaLimits(rpm=setup.n, window_s=setup.window_s))


def _collect(procs: list[Any], queue: Any, timeout_s: float, what: str) -> list[Any]:
    """One message from each worker, or a clear error naming the worker that did not send it."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            got.append(queue.get(timeout=0.5))
        except Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                why = f"exit code {dead[0].exitcode}" if dead else f"no answer in {timeout_s:g} s"
                msg = f"a worker process failed {what} ({why}); see its traceback above"
                raise RuntimeError(msg) from None
    return got


def tightest_span(times: list[float], n: int) -> float:
    """The shortest interval holding ``n + 1`` of ``times`` (``inf`` if there are not that many)."""
    times = sorted(times)
    return min((times[i + n] - times[i] for i in range(len(times) - n)), default=math.inf)


def run_backend(setup: Setup, name: str, spec: tuple[str, str]) -> Result:
    """``setup.procs`` spawned workers on one backend against one fresh emulator."""
    prompts = [f"Question {i}: in one word, what is {i} squared?" for i in range(setup.requests)]
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Queue(), ctx.Queue()
    gos = [ctx.Queue() for _ in range(setup.procs)]
    with ArrivalLog(
        keys=setup.projects, quotas=Quota(rpm=setup.n), window_s=setup.window_s
    ) as server:
        procs = [
            ctx.Process(
                target=worker,
                args=(setup, spec, server.base_url, prompts[i :: setup.procs], ready, gos[i], out),
            )
            for i in range(setup.procs)
        ]
        for p in procs:
            p.start()
        try:
            _collect(procs, ready, 120, "to build its pool and warm up")
            server.reset_stats()
            server.arrivals.clear()
            w = setup.window_s
            start = (math.floor((time.time() + 0.3) / w) + 1) * w
            for go in gos:
                go.put(start)
            reports = _collect(procs, out, 60 + 10 * WINDOWS * w, "to send its prompts")
        finally:
            for p in procs:
                p.join(5)
                if p.exitcode is None:
                    p.terminate()
                    p.join(5)
        answers = [a for report, _ in reports for a in report]
        slots = {prompt: at for _, noted in reports for prompt, at in noted.items()}
        stats = server.stats()["models"].get(setup.model, {})
        path = f"/models/{setup.model}:"
        arrivals = [(t, p, raw) for t, p, target, raw in server.arrivals if path in target]
    calls = sum(p["requests"] for p in stats.values())
    limited = sum(p["rate_limited"] for p in stats.values())
    per_project: dict[str | None, list[float]] = {}
    sent: dict[str, list[float]] = {}
    project_of: dict[str, str | None] = {}
    for t, project, raw in arrivals:
        per_project.setdefault(project, []).append(t)
        prompt = json.loads(raw)["contents"][0]["parts"][0]["text"]
        sent.setdefault(prompt, []).append(t)
        project_of[prompt] = project
    slots_of: dict[str | None, list[float]] = {}
    for prompt, at in slots.items():
        slots_of.setdefault(project_of.get(prompt), []).append(at)
    # a prompt sent more than once (after a 429) has the slot of its last attempt only
    lags_ms = [1e3 * (ts[0] - slots[p]) for p, ts in sent.items() if len(ts) == 1 and p in slots]
    last = max(t for t, _, _ in answers)
    windows = max(WINDOWS, math.ceil((last - start) / w))
    successes = sum(ok for _, ok, _ in answers)
    limit = len(setup.keys) * setup.n / w
    return Result(
        name,
        rate=successes / (windows * w) / limit,
        errors=len(answers) - successes,
        calls=calls,
        rate_limited=limited,
        max_in_window=max(max_in_any_interval(ts, w) for ts in per_project.values()),
        tightest=min(tightest_span(ts, setup.n) for ts in per_project.values()),
        lags_ms=sorted(lags_ms),
        max_slots=max(max_in_any_interval(ts, span(setup)) for ts in slots_of.values()),
        seconds=last - start,
        windows=windows,
        error_kinds=Counter(kind for _, ok, kind in answers if not ok),
    )


def part2(setup: Setup, redis_url: str | None = None) -> str:
    """Run every backend with ``setup.procs`` processes; the table as text."""
    from state import redis_server  # benchmarks/state.py: a throwaway redis-server

    with redis_server(redis_url) as url:
        tmp = tempfile.mkdtemp(prefix="bench-quota-disk-")
        backends: list[tuple[str, tuple[str, str]]] = [("DiskState", ("disk", f"{tmp}/state"))]
        if url:
            backends.append(("RedisState", ("redis", url)))
        backends.append(("InMemoryState (not shared)", ("memory", "")))
        try:
            results = [run_backend(setup, name, spec) for name, spec in backends]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return table(setup, results, skipped_redis=url is None)


def table(setup: Setup, results: list[Result], *, skipped_redis: bool) -> str:
    k, n, w = len(setup.keys), setup.n, setup.window_s
    head = (
        f"{setup.procs} processes (spawn), one pool each, one backend: {k} projects x 1 key, "
        f"each {n} requests / {w:g} s window (limit {k * n / w:g} req/s); {setup.requests} "
        f"requests, {max(1, setup.concurrency // setup.procs)} threads per process"
    )
    cols = (
        "backend",
        "achieved/limit",
        "caller errors",
        "HTTP calls",
        "429s",
        f"max in any {w:g} s / limit",
        f"{setup.n + 1} requests within",
        "wall s",
    )
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        lines.append(
            f"| {r.name} | {100 * r.rate:.1f}% | {r.errors} | {r.calls} | {r.rate_limited} | "
            f"{r.max_in_window} / {n} | {r.tightest:.3f} s | {r.seconds:.1f} |"
        )
    lines.append("")
    for r in results:
        if r.error_kinds:
            kinds = ", ".join(f"{c} {name}" for name, c in r.error_kinds.most_common())
            lines.append(f"{r.name}: errors: {kinds}")
    for r in results:
        if r.lags_ms:
            pick = [r.lags_ms[int(f * (len(r.lags_ms) - 1))] for f in (0.5, 0.99, 1.0)]
            lines.append(
                f"{r.name}: slots given, at most {r.max_slots} / {n} in any {span(setup):g} s; "
                f"slot -> arrival lag p50 {pick[0]:.1f} ms, p99 {pick[1]:.1f} ms, "
                f"max {pick[2]:.1f} ms"
            )
    if skipped_redis:
        lines.append("RedisState: not run (no redis-server installed, and no --redis URL)")
    lines += [
        f"achieved/limit as in part 1 (whole windows, at least {WINDOWS}); HTTP calls and 429s "
        "= what the emulator saw;",
        f"max in any {w:g} s = the most requests one project received in any {w:g}-s interval "
        "(sliding, refused ones too);",
        f"{n + 1} requests within = the shortest interval in which one project received {n + 1} "
        f"requests (at least {w:g} s if its limit held in every {w:g}-s interval);",
        f"slots given = per project, the slot times the backend gave (its clock), in any "
        f"window ({span(setup):g} s);",
        "slot -> arrival lag = from the time of the slot the backend gave a request to its "
        "arrival at the emulator (requests sent once).",
    ]
    return "\n".join(lines)

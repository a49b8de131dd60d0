"""Arguments for, and answers from, the Lua scripts of ``RedisState`` (no I/O here)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from langchain_gemini_pool._quota import QuotaLimits
from langchain_gemini_pool._state_decide import room_of
from langchain_gemini_pool._state_types import (
    INFLIGHT_TTL_S,
    LEARNED_TTL_S,
    QUARANTINE_TTL_S,
    WARN_FRACTION,
    Admit,
    AllQuarantined,
    Candidate,
    Decision,
    KeyStatus,
    Reservation,
    Scope,
    ScopeStatus,
    Settle,
    Snapshot,
    WaitUntil,
    effective_limits,
    pacific_offset,
    reason_code,
)


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_prefix(prefix: object) -> str:
    """``prefix`` if it can be a hash tag: every key of a deployment shares ``{prefix}``."""
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ValueError(
            f"prefix must be a non-empty string without '{{' or '}}', not {prefix!r}: "
            "RedisState puts every key name's hash tag around it (one slot on a Redis Cluster)."
        )
    return prefix


def tag(prefix: str) -> str:
    """``{prefix}``: the hash tag every key of one deployment starts with.

    One admit reads and writes the keys of several (project, model) scopes and key
    fingerprints in one Lua script, so on a Redis Cluster they must all live in one slot.
    """
    return f"{{{prefix}}}"


@functools.lru_cache(maxsize=4096)
def scope_base(prefix: str, scope: Scope) -> str:
    """The name all Redis keys of one (project, model) start with."""
    return f"{{{prefix}}}:s:{quote(scope.project, safe='')}|{quote(scope.model, safe='')}"


def key_base(prefix: str, fingerprint: str) -> str:
    """The name all Redis keys of one API key (by fingerprint) start with."""
    return f"{{{prefix}}}:{fingerprint}"


def salt_key(prefix: str) -> str:
    """The deployment's fingerprint salt (also the key scripts are routed by on a Cluster)."""
    return f"{{{prefix}}}:salt"


def gen_key(prefix: str) -> str:
    """Changes whenever a quarantine or cooldown is set or lifted (see ``_state_redis_seen``)."""
    return f"{{{prefix}}}:gen"


def admit_args(
    prefix: str,
    candidates: Sequence[Candidate],
    bases: Sequence[str],
    tokens: float,
    book_until_s: float | None,
    salt_key: str,
    salt_ttl_s: int,
    known_gen: str,
    lease: int = 0,
) -> list[Any]:
    need = max(0, int(-(-tokens // 1)))
    argv: list[Any] = [
        tag(prefix),
        need,
        "" if book_until_s is None else repr(float(book_until_s)),
        pacific_offset(time.time()),
        os.urandom(8).hex(),
        WARN_FRACTION,
        QUARANTINE_TTL_S,
        INFLIGHT_TTL_S,
        salt_key,
        salt_ttl_s,
        known_gen,
        lease,
    ]
    for c, base in zip(candidates, bases, strict=True):
        argv += cand_args(c, base)
    return argv


def decode_admit(raw: list[Any], candidates: Sequence[Candidate], tokens: float) -> Decision:
    kind = _s(raw[0])
    if kind == "a":
        index, at, now, day, counted, warn = (_s(x) for x in raw[1:7])
        cand = candidates[int(index)]
        res = Reservation(
            cand.fingerprint,
            cand.scope,
            _s(raw[7]),
            float(at),
            max(0, int(-(-tokens // 1))),
            int(day),
            counted == "1",
        )
        warning = None
        if warn and cand.limits is not None and cand.limits.rpd:
            warning = {
                "project": cand.scope.project,
                "model": cand.scope.model,
                "used": round(int(warn) / cand.limits.rpd, 3),
                "rpd": cand.limits.rpd,
            }
        return Admit(int(index), res, float(now), warning)
    if kind == "w":
        return WaitUntil(float(_s(raw[1])), float(_s(raw[2])), _s(raw[3]))
    items = [_s(x) for x in raw[2:-1]]
    reasons = {items[i]: items[i + 1] for i in range(0, len(items), 2)}
    return AllQuarantined(reasons, float(_s(raw[1])))


def decode_extras(raw: list[Any], decision: Decision) -> list[Reservation]:
    """The extra slots an admit leased with ``decision`` (see ``_state_lease``)."""
    if not isinstance(decision, Admit) or len(raw) < 10:
        return []
    res = decision.reservation
    return [
        Reservation(res.fingerprint, res.scope, _s(rid), res.at, res.tokens, res.day, True)
        for rid in raw[8]
    ]


def gen_of(raw: Any, decision: Decision | None = None) -> int:
    """``T:gen`` as an admit (its item 9) or a settle (its reply) saw it; 0 before any."""
    if decision is not None:
        if not isinstance(decision, Admit) or len(raw) < 11:
            return 0
        raw = raw[9]
    text = _s(raw) if isinstance(raw, bytes | str) else ""
    return int(text) if text.isdigit() else 0


def settle_args(o: Settle, base: str, prefix: str) -> list[Any]:
    res = o.reservation
    argv: list[Any] = [
        key_base(prefix, o.fingerprint),
        base,
        res.id if res else "",
        "1" if res and res.counted else "0",
        "1" if o.cancel else "0",
        "" if o.prompt_tokens is None else max(0, int(o.prompt_tokens)),
        res.day if res else 0,
        "" if o.cool_scope_s is None else repr(float(o.cool_scope_s)),
        "" if o.cool_key_s is None else repr(float(o.cool_key_s)),
        reason_code(o.cool_reason) or "cooling down",
        reason_code(o.quarantine) or "",
        QUARANTINE_TTL_S,
        LEARNED_TTL_S,
        gen_key(prefix),
    ]
    for dim, value in o.learned.items():
        if dim in ("rpm", "tpm", "rpd"):
            argv += [dim, int(value)]
    return argv


def cand_args(c: Candidate, base: str) -> list[Any]:
    lim = c.limits
    if lim is None:
        return [c.fingerprint, base, "", "", "", ""]
    return [
        c.fingerprint,
        base,
        "" if lim.rpm is None else lim.rpm,
        "" if lim.tpm is None else lim.tpm,
        "" if lim.rpd is None else lim.rpd,
        repr(float(lim.window_s)),
    ]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_snapshot(raw: list[Any], candidates: Sequence[Candidate]) -> Snapshot:
    now = float(_s(raw[0]))
    keys: dict[str, KeyStatus] = {}
    scopes: dict[Scope, ScopeStatus] = {}
    for c, row in zip(candidates, raw[1:], strict=True):
        q, cu, cr, flying, su, sr, count, used, today, learned_raw = row
        keys[c.fingerprint] = KeyStatus(
            c.fingerprint, _s(q) or None, float(_s(cu)), _s(cr) or None, int(flying)
        )
        learned_list = [_s(x) for x in learned_raw]
        learned = {
            learned_list[i]: int(float(learned_list[i + 1])) for i in range(0, len(learned_list), 2)
        }
        limits: QuotaLimits | None = effective_limits(c.limits, learned)
        room = room_of(limits, int(count), int(float(_s(used))), int(_s(today)))
        scopes[c.scope] = ScopeStatus(c.scope, float(_s(su)), _s(sr) or None, room, limits)
    return Snapshot(now, keys, scopes, True, "redis")

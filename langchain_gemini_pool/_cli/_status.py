"""``gemini-pool status``: each key's state, cooldown, quarantine and window room.

Where the figures come from is one function, :func:`read_status`. It builds a pool from the
configured keys (no request is sent) over the shared state backend named by ``--state`` or
``GEMINI_POOL_STATE`` (a redis:// URL or a directory), so it shows what every worker using
that backend sees: quarantines, cooldowns of each (project, ``--model``), requests in flight
and window room, deployment-wide. Without a backend it is a fresh pool in this process.
``requests``, ``successes``, ``rate_limited`` and ``errors`` count this process's attempts
only (none, for the CLI). A cooldown is found for the projects the keys are given in: keys
from the environment are each their own project.

JSON fields (stable): ``source`` (where the state was read), ``model``, ``keys``: a list of
``pool_status()`` rows — ``index``, ``fingerprint``, ``project``, ``state`` (ready / cooling /
invalid), ``ready_in_s``, ``requests``, ``successes``, ``rate_limited``, ``errors``,
``reason``, ``room`` ({rpm, tpm, rpd}, null where no limit is set).
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_gemini_pool._cli._output import OK, PROBLEM, CliError, Context

COLUMNS = (
    ("index", "#"),
    ("fingerprint", "key"),
    ("project", "project"),
    ("state", "state"),
    ("ready_in_s", "cooldown s"),
    ("reason", "reason"),
    ("room", "window room"),
    ("requests", "requests"),
    ("rate_limited", "429s"),
)

LOCAL_SOURCE = "this process: a fresh pool of the configured keys (no shared state backend)"


def read_status(args: argparse.Namespace) -> dict[str, Any]:
    """The status document: ``source``, ``model`` and one row per key."""
    from langchain_gemini_pool._keys import load_api_keys
    from langchain_gemini_pool._quota import QuotaLimits
    from langchain_gemini_pool.chat_models import ChatGeminiPool

    try:
        keys = load_api_keys(args.env_file)
    except ValueError as exc:
        raise CliError(f"{exc} Diagnose with: gemini-pool keys list.", PROBLEM) from None
    limits = None
    if args.rpm is not None or args.tpm is not None or args.rpd is not None:
        try:
            limits = QuotaLimits(rpm=args.rpm, tpm=args.tpm, rpd=args.rpd)
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc), 2) from None
    try:
        pool = ChatGeminiPool(
            model=args.model, api_keys=keys, limits=limits, state=getattr(args, "state", None)
        )
        rows = pool.pool_status()
    except (ValueError, TypeError, ConnectionError) as exc:
        raise CliError(f"Cannot read the shared state: {exc}", PROBLEM) from None
    state = pool._state
    if state is None or not getattr(state, "shared", False):
        return {"source": LOCAL_SOURCE, "model": args.model, "keys": rows}
    source = f"{state!r}, shared by every process that uses it"
    return {"source": source, "model": args.model, "keys": rows}


def run(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool status``; exit 1 when no key is usable."""
    output = ctx.output(args.json)
    status = read_status(args)
    rows = status["keys"]
    if args.json:
        output.json(status)
    else:
        output.line(f"State read from {status['source']}.")
        output.table(
            rows, COLUMNS, title=f"{len(rows)} key(s) for {status['model']}", state_field="state"
        )
        counts = {s: sum(r["state"] == s for r in rows) for s in ("ready", "cooling", "invalid")}
        output.line(", ".join(f"{n} {s}" for s, n in counts.items()))
    return OK if any(r["state"] != "invalid" for r in rows) else PROBLEM

"""``gemini-pool usage``: a ``UsageLedger``'s totals by user, key, project and model.

The ledger directory is read, never created: an explicit ``--directory`` that holds no ledger
is an error (exit 1); the default location with nothing recorded yet prints empty totals and
says so (exit 0). ``--limit NAME=VALUE`` adds each user's overage against those limits.

JSON fields (stable): ``directory``, ``exists``, ``period`` (day / month / all), ``bucket``
(the day ``YYYY-MM-DD`` or month ``YYYY-MM`` read; ``""`` for all time), ``filter``
({user, model}), ``total`` (``UsageTotals.to_dict()``), ``by`` ({dimension: {name: totals}})
``overage`` ({user: {limit name: amount past it}}) and ``problem`` (null, or why the ledger
could not be read in full: exit 1). ``--user`` and ``--model`` combine.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_gemini_pool._cli._output import OK, PROBLEM, USAGE, CliError, Context

COLUMNS = (
    ("name", ""),
    ("requests", "requests"),
    ("successful_requests", "ok"),
    ("cached_requests", "cached"),
    ("failed_requests", "failed"),
    ("refused_requests", "refused"),
    ("input_tokens", "input tok"),
    ("output_tokens", "output tok"),
    ("total_tokens", "total tok"),
    ("cost_usd", "cost $"),
)
_DIMENSIONS = ("user", "key", "project", "model")
_LIMIT_NAMES = ("requests_per_day", "tokens_per_day", "tokens_per_month", "cost_per_month")


def _limits(specs: list[str]) -> Any:
    if not specs:
        return None
    from langchain_gemini_pool._usage_limits import UsageLimits

    values: dict[str, float] = {}
    for spec in specs:
        name, _, raw = spec.partition("=")
        name = name.strip()
        if name not in _LIMIT_NAMES:
            raise CliError(
                f"--limit NAME must be one of {', '.join(_LIMIT_NAMES)}, not {name!r}.", USAGE
            )
        try:
            number = float(raw)
        except ValueError:
            raise CliError(f"--limit {name}= takes a number, not {raw!r}.", USAGE) from None
        values[name] = int(number) if name != "cost_per_month" and number.is_integer() else number
    try:
        return UsageLimits(**values, hard=False)  # type: ignore[arg-type]
    except ValueError as exc:
        raise CliError(str(exc), USAGE) from None


def _directory(args: argparse.Namespace) -> tuple[Path, bool]:
    from langchain_gemini_pool._usage_ledger import default_ledger_dir

    explicit = args.directory is not None
    path = Path(args.directory).expanduser() if explicit else default_ledger_dir()
    exists = (path / "cache.db").is_file()
    if explicit and not exists:
        what = "does not exist" if not path.exists() else "holds no usage ledger (no cache.db)"
        raise CliError(
            f"The ledger directory {str(path)!r} {what}; nothing was created. Check the path "
            "(a ledger is the directory= given to UsageLedger), or leave --directory out to "
            "read the default ($GEMINI_POOL_LEDGER_DIR or the user cache directory).",
            PROBLEM,
        )
    return path, exists


def read_usage(args: argparse.Namespace) -> dict[str, Any]:
    """The usage document (see the module docstring for its fields)."""
    from langchain_gemini_pool._usage_ledger import UsageLedger, _resolve_tz
    from langchain_gemini_pool._usage_limits import compute_overage
    from langchain_gemini_pool._usage_record import UsageTotals

    dims = list(dict.fromkeys(args.by or _DIMENSIONS))
    limits = _limits(args.limit)
    path, exists = _directory(args)
    doc: dict[str, Any] = {
        "directory": str(path.absolute()),
        "exists": exists,
        "period": args.period,
        "bucket": "",
        "filter": {"user": args.user, "model": args.model},
        "total": UsageTotals().to_dict(),
        "by": {d: {} for d in dims},
        "overage": {},
        "problem": None,
    }
    try:
        now = datetime.now(_resolve_tz(args.tz))
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), USAGE) from None
    doc["bucket"] = {"day": now.date().isoformat(), "month": now.strftime("%Y-%m"), "all": ""}[
        args.period
    ]
    if not exists:
        return doc
    try:
        ledger = UsageLedger(path, tz=args.tz)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), PROBLEM) from None
    with ledger:
        groups = ledger.breakdown(args.period)
        if args.user is not None or args.model is not None:
            # the ledger combines filters: --user and --model together give that user's
            # spend on that model
            dimension = "user" if args.user is not None else "model"
            name = args.user if args.user is not None else args.model
            total = ledger.totals(user=args.user, model=args.model, period=args.period)
            doc["total"] = total.to_dict()
            doc["by"] = (
                {dimension: {str(name): total.to_dict()}} if total.requests else {dimension: {}}
            )
            users = [args.user] if args.user is not None else []
        else:
            doc["total"] = groups.get("total", {}).get("", UsageTotals()).to_dict()
            doc["by"] = {
                d: {n: t.to_dict() for n, t in sorted(groups.get(d, {}).items())} for d in dims
            }
            users = sorted(groups.get("user", {}))
        doc["problem"] = ledger.problem
        if limits is not None:
            overage = {u: compute_overage(ledger, u, limits) for u in users}
            doc["overage"] = {
                u: {n: v if n.startswith("cost") else round(v) for n, v in o.items()}
                for u, o in overage.items()
                if o
            }
    return doc


def run(args: argparse.Namespace, ctx: Context) -> int:
    """``gemini-pool usage``."""
    output = ctx.output(args.json)
    doc = read_usage(args)
    status = PROBLEM if doc["problem"] else OK
    if args.json:
        output.json(doc)
        return status
    when = {"all": "all time", "day": f"day {doc['bucket']}", "month": f"month {doc['bucket']}"}
    who = ", ".join(f"{k} {v}" for k, v in doc["filter"].items() if v is not None) or "all users"
    output.line(f"Usage ledger: {doc['directory']}")
    output.line(f"Period: {when[args.period].strip()}; {who}.")
    if not doc["exists"] or not doc["total"]["requests"]:
        output.line("Nothing recorded yet: all totals are 0.")
    total = doc["total"]
    cost = total["cost_usd"]
    output.line(
        f"Total: {total['requests']:,} requests, {total['total_tokens']:,} tokens, "
        f"cost ${cost or 0:.4f}"
        + (
            f" (+{total['unknown_cost_requests']} request(s) of unpriced models)"
            if total["unknown_cost_requests"]
            else ""
        )
    )
    for dimension, groups in doc["by"].items():
        if not groups:
            continue
        rows = [{"name": name, **t} for name, t in groups.items()]
        output.line()
        output.table(rows, COLUMNS, title=f"by {dimension}")
    if doc["overage"]:
        output.line()
        rows = [
            {"user": u, "limit": n, "over": v}
            for u, o in doc["overage"].items()
            for n, v in o.items()
        ]
        output.table(
            rows, (("user", "user"), ("limit", "limit"), ("over", "past it by")), title="overage"
        )
    if doc["problem"]:
        output.line()
        output.line(f"The ledger could not be read in full: {doc['problem']}")
    return status

"""HTML tables for notebooks, and ``pool.watch()``: a live view while a batch runs.

``ChatGeminiPool``, ``GeminiUsageCallbackHandler`` and ``UsageLedger`` call into this module from
tiny ``_repr_html_`` methods, so Jupyter shows them as tables: key states in colour with their
cooldowns, quarantine reasons and window room; usage by key, project, model and user. Keys only
ever appear masked (the scheduler knows nothing else). Nothing here imports IPython unless a
live view runs inside a notebook.
"""

from __future__ import annotations

import html
import importlib
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TextIO

_STATE_COLOURS = {"ready": "#2e7d32", "cooling": "#b26a00", "invalid": "#c62828"}
_TABLE = 'style="border-collapse:collapse;font-family:monospace;font-size:12px;margin:4px 0"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #ddd;white-space:nowrap;text-align:{align}"'
_USAGE_FIELDS = (
    ("requests", "requests"),
    ("attempts", "HTTP attempts"),
    ("successful_requests", "ok"),
    ("cached_requests", "cached"),
    ("failed_requests", "failed"),
    ("input_tokens", "input tok"),
    ("output_tokens", "output tok"),
    ("total_tokens", "total tok"),
    ("cost_usd", "cost $"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _room(room: Mapping[str, Any] | None) -> str:
    if not room:
        return ""
    return " · ".join(f"{name} {_fmt(left)}" for name, left in room.items() if left is not None)


def _table(headings: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]], title: str) -> str:
    """``rows`` of (cell text, inline style) pairs; text is escaped here."""
    head = "".join(f"<th {_CELL.format(align='left')}>{html.escape(h)}</th>" for h in headings)
    body = []
    for row in rows:
        cells = []
        for text, style in row:
            align = "right" if text[:1].isdigit() or text[:1] == "-" else "left"
            extra = f";{style}" if style else ""
            cell = _CELL.format(align=align)[:-1] + extra + '"'
            cells.append(f"<td {cell}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<caption style="text-align:left;font-weight:bold">{html.escape(title)}</caption>'
    return f"<table {_TABLE}>{caption}<tr>{head}</tr>{''.join(body)}</table>"


def status_rows_html(rows: Sequence[Mapping[str, Any]], title: str = "ChatGeminiPool") -> str:
    """The keys of ``pool_status()`` as an HTML table, states in colour."""
    headings = ["#", "key", "project", "state", "ready in", "reason", "window room"]
    headings += ["requests", "ok", "429s", "errors"]
    out = []
    for r in rows:
        state = str(r.get("state"))
        colour = f"color:{_STATE_COLOURS.get(state, '#000')};font-weight:bold"
        ready = r.get("ready_in_s")
        countdown = f"{ready:.1f} s" if state == "cooling" and ready is not None else ""
        out.append(
            [
                (_fmt(r.get("index")), ""),
                (str(r.get("fingerprint")), ""),
                (str(r.get("project")), ""),
                (state, colour),
                (countdown, colour if countdown else ""),
                (_fmt(r.get("reason")), ""),
                (_room(r.get("room")), ""),
                (_fmt(r.get("requests")), ""),
                (_fmt(r.get("successes")), ""),
                (_fmt(r.get("rate_limited")), ""),
                (_fmt(r.get("errors")), ""),
            ]
        )
    return _table(headings, out, title)


def pool_html(pool: Any) -> str:
    """``ChatGeminiPool._repr_html_``."""
    rows = pool.pool_status()
    counts = {s: sum(r["state"] == s for r in rows) for s in ("ready", "cooling", "invalid")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return status_rows_html(rows, f"ChatGeminiPool({pool.model}): {len(rows)} keys — {summary}")


def usage_html(groups: Mapping[str, Mapping[Any, Any]], title: str) -> str:
    """Tables of ``{grouping: {name: UsageTotals or its dict}}``, one per non-empty grouping."""
    parts = [f"<div><b>{html.escape(title)}</b></div>"]
    for grouping, by_name in groups.items():
        if not by_name:
            continue
        rows = []
        for name, totals in sorted(by_name.items(), key=lambda item: str(item[0])):
            data = totals if isinstance(totals, Mapping) else totals.to_dict()
            rows.append([(str(name), "")] + [(_fmt(data.get(f)), "") for f, _ in _USAGE_FIELDS])
        headings = (grouping, *(h for _, h in _USAGE_FIELDS))
        parts.append(_table(headings, rows, f"by {grouping}"))
    if len(parts) == 1:
        parts.append("<div>Nothing recorded yet.</div>")
    return "".join(parts)


def handler_html(handler: Any) -> str:
    """``GeminiUsageCallbackHandler._repr_html_``."""
    snap = handler.snapshot()
    total = snap["total"]
    title = (
        f"GeminiUsageCallbackHandler: {total['requests']:,} requests, "
        f"{total['total_tokens']:,} tokens, ${total['cost_usd'] or 0:.4f}"
    )
    return usage_html(
        {
            "key": {f"key {k}": v for k, v in snap["by_key"].items()},
            "project": snap["by_project"],
            "model": snap["by_model"],
            "user": snap["by_user"],
        },
        title,
    )


def ledger_html(ledger: Any, period: str = "month") -> str:
    """``UsageLedger._repr_html_``: this month's totals by user, key, project and model."""
    groups = ledger.breakdown(period)
    total = groups.get("total", {}).get("")
    where = ledger.location
    figures = (
        "" if total is None else f": {total.requests:,} requests, {total.total_tokens:,} tokens"
    )
    tables = {g: groups.get(g, {}) for g in ("user", "key", "project", "model")}
    tables["key"] = {f"key {k}": v for k, v in tables["key"].items()}
    return usage_html(tables, f"UsageLedger ({where}), this {period}{figures}")


def _in_notebook() -> bool:
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return False
    shell = shell_module.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def status_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """The plain-text form of the status table (outside notebooks)."""
    from langchain_gemini_pool._cli._output import format_table

    table = [
        {
            **r,
            "ready_in_s": round(r["ready_in_s"]) if r.get("state") == "cooling" else None,
            "room": _room(r.get("room")),
        }
        for r in rows
    ]
    columns = (
        ("index", "#"),
        ("fingerprint", "key"),
        ("project", "project"),
        ("state", "state"),
        ("ready_in_s", "ready in s"),
        ("reason", "reason"),
        ("room", "room"),
        ("requests", "requests"),
        ("rate_limited", "429s"),
        ("errors", "errors"),
    )
    return format_table(table, columns)


class PoolWatch:
    """A live view of a pool's keys while a batch runs; see ``ChatGeminiPool.watch``.

    In a notebook it shows one HTML table and refreshes it in place every ``interval``
    seconds; elsewhere it prints the plain-text table to ``out`` whenever it changes. The
    view is refreshed once more when the block ends.
    """

    def __init__(
        self,
        pool: Any,
        interval: float = 1.0,
        *,
        html: bool | None = None,
        out: TextIO | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}.")
        self._pool = pool
        self._interval = float(interval)
        self._html = _in_notebook() if html is None else html
        self._out = out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._last = ""
        self.refreshes = 0
        """How many times the view was drawn."""

    def refresh(self) -> None:
        """Draw the view now."""
        rows = self._pool.pool_status()
        self.refreshes += 1
        if self._html:
            ipd: Any = importlib.import_module("IPython.display")  # only inside a notebook
            page = ipd.HTML(status_rows_html(rows, f"ChatGeminiPool({self._pool.model}), live"))
            if self._handle is None:
                self._handle = ipd.display(page, display_id=True)
            else:
                self._handle.update(page)
            return
        text = status_text(rows)
        if text != self._last:  # print on change only
            self._last = text
            print(text + "\n", file=self._out or sys.stdout, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()

    def __enter__(self) -> PoolWatch:
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="gemini-pool-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.refresh()

"""How commands speak: tables for people (``rich``), JSON for programs, errors as one paragraph.

Exit codes: ``OK`` (0) all is well, ``PROBLEM`` (1) the command ran and found a problem (an
invalid key, a missing ledger, a failed request), ``USAGE`` (2) the command line was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

OK, PROBLEM, USAGE = 0, 1, 2


class CliError(Exception):
    """A problem to report as one clear paragraph (no traceback unless ``--debug``)."""

    def __init__(self, message: str, code: int = PROBLEM) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Context:
    """What a command handler is given besides its arguments."""

    out: TextIO
    err: TextIO
    stdin: TextIO
    debug: bool = False

    def output(self, as_json: bool = False) -> Output:
        return Output(self.out, as_json=as_json)


Column = tuple[str, str]
"""(field name in the row dict, heading)."""


def cell(value: Any) -> str:
    """A table cell: blanks for None, short floats, dicts as ``k=v`` pairs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Mapping):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items() if v is not None)
    return str(value)


_STATE_STYLE = {
    "ready": "green",
    "valid": "green",
    "cooling": "yellow",
    "rate limited": "yellow",
    "invalid": "red",
    "unreachable": "red",
}


class Output:
    """Where a command writes: ``out`` (a text stream) as rich tables, plain lines or JSON."""

    def __init__(self, out: TextIO, *, as_json: bool = False) -> None:
        self.out = out
        self.as_json = as_json
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            isatty = getattr(self.out, "isatty", lambda: False)()
            self._console = Console(
                file=self.out,
                width=None if isatty else 200,
                no_color=not isatty,
                highlight=False,
                soft_wrap=not isatty,
            )
        return self._console

    def line(self, text: str = "") -> None:
        """A line for people (suppressed under ``--json``)."""
        if not self.as_json:
            print(text, file=self.out, flush=True)

    def json(self, data: Any) -> None:
        """The machine-readable answer of a read command: one JSON document."""
        text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        print(text, file=self.out, flush=True)

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[Column],
        *,
        title: str | None = None,
        state_field: str | None = None,
    ) -> None:
        """A table for people; ``state_field`` colours each row by its state."""
        if self.as_json:
            return
        from rich import box
        from rich.table import Table

        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False)
        for name, heading in columns:
            numeric = rows and all(
                isinstance(r.get(name), (int, float)) or r.get(name) is None for r in rows
            )
            table.add_column(heading, justify="right" if numeric else "left")
        for row in rows:
            style = _STATE_STYLE.get(str(row.get(state_field))) if state_field else None
            table.add_row(*(cell(row.get(name)) for name, _ in columns), style=style)
        self.console.print(table)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A plain text table of ``rows`` with the given (key, heading) columns (no colour)."""
    cells = [[h for _, h in columns]]
    cells.extend([cell(row.get(k)) for k, _ in columns] for row in rows)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

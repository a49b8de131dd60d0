"""Every notebook runs, top to bottom, in a real Jupyter kernel (nbclient) against the emulator.

After the notebook's own cells, one more cell prints the facts the notebook claims as JSON, and
the test checks them: exact values from the notebook's variables, never a substring that any
output could contain. Time in ``rate_limits.ipynb`` is a ``ManualClock``: no wall-clock window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbclient, nbformat)")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")

DIRECTORY = Path(__file__).parents[2] / "notebooks"
NOTEBOOKS = sorted(DIRECTORY.glob("*.ipynb"))

FACTS = {
    "quickstart.ipynb": """
import json
print(json.dumps({
    "chain": chain.invoke({"text": "abc"}),
    "streamed_by": streamed_by,
    "chunks": len(chunks),
    "tool_calls": [c["name"] for c in ai.tool_calls],
    "forecast": [type(forecast).__name__, forecast.temperature_c],
    "cache_hit": cache_hit,
    "cache_http_calls": cache_http_calls,
    "usage_users": {u: t.requests for u, t in usage.by_user.items()},
    "ledger_users": {u: ledger.totals(user=u).requests for u in ("alice", "bob", "carol")},
    "states": sorted(r["state"] for r in accounted.pool_status()),
    "html": "#c62828" in accounted._repr_html_() and "by user" in usage._repr_html_(),
}))
""",
    "rate_limits.ipynb": """
import json
print(json.dumps({
    "plain": len(plain_log), "plain_429s": plain_429s,
    "polite": len(polite_log), "polite_429s": polite_429s,
    "keys_used": sorted({k for _, k, _ in polite_log}),
    "alpha_per_minute": max(
        sum(1 for t, k, _ in polite_log if k in (0, 1) and m * 60 <= t < (m + 1) * 60)
        for m in range(5)
    ),
    "ledger_users": {u: ledger.totals(user=u).requests for u in USERS},
}))
""",
}


def execute(path: Path, extra: str) -> tuple[Any, dict[str, Any]]:
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(extra))
    client = nbclient.NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    printed = "".join(
        o.get("text", "") for o in notebook.cells[-1].outputs if o.output_type == "stream"
    )
    return notebook, json.loads(printed.strip().splitlines()[-1])


def test_quickstart_runs_and_shows_what_it_says() -> None:
    _, facts = execute(DIRECTORY / "quickstart.ipynb", FACTS["quickstart.ipynb"])
    assert facts["chain"] == "Echo: Summarise: abc"  # the pool inside an LCEL chain
    assert isinstance(facts["streamed_by"], int) and facts["chunks"] > 1
    assert facts["tool_calls"] == ["get_weather"]
    assert facts["forecast"] == ["Forecast", 21]
    assert facts["cache_hit"] is True and facts["cache_http_calls"] == 0
    assert facts["usage_users"] == {"alice": 3, "bob": 1, "carol": 1}
    assert facts["ledger_users"] == {"alice": 3, "bob": 1, "carol": 1}
    assert facts["states"] == ["invalid", "ready", "ready", "ready"]
    assert facts["html"] is True


def test_rate_limits_runs_and_quota_limits_earn_no_429() -> None:
    notebook, facts = execute(DIRECTORY / "rate_limits.ipynb", FACTS["rate_limits.ipynb"])
    assert facts["plain"] == facts["polite"] == 60
    assert facts["plain_429s"] > 0  # without QuotaLimits the pool learns from 429s
    assert facts["polite_429s"] == 0  # with them it never earns one
    assert facts["keys_used"] == [0, 1, 2, 3]
    assert facts["alpha_per_minute"] <= 5  # two keys of one project share its quota
    assert facts["ledger_users"] == {"alice": 20, "bob": 20, "carol": 20}
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot was drawn


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_their_outputs_and_no_errors(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "run it and commit the outputs"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert path.name in FACTS  # every notebook has its facts checked above


def test_there_are_both_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} == {"quickstart.ipynb", "rate_limits.ipynb"}

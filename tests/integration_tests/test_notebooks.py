"""Every notebook runs, top to bottom, against the emulator (its code cells in order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notebook = json.loads(path.read_text())
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "429s: 0" in printed  # the quota-aware pool stayed under the limits
    assert "True" in printed  # the cache answered


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS

"""benchmarks/scores.py on a tiny task: its figures are its own run's, within the bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.scores import main, run

ROOT = Path(__file__).resolve().parents[1]
CANCER = ROOT / "examples" / "breast_cancer.toml"


def test_a_tiny_run_writes_its_costs_and_the_exact_check(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run(config=CANCER, nodes=4, exact_nodes=3, out=tmp_path, echo=lines.append)
    assert json.loads((tmp_path / "scores.json").read_text()) == json.loads(json.dumps(result))
    assert result["loo"]["evaluations"] == 5  # N and each N - {i}
    assert result["gtg"]["evaluations"] <= result["gtg"]["bound"] == 120
    check = result["exact_check"]
    assert len(check["exact"]) == len(check["gtg"]) == 3
    assert -1.0 <= check["spearman"] <= 1.0
    assert "Spearman" in (tmp_path / "results.md").read_text()
    assert len(lines) == 2


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--exact-nodes", "13", "--out", str(tmp_path)])

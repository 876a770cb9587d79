"""benchmarks/privacy.py on a tiny table (breast_cancer, 2 rounds, epsilon 8 and no DP): the
cells hold the runs' own accuracies, the calibrated noise, and the epsilon the nodes spent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from benchmarks.privacy import main, run_table

from fedledger.privacy import calibrate

ROOT = Path(__file__).resolve().parents[1]
CANCER = ROOT / "examples" / "breast_cancer.toml"


def test_a_tiny_table_is_written_with_the_spent_epsilon(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_table(configs=[CANCER], epsilons=[8.0, math.inf], out=tmp_path, rounds=2,
                       echo=lines.append)  # fmt: skip
    written = json.loads((tmp_path / "privacy.json").read_text())
    assert written == json.loads(json.dumps(result))
    clean, private = written["cells"]  # no DP first: the others' baseline
    assert clean["epsilon_target"] is None
    assert clean["noise_multiplier"] is None
    assert clean["acc_vs_clean"] == 1.0
    assert private["epsilon_target"] == 8.0
    assert private["clip"] == 0.4
    assert private["noise_multiplier"] == pytest.approx(calibrate(8.0, 1e-5, 2), rel=1e-6)
    assert private["epsilon_spent_max"] == pytest.approx(8.0, rel=0.01)
    assert 0.0 <= private["acc"] <= 1.0
    assert private["acc_vs_clean"] == private["acc"] / clean["acc"]
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 4
    assert "inf (no DP)" in table[2]
    assert "| 8 |" in table[3]
    assert len(lines) == 2


def test_the_command_line_refuses_a_bad_epsilon_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("x", "0,8", ""):
        with pytest.raises(SystemExit) as info:
            main(["--epsilons", bad, "--out", str(tmp_path)])
        assert info.value.code == 2
        assert "--epsilons" in capsys.readouterr().err
    assert not (tmp_path / "privacy.json").exists()

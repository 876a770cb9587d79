"""benchmarks/leakage.py: gradient inversion rebuilds an image from a single-image update made
by fedledger's own trainer, and fails on what a node with [privacy] publishes; membership
inference loses its edge on a DP release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.leakage import main, run

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.toml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_inversion_succeeds_on_one_image_and_fails_on_a_private_update(tmp_path: Path) -> None:
    result = run(config=DIGITS, samples=2, epsilon=8.0, out=tmp_path, echo=lambda _: None)
    assert json.loads((tmp_path / "leakage.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "leakage.png").read_bytes().startswith(PNG_SIGNATURE)
    chance = result["chance_psnr"]
    psnr = result["psnr"]
    # One SGD step on one image: rebuilt (PSNR far above chance; 30 dB is visually exact).
    assert min(psnr["single"]["dlg"]) > 30.0
    # Through the privacy mechanism, what a node with [privacy] publishes, and the same
    # single-image update masked by secure aggregation: chance level.
    for scenario in ("single_dp", "shipped", "masked"):
        for method in ("dlg", "cosine"):
            assert max(psnr[scenario][method]) < chance + 3.0, (scenario, method)
    members = result["membership"]
    assert members["plain"]["auc"] > 0.6  # the plain release leaks membership
    assert members["dp"]["auc"] < 0.6
    assert members["dp"]["tpr_at_1pct_fpr"] <= members["plain"]["tpr_at_1pct_fpr"]
    table = (tmp_path / "results.md").read_text()
    assert "chance" in table
    assert "TPR at 1 % FPR" in table


def test_a_tabular_task_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="needs an image task"):
        main(["--config", str(ROOT / "examples" / "breast_cancer.toml"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--samples", "0", "--out", str(tmp_path)])

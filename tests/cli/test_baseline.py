"""`fedledger baseline`: the central and server-based FedAvg references, end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedledger.baseline import run_fedavg
from fedledger.cli import main
from fedledger.commit import params_digest
from fedledger.config import load_config
from fedledger.task import prepare_task

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


@pytest.fixture(scope="module")
def digits_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("baseline")
    assert main(["baseline", "--config", str(DIGITS), "--out", str(out)]) == 0
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


def test_fedavg_reference_reaches_the_target_accuracy(digits_report: dict[str, Any]) -> None:
    # The bar: at least 0.90 on examples/digits.toml (plain PyTorch reaches ~0.92).
    assert digits_report["final"]["acc_mean"] >= 0.90
    assert digits_report["central"]["acc"] >= 0.95
    assert digits_report["central"]["epochs"] == 30


def test_report_schema(digits_report: dict[str, Any]) -> None:
    r = digits_report
    assert r["mode"] == "fedavg"
    assert r["nodes"] == 10
    assert [x["round"] for x in r["rounds"]] == list(range(1, 31))
    for rec in r["rounds"]:
        assert {"round", "acc_mean", "acc_min", "acc_max", "wall_s"} <= set(rec)
        assert rec["acc_min"] <= rec["acc_mean"] <= rec["acc_max"]
        assert rec["local_acc_min"] <= rec["local_acc_mean"] <= rec["local_acc_max"]
    walls = [x["wall_s"] for x in r["rounds"]]
    assert walls == sorted(walls)
    assert {"acc_mean", "acc_min", "acc_max", "wall_s", "model_digest"} <= set(r["final"])
    assert r["final"]["acc_mean"] == r["rounds"][-1]["acc_mean"]
    assert len(bytes.fromhex(r["final"]["model_digest"])) == 32
    assert r["samples"]["test"] == 360
    assert r["samples"]["train"] + r["samples"]["val"] + r["samples"]["test"] == 1797
    # Learning happened: the last round beats the first by a wide margin.
    assert r["rounds"][-1]["acc_mean"] > r["rounds"][0]["acc_mean"] + 0.3


def test_same_seed_same_model_different_seed_different_model() -> None:
    cfg = replace(load_config(DIGITS), rounds=3)
    a_report, a = run_fedavg(prepare_task(cfg))
    _, b = run_fedavg(prepare_task(cfg))
    _, c = run_fedavg(prepare_task(replace(cfg, seed=1)))
    assert params_digest(a) == params_digest(b)
    assert a_report.final["model_digest"] == params_digest(a).hex()
    assert params_digest(a) != params_digest(c)


def test_breast_cancer_hospital_example(tmp_path: Path) -> None:
    code = main(["baseline", "--config", str(ROOT / "examples" / "breast_cancer.toml"),
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["final"]["acc_mean"] >= 0.90
    assert r["nodes"] == 5
    assert np.isfinite(r["rounds"][-1]["test_loss"])


def test_bad_config_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[aggregation]\nrule = "krum"\nf = 5\n[task]\nnodes = 10\n')
    assert main(["baseline", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "aggregation.f" in err
    assert "n > 2f + 2" in err
    assert not (tmp_path / "o" / "report.json").exists()

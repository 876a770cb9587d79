"""A new user's path (README "As a library", examples/own_model/): their own PyTorch model on
their own CSV files, across three ``fedledger node`` processes, and from Python."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedledger
from fedledger.node.state import read_rounds

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "own_model"
SITES = ("site_a", "site_b", "site_c")


def setup_sites(out: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "setup_sites.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_three_node_processes_train_the_users_model_on_their_own_csv_files(
    tmp_path: Path,
) -> None:
    setup_sites(tmp_path)
    for site in SITES:  # each site holds only its own file
        assert sorted(p.name for p in (tmp_path / site).iterdir()) == [
            "data.csv", "mymodel.py", "node.key", "node.toml",
        ]  # fmt: skip
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedledger",
                "node",
                "--config",
                str(tmp_path / site / "node.toml"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for site in SITES
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    summaries = [json.loads((tmp_path / s / "state" / "summary.json").read_text()) for s in SITES]
    finals = {s["final_model"] for s in summaries}
    assert len(finals) == 1
    assert None not in finals
    last = [read_rounds(tmp_path / s / "state")[-1] for s in SITES]
    assert [r["round"] for r in last] == [10, 10, 10]
    # each site's accuracy on its own validation rows, with the jointly trained model
    assert min(r["acc"] for r in last) > 0.85, last


@pytest.mark.slow
def test_the_library_runs_the_users_model_on_their_files_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_sites(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from mymodel import build  # type: ignore[import-not-found]

    report = fedledger.run_task(
        EXAMPLE / "task.toml",
        out=tmp_path / "run",
        model=build,
        data=[tmp_path / s / "data.csv" for s in SITES],
        label_column="diagnosis",
    )
    assert report.final["model_digests_agree"] is True
    assert report.final["rounds_completed"] == 10
    assert report.final["acc_min"] > 0.85
    assert (tmp_path / "run" / "report.json").exists()


def test_a_model_factory_that_is_no_module_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(fedledger.FedledgerError, match=r"not a torch\.nn\.Module"):
        fedledger.run_task(
            EXAMPLE / "task.toml",
            out=tmp_path,
            model=lambda: "nope",  # type: ignore[arg-type,return-value]
            data=[(np.zeros((20, 30), dtype=np.float32), np.arange(20) % 2)] * 3,
        )

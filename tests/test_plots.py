"""report.png: `fedledger baseline` and `fedledger run` write it beside report.json, and its
figure is a pure function of the report (fedledger.plots). The reports here come from real
small runs: the baseline, then the same task serverless under a sign-flipping attacker,
drawn against that baseline."""

from __future__ import annotations

import io
import json
import struct
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.cli import main
from fedledger.cli.simulate import run_header
from fedledger.config import load_config
from fedledger.plots import (
    PANEL_ACCURACY,
    PANEL_ATTACK,
    PANEL_BYTES,
    PANEL_LOSS,
    PNG_FILE,
    build_figure,
    panels,
    write_png,
)

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.toml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Runs:
    baseline: Path
    run: Path
    output: str
    """What the two commands printed (stdout and stderr)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("plots")
    config = root / "small.toml"
    text = (
        DIGITS.read_text().replace("rounds = 30", "rounds = 3").replace("nodes = 10", "nodes = 4")
    )
    config.write_text(text)
    baseline, run = root / "baseline", root / "run"
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):
        assert main(["baseline", "--config", str(config), "--out", str(baseline)]) == 0
        assert main(["run", "--config", str(config), "--out", str(run), "--transport", "memory",
                     "--chain", "none", "--attack", "sign_flip", "--attackers", "0.25",
                     "--baseline", str(baseline), "--timeout", "300"]) == 0  # fmt: skip
    return Runs(baseline=baseline, run=run, output=printed.getvalue())


def _report(directory: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((directory / "report.json").read_text())
    return report


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 3000
    assert 300 <= height <= 3000
    assert len(data) > 10_000  # lines and text, not an empty canvas
    from matplotlib.image import imread

    pixels = imread(path)  # decodes whole
    assert pixels.shape[:2] == (height, width)
    assert pixels.min() < pixels.max()


def _axes(report: dict[str, Any]) -> dict[str, Any]:
    return {ax.get_title(): ax for ax in build_figure(report).axes}


def test_both_commands_write_a_valid_png_beside_report_json(runs: Runs) -> None:
    for directory in (runs.baseline, runs.run):
        assert (directory / "report.json").exists()
        _check_png(directory / PNG_FILE)
    assert f"plots: {runs.baseline / PNG_FILE}" in runs.output.replace("\n", "")
    assert str(runs.run / PNG_FILE) in runs.output.replace("\n", "")


def test_the_run_records_its_baseline_and_each_nodes_accuracy(runs: Runs) -> None:
    report, base = _report(runs.run), _report(runs.baseline)
    assert report["baseline"]["acc"] == [r["acc_mean"] for r in base["rounds"]]
    assert report["baseline"]["central_acc"] == base["central"]["acc"]
    for r in report["rounds"]:
        accs = r["acc_by_node"]
        assert sorted(accs) == ["0", "1", "2", "3"]
        assert min(accs.values()) == r["acc_min"]
        assert max(accs.values()) == r["acc_max"]


def test_the_run_figure_draws_each_node_the_mean_and_the_baseline(runs: Runs) -> None:
    report = _report(runs.run)
    (attacker,) = report["attack"]["attackers"]
    assert panels(report) == [PANEL_ACCURACY, PANEL_BYTES, PANEL_ATTACK]
    axes = _axes(report)
    assert set(axes) == {PANEL_ACCURACY, PANEL_BYTES, PANEL_ATTACK}
    lines = {line.get_label(): line for line in axes[PANEL_ACCURACY].get_lines()}
    assert len(lines) == 4 + 1 + 1  # nodes, mean, baseline
    assert f"node {attacker} (attacker)" in lines
    assert list(lines["mean"].get_ydata()) == [r["acc_mean"] for r in report["rounds"]]
    assert list(lines["baseline (server FedAvg)"].get_ydata()) == report["baseline"]["acc"]
    for i in range(4):
        label = f"node {i}" + (" (attacker)" if i == attacker else "")
        own = [r["acc_by_node"][str(i)] for r in report["rounds"]]
        assert list(lines[label].get_ydata()) == own
    attack = {line.get_label(): line for line in axes[PANEL_ATTACK].get_lines()}
    assert set(attack) == {"honest nodes", "all nodes", "clean reference (baseline)"}
    honest = [r["honest_acc"] for r in report["rounds"]]
    assert list(attack["honest nodes"].get_ydata()) == honest
    assert len(axes[PANEL_BYTES].get_lines()) == 2  # sent, received
    # Without a baseline: the nodes and their mean only.
    plain = {k: v for k, v in report.items() if k != "baseline"}
    assert len(_axes(plain)[PANEL_ACCURACY].get_lines()) == 4 + 1


def test_the_baseline_figure_draws_fedavg_against_the_central_model(runs: Runs) -> None:
    report = _report(runs.baseline)
    axes = _axes(report)
    assert set(axes) == {PANEL_ACCURACY, PANEL_LOSS}
    lines = axes[PANEL_ACCURACY].get_lines()
    assert [line.get_label() for line in lines] == ["FedAvg (server)", "central (3 epochs)"]
    assert list(lines[1].get_ydata()) == [report["central"]["acc"]] * 2
    assert len(axes[PANEL_LOSS].get_lines()) == 2


def test_write_png_is_a_function_of_the_report(runs: Runs, tmp_path: Path) -> None:
    path = write_png(_report(runs.run), tmp_path)
    assert path == tmp_path / PNG_FILE
    _check_png(path)


def test_the_run_header_names_the_rule_the_attack_and_the_chain(runs: Runs) -> None:
    report = _report(runs.run)
    (attacker,) = report["attack"]["attackers"]
    out = runs.output
    assert f"rule fedavg; attack: sign_flip by node {attacker} (1 of 4); chain: none" in out
    assert "honest" in out  # the table's honest accuracy column and the final line
    assert f"honest nodes {report['final']['honest_acc_mean']:.4f}" in out


def test_gossip_modes_header_names_the_mixing_rule_not_the_aggregation_rule() -> None:
    cfg = replace(load_config(DIGITS), nodes=4)
    lines = run_header(cfg, mode="gossip", topology="ring", transport="memory", chain="none",
                       mixing="uniform", attack=None, attackers=())  # fmt: skip
    text = "\n".join(lines)
    assert "mixing rule mean with uniform weights" in text
    assert "rule fedavg" not in text
    assert "attack: none" in text
    assert "chain: none (no ledger)" in text
    lines = run_header(cfg, mode="consensus", topology="full", transport="grpc",
                       chain="embedded", mixing="uniform", attack="withhold",
                       attackers=(1, 3))  # fmt: skip
    text = "\n".join(lines)
    assert "rule fedavg" in text
    assert "attack: withhold by nodes 1, 3 (2 of 4)" in text
    assert "chain: embedded EVM" in text

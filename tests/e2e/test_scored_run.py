"""End to end with contribution scores (``[incentives] scores = "shapley"``) on the embedded
chain: rewards follow each member's GTG-Shapley value, so a member training on half-flipped
labels earns less than every honest member and a free-rider earns nothing; the audit
recomputes every round's scores."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.cli import main
from fedledger.config import IncentivesConfig, load_config
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


def _run(out: Path, attack: str, scores: str = "shapley") -> dict[str, Any]:
    base = load_config(DIGITS)
    task = replace(base, nodes=5, rounds=3, data=replace(base.data, partition="iid"),
                   incentives=IncentivesConfig(scores=scores))  # fmt: skip
    report: dict[str, Any] = run_task(task, out=out, transport="memory", chain="embedded",
                                      timeout=600, attack=attack,
                                      attackers=0.2).to_dict()  # fmt: skip
    return report


def test_a_label_flipper_earns_less_than_every_honest_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(tmp_path, "label_flip")
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["audit_ok"] is True
    (flipper,) = report["attack"]["attackers"]
    rewards = final["rewards"]
    bad = rewards[report["addresses"][flipper]]
    honest = [v for a, v in rewards.items() if a != report["addresses"][flipper]]
    assert all(bad < h for h in honest), rewards
    # `fedledger rewards --run` reads the same from the run's own chain.
    capsys.readouterr()
    assert main(["rewards", "--run", str(tmp_path), "--json"]) == 0
    read = json.loads(capsys.readouterr().out)
    earned = {m["address"]: m["earned"] / 10**18 for m in read["members"]}  # wei -> tokens
    assert earned == pytest.approx(rewards)


@pytest.mark.slow
def test_a_free_rider_earns_nothing_under_leave_one_out(tmp_path: Path) -> None:
    report = _run(tmp_path, "free_ride", scores="loo")
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["audit_ok"] is True
    (rider,) = report["attack"]["attackers"]
    assert final["rewards"][report["addresses"][rider]] == 0

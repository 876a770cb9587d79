"""End to end with differential privacy: `fedledger run` on the embedded chain with a
[privacy] table; every node clips and noises its updates, stops sending them when its budget
is spent, reports its epsilon, and the audit recomputes every member's epsilon from the chain
and fails a member that went past the budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import dp_accounting
import pytest
from dp_accounting import rdp

from fedledger.config import PrivacyConfig, load_config
from fedledger.node.ledger_round import LedgerRoundNode
from fedledger.run.task import run_task

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"
SIGMA = 4.0


def _rdp(sigma: float, releases: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(sigma), releases)
    return float(accountant.get_epsilon(delta))


def _private_run(out: Path) -> dict[str, Any]:
    """4 nodes, 3 rounds, a budget that allows 2 rounds of updates."""
    budget = (_rdp(SIGMA, 2, 1e-5) + _rdp(SIGMA, 3, 1e-5)) / 2
    privacy = PrivacyConfig(clip=1.0, noise_multiplier=SIGMA, budget=budget)
    task = replace(load_config(DIGITS), nodes=4, rounds=3, privacy=privacy)
    report: dict[str, Any] = run_task(task, out=out, transport="memory", chain="embedded",
                                      timeout=300).to_dict()  # fmt: skip
    return report


def test_private_run_reports_each_nodes_epsilon_and_the_audit_agrees(tmp_path: Path) -> None:
    report = _private_run(tmp_path)
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["audit_ok"] is True
    privacy = final["privacy"]
    assert privacy["max_releases"] == 2
    expected = _rdp(SIGMA, 2, 1e-5)
    assert privacy["epsilon"] == {str(i): pytest.approx(expected, rel=0.01) for i in range(4)}
    assert privacy["budget_spent_at"] == {str(i): 3 for i in range(4)}
    # Round by round: one release a round until the budget stops them.
    per_round = [r["epsilon"] for r in report["rounds"]]
    for spent, releases in zip(per_round, (1, 2, 2), strict=True):
        assert spent == {str(i): pytest.approx(_rdp(SIGMA, releases, 1e-5), rel=0.01)
                         for i in range(4)}  # fmt: skip
    # Round 3 had no update: only rounds 1 and 2 were paid.
    assert sum(final["rewards"].values()) == pytest.approx(2000, abs=1e-6)
    # The audit recomputed every member's releases and epsilon from the chain.
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["privacy"]["releases"] == dict.fromkeys(report["addresses"], 2)
    assert audit["privacy"]["epsilon"] == {a: pytest.approx(expected, rel=0.01)
                                           for a in report["addresses"]}  # fmt: skip
    (check,) = [c for c in audit["task_checks"] if c["name"] == "privacy"]
    assert check["ok"] is True


def test_a_member_that_ignores_its_budget_fails_the_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One node's budget check is switched off: it sends an update in round 3 too.
    real = LedgerRoundNode._budget_spent
    cheats: list[str] = []

    def lenient(self: LedgerRoundNode, rnd: int) -> bool:
        if not cheats:
            cheats.append(self.me)
        return False if self.me == cheats[0] else real(self, rnd)

    monkeypatch.setattr(LedgerRoundNode, "_budget_spent", lenient)
    report = _private_run(tmp_path)
    final = report["final"]
    assert final["audit_ok"] is False
    audit = json.loads((tmp_path / "audit.json").read_text())
    (check,) = [c for c in audit["task_checks"] if c["name"] == "privacy"]
    assert check["ok"] is False
    assert cheats[0] in check["detail"]
    assert "3 rounds" in check["detail"]
    assert audit["privacy"]["releases"][cheats[0]] == 3
    assert all(k == 2 for a, k in audit["privacy"]["releases"].items() if a != cheats[0])


def test_without_a_ledger_every_round_releases_and_a_shorter_budget_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = replace(load_config(DIGITS), nodes=3, rounds=2,
                   privacy=PrivacyConfig(clip=1.0, noise_multiplier=SIGMA))  # fmt: skip
    report = run_task(task, out=tmp_path / "run", transport="memory", chain="none",
                      timeout=300).to_dict()  # fmt: skip
    assert report["final"]["privacy"]["epsilon"] == {
        str(i): pytest.approx(_rdp(SIGMA, 2, 1e-5), rel=0.01) for i in range(3)
    }
    assert report["final"]["privacy"]["budget_spent_at"] == {}
    # A budget for 1 of 2 rounds: stopping needs the ledger's attestation-only messages.
    config = tmp_path / "short.toml"
    config.write_text(DIGITS.read_text() + "\n[privacy]\nclip = 1.0\nnoise_multiplier = 4.0\n"
                      f"budget = {_rdp(SIGMA, 1, 1e-5) * 1.01}\n")  # fmt: skip
    from fedledger.cli import main

    code = main(["run", "--config", str(config), "--out", str(tmp_path / "short"), "--rounds",
                 "2", "--nodes", "3", "--transport", "memory", "--chain", "none"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "privacy.budget" in err
    assert "needs the ledger" in err
    assert "Traceback" not in err

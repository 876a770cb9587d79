"""End to end with the ledger: `fedledger run` on the embedded chain (the default) and on a real
anvil with one OS process per node, then `fedledger audit` on the run, honest and tampered."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.audit import audit_run
from fedledger.cli import main
from fedledger.commit import cid_from_digest
from fedledger.config import load_config
from fedledger.config.overrides import with_overrides
from fedledger.ledger.chain.anvil import find_anvil, install_anvil, start_anvil
from fedledger.run.task import run_task
from fedledger.rundir import JOURNAL_FILE, LEDGER_FILE, LedgerDeployment
from tests import ledger_runs
from tests.ledger_runs import DIGITS, ROOT


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ledger_runs.embedded_run(tmp_path_factory, "ledger", nodes=4, rounds=3)


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def test_run_on_the_embedded_chain_finalizes_every_round_and_pays_rewards(
    embedded_run: Path,
) -> None:
    report = _report(embedded_run)
    final = report["final"]
    assert report["chain"] == "embedded"
    assert final["rounds_completed"] == 3
    assert final["rounds_finalized"] == 3
    assert final["model_digests_agree"] is True
    assert final["audit_ok"] is True
    assert final["acc_mean"] > 0.5
    rewards = final["rewards"]
    assert len(rewards) == 4
    assert all(v > 0 for v in rewards.values())  # every honest contributor was paid
    # Each finalized round credits reward_per_round (1000 tokens), up to rounding down; no
    # token is minted before a member claims.
    assert 3 * 1000 - 1e-9 * 4 <= sum(rewards.values()) <= 3 * 1000
    assert final["token_supply"] == 0
    for r in report["rounds"]:
        assert r["finalized"] is True
        # One batch a round: every member's update and attestation of the round before (the
        # last round's gas includes its attestations' batch).
        assert r["transactions"] == 1
        assert 10_000 < r["gas_per_node"] < 150_000
        assert set(r["gas_per_node_by_kind"]) == {"submit"}
    assert final["gas_per_node_per_round"] == pytest.approx(
        sum(r["gas_per_node"] for r in report["rounds"]) / 3
    )
    assert (embedded_run / JOURNAL_FILE).exists()
    assert LedgerDeployment.read(embedded_run).backend == "embedded"
    assert json.loads((embedded_run / "audit.json").read_text())["ok"] is True


def test_the_ledger_runs_png_draws_its_gas_and_each_members_rewards(embedded_run: Path) -> None:
    from matplotlib.image import imread

    from fedledger.plots import PANEL_GAS, PANEL_REWARDS, build_figure

    report = _report(embedded_run)
    assert imread(embedded_run / "report.png").shape[1] >= 600  # `fedledger run` wrote it
    axes: dict[str, Any] = {ax.get_title(): ax for ax in build_figure(report).axes}
    (gas,) = axes[PANEL_GAS].get_lines()
    assert list(gas.get_ydata()) == [r["gas_per_node"] for r in report["rounds"]]
    bars = axes[PANEL_REWARDS].patches
    assert [b.get_height() for b in bars] == list(report["final"]["rewards"].values())
    labels = [t.get_text() for t in axes[PANEL_REWARDS].get_xticklabels()]
    assert labels == ["node 0", "node 1", "node 2", "node 3"]


def test_audit_cli_replays_the_journal_and_verifies(
    embedded_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "--run", str(embedded_run), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is True
    assert [r["round"] for r in verdict["rounds"]] == [1, 2, 3]
    assert all(r["status"] == "finalized" and r["ok"] for r in verdict["rounds"])

    assert main(["audit", "--run", str(embedded_run)]) == 0
    table = capsys.readouterr().out
    assert "audit: OK, every round verifies" in table


def test_audit_cli_fails_on_a_tampered_blob_naming_round_and_check(
    embedded_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Work on a copy: the other tests share the run.
    import shutil

    run = tmp_path / "run"
    shutil.copytree(embedded_run, run)
    victim = next(e for e in ledger_runs.submitted(run) if e.round == 2)
    ledger_runs.alter_blob(run, cid_from_digest(victim.update))

    assert main(["audit", "--run", str(run), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is False
    assert [r["ok"] for r in verdict["rounds"]] == [True, False, True]
    assert any(f.startswith("round 2: blobs:") and victim.member in f for f in verdict["failures"])


def test_audit_cli_needs_a_run_or_an_rpc(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit"]) == 2
    assert "--run" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_chain_over_grpc_in_one_process(tmp_path: Path) -> None:
    task = replace(load_config(DIGITS), nodes=3, rounds=2)
    report = run_task(task, out=tmp_path, transport="grpc", chain="embedded", timeout=300)
    final = report.to_dict()["final"]
    assert final["rounds_finalized"] == 2
    assert final["audit_ok"] is True
    assert final["model_digests_agree"] is True


@pytest.mark.slow
def test_five_node_processes_on_anvil(tmp_path: Path) -> None:
    task = replace(load_config(DIGITS), nodes=5, rounds=3)
    with start_anvil(anvil=find_anvil(ROOT) or install_anvil(ROOT)) as node:
        report = run_task(task, out=tmp_path, transport="grpc", chain=node.url, timeout=600)
        final = report.to_dict()["final"]
        assert report.extra["chain"] == node.url
        assert final["rounds_finalized"] == 3
        assert final["model_digests_agree"] is True
        assert final["audit_ok"] is True
        assert sum(final["rewards"].values()) == pytest.approx(3000, abs=1e-6)
        # Every node was its own process, and its node.toml names the chain and the task.
        deployment = json.loads((tmp_path / LEDGER_FILE).read_text())
        for i in range(5):
            toml = (tmp_path / f"node-{i}" / "node.toml").read_text()
            assert node.url in toml
            assert deployment["task"] in toml
        # The audit, from a fresh connection, over RPC.
        verdict = audit_run(tmp_path, rpc=node.url, task_address=deployment["task"],
                            config=tmp_path / "task.toml")  # fmt: skip
        assert verdict.ok, verdict.failures()


def test_free_riders_earn_nothing_and_the_audit_verifies_the_attacked_run(tmp_path: Path) -> None:
    task = replace(load_config(DIGITS), nodes=4, rounds=3)
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=300,
                      attack="free_ride", attackers=0.25).to_dict()  # fmt: skip
    final = report["final"]
    (rider,) = report["attack"]["attackers"]
    rider_address = report["addresses"][rider]
    assert final["rounds_finalized"] == 3
    assert final["rewards"][rider_address] == 0  # rejected every round: score 0
    honest = [a for i, a in enumerate(report["addresses"]) if i != rider]
    assert all(final["rewards"][a] > 0 for a in honest)
    assert sum(final["rewards"][a] for a in honest) == pytest.approx(3000, abs=1e-6)
    assert final["audit_ok"] is True  # the audit recomputes the rejection too


def _attacked(tmp: Path, attack: str, **ledger: Any) -> tuple[dict[str, Any], str, list[str]]:
    """A 4-node, 3-round run on the embedded chain with one attacker."""
    task = replace(load_config(DIGITS), nodes=4, rounds=3)
    task = replace(task, ledger=replace(task.ledger, **ledger))
    report = run_task(task, out=tmp, transport="memory", chain="embedded", timeout=300,
                      attack=attack, attackers=0.25).to_dict()  # fmt: skip
    (bad,) = report["attack"]["attackers"]
    honest = [a for i, a in enumerate(report["addresses"]) if i != bad]
    return report, report["addresses"][bad], honest


def _honest_paid(report: dict[str, Any], honest: list[str]) -> None:
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert all(final["rewards"][a] > 0 for a in honest)
    assert sum(final["rewards"][a] for a in honest) == pytest.approx(3000, abs=1e-6)
    assert final["audit_ok"] is True


@pytest.mark.slow  # about 30 s on 2 idle cores
def test_copiers_earn_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # An update is served only once its round closed, so the copier can copy nothing in time:
    # in round 1 it sends the base model back (rejected as free-riding); later it replays an
    # update submitted the round before, whose digest is then no input (round_inputs).
    caplog.set_level(logging.INFO, logger="fedledger")
    report, copier, honest = _attacked(tmp_path, "copy")
    assert report["final"]["rewards"][copier] == 0
    _honest_paid(report, honest)


@pytest.mark.slow  # about 30 s on 2 idle cores
def test_blob_withholders_earn_nothing(tmp_path: Path) -> None:
    # Its signed digest is on chain, but nobody can fetch the blob: the honest nodes aggregate
    # without it `patience` (the task's grace, at least 1 s) after the round closed.
    report, withholder, honest = _attacked(tmp_path, "withhold")
    assert report["final"]["rewards"][withholder] == 0
    _honest_paid(report, honest)


def test_equivocators_are_slashed(tmp_path: Path) -> None:
    # It signs a second, different message for a round: the honest nodes that see both submit
    # them as evidence, the contract takes its whole stake, and it earns nothing from then on.
    report, equivocator, honest = _attacked(tmp_path, "equivocate")
    final = report["final"]
    assert final["slashed"] == [equivocator]
    assert final["rewards"][equivocator] < min(final["rewards"][a] for a in honest)
    assert final["rounds_finalized"] == 3
    assert final["audit_ok"] is True


def test_identities_below_the_minimum_stake_cannot_join(tmp_path: Path) -> None:
    report, sybil, honest = _attacked(tmp_path, "sybil")
    final = report["final"]
    assert final["refused"] == {sybil: "stake below minimum"}
    assert final["rewards"][sybil] == 0
    assert final["model_digests_agree"] is True  # among the members
    _honest_paid(report, honest)


def test_a_poor_reputation_on_chain_shuts_an_attacker_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The norm bound rejects the noise attacker's updates, so distribute never selects it;
    # from round 3 on (2 reveals, 0 selections as of the round's start block) the rule does
    # not even look at its updates. The audit recomputes the same screening from the events.
    caplog.set_level(logging.WARNING, logger="fedledger")
    base = load_config(DIGITS)
    agg = replace(base.aggregation, params={"norm_bound": 3.0, "min_reputation": 0.5,
                                            "reputation_after": 2})  # fmt: skip
    task = replace(base, nodes=4, rounds=4, aggregation=agg)
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=300,
                      attack="gaussian", attackers=0.25).to_dict()  # fmt: skip
    (bad,) = report["attack"]["attackers"]
    attacker = report["addresses"][bad]
    final = report["final"]
    assert final["rounds_finalized"] == 4
    assert final["rewards"][attacker] == 0
    assert final["audit_ok"] is True
    reasons = {r.message.split(": ", 1)[0].split()[1]: r.message for r in caplog.records
               if f"rejected update of {attacker}" in r.message}  # fmt: skip
    assert "longer than" in reasons["1"]
    assert "low reputation: selected in 0 of 2 rounds" in reasons["3"]
    assert "low reputation: selected in 0 of 3 rounds" in reasons["4"]


def test_the_audit_verifies_a_model_attack_under_the_default_robust_rule(tmp_path: Path) -> None:
    # 5 nodes, one sign-flipper, Multi-Krum after mixing (f = 1): the honest nodes agree on
    # the same selection, the attacker earns nothing, and the audit recomputes it all.
    task = with_overrides(load_config(DIGITS), rounds=3, nodes=5, rule="robust")
    report = run_task(task, out=tmp_path, transport="memory", chain="embedded", timeout=300,
                      attack="sign_flip", attackers=0.2).to_dict()  # fmt: skip
    (bad,) = report["attack"]["attackers"]
    final = report["final"]
    assert final["rounds_finalized"] == 3
    assert final["rewards"][report["addresses"][bad]] == 0
    assert final["audit_ok"] is True
    assert final["honest_acc_mean"] > 0.5

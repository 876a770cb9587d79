"""End to end with the ledger: `fedledger run` on the embedded chain (the default) and on a real
anvil with one OS process per node, then `fedledger audit` on the run, honest and tampered."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.audit import audit_run
from fedledger.cli import main
from fedledger.config import load_config
from fedledger.gossip.blobs import FileBlobStore
from fedledger.launcher import JOURNAL_FILE, LEDGER_FILE, LedgerDeployment, run_task
from fedledger.ledger.anvil import find_anvil, install_anvil, start_anvil
from fedledger.ledger.task_client import ContractLedger, Revealed

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits.toml"


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ledger-run")
    code = main(["run", "--config", str(DIGITS), "--out", str(out), "--rounds", "3",
                 "--nodes", "4", "--transport", "memory", "--timeout", "300"])  # fmt: skip
    assert code == 0
    return out


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
    # Each finalized round mints reward_per_round (1000 tokens), up to rounding down.
    assert 3 * 1000 - 1e-9 * 4 <= sum(rewards.values()) <= 3 * 1000
    assert final["token_supply"] == pytest.approx(sum(rewards.values()))
    for r in report["rounds"]:
        assert r["finalized"] is True
        # commit + reveal + attest (the finalizing attest also starts the next round).
        assert 150_000 < r["gas_per_node"] < 400_000
        assert set(r["gas_per_node_by_kind"]) >= {"commit", "reveal", "attest"}
    assert final["gas_per_node_per_round"] == pytest.approx(
        sum(r["gas_per_node"] for r in report["rounds"]) / 3
    )
    assert (embedded_run / JOURNAL_FILE).exists()
    assert LedgerDeployment.read(embedded_run).backend == "embedded"
    assert json.loads((embedded_run / "audit.json").read_text())["ok"] is True


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
    chain_events = _revealed(run)
    victim = next(e for e in chain_events if e.round == 2)
    for store_dir in run.glob("node-*/state/blobs"):
        store = FileBlobStore(store_dir, durable=False)
        if store.has(victim.cid):
            path = store._path(victim.cid)
            data = bytearray(path.read_bytes())
            data[-1] ^= 0x01
            path.write_bytes(bytes(data))

    assert main(["audit", "--run", str(run), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is False
    assert [r["ok"] for r in verdict["rounds"]] == [True, False, True]
    assert any(f.startswith("round 2: blobs:") and victim.member in f for f in verdict["failures"])


def _revealed(run: Path) -> list[Revealed]:
    from fedledger.ledger.chain import EmbeddedChain

    deployment = LedgerDeployment.read(run)
    chain = EmbeddedChain.replay(run / JOURNAL_FILE)
    ledger = ContractLedger(chain, deployment.task, None)
    return [e for e in ledger.events(deployment.first_block) if isinstance(e, Revealed)]


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

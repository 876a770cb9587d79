"""Committees end to end: `fedledger run` on the embedded chain with more members than
`[ledger] committee`. Each round's messages come from the committee the contract drew for it
(only its members train and sign), round r + 1's committee attests round r, the other nodes
fetch the finalized model, every round finalizes, every node ends on the same model, and the
audit checks the draws."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedledger.config import load_config
from fedledger.ledger.chain import EmbeddedChain
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import CommitteeSampled, Submitted, member_arrays_at_starts
from fedledger.ledger.rules import sample_committee
from fedledger.run.task import run_task
from fedledger.rundir import JOURNAL_FILE, LedgerDeployment
from tests.ledger_runs import DIGITS

NODES, COMMITTEE, ROUNDS = 8, 3, 4

# Two runs of 8 nodes: slow (tests/ledger covers committees in the quick suite).
pytestmark = pytest.mark.slow


def _run(out: Path, committee: int) -> dict[str, Any]:
    base = load_config(DIGITS)
    # A patient designated submitter: one batch a round even when the machine is loaded.
    ledger = replace(base.ledger, committee=committee, collect=60.0, fallback=120.0)
    task = replace(base, nodes=NODES, rounds=ROUNDS, ledger=ledger)
    report: dict[str, Any] = run_task(task, out=out, transport="memory", chain="embedded",
                                      timeout=600).to_dict()  # fmt: skip
    return report


@pytest.fixture(scope="module")
def committee_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("committee-run")
    return out, _run(out, COMMITTEE)


def test_every_round_finalizes_with_its_committee_and_the_audit_checks_the_draws(
    committee_run: tuple[Path, dict[str, Any]],
) -> None:
    out, report = committee_run
    final = report["final"]
    assert final["rounds_finalized"] == ROUNDS
    assert final["model_digests_agree"] is True  # the undrawn nodes fetched the models
    assert final["audit_ok"] is True
    audit = json.loads((out / "audit.json").read_text())
    for verdict in audit["rounds"]:
        checks = {c["name"]: c["ok"] for c in verdict["checks"]}
        assert checks["committee"] is True
    deployment = LedgerDeployment.read(out)
    chain = EmbeddedChain.replay(out / JOURNAL_FILE)
    events = ContractLedger(chain, deployment.task, None).events(deployment.first_block)
    draws = {e.round: e for e in events if isinstance(e, CommitteeSampled)}
    assert sorted(draws) == list(range(1, ROUNDS + 2))  # the attestation-only round too
    arrays = member_arrays_at_starts(events)
    for rnd, draw in draws.items():
        assert len(draw.members) == COMMITTEE
        assert draw.members == sample_committee(draw.seed, arrays[max(rnd - 1, 1)], COMMITTEE)
        signers = {e.member for e in events if isinstance(e, Submitted) and e.round == rnd}
        # Only the drawn members signed, and every one of them did (the phase closed early).
        assert signers == set(draw.members)
    # Rewards went to the committees' contributors only.
    contributors = {m for r in range(1, ROUNDS + 1) for m in draws[r].members}
    paid = {a for a, v in final["rewards"].items() if v > 0}
    assert paid <= contributors


def test_a_committee_cuts_what_each_node_downloads(
    committee_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The same task without a committee: every node fetches every member's update each
    round; with a committee of 3 of 8, a node fetches its committee's when drawn, and the
    finalized model otherwise."""
    _, with_committee = committee_run
    everyone = _run(tmp_path, 0)
    assert everyone["final"]["rounds_finalized"] == ROUNDS
    received = with_committee["final"]["bytes_per_node_per_round"]["recv"]
    baseline = everyone["final"]["bytes_per_node_per_round"]["recv"]
    assert received < 0.5 * baseline


def test_the_explorer_names_each_rounds_committee(
    committee_run: tuple[Path, dict[str, Any]],
) -> None:
    from fedledger.explorer.data import RunSource
    from fedledger.explorer.views import round_view

    out, _ = committee_run
    view = round_view(RunSource(out).snapshot(), 2)
    assert view is not None
    drawn = [n for n in view.notes if n.startswith("its committee (drawn for round 2")]
    attesters = [n for n in view.notes if n.startswith("attested by (drawn for round 3")]
    assert len(drawn) == len(attesters) == 1
    assert drawn[0].count("node ") == COMMITTEE

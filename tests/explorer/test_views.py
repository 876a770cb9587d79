"""The explorer's view model on a real run: what each page shows, without a browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedledger.audit import audit_run, run_auditor
from fedledger.commit import cid_from_digest
from fedledger.errors import ConfigError
from fedledger.explorer import charts
from fedledger.explorer.data import RunSource
from fedledger.explorer.views import (
    accuracy_view,
    network_view,
    rewards_view,
    round_view,
    task_view,
    timeline,
)
from fedledger.ledger.records import Submitted
from tests.explorer.conftest import NODES, ROUNDS, in_progress_copy

TOKEN = 10**18


def _report(run: Path) -> dict[str, object]:
    report: dict[str, object] = json.loads((run / "report.json").read_text())
    return report


def test_the_task_page_shows_rules_members_stake_and_access(run_dir: Path) -> None:
    snap = RunSource(run_dir).snapshot()
    view = task_view(snap)
    report = _report(run_dir)
    final = report["final"]
    assert isinstance(final, dict)
    assert view.address == final["task_address"]
    assert not view.in_progress
    fields = {f.label: f.value for f in view.rules}
    assert fields["aggregation rule"] == "fedavg"
    assert fields["quorum"] == "67 % of the round's stake"
    assert fields["access policy"] == "members"
    assert fields["rounds, nodes"] == f"{ROUNDS} rounds, {NODES} nodes"
    assert [m.index for m in view.members] == list(range(NODES))
    assert [m.address for m in view.members] == report["addresses"]
    assert all(m.status == "active" and m.stake == 10**16 for m in view.members)
    assert view.governance is None  # no [governance] in the task
    assert view.audited is True  # the audit recorded at the end of the run
    assert json.loads(view.document)["rounds"] == ROUNDS


def test_the_timeline_has_every_round_with_its_phases_and_quorum(run_dir: Path) -> None:
    rows = timeline(RunSource(run_dir).snapshot())
    report = _report(run_dir)
    assert [r.round for r in rows] == [1, 2, 3, 4]
    assert rows[-1].outcome == "attestations of round 3"
    assert not rows[-1].auditable
    for row, rec in zip(rows, report["rounds"], strict=False):  # type: ignore[call-overload]
        assert row.auditable
        assert row.outcome == "finalized"
        assert row.source == "chain"
        assert row.updates == NODES
        assert row.attesters == NODES
        assert row.quorum == -(-6700 * NODES * 10**16 // 10_000)
        assert row.active_stake == NODES * 10**16
        assert row.quorum <= row.stake <= row.active_stake
        assert row.started is not None
        assert row.finalized is not None
        assert row.started <= row.finalized
        # a quorum's time always shows: its Quorate event, or the close that brought it
        assert row.quorate is not None
        assert row.closed is not None
        assert row.started <= row.quorate <= row.closed <= row.finalized
        assert row.reward is not None
        assert 0 < row.reward <= 1000 * TOKEN
        assert row.acc_mean == pytest.approx(rec["acc_mean"])
    assert rows[0].started == 0
    assert rows[ROUNDS - 1].model_cid == report["final"]["model_cid"]  # type: ignore[index]


def test_a_round_shows_each_contribution_and_its_model_lineage(run_dir: Path) -> None:
    snap = RunSource(run_dir).snapshot()
    r1, r2 = round_view(snap, 1), round_view(snap, 2)
    assert r1 is not None
    assert r2 is not None
    assert r1.parent_round is None
    assert "initial model" in r1.parent
    assert r2.parent_round == 1
    assert r1.model_cid is not None
    assert r1.model_cid in r2.parent
    updates = {e.member: e for e in snap.events if isinstance(e, Submitted) and e.round == 2}
    assert [c.index for c in r2.contributions] == list(range(NODES))
    for c in r2.contributions:
        e = updates[c.author]
        assert c.digest == "0x" + e.update.hex()
        assert c.cid == cid_from_digest(e.update)
        assert c.examples == e.examples > 0
        assert c.included is True
        assert c.why == ""
        assert c.score is not None
        assert c.score > 0
    assert sum(c.share or 0 for c in r2.contributions) == pytest.approx(1)
    paid = sum(c.reward or 0 for c in r2.contributions)
    assert paid == r2.reward
    assert 1000 * TOKEN - NODES <= paid <= 1000 * TOKEN
    assert len(r2.attestations) == NODES
    assert all(a.agrees for a in r2.attestations)
    assert r2.stake >= r2.quorum
    assert r2.token is not None
    assert r2.token.startswith("#2 ipfs://" + (r2.model_cid or "?"))
    assert [n.index for n in r2.nodes] == list(range(NODES))
    assert {n.model for n in r2.nodes} == {r2.model_cid}
    assert [name for name, ok, _ in r2.recorded_audit if not ok] == []
    assert (r2.previous, r2.next) == (1, 3)
    assert round_view(snap, 99) is None


def test_accuracy_rewards_and_network(run_dir: Path) -> None:
    snap = RunSource(run_dir).snapshot()
    report = _report(run_dir)
    acc = accuracy_view(snap)
    assert acc.rounds == (1, 2, 3)
    assert [n for n, _ in acc.nodes] == list(range(NODES))
    assert all(v is not None and 0 <= v <= 1 for _, vs in acc.nodes for v in vs)
    assert acc.mean == pytest.approx([r["acc_mean"] for r in report["rounds"]])  # type: ignore[attr-defined]

    rw = rewards_view(snap)
    assert rw.rounds == (1, 2, 3)
    final = report["final"]
    assert isinstance(final, dict)
    for row in rw.rows:
        assert sum(row.per_round) == row.member.earned  # the contract's credit, recomputed
        assert row.member.earned / TOKEN == pytest.approx(final["rewards"][row.member.address])
        assert row.score_share == pytest.approx(final["scores"][row.member.address])
    assert rw.total_earned == sum(r.member.earned for r in rw.rows)
    assert rw.total_staked == NODES * 10**16

    net = network_view(snap)
    assert net.topology == "full"
    assert len(net.members) == NODES
    assert len(net.edges) == NODES * (NODES - 1) // 2  # the complete graph
    assert net.contract == final["task_address"]


def test_the_charts_are_svg_with_a_line_per_node(run_dir: Path) -> None:
    snap = RunSource(run_dir).snapshot()
    svg = charts.accuracy_chart(accuracy_view(snap))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count("<polyline") == NODES + 1  # each node and the mean
    graph = charts.network_graph(network_view(snap))
    assert graph.count('class="member"') == NODES
    assert graph.count('class="edge"') == NODES * (NODES - 1) // 2
    assert charts.rewards_chart(rewards_view(snap)).count("<polyline") == NODES
    assert "#d62728" in charts.stake_bar(1, 2, 3)
    assert "#2ca02c" in charts.stake_bar(2, 2, 3)


def test_a_run_in_progress_shows_the_nodes_records_and_follows_them(
    run_dir: Path, tmp_path: Path
) -> None:
    run = in_progress_copy(run_dir, tmp_path)
    records = run / "node-0" / "state" / "rounds.jsonl"
    lines = records.read_text().splitlines()
    records.write_text("\n".join(lines[:2]) + "\n")  # node 0 has reported 2 rounds so far
    source = RunSource(run)
    snap = source.snapshot()
    assert snap.in_progress
    assert snap.status is None
    assert any("in progress" in n for n in snap.notes)
    rows = timeline(snap)
    assert [r.round for r in rows] == [1, 2, 3]
    assert {r.source for r in rows} == {"nodes"}
    assert rows[0].outcome == "finalized"
    assert rows[0].attesters == NODES
    assert task_view(snap).in_progress
    assert task_view(snap).phase == "running"
    assert accuracy_view(snap).nodes[0][1][2] is None  # node 0's round 3: not yet

    records.write_text("\n".join(lines) + "\n")  # node 0 reports round 3
    assert source.version() != snap.version
    again = source.snapshot()
    assert again is not snap
    assert accuracy_view(again).nodes[0][1][2] is not None
    assert source.snapshot() is again  # nothing changed: not read again


def test_a_round_audited_alone_gives_the_full_audits_verdict(
    run_dir: Path, tampered: tuple[Path, Submitted]
) -> None:
    for run in (run_dir, tampered[0]):
        full = audit_run(run)
        for verdict in full.rounds:
            assert run_auditor(run).audit_round(verdict.round) == verdict
    alone = run_auditor(tampered[0]).audit_round(2)
    assert not alone.ok
    assert [c.name for c in alone.failures] == ["blobs", "aggregate"]
    assert tampered[1].member in alone.failures[0].detail
    with pytest.raises(ConfigError, match="round 9 was not started"):
        run_auditor(run_dir).audit_round(9)


def test_bad_run_directories_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no run directory"):
        RunSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a `fedledger run` directory"):
        RunSource(tmp_path / "empty")

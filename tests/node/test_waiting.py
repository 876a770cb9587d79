"""Whom a node waits for: the round logic's ``waiting(now)`` in each mode (pure data, from
the same state machines the nodes run), and the line that says it (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from fedledger.node.consensus import ConsensusNode, Timeouts
from fedledger.node.gossip_mode import GossipLearner
from fedledger.node.waiting import SHOWN_MEMBERS, Waiting, describe_waiting, waiting_line
from tests.node.test_ledger_round import GRACE, Sim, crash_on, is_train

A = "0xAaaa000000000000000000000000000000000001"
B = "0xBbbb000000000000000000000000000000000002"
C = "0xCccc000000000000000000000000000000000003"
NOON = datetime(2026, 5, 4, 12, 3, 10, tzinfo=UTC).timestamp()

# -- the line -------------------------------------------------------------------------------------


def test_the_line_names_the_missing_members_and_the_deadline() -> None:
    line = describe_waiting(4, "reveals", [A, B], NOON, tz=UTC)
    assert line == "round 4: waiting for reveals from 0xAaaa…, 0xBbbb… until 12:03:10"


def test_the_line_labels_known_nodes_in_any_case_and_shows_the_local_time() -> None:
    names = {B.lower(): "node 1"}
    line = describe_waiting(2, "updates", [B, C], NOON, names=names,
                            tz=timezone(timedelta(hours=2)))  # fmt: skip
    assert line == "round 2: waiting for updates from node 1 (0xBbbb…), 0xCccc… until 14:03:10"


def test_the_line_without_a_deadline_and_with_many_members() -> None:
    many = [f"0x{i:040x}" for i in range(SHOWN_MEMBERS + 3)]
    line = describe_waiting(7, "done reports", many, None)
    assert line.startswith("round 7: waiting for done reports from 0x0000…")
    assert line.endswith(", 3 more")
    assert "until" not in line


def test_a_run_line_takes_the_earliest_round_and_the_wait_most_nodes_share() -> None:
    statuses = [
        {"round": 3, "what": "update blobs", "members": [C], "until": NOON + 5},
        {"round": 3, "what": "update blobs", "members": [C, B], "until": NOON},
        {"round": 3, "what": "messages", "members": [A], "until": NOON + 60},
        {"round": 4, "what": "messages", "members": [A], "until": NOON + 90},
        {"round": 2, "what": "messages", "members": [], "until": NOON},  # nobody: ignored
    ]
    line = waiting_line(statuses, names={C: "node 2"}, tz=UTC)
    # C first (two nodes wait for it), then B; the latest deadline of the group
    assert line == "round 3: waiting for update blobs from node 2 (0xCccc…), 0xBbbb… until 12:03:15"
    assert waiting_line([{"round": 1, "what": "updates", "members": []}]) is None
    assert waiting_line([]) is None


# -- consensus mode -------------------------------------------------------------------------------


def test_consensus_waits_for_updates_then_models_until_each_phase_deadline() -> None:
    node = ConsensusNode(me=A, members=[A, B, C], rounds=2, initial_model="m0",
                         timeouts=Timeouts(initial=10.0, minimum=1.0, maximum=60.0))  # fmt: skip
    node.start(0.0)
    assert node.waiting(0.5) is None  # it trains: nobody to wait for
    node.trained(1, "m0", "ua", 10, 1.0)
    assert node.waiting(1.0) == Waiting(round=1, what="updates", members=(B, C), deadline=11.0)
    node.on_update(B, 1, "ub", 10, "m0", 1.5)
    assert node.waiting(1.5) == Waiting(round=1, what="updates", members=(B, C), deadline=11.0)
    node.blob_ready("ub", 2.0)  # announced is not enough: its blob must be in
    assert node.waiting(2.0) == Waiting(round=1, what="updates", members=(C,), deadline=11.0)
    assert node.waiting(11.5) is None  # past the deadline: it gives up, not waits
    node.on_update(C, 1, "uc", 10, "m0", 3.0)
    node.blob_ready("uc", 3.0)
    assert node.waiting(3.0) is None  # aggregating
    node.aggregated(1, "m1", 4.0)
    waiting = node.waiting(4.0)
    assert waiting is not None
    assert (waiting.round, waiting.what, waiting.members) == (1, "models", (B, C))
    assert waiting.deadline is not None
    assert waiting.deadline > 4.0


def test_a_finished_consensus_node_waits_for_the_others_done_reports() -> None:
    node = ConsensusNode(me=A, members=[A, B], rounds=1, initial_model="m0")
    node.start(0.0)
    node.trained(1, "m0", "ua", 10, 0.0)
    node.on_update(B, 1, "ub", 10, "m0", 0.0)
    node.blob_ready("ub", 0.0)
    node.aggregated(1, "m1", 1.0)
    node.on_model(B, 1, "m1", [A, B], 1.0)
    assert node.finished
    assert node.waiting(2.0) == Waiting(round=1, what="done reports", members=(B,),
                                        deadline=None)  # fmt: skip
    node.on_done(B, 1, "m1", 2.0)
    assert node.waiting(2.0) is None


# -- gossip mode --------------------------------------------------------------------------------


def test_gossip_waits_for_its_neighbours_models_only() -> None:
    third = 1 / 3
    node = GossipLearner(me=A, weights={A: third, B: third, C: third}, iterations=2,
                         initial_model="m0", timeouts=Timeouts(initial=5.0))  # fmt: skip
    node.start(0.0)
    assert node.waiting(0.0) is None
    node.trained(1, "a1", 10, 1.0)
    assert node.waiting(1.0) == Waiting(round=1, what="models", members=(B, C), deadline=6.0)
    node.on_model(B, 1, "b1", 1.5)
    node.blob_ready("b1", 1.6)
    assert node.waiting(1.6) == Waiting(round=1, what="models", members=(C,), deadline=6.0)


# -- ledger mode (the discrete-event simulation of tests/node/test_ledger_round.py) ----------------


def _watch(sim: Sim, members: list[str]) -> list[tuple[str, Waiting]]:
    seen: list[tuple[str, Waiting]] = []

    def probe() -> None:
        for m in members:
            w = sim.nodes[m].waiting(sim.chain_now())
            if w is not None and (not seen or seen[-1] != (m, w)):
                seen.append((m, w))

    sim.probe = probe
    return seen


def test_ledger_nodes_wait_for_a_withheld_blob_naming_its_author() -> None:
    sim = Sim(4, rounds=2, seed=3)
    cheat = sim.members[0]
    honest = sim.members[1:]
    sim.withhold.add(cheat)
    seen = _watch(sim, honest)
    sim.run()
    assert sorted(sim.finalized()) == [1, 2]
    blobs = [(m, w) for m, w in seen if w.what == "update blobs"]
    for rnd in (1, 2):
        for m in honest:  # every honest node waited for the withheld blob of each round
            waits = [w for who, w in blobs if who == m and w.round == rnd]
            assert waits, (m, rnd)
            assert cheat in waits[-1].members  # the last blob missing is the withheld one
            assert waits[-1].deadline is not None
            assert sim.closes_at(rnd) <= waits[-1].deadline <= sim.closes_at(rnd) + 1 + GRACE


def test_ledger_nodes_wait_for_a_crashed_members_message_until_the_phase_closes() -> None:
    sim = Sim(4, rounds=3, seed=5)
    victim = sim.members[1]
    live = [m for m in sim.members if m != victim]
    crash_on(sim, victim, is_train(2))
    seen = _watch(sim, live)
    sim.run()
    for m in live:
        waits = [w for who, w in seen if who == m and w.what == "messages" and w.round == 2]
        assert waits
        assert waits[-1].members == (victim,)  # the three others' messages are in
        assert waits[-1].deadline == sim.closes_at(2)  # a quorum, then grace

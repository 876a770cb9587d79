"""The ledger round logic, driven by a discrete-event simulation against one in-memory Task.

Several :class:`LedgerRoundNode` share one :class:`MemoryTask` whose clock is the simulation's
virtual time. A tiny shell plays the runner's part: it polls the chain (new events and
``ledger.now()``), sends each node's transactions through its own :class:`MemoryLedger` and
reports the receipts (``tx_done``), "trains" by naming a deterministic blob, serves blobs from
per-node stores (a node's own update only once :meth:`LedgerRoundNode.servable` says so), and
"aggregates" by hashing the base and the sorted input CIDs, so two nodes that aggregate the
same set on the same base produce the same CID. Everything is seeded: no sleeps, no threads.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from fedledger.commit import cid_from_digest, cid_of
from fedledger.config import LedgerConfig, TaskConfig
from fedledger.errors import TransactionReverted
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.records import (
    Attested,
    Committed,
    Distributed,
    Finalized,
    LedgerEvent,
    Revealed,
    Rewarded,
    RoundStarted,
    Skipped,
    TxResult,
)
from fedledger.ledger.rules import rules_for
from fedledger.node.consensus import Aggregate, Fetch, Finished, Train
from fedledger.node.ledger_round import (
    Action,
    Attest,
    Commit,
    Distribute,
    LedgerRoundDone,
    LedgerRoundNode,
    Reveal,
    Skip,
)

WINDOW = 30  # seconds: commit, reveal and attest windows alike
T0 = 1_000.0
POLL = 0.5  # the shell's chain-polling period
TX_MINED = 0.1  # a transaction is mined this long after the node asks for it...
TX_RECEIPT = 0.2  # ...and its receipt reaches the node this long after the ask
FETCH_TIME = 0.05
AGGREGATE_TIME = 0.5
TRAIN_TIME = (1.0, 3.0)
INIT = cid_of(b"initial model")


def address(label: str) -> str:
    return to_checksum_address("0x" + hashlib.sha256(label.encode()).hexdigest()[:40])


OWNER = address("owner")
TOKEN = address("token")
TREASURY = address("treasury")


def update_cid(node: str, rnd: int, base: str) -> str:
    return cid_of(f"update|{node}|{rnd}|{base}".encode())


@dataclass(order=True)
class Event:
    time: float
    seq: int
    kind: str = field(compare=False)
    node: str = field(compare=False)
    data: Any = field(compare=False, default=None)
    life: int = field(compare=False, default=0)
    """The node's incarnation the event belongs to: a crash drops what it had under way."""


@dataclass(frozen=True)
class TxRecord:
    node: str
    kind: str
    round: int
    ok: bool
    reason: str | None
    time: float


class Sim:
    def __init__(
        self,
        n: int = 4,
        *,
        rounds: int = 3,
        seed: int = 0,
        quorum: float = 0.67,
        patience: float = 0.5,
    ) -> None:
        self.now = T0
        self.rng = random.Random(seed)
        self.seed = seed
        self.rounds = rounds
        self.patience = patience
        task = TaskConfig(
            nodes=n, rounds=rounds,
            ledger=LedgerConfig(quorum=quorum, commit_window=WINDOW, reveal_window=WINDOW,
                                attest_window=WINDOW),
        )  # fmt: skip
        self.rules = rules_for(task, token=TOKEN, treasury=TREASURY)
        self.task = MemoryTask(self.rules, owner=OWNER, clock=lambda: self.now)
        self.members = sorted((address(f"node{i}") for i in range(n)), key=str.lower)
        self.ledgers = {m: MemoryLedger(self.task, m) for m in self.members}
        for m in self.members:
            self.ledgers[m].join(f"sim://{m}", self.rules.min_stake)
        MemoryLedger(self.task, OWNER).start()
        self.queue: list[Event] = []
        self.seq = 0
        self.life = dict.fromkeys(self.members, 0)
        self.dead: set[str] = set()
        self.cursor = dict.fromkeys(self.members, 0)
        self.stores: dict[str, set[str]] = {m: {INIT} for m in self.members}
        self.own: dict[str, set[str]] = {m: set() for m in self.members}
        self.withhold: set[str] = set()
        """Nodes that never serve their own updates."""
        self.tamper: set[tuple[str, int]] = set()
        """(node, round): that node's aggregate of that round comes out different."""
        self.echo: set[str] = set()
        """Nodes whose shell delivers every batch of chain events twice."""
        self.slow: dict[str, float] = {}
        """Extra aggregation time, by node."""
        self.hook: Callable[[str, Action], bool] | None = None
        """Sees every action first; True drops it."""
        self.done: dict[str, list[LedgerRoundDone]] = {m: [] for m in self.members}
        """Every process's reports, in order (a restarted node's add to its predecessor's)."""
        self.reported: set[tuple[str, int, int]] = set()
        self.finished: dict[str, Finished] = {}
        self.actions: dict[str, list[tuple[float, Action]]] = {m: [] for m in self.members}
        self.txs: list[TxRecord] = []
        self.refused: list[tuple[str, str]] = []  # (requester, cid) fetches that found no source
        self.nodes = {m: self.make_node(m, None) for m in self.members}
        for i, m in enumerate(self.members):
            self.at(self.now, "start", m)
            self.at(self.now + POLL * (i + 1) / (n + 1), "poll", m)

    # -- plumbing -------------------------------------------------------------------------------

    def make_node(self, m: str, resume: tuple[int, str] | None) -> LedgerRoundNode:
        salt_rng = random.Random(f"{self.seed}/{m}/{self.life[m]}")
        return LedgerRoundNode(me=m, rules=self.rules, rounds=self.rounds, initial_model=INIT,
                               members=self.members, rng=salt_rng, patience=self.patience,
                               resume=resume)  # fmt: skip

    def at(self, t: float, kind: str, node: str, data: Any = None) -> None:
        self.seq += 1
        life = self.life.get(node, 0)
        heapq.heappush(self.queue, Event(t, self.seq, kind, node, data, life))

    def chain_now(self) -> float:
        return float(self.task.now())

    def crash(self, m: str) -> None:
        """The node stops: nothing it had under way happens, it serves nothing."""
        self.dead.add(m)
        self.life[m] += 1

    def restart(self, m: str, resume: tuple[int, str] | None) -> None:
        """A fresh process for member ``m`` (same blob store), reading the chain from block 0."""
        self.life[m] += 1
        self.dead.discard(m)
        self.finished.pop(m, None)
        self.nodes[m] = self.make_node(m, resume)
        self.cursor[m] = 0
        self.at(self.now, "start", m)
        self.at(self.now, "poll", m)

    def events(self, cls: type[LedgerEvent] | None = None) -> list[Any]:
        return [e for e in self.task.log if cls is None or isinstance(e, cls)]

    def serves(self, source: str, cid: str) -> bool:
        if source in self.dead or cid not in self.stores[source]:
            return False
        if source in self.withhold and cid in self.own[source]:
            return False
        return self.nodes[source].servable(cid)

    # -- the shell ------------------------------------------------------------------------------

    def apply(self, m: str, actions: list[Action]) -> None:
        for a in actions:
            if m in self.dead:
                return
            if self.hook is not None and self.hook(m, a):
                continue
            self.actions[m].append((self.now, a))
            if isinstance(a, Train):
                self.at(self.now + self.rng.uniform(*TRAIN_TIME), "trained", m, a)
            elif isinstance(a, Commit | Reveal | Attest | Skip | Distribute):
                self.at(self.now + TX_MINED, "send", m, a)
            elif isinstance(a, Fetch):
                self.at(self.now + FETCH_TIME, "fetch", m, a)
            elif isinstance(a, Aggregate):
                self.at(self.now + AGGREGATE_TIME + self.slow.get(m, 0.0), "aggregate", m, a)
            elif isinstance(a, LedgerRoundDone):
                # the shell evaluates the round's model: this node must hold it by now
                assert a.model in self.stores[m], (m, a)
                key = (m, self.life[m], a.round)
                assert key not in self.reported, f"{m} reported round {a.round} twice"
                self.reported.add(key)
                self.done[m].append(a)
            elif isinstance(a, Finished):
                assert m not in self.finished
                self.finished[m] = a

    def transact(self, m: str, a: Commit | Reveal | Attest | Skip | Distribute) -> TxRecord:
        ledger = self.ledgers[m]
        kind = type(a).__name__.lower()
        result: TxResult | None = None
        reason: str | None = None
        try:
            if isinstance(a, Commit):
                result = ledger.commit(a.round, a.commitment)
            elif isinstance(a, Reveal):
                result = ledger.reveal(a.round, a.update_digest, a.cid, a.num_examples, a.salt)
            elif isinstance(a, Attest):
                result = ledger.attest(a.round, a.model_digest, a.result_digest)
            elif isinstance(a, Skip):
                result = ledger.skip(a.round)
            else:
                result = ledger.distribute(a.round, list(a.contributors), list(a.scores))
        except TransactionReverted as exc:
            reason = exc.reason
        record = TxRecord(m, kind, a.round, result is not None, reason, self.now)
        self.txs.append(record)
        return record

    def deliver(self, ev: Event) -> None:
        m = ev.node
        if m in self.dead or ev.life != self.life[m]:
            return
        node = self.nodes[m]
        if ev.kind == "start":
            self.apply(m, node.start(self.chain_now()))
        elif ev.kind == "poll":
            if m in self.finished:
                return
            ledger = self.ledgers[m]
            head = ledger.head()
            events = ledger.events(self.cursor[m], head)
            self.cursor[m] = head
            self.apply(m, node.on_events(events, self.chain_now()))
            if m in self.echo:
                self.apply(m, node.on_events(events, self.chain_now()))
            self.at(self.now + POLL, "poll", m)
        elif ev.kind == "trained":
            t: Train = ev.data
            cid = update_cid(m, t.round, t.base)
            self.stores[m].add(cid)
            self.own[m].add(cid)
            self.apply(m, node.trained(t.round, t.base, cid, 10, self.chain_now()))
        elif ev.kind == "send":
            record = self.transact(m, ev.data)
            self.at(self.now + TX_RECEIPT - TX_MINED, "receipt", m, record)
        elif ev.kind == "receipt":
            r: TxRecord = ev.data
            gas = self.task.gas_used if r.ok else 0
            self.apply(m, node.tx_done(r.kind, r.round, ok=r.ok, gas=gas, reason=r.reason,
                                       now=self.chain_now()))  # fmt: skip
        elif ev.kind == "fetch":
            f: Fetch = ev.data
            assert m not in f.sources
            if any(self.serves(s, f.cid) for s in f.sources):
                self.stores[m].add(f.cid)
                self.apply(m, node.blob_ready(f.cid, self.chain_now()))
            else:
                self.refused.append((m, f.cid))
                self.apply(m, node.blob_failed(f.cid, self.chain_now()))
        elif ev.kind == "aggregate":
            g: Aggregate = ev.data
            assert all(c.cid in self.stores[m] for c in g.inputs)
            parts = [g.base, *sorted(c.cid for c in g.inputs)]
            if (m, g.round) in self.tamper:
                parts.append(f"tampered by {m}")
            cid = cid_of("|".join(["aggregate", *parts]).encode())
            self.stores[m].add(cid)
            share = 1_000_000 // len(g.inputs)
            senders = [c.sender for c in g.inputs]
            self.apply(m, node.aggregated(g.round, cid, senders, [share] * len(senders),
                                          self.chain_now()))  # fmt: skip

    def run(self, until: float = 600.0) -> None:
        while self.queue and self.now < T0 + until:
            ev = heapq.heappop(self.queue)
            self.now = max(self.now, ev.time)
            if ev.kind == "call":
                ev.data()
                continue
            self.deliver(ev)
            alive = [m for m in self.members if m not in self.dead]
            pending = any(e.kind == "call" for e in self.queue)
            if all(m in self.finished for m in alive) and not pending:
                return

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.at(t, "call", "", fn)

    # -- what happened --------------------------------------------------------------------------

    def finalized(self) -> dict[int, Finalized]:
        return {e.round: e for e in self.events(Finalized)}

    def final_attesters(self, rnd: int) -> list[str]:
        f = self.finalized()[rnd]
        return sorted((e.member for e in self.events(Attested) if e.round == rnd
                       and (e.model_digest, e.result_digest) == (f.model_digest, f.result_digest)),
                      key=str.lower)  # fmt: skip

    def dissents(self, m: str, rnd: int) -> bool:
        """``m`` asked to attest another pair than the finalized one."""
        f = self.finalized()[rnd]
        return any((a.model_digest, a.result_digest) != (f.model_digest, f.result_digest)
                   for a in self.of(m, Attest) if a.round == rnd)  # fmt: skip

    def rewarded(self, rnd: int) -> dict[str, int]:
        return {e.contributor: e.amount for e in self.events(Rewarded) if e.round == rnd}

    def round_done(self, m: str, rnd: int) -> LedgerRoundDone:
        (done,) = (d for d in self.done[m] if d.round == rnd)
        return done

    def of(self, m: str, cls: type[Any]) -> list[Any]:
        return [a for _, a in self.actions[m] if isinstance(a, cls)]

    def ok_txs(self, kind: str) -> list[TxRecord]:
        return [t for t in self.txs if t.kind == kind and t.ok]


def model_of(f: Finalized) -> str:
    return cid_from_digest(f.model_digest)


# ------------------------------------------------------------------------------------------------
# 1. honest nodes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_honest_nodes_finalize_every_round_and_distribute_once(seed: int) -> None:
    sim = Sim(4, rounds=3, seed=seed)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    assert not sim.events(Skipped)
    last = model_of(finals[3])
    assert {f.model for f in sim.finished.values()} == {last}
    assert {f.round for f in sim.finished.values()} == {3}
    assert set(sim.finished) == set(sim.members)
    starts = {e.round: e.start for e in sim.events(RoundStarted)}
    for rnd in (1, 2, 3):
        # every phase closed early: each round finalized well within its commit window
        assert finals[rnd].time - starts[rnd] < WINDOW
        # quorum 0.67 of four equal stakes: the third attestation finalizes; the fourth node
        # either attests too late (reverted) or sees the round finalized before it attests
        attesters = sim.final_attesters(rnd)
        assert len(attesters) == 3
        late = [t for t in sim.txs if t.kind == "attest" and t.round == rnd and not t.ok]
        assert [t.reason for t in late] in ([], ["not the current round"])
        assert not any(sim.dissents(m, rnd) for m in sim.members)
        for m in sim.members:
            done = sim.round_done(m, rnd)
            assert done.model == model_of(finals[rnd])
            assert (done.finalized, done.adopted, done.caught_up) == (True, False, False)
            assert (done.included, done.attesters, done.attestations) == (4, 3, 3)
            # commit, reveal and, unless it came too late, attest
            assert done.gas == (2 + (m in attesters)) * sim.task.gas_used
            assert done.gas_by_kind["commit"] == sim.task.gas_used
        # one distribution, by the lowest attester of the finalized pair, with all four paid
        distributions = sim.ok_txs("distribute")
        assert [(t.node, t.round) for t in distributions if t.round == rnd] == [
            (sim.final_attesters(rnd)[0], rnd)
        ]
        senders = {m for m in sim.members if any(a.round == rnd for a in sim.of(m, Distribute))}
        assert senders == {attesters[0]}  # nobody else even tried
        assert sorted(sim.rewarded(rnd)) == sim.members
    assert [e.round for e in sim.events(Distributed)] == [1, 2, 3]
    assert not [t for t in sim.txs if t.kind == "distribute" and not t.ok]
    # each round trained from the previous finalized model
    for m in sim.members:
        assert [t.base for t in sim.of(m, Train)] == [INIT, model_of(finals[1]),
                                                      model_of(finals[2])]  # fmt: skip
    reward = sim.rules.reward_per_round
    assert 3 * reward - 3 * 4 <= sim.task.total_minted <= 3 * reward
    assert sim.ledgers[sim.members[0]].token_supply() == sim.task.total_minted


# ------------------------------------------------------------------------------------------------
# 2. a blob withholder
# ------------------------------------------------------------------------------------------------


def test_withheld_update_is_left_out_and_the_withholder_adopts() -> None:
    sim = Sim(4, rounds=2, seed=3)
    cheat = sim.members[0]  # the lowest address: it would distribute, were it in the quorum
    honest = sim.members[1:]
    sim.withhold.add(cheat)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    revealed = {(e.round, e.member) for e in sim.events(Revealed)}
    for rnd in (1, 2):
        assert (rnd, cheat) in revealed  # it committed and revealed...
        assert sim.final_attesters(rnd) == honest  # ...but the quorum is the other three
        final = model_of(finals[rnd])
        clock = sim.nodes[honest[0]].clock(rnd)
        assert clock is not None
        for m in honest:
            (agg,) = (a for t, a in sim.actions[m] if isinstance(a, Aggregate) and a.round == rnd)
            assert cheat not in {c.sender for c in agg.inputs}
            assert len(agg.inputs) == 3
            done = sim.round_done(m, rnd)
            assert (done.model, done.adopted, done.included) == (final, False, 3)
            assert (done.attesters, done.attestations) == (3, 4)
        # the honest waited `patience` of the attest window for the missing blob
        agg_times = [t for m in honest for t, a in sim.actions[m]
                     if isinstance(a, Aggregate) and a.round == rnd]  # fmt: skip
        assert min(agg_times) >= clock.attest_opens + sim.patience * WINDOW
        (own,) = (a for a in sim.of(cheat, Aggregate) if a.round == rnd)
        assert len(own.inputs) == 4  # the withholder aggregated its own update too
        done = sim.round_done(cheat, rnd)
        assert (done.model, done.finalized, done.adopted, done.included) == (final, True, True, 4)
        # the withholder earns nothing for the round; the three others are paid
        assert sorted(sim.rewarded(rnd)) == honest
        assert all(amount > 0 for amount in sim.rewarded(rnd).values())
        (dist,) = (t for t in sim.ok_txs("distribute") if t.round == rnd)
        assert dist.node == honest[0]
    assert sim.task.tokens.get(cheat, 0) == 0
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}
    assert [t.base for t in sim.of(cheat, Train)] == [INIT, model_of(finals[1])]


# ------------------------------------------------------------------------------------------------
# 3. a crashed node, restarted from scratch
# ------------------------------------------------------------------------------------------------


def crash_at_round_two(sim: Sim, victim: str) -> None:
    def hook(m: str, a: Action) -> bool:
        if m == victim and isinstance(a, Train) and a.round == 2:
            sim.crash(victim)
            return True
        return False

    sim.hook = hook


def test_crashed_node_is_outvoted_then_catches_up_from_the_history() -> None:
    sim = Sim(4, rounds=3, seed=5)
    victim = sim.members[-1]
    crash_at_round_two(sim, victim)
    sim.run()
    assert victim in sim.dead
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    starts = {e.round: e.start for e in sim.events(RoundStarted)}
    for rnd in (2, 3):
        assert victim not in {e.member for e in sim.events(Committed) if e.round == rnd}
        # the commit window had to run out: three of four members committed
        assert finals[rnd].time - starts[rnd] >= WINDOW
        assert len(sim.final_attesters(rnd)) == 3
    assert [d.round for d in sim.done[victim]] == [1]
    final = model_of(finals[3])
    others = [m for m in sim.members if m != victim]
    assert {sim.finished[m].model for m in others} == {final}

    sim.hook = None
    sim.restart(victim, resume=None)
    sim.run()
    (done,) = sim.done[victim][1:]
    assert (done.round, done.model, done.caught_up, done.adopted) == (3, final, True, True)
    assert sim.finished[victim] == Finished(final, 3)
    assert not sim.of(victim, Commit)[1:]  # it did not take part again


def test_crashed_node_restarted_in_time_rejoins_the_next_round() -> None:
    sim = Sim(4, rounds=3, seed=6)
    victim = sim.members[-1]
    restarted: list[float] = []

    def watch(m: str, a: Action) -> bool:
        if m == victim and isinstance(a, Train) and a.round == 2:
            sim.crash(victim)
            return True
        if isinstance(a, LedgerRoundDone) and a.round == 2 and not restarted:
            restarted.append(sim.now)
            sim.call_at(sim.now + 1.0, lambda: sim.restart(victim, resume=None))
        return False

    sim.hook = watch
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    round2, round3 = sim.done[victim][1:]
    assert (round2.round, round2.caught_up, round2.adopted) == (2, True, True)
    assert round2.model == model_of(finals[2])
    assert (round3.round, round3.caught_up, round3.adopted) == (3, False, False)
    assert victim in {e.member for e in sim.events(Revealed) if e.round == 3}
    assert round3.included == 4
    assert sorted(sim.rewarded(3)) == sim.members
    assert {f.model for f in sim.finished.values()} == {model_of(finals[3])}
    assert set(sim.finished) == set(sim.members)


# ------------------------------------------------------------------------------------------------
# 4. no quorum
# ------------------------------------------------------------------------------------------------


def test_round_without_quorum_expires_is_skipped_and_the_base_stays() -> None:
    sim = Sim(4, rounds=2, seed=7)
    silent = sim.members[1:3]
    for m in silent:
        sim.crash(m)
    live = [m for m in sim.members if m not in silent]
    sim.run()
    assert not sim.finalized()
    assert [e.round for e in sim.events(Skipped)] == [1, 2]
    assert [e.round for e in sim.events(RoundStarted)] == [1, 2, 3]
    assert sim.task.current_round == 3
    starts = {e.round: e.start for e in sim.events(RoundStarted)}
    assert starts[2] >= starts[1] + 2 * WINDOW  # commit window out, reveals early, attest out
    for rnd in (1, 2):
        assert len([t for t in sim.ok_txs("skip") if t.round == rnd]) == 1
        assert {e.member for e in sim.events(Attested) if e.round == rnd} == set(live)
    for m in live:
        assert [(d.round, d.model, d.finalized, d.adopted) for d in sim.done[m]] == [
            (1, INIT, False, False), (2, INIT, False, False)]  # fmt: skip
        assert [t.base for t in sim.of(m, Train)] == [INIT, INIT]
        assert sim.finished[m] == Finished(INIT, 2)
    assert not sim.events(Distributed)
    assert sim.task.total_minted == 0


# ------------------------------------------------------------------------------------------------
# 5. a minority attestation
# ------------------------------------------------------------------------------------------------


def test_minority_attester_adopts_the_finalized_model_and_continues() -> None:
    sim = Sim(4, rounds=2, seed=8)
    odd = sim.members[0]
    sim.tamper.add((odd, 1))
    for m in sim.members[1:]:
        sim.slow[m] = 2.0  # the odd node attests first, before the quorum closes the round
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    first = model_of(finals[1])
    (odd_attest,) = (e for e in sim.events(Attested) if e.round == 1 and e.member == odd)
    assert odd_attest.model_digest != finals[1].model_digest
    assert sim.final_attesters(1) == sim.members[1:]
    done = sim.round_done(odd, 1)
    assert (done.model, done.adopted, done.attesters, done.attestations) == (first, True, 3, 4)
    assert [t.base for t in sim.of(odd, Train)] == [INIT, first]
    # the odd node's update was still included by the others, and rewarded
    assert sorted(sim.rewarded(1)) == sim.members
    (dist,) = (t for t in sim.ok_txs("distribute") if t.round == 1)
    assert dist.node == sim.members[1]
    # round 2: everyone agrees again, the odd node included
    assert not any(sim.dissents(m, 2) for m in sim.members)
    assert sim.round_done(odd, 2).adopted is False
    assert sorted(sim.rewarded(2)) == sim.members
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}


# ------------------------------------------------------------------------------------------------
# 6. servable
# ------------------------------------------------------------------------------------------------


def test_own_update_is_servable_only_once_its_reveal_is_sent() -> None:
    sim = Sim(4, rounds=1, seed=9)
    seen: list[tuple[str, bool, bool]] = []
    deliver = sim.deliver

    def spying(ev: Event) -> None:
        if ev.kind == "receipt" and ev.data.kind == "commit" and ev.node not in sim.dead:
            node = sim.nodes[ev.node]
            (own,) = sim.own[ev.node]
            assert not node.servable(own)  # committed, not revealed: not to be copied
            deliver(ev)
            return
        if ev.kind == "receipt" and ev.data.kind == "reveal" and ev.node not in sim.dead:
            node = sim.nodes[ev.node]
            (own,) = sim.own[ev.node]
            before = node.servable(own)
            deliver(ev)
            seen.append((ev.node, before, node.servable(own)))
            return
        if ev.kind == "trained":
            deliver(ev)
            node = sim.nodes[ev.node]
            (own,) = sim.own[ev.node]
            assert not node.servable(own)  # trained, committed soon: not to be copied
            assert node.servable(INIT)  # anything else is
            return
        deliver(ev)

    sim.deliver = spying  # type: ignore[method-assign]
    sim.run()
    # Servable from the moment the reveal is sent (peers learn the CID only once it is mined).
    assert sorted(seen) == [(m, True, True) for m in sim.members]
    assert sorted(sim.finalized()) == [1]
    # a peer that saw the Revealed event before the author's receipt was refused, then retried
    for requester, cid in sim.refused:
        assert any(cid in sim.own[m] for m in sim.members if m != requester)


# ------------------------------------------------------------------------------------------------
# 7. restart with resume
# ------------------------------------------------------------------------------------------------


def test_restart_with_resume_skips_done_rounds() -> None:
    sim = Sim(4, rounds=3, seed=10)
    victim = sim.members[1]
    old_done: list[LedgerRoundDone] = []
    crashed_after: list[int] = []  # how many actions the first process took

    def hook(m: str, a: Action) -> bool:
        if m == victim and isinstance(a, Train) and a.round == 2 and not old_done:
            old_done.extend(sim.done[victim])
            crashed_after.append(len(sim.actions[victim]))
            sim.crash(victim)
            (done,) = old_done
            sim.call_at(sim.now + 0.3, lambda: sim.restart(victim, resume=(1, done.model)))
            return True
        return False

    sim.hook = hook
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    # round 1 is reported once (by the first process), never again
    assert [d.round for d in sim.done[victim]] == [1, 2, 3]
    for rnd in (2, 3):
        done = sim.round_done(victim, rnd)
        assert (done.caught_up, done.adopted, done.model) == (False, False, model_of(finals[rnd]))
    assert not sim.dissents(victim, 2)
    assert sorted(sim.rewarded(2)) == sim.members
    after = [a for _, a in sim.actions[victim][crashed_after[0] :]]
    assert after  # the restarted process trained, committed, ... from round 2 on
    assert [a.round for a in after if isinstance(a, Train)] == [2, 3]
    assert not [a for a in after if getattr(a, "round", None) == 1]
    assert sim.finished[victim] == Finished(model_of(finals[3]), 3)

    # a node resumed after its last round only finishes: no round is done again, no tx sent
    final = model_of(finals[3])
    sim.restart(victim, resume=(3, final))
    count = len(sim.actions[victim])
    sim.run()
    assert [a for _, a in sim.actions[victim][count:]] == [Finished(final, 3)]

    # resumed after round 1 with the task over: one catch-up report, for the last round only
    sim.restart(victim, resume=(1, old_done[0].model))
    count = len(sim.done[victim])
    sim.run()
    (done,) = sim.done[victim][count:]
    assert (done.round, done.model, done.caught_up) == (3, final, True)
    assert sim.finished[victim] == Finished(final, 3)


# ------------------------------------------------------------------------------------------------
# events are knowledge: hearing one twice changes nothing
# ------------------------------------------------------------------------------------------------


def test_events_delivered_twice_change_nothing() -> None:
    sim = Sim(4, rounds=2, seed=11)
    sim.echo = set(sim.members)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    starts = {e.round: e.start for e in sim.events(RoundStarted)}
    for rnd in (1, 2):
        # every node committed in time: a Committed event heard twice did not close the commit
        # phase early in anyone's view
        assert {e.member for e in sim.events(Committed) if e.round == rnd} == set(sim.members)
        assert finals[rnd].time - starts[rnd] < WINDOW
        for m in sim.members:
            assert sim.round_done(m, rnd).adopted is False
    assert not [t for t in sim.txs if t.kind in ("commit", "reveal") and not t.ok]
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}

"""The ledger round logic (ledger v2), driven by a discrete-event simulation against one
in-memory Task.

Several :class:`LedgerRoundNode` share one :class:`MemoryTask` whose clock is the simulation's
virtual time. A tiny shell plays the runner's part: it polls the chain (new events and
``ledger.now()``), sends each node's transactions (``submit``, ``distribute``, ``close``,
``slash``) through its own :class:`MemoryLedger` and reports the receipts (``tx_done``),
"trains" by naming a deterministic blob (per process: a restarted node that trained again
would commit to another update), persists and signs each node's round message with its
:class:`Identity` and gossips it to the other nodes after a small seeded delay, serves blobs
from per-node stores (a node's own update only once :meth:`LedgerRoundNode.servable` says so),
and "aggregates" by hashing the base and the sorted input CIDs, so two nodes that aggregate
the same set on the same base produce the same CID. Everything is seeded: no sleeps, no
threads.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from fedledger.commit import cid_from_digest, cid_of
from fedledger.config import LedgerConfig, TaskConfig
from fedledger.errors import TransactionReverted
from fedledger.gossip.identity import Identity
from fedledger.ledger.memory_ledger import MemoryLedger, MemoryTask
from fedledger.ledger.messages import ZERO32, SignedRound
from fedledger.ledger.records import (
    Closed,
    Distributed,
    Finalized,
    LedgerEvent,
    RoundStarted,
    Skipped,
    Slashed,
    Submitted,
    TxResult,
)
from fedledger.ledger.rules import STATUS_SLASHED, result_digest, rules_for
from fedledger.node.consensus import Aggregate, Fetch, Finished, Train
from fedledger.node.ledger_round import (
    Action,
    Close,
    Distribute,
    Evidence,
    LedgerRoundDone,
    LedgerRoundNode,
    Reveal,
    Sign,
    Submit,
)

WINDOW = 60  # seconds: the longest a round's message phase stays open
GRACE = 10  # seconds it stays open once a quorum of stake's messages are in
COLLECT = 2.0  # the node's defaults
FALLBACK = 10.0
T0 = 1_000.0
POLL = 0.25  # the shell's chain-polling period
TX_MINED = 0.1  # a transaction is mined this long after the node asks for it...
TX_RECEIPT = 0.2  # ...and its receipt reaches the node this long after the ask
GOSSIP = (0.02, 0.1)  # a signed message reaches each peer after this long
FETCH_TIME = 0.05
AGGREGATE_TIME = 0.5
TRAIN_TIME = (1.0, 1.2)
SEED = 7  # the identities' seed
INIT = cid_of(b"initial model")


def address(label: str) -> str:
    return to_checksum_address("0x" + hashlib.sha256(label.encode()).hexdigest()[:40])


OWNER = address("owner")
TOKEN = address("token")
TREASURY = address("treasury")


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
    tx: str | None = None


class Sim:
    def __init__(
        self,
        n: int = 4,
        *,
        rounds: int = 3,
        seed: int = 0,
        quorum: float = 0.67,
        grace: int = GRACE,
        patience: float | None = None,
        max_releases: int | None = None,
        secure: bool = False,
        keyless: int = 0,
    ) -> None:
        self.max_releases = max_releases
        self.secure = secure
        """Secure aggregation: members register keys before the start; the shell reveals and
        "unmasks" (a transcript digest over the inputs) instead of aggregating."""
        self.abandon: set[tuple[str, int]] = set()
        """(node, round): that node cannot unmask the round (too few reveals)."""
        self.now = T0
        self.rng = random.Random(seed)
        self.seed = seed
        self.rounds = rounds
        self.patience = patience
        ledger = LedgerConfig(quorum=quorum, window=WINDOW, grace=grace)
        task = TaskConfig(nodes=n, rounds=rounds, ledger=ledger)
        self.rules = rules_for(task, token=TOKEN, treasury=TREASURY)
        self.task = MemoryTask(self.rules, owner=OWNER, clock=lambda: self.now)
        ids = [Identity.from_seed(SEED, i) for i in range(n)]
        self.identity = {i.address: i for i in ids}
        self.members = sorted(self.identity, key=str.lower)
        self.ledgers = {m: MemoryLedger(self.task, m) for m in self.members}
        for m in self.members:
            self.ledgers[m].join(f"sim://{m}", self.rules.min_stake)
        if secure:  # all but the first ``keyless`` members (by address)
            for m in self.members[keyless:]:
                self.register_keys(m, first=1)
        MemoryLedger(self.task, OWNER).start()
        self.queue: list[Event] = []
        self.seq = 0
        self.life = dict.fromkeys(self.members, 0)
        self.dead: set[str] = set()
        self.cursor = dict.fromkeys(self.members, 0)
        self.stores: dict[str, set[str]] = {m: {INIT} for m in self.members}
        self.own: dict[str, dict[str, int]] = {m: {} for m in self.members}
        """Each node's own updates: CID -> round."""
        self.persisted: dict[str, dict[int, SignedRound]] = {m: {} for m in self.members}
        """What each node's disk holds: the messages it signed (what a restart is given)."""
        self.signatures: dict[tuple[str, int], set[SignedRound]] = {}
        """Every message signed by a member for a round, any process."""
        self.withhold: set[str] = set()
        """Nodes that never serve their own updates."""
        self.tamper: set[tuple[str, int]] = set()
        """(node, round): that node's aggregate of that round (model and scores) comes out
        different."""
        self.echo: set[str] = set()
        """Nodes whose shell delivers every batch of chain events twice."""
        self.equivocate: dict[tuple[str, int], set[str]] = {}
        """(node, round): that node also signs a second message, gossiped to these peers
        instead of its first."""
        self.hook: Callable[[str, Action], bool] | None = None
        """Sees every action first; True drops it."""
        self.probe: Callable[[], None] | None = None
        """Called after every simulation event."""
        self.done: dict[str, list[LedgerRoundDone]] = {m: [] for m in self.members}
        """Every process's reports, in order (a restarted node's add to its predecessor's)."""
        self.reported: set[tuple[str, int, int]] = set()
        self.finished: dict[str, Finished] = {}
        self.actions: dict[str, list[tuple[float, Action]]] = {m: [] for m in self.members}
        self.txs: list[TxRecord] = []
        self.refused: list[tuple[float, str, str]] = []  # (time, requester, cid) fetches refused
        self.nodes = {m: self.make_node(m, None, {}) for m in self.members}
        for i, m in enumerate(self.members):
            self.at(self.now, "start", m)
            self.at(self.now + POLL * (i + 1) / (n + 1), "poll", m)

    # -- plumbing -------------------------------------------------------------------------------

    def register_keys(self, m: str, *, first: int) -> None:
        digest = hashlib.sha256(f"key blob|{m}|{first}".encode()).digest()
        channel = hashlib.sha256(f"channel|{m}".encode()).digest()
        self.ledgers[m].set_keys(channel, digest, first, self.rounds, len(self.members) - 1)

    def make_node(
        self, m: str, resume: tuple[int, str] | None, signed: dict[int, SignedRound]
    ) -> LedgerRoundNode:
        rng = random.Random(f"{self.seed}/{m}/{self.life[m]}")
        return LedgerRoundNode(me=m, rules=self.rules, rounds=self.rounds, initial_model=INIT,
                               members=self.members, rng=rng, collect=COLLECT,
                               fallback=FALLBACK, patience=self.patience, resume=resume,
                               signed=signed, max_releases=self.max_releases,
                               secure=self.secure)  # fmt: skip

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

    def resume_point(self, m: str) -> tuple[int, str] | None:
        """What a node's disk says it finished: its last reported round and model."""
        return (self.done[m][-1].round, self.done[m][-1].model) if self.done[m] else None

    def restart(self, m: str) -> None:
        """A fresh process for member ``m`` (same disk: blob store, resume point and signed
        messages), reading the chain from block 0."""
        self.life[m] += 1
        self.dead.discard(m)
        self.finished.pop(m, None)
        self.nodes[m] = self.make_node(m, self.resume_point(m), dict(self.persisted[m]))
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
        node = self.nodes[source]
        if not node.servable(cid, self.chain_now()):
            # As the driver does: a member asking has seen the round closed; look at the
            # chain again before refusing.
            ledger = self.ledgers[source]
            head = ledger.head()
            events = ledger.events(self.cursor[source], head)
            self.cursor[source] = head
            self.apply(source, node.on_events(events, self.chain_now()))
        return node.servable(cid, self.chain_now())

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
            elif isinstance(a, Sign):
                self.sign(m, a)
            elif isinstance(a, Submit | Distribute | Close | Evidence):
                self.at(self.now + TX_MINED, "send", m, a)
            elif isinstance(a, Fetch):
                self.at(self.now + FETCH_TIME, "fetch", m, a)
            elif isinstance(a, Aggregate):
                self.at(self.now + AGGREGATE_TIME, "aggregate", m, a)
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

    def sign(self, m: str, a: Sign) -> None:
        """Persist, sign, gossip (and an equivocator's second message to some peers)."""
        assert a.message.round == a.round
        if a.message.update != ZERO32:  # the update it commits to is on disk
            assert cid_from_digest(a.message.update) in self.stores[m]
        s = a.message.sign(self.identity[m], self.task.chain_id, self.task.address)
        self.persisted[m][a.round] = s
        self.signatures.setdefault((m, a.round), set()).add(s)
        others = [p for p in self.members if p != m]
        second = self.equivocate.get((m, a.round))
        if second is not None:
            blob = f"second update|{m}|{a.round}".encode()
            self.stores[m].add(cid_of(blob))
            other = replace(a.message, update=hashlib.sha256(blob).digest(), examples=7)
            b = other.sign(self.identity[m], self.task.chain_id, self.task.address)
            self.signatures[(m, a.round)].add(b)
            for p in second:
                self.at(self.now + self.rng.uniform(*GOSSIP), "message", p, b)
            others = [p for p in others if p not in second]
        for p in others:
            self.at(self.now + self.rng.uniform(*GOSSIP), "message", p, s)
        self.at(self.now, "signed", m, s)

    def transact(self, m: str, a: Submit | Distribute | Close | Evidence) -> TxRecord:
        ledger = self.ledgers[m]
        kind = {Submit: "submit", Distribute: "distribute", Close: "close",
                Evidence: "slash"}[type(a)]  # fmt: skip
        result: TxResult | None = None
        reason: str | None = None
        try:
            if isinstance(a, Submit):
                result = ledger.submit(a.round, list(a.messages), list(a.contributors),
                                       list(a.scores), a.transcript)  # fmt: skip
            elif isinstance(a, Distribute):
                result = ledger.distribute(a.round, list(a.contributors), list(a.scores),
                                           a.transcript)  # fmt: skip
            elif isinstance(a, Close):
                result = ledger.close()
            else:
                result = ledger.slash(a.round, a.a, a.b)
        except TransactionReverted as exc:
            reason = exc.reason
        record = TxRecord(m, kind, a.round, result is not None, reason, self.now,
                          result.tx if result else None)  # fmt: skip
        self.txs.append(record)
        return record

    def deliver(self, ev: Event) -> None:
        m = ev.node
        if m in self.dead or ev.life != self.life[m]:
            return
        node = self.nodes[m]
        now = self.chain_now()
        if ev.kind == "start":
            self.apply(m, node.start(now))
        elif ev.kind == "poll":
            if m in self.finished:
                return
            ledger = self.ledgers[m]
            head = ledger.head()
            events = ledger.events(self.cursor[m], head)
            self.cursor[m] = head
            self.apply(m, node.on_events(events, now))
            if m in self.echo:
                self.apply(m, node.on_events(events, now))
            self.at(self.now + POLL, "poll", m)
        elif ev.kind == "trained":
            t: Train = ev.data
            cid = cid_of(f"update|{m}|{t.round}|{t.base}|{self.life[m]}".encode())
            self.stores[m].add(cid)
            self.own[m][cid] = t.round
            self.apply(m, node.trained(t.round, t.base, cid, 10, now))
        elif ev.kind == "signed":
            self.apply(m, node.signed(ev.data, now))
        elif ev.kind == "message":
            s: SignedRound = ev.data
            # the driver's checks: a valid signature by an active member
            assert s.verify(self.task.chain_id, self.task.address)
            if s.signer in node.active:
                self.apply(m, node.on_message(s, now))
        elif ev.kind == "send":
            record = self.transact(m, ev.data)
            self.at(self.now + TX_RECEIPT - TX_MINED, "receipt", m, record)
        elif ev.kind == "receipt":
            r: TxRecord = ev.data
            gas = self.task.gas_used if r.ok else 0
            self.apply(m, node.tx_done(r.kind, r.round, ok=r.ok, gas=gas, reason=r.reason,
                                       now=now))  # fmt: skip
        elif ev.kind == "fetch":
            f: Fetch = ev.data
            assert m not in f.sources
            if any(self.serves(s, f.cid) for s in f.sources):
                self.stores[m].add(f.cid)
                self.apply(m, node.blob_ready(f.cid, now))
            else:
                self.refused.append((self.now, m, f.cid))
                self.apply(m, node.blob_failed(f.cid, now))
        elif ev.kind == "aggregate":
            g: Aggregate = ev.data
            assert g.base in self.stores[m]
            assert all(c.cid in self.stores[m] for c in g.inputs)
            parts = [g.base, *sorted(c.cid for c in g.inputs)]
            if (m, g.round) in self.tamper:
                parts.append(f"tampered by {m}")
            cid = cid_of("|".join(["aggregate", *parts]).encode())
            self.stores[m].add(cid)
            share = 1_000_000 // max(1, len(g.inputs))
            senders = [c.sender for c in g.inputs]
            scores = [share] * len(senders)
            if (m, g.round) in self.tamper:  # another result too
                scores[0] += 1
            if not self.secure:
                self.apply(m, node.aggregated(g.round, cid, senders, scores, now))
            elif (m, g.round) in self.abandon:
                self.apply(m, node.abandon(g.round, now))
            else:  # the transcript: the same at every node that unmasks the same inputs
                transcript = hashlib.sha256("|".join(parts).encode()).digest()
                self.apply(m, node.aggregated(g.round, cid, senders, scores, now,
                                              transcript=transcript))  # fmt: skip

    def run(self, until: float = 1_000.0) -> None:
        while self.queue and self.now < T0 + until:
            ev = heapq.heappop(self.queue)
            self.now = max(self.now, ev.time)
            if ev.kind == "call":
                ev.data()
            else:
                self.deliver(ev)
            if self.probe is not None:
                self.probe()
            alive = [m for m in self.members if m not in self.dead]
            pending = any(e.kind == "call" for e in self.queue)
            if all(m in self.finished for m in alive) and not pending:
                return

    def call_at(self, t: float, fn: Callable[[], None]) -> None:
        self.at(t, "call", "", fn)

    # -- what happened --------------------------------------------------------------------------

    def finalized(self) -> dict[int, Finalized]:
        return {e.round: e for e in self.events(Finalized)}

    def submitted(self, rnd: int) -> dict[str, Submitted]:
        return {e.member: e for e in self.events(Submitted) if e.round == rnd}

    def final_attesters(self, rnd: int) -> list[str]:
        f = self.finalized()[rnd]
        return sorted((a for a, e in self.submitted(rnd + 1).items()
                       if (e.model, e.result) == (f.model_digest, f.result_digest)),
                      key=str.lower)  # fmt: skip

    def distributed(self, rnd: int) -> list[Distributed]:
        return [e for e in self.events(Distributed) if e.round == rnd]

    def paid(self, rnd: int) -> dict[str, int]:
        """What round ``rnd``'s distribution credited, by contributor."""
        (d,) = self.distributed(rnd)
        total = sum(d.scores)
        reward = self.rules.reward_per_round
        return {c: reward * s // total for c, s in zip(d.contributors, d.scores, strict=True)
                if s > 0 and self.task.record(c).status != STATUS_SLASHED}  # fmt: skip

    def earned(self, m: str) -> int:
        return self.task.record(m).earned

    def round_done(self, m: str, rnd: int) -> LedgerRoundDone:
        (done,) = (d for d in self.done[m] if d.round == rnd)
        return done

    def of(self, m: str, cls: type[Any]) -> list[Any]:
        return [a for _, a in self.actions[m] if isinstance(a, cls)]

    def ok_txs(self, kind: str, rnd: int | None = None) -> list[TxRecord]:
        return [t for t in self.txs if t.kind == kind and t.ok and rnd in (None, t.round)]

    def closes_at(self, rnd: int) -> int:
        """When round ``rnd``'s message phase closed on chain."""
        return self.task.closes_at(self.task.rounds[rnd])

    def assert_never_equivocated(self, m: str) -> None:
        for (who, rnd), messages in self.signatures.items():
            assert who != m or len(messages) == 1, (m, rnd, messages)


def by_address(addresses: Any) -> list[str]:
    return sorted(addresses, key=str.lower)


def model_of(f: Finalized) -> str:
    return cid_from_digest(f.model_digest)


# ------------------------------------------------------------------------------------------------
# 1. honest nodes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_honest_nodes_finalize_every_round_with_one_transaction(seed: int) -> None:
    rounds = 3
    sim = Sim(4, rounds=rounds, seed=seed)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    assert not sim.events(Skipped)
    assert not sim.events(Slashed)
    assert [e.round for e in sim.events(RoundStarted)] == [1, 2, 3, 4]
    # ONE transaction per round, by the designated submitter, with everyone's message
    assert not [t for t in sim.txs if not t.ok]
    assert [t.kind for t in sim.txs] == ["submit"] * (rounds + 1)
    for rnd in range(1, rounds + 2):
        (tx,) = sim.ok_txs("submit", rnd)
        assert tx.node == sim.members[rnd % 4]
        assert sum(1 for m in sim.members for a in sim.of(m, Submit) if a.round == rnd) == 1
        assert by_address(sim.submitted(rnd)) == sim.members
        assert {e.tx for e in sim.submitted(rnd).values()} == {tx.tx}
        assert [e.round for e in sim.events(Closed)].count(rnd) == 1  # closed by everyone's
    # the batch of round r + 1 finalizes round r and pays it; the last round is finalized by
    # the attestation-only round (messages without an update)
    for rnd in range(1, rounds + 1):
        (tx,) = sim.ok_txs("submit", rnd + 1)
        assert finals[rnd].tx == tx.tx
        assert [d.tx for d in sim.distributed(rnd)] == [tx.tx]
        assert sim.final_attesters(rnd) == sim.members
        assert sim.paid(rnd) == dict.fromkeys(sim.members, sim.rules.reward_per_round // 4)
    assert all(e.update == ZERO32 and e.examples == 0
               for e in sim.submitted(rounds + 1).values())  # fmt: skip
    assert all(e.update != ZERO32 for r in range(1, rounds + 1)
               for e in sim.submitted(r).values())  # fmt: skip
    # every reward credited once
    for m in sim.members:
        assert sim.earned(m) == rounds * sim.rules.reward_per_round // 4
    assert [e.round for e in sim.events(Distributed)] == [1, 2, 3]
    # every node reports each round once, computed itself
    last = model_of(finals[rounds])
    for m in sim.members:
        assert [d.round for d in sim.done[m]] == [1, 2, 3]
        for rnd in range(1, rounds + 1):
            done = sim.round_done(m, rnd)
            assert (done.model, done.finalized, done.adopted, done.caught_up) == (
                model_of(finals[rnd]), True, False, False)  # fmt: skip
            assert (done.included, done.attesters, done.attestations) == (4, 4, 4)
            assert done.transactions == 1
        # each round trained from the previous round's (finalized) model
        assert [t.base for t in sim.of(m, Train)] == [INIT, model_of(finals[1]),
                                                      model_of(finals[2])]  # fmt: skip
        assert sim.finished[m] == Finished(last, rounds)
        sim.assert_never_equivocated(m)


# ------------------------------------------------------------------------------------------------
# 2. a blob withholder
# ------------------------------------------------------------------------------------------------


def test_withheld_update_is_left_out_within_patience_and_earns_nothing() -> None:
    sim = Sim(4, rounds=2, seed=3)
    cheat = sim.members[0]
    honest = sim.members[1:]
    sim.withhold.add(cheat)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    patience = float(GRACE)  # the default: the task's grace
    for rnd in (1, 2):
        assert cheat in sim.submitted(rnd)  # it signed an update, and its message landed...
        assert sim.final_attesters(rnd) == honest  # ...but the quorum is the other three
        final = model_of(finals[rnd])
        for m in honest:
            (agg,) = (a for a in sim.of(m, Aggregate) if a.round == rnd)
            assert [c.sender for c in agg.inputs] == honest
            done = sim.round_done(m, rnd)
            assert (done.model, done.finalized, done.adopted, done.included) == (
                final, True, False, 3)  # fmt: skip
            assert (done.attesters, done.attestations) == (3, 4)
        # each honest node tried the withheld blob (and was refused) before giving it up, and
        # waited no longer than `patience` after the close for it
        for m in honest:
            (agg_time,) = (t for t, a in sim.actions[m]
                           if isinstance(a, Aggregate) and a.round == rnd)  # fmt: skip
            refused = [t for t, r, c in sim.refused
                       if r == m and sim.own[cheat].get(c) == rnd]  # fmt: skip
            assert refused
            assert min(refused) <= agg_time
            assert agg_time <= sim.closes_at(rnd) + 1 + patience + POLL
        (own,) = (a for a in sim.of(cheat, Aggregate) if a.round == rnd)
        assert len(own.inputs) == 4  # the withholder aggregated its own update too...
        done = sim.round_done(cheat, rnd)  # ...and adopted the finalized model
        assert (done.model, done.finalized, done.adopted, done.included) == (final, True, True, 4)
        # the withholder earns nothing for the round; the three others are paid
        (d,) = sim.distributed(rnd)
        assert list(d.contributors) == honest
        assert sim.paid(rnd) == dict.fromkeys(honest, sim.rules.reward_per_round // 3)
    assert sim.earned(cheat) == 0
    for m in honest:
        assert sim.earned(m) == 2 * (sim.rules.reward_per_round // 3)
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}
    assert not sim.events(Slashed)


# ------------------------------------------------------------------------------------------------
# 3. crashes: a node restarted from scratch with what its disk holds
# ------------------------------------------------------------------------------------------------


def crash_on(sim: Sim, victim: str, when: Callable[[Action], bool]) -> None:
    def hook(m: str, a: Action) -> bool:
        if m == victim and when(a):
            sim.crash(victim)
            return True
        return False

    sim.hook = hook


def is_train(rnd: int) -> Callable[[Action], bool]:
    return lambda a: isinstance(a, Train) and a.round == rnd


def crash_then_restart_after_the_end(seed: int) -> tuple[Sim, str, int]:
    """A node crashes as it trains round 3 and comes back once the others finished: how many
    Sign actions it took before."""
    sim = Sim(4, rounds=3, seed=seed)
    victim = sim.members[1]  # designated for round 1 only
    crash_on(sim, victim, is_train(3))
    sim.run()
    assert victim in sim.dead
    assert set(sim.finished) == set(sim.members) - {victim}
    sim.hook = None
    signed_before = len(sim.of(victim, Sign))
    sim.restart(victim)
    sim.run()
    return sim, victim, signed_before


def test_crashed_node_is_outvoted_then_catches_up_from_the_history() -> None:
    sim, victim, signed_before = crash_then_restart_after_the_end(5)
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    assert victim in sim.submitted(2)  # signed before the crash...
    assert victim not in sim.submitted(3)  # ...but not round 3's
    assert not [e for e in sim.events(Closed) if e.round == 3]  # a quorum, then grace
    assert victim not in sim.final_attesters(2)
    assert len(sim.final_attesters(2)) == len(sim.final_attesters(3)) == 3
    # the first process knew round 1's outcome (round 2's batch), not round 2's
    first = sim.round_done(victim, 1)
    assert (first.model, first.adopted) == (model_of(finals[1]), False)
    # restarted with resume=(1, round 1's model) and signed={1: ..., 2: ...}
    assert sorted(sim.persisted[victim]) == [1, 2]
    assert sim.nodes[victim].done == 3
    for rnd in (2, 3):
        done = sim.round_done(victim, rnd)
        assert (done.model, done.finalized, done.adopted) == (model_of(finals[rnd]), True, True)
    assert [d.round for d in sim.done[victim]] == [1, 2, 3]
    assert sim.finished[victim] == Finished(model_of(finals[3]), 3)
    assert len(sim.of(victim, Sign)) == signed_before  # it did not take part again
    assert not sim.events(Slashed)
    sim.assert_never_equivocated(victim)
    # its round 2 update was on chain: included if the others fetched it before the crash
    live = set(sim.members) - {victim}
    (update,) = (cid for cid, rnd in sim.own[victim].items() if rnd == 2)
    fetched = all(update in sim.stores[m] for m in live)
    assert set(sim.paid(2)) == (live | {victim} if fetched else live)
    assert set(sim.paid(3)) == live


def test_a_round_missed_while_down_is_reported_caught_up() -> None:
    sim, victim, _ = crash_then_restart_after_the_end(5)
    assert victim not in sim.submitted(3)  # it was down for the whole of round 3
    assert sim.round_done(victim, 3).caught_up is True


def test_crashed_node_restarted_in_time_takes_part_in_the_next_round() -> None:
    sim = Sim(4, rounds=3, seed=6)
    victim = sim.members[1]
    restarted: list[float] = []

    def watch(m: str, a: Action) -> bool:
        if m == victim and is_train(2)(a):
            sim.crash(victim)
            return True
        if isinstance(a, LedgerRoundDone) and a.round == 2 and not restarted:
            restarted.append(sim.now)
            sim.call_at(sim.now + 0.5, lambda: sim.restart(victim))
        return False

    sim.hook = watch
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    assert victim not in sim.submitted(2)
    assert [d.round for d in sim.done[victim]] == [1, 2, 3]
    round2, round3 = sim.done[victim][1:]
    assert (round2.model, round2.adopted) == (model_of(finals[2]), True)
    assert (round3.model, round3.adopted, round3.included) == (model_of(finals[3]), False, 4)
    assert victim in sim.submitted(3)
    # back in time to aggregate round 2 itself: it attests the finalized pair
    assert sim.submitted(3)[victim].model == finals[2].model_digest
    assert victim in sim.final_attesters(3)
    assert set(sim.paid(3)) == set(sim.members)
    assert {f.model for f in sim.finished.values()} == {model_of(finals[3])}
    assert set(sim.finished) == set(sim.members)
    assert not sim.events(Slashed)
    sim.assert_never_equivocated(victim)


def test_crash_right_after_signing_resubmits_the_persisted_message() -> None:
    sim = Sim(4, rounds=3, seed=12)
    victim = sim.members[1]  # not round 2's designated submitter
    crashed: list[float] = []

    def hook(m: str, a: Action) -> bool:
        if m == victim and isinstance(a, Sign) and a.round == 2 and not crashed:
            # persisted and signed, then the process dies: nobody got the message
            s = a.message.sign(sim.identity[m], sim.task.chain_id, sim.task.address)
            sim.persisted[m][2] = s
            sim.signatures.setdefault((m, 2), set()).add(s)
            sim.crash(m)
            crashed.append(sim.now)
            sim.call_at(sim.now + 1.0, lambda: sim.restart(victim))
            return True
        return False

    sim.hook = hook
    sim.run()
    assert crashed
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    mine = sim.persisted[victim][2]
    landed = sim.submitted(2)[victim]
    assert landed.signed() == mine  # the very message it signed before the crash
    (tx,) = (t for t in sim.ok_txs("submit", 2) if t.tx == landed.tx)
    assert tx.node == victim  # it submitted its own: nobody else had it
    (submit,) = (a for a in sim.of(victim, Submit) if a.round == 2)
    assert submit.messages == (mine,)
    assert not sim.events(Slashed)
    sim.assert_never_equivocated(victim)
    assert len(sim.of(victim, Sign)) == 3  # rounds 2 (before the crash), 3 and 4: never again
    for m in sim.members:
        assert sim.round_done(m, 2).model == model_of(finals[2])
    assert set(sim.paid(2)) == set(sim.members)  # its update was fetched and included
    assert {f.model for f in sim.finished.values()} == {model_of(finals[3])}


def test_designated_submitter_that_never_submits_delays_the_round_by_fallback() -> None:
    sim = Sim(4, rounds=3, seed=13)
    rnd = 2
    designated = sim.members[rnd % 4]
    crash_on(sim, designated, is_train(rnd))
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    live = [m for m in sim.members if m != designated]
    assert by_address(sim.submitted(rnd)) == live  # every live member's message landed
    for m in live:
        (sign_time,) = (t for t, a in sim.actions[m] if isinstance(a, Sign) and a.round == rnd)
        landed = sim.submitted(rnd)[m]
        (tx,) = (t for t in sim.ok_txs("submit", rnd) if t.tx == landed.tx)
        assert tx.node == m  # nobody else was to submit it: its own fallback
        assert landed.time - sign_time <= FALLBACK + POLL + TX_MINED + 1e-6
    assert set(sim.paid(1)) == set(sim.members)
    assert set(sim.paid(2)) == set(live)
    assert len(sim.distributed(1)) == 1
    assert {sim.finished[m].model for m in live} == {model_of(finals[3])}


def test_member_the_submitter_leaves_out_submits_its_own_before_the_phase_closes() -> None:
    # The round's designated submitter batches everyone's message but the victim's: that batch
    # reaches the quorum (3 of 4), and the phase closes `grace` (3 s) later, long before the
    # victim's `fallback` (10 s after signing). The victim sends its own at once.
    sim = Sim(4, rounds=3, seed=5, grace=3)
    rnd = 2
    censor = sim.members[rnd % 4]
    victim = next(m for m in sim.members if m != censor)

    def hook(m: str, a: Action) -> bool:
        if m == censor and isinstance(a, Submit) and a.round == rnd:
            kept = tuple(s for s in a.messages if s.signer != victim)
            assert len(kept) < len(a.messages)  # it held the victim's message
            sim.actions[m].append((sim.now, a))
            sim.at(sim.now + TX_MINED, "send", m, replace(a, messages=kept))
            return True
        return False

    sim.hook = hook
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    landed = sim.submitted(rnd)
    assert by_address(landed) == sim.members  # the victim's message is in round 2
    (own,) = (t for t in sim.ok_txs("submit", rnd) if t.tx == landed[victim].tx)
    assert own.node == victim
    (sign_time,) = (t for t, a in sim.actions[victim] if isinstance(a, Sign) and a.round == rnd)
    assert landed[victim].time < sign_time + FALLBACK  # not the timer: the quorum without it
    assert landed[victim].time <= sim.closes_at(rnd)
    assert victim in sim.paid(rnd)  # its update counted and was paid
    assert len(sim.ok_txs("submit", rnd)) == 2  # the censored batch and the victim's own


def test_privacy_budget_stops_updates_the_node_still_attests_and_a_restart_keeps_count() -> None:
    # Each node may send updates in 2 of the 4 rounds; after that its messages attest only.
    # One node crashes as it signs round 2 and restarts from its disk: the persisted round-1
    # message and the chain still count, so it does not get a third update.
    sim = Sim(4, rounds=4, seed=3, max_releases=2)
    victim = sim.members[1]

    def hook(m: str, a: Action) -> bool:
        if m == victim and isinstance(a, Sign) and a.round == 2 and sim.life[m] == 0:
            sim.sign(m, a)  # persisted and gossiped, then the process dies
            sim.crash(m)
            sim.call_at(sim.now + 0.5, lambda: sim.restart(m))
            return True
        return False

    sim.hook = hook
    sim.run()
    assert sorted(sim.finalized()) == [1, 2, 3, 4]
    for m in sim.members:
        with_update = sorted(e.round for e in sim.events(Submitted)
                             if e.member == m and e.update != ZERO32)  # fmt: skip
        assert with_update == [1, 2], m
        attest_only = [e for e in sim.events(Submitted) if e.member == m and e.round in (3, 4)]
        assert len(attest_only) == 2
        assert all(e.examples == 0 for e in attest_only)
        assert sim.nodes[m].budget_spent_at == 3
        assert [d.releases for d in sim.done[m] if d.round >= 2][-3:] == [2, 2, 2]
    # Rounds 3 and 4 had no inputs: their models are the base, nobody is paid for them.
    assert sim.paid(3) == {}
    assert sim.paid(4) == {}


# ------------------------------------------------------------------------------------------------
# 4. no quorum
# ------------------------------------------------------------------------------------------------


def test_round_without_quorum_fails_the_base_stays_and_later_rounds_finalize() -> None:
    sim = Sim(4, rounds=3, seed=7)
    silent = sim.members[:2]
    live = sim.members[2:]
    for m in silent:
        sim.crash(m)
    back: list[float] = []

    def hook(m: str, a: Action) -> bool:
        if isinstance(a, LedgerRoundDone) and a.round == 1 and not back:
            back.append(sim.now)  # round 2 closed: the two come back for round 3

            def restart() -> None:
                for s in silent:
                    sim.restart(s)

            sim.call_at(sim.now + 0.5, restart)
        return False

    sim.hook = hook
    sim.run()
    assert back
    assert [e.round for e in sim.events(Skipped)] == [1]
    finals = sim.finalized()
    assert sorted(finals) == [2, 3]
    starts = {e.round: e.start for e in sim.events(RoundStarted)}
    assert sim.closes_at(1) == starts[1] + WINDOW  # no quorum: the window ran out
    assert by_address(sim.submitted(1)) == live
    assert by_address(sim.submitted(2)) == live
    for m in sim.members:
        done = sim.round_done(m, 1)
        assert (done.model, done.finalized, done.adopted) == (INIT, False, False)
        # round 2 aggregates over the unchanged base
        assert all(a.base == INIT for a in sim.of(m, Aggregate) if a.round == 2)
        assert sim.round_done(m, 2).model == model_of(finals[2])
    assert sim.of(silent[0], Aggregate)  # the two aggregated round 2 on their return...
    assert set(sim.final_attesters(2)) == set(sim.members)  # ...and attested it
    assert not sim.distributed(1)
    assert set(sim.paid(2)) == set(live)
    assert set(sim.paid(3)) == set(sim.members)
    assert {f.model for f in sim.finished.values()} == {model_of(finals[3])}


# ------------------------------------------------------------------------------------------------
# 5. a minority attestation
# ------------------------------------------------------------------------------------------------


def test_minority_attester_adopts_the_finalized_model_and_continues() -> None:
    sim = Sim(4, rounds=2, seed=8)
    odd = sim.members[0]
    sim.tamper.add((odd, 1))
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    first = model_of(finals[1])
    assert sim.submitted(2)[odd].model != finals[1].model_digest
    assert sim.final_attesters(1) == sim.members[1:]
    done = sim.round_done(odd, 1)
    assert (done.model, done.adopted, done.attesters, done.attestations) == (first, True, 3, 4)
    (agg,) = (a for a in sim.of(odd, Aggregate) if a.round == 2)
    assert agg.base == first  # round 2 aggregates over the finalized model
    # the odd node's update was still included by the others, and rewarded
    assert set(sim.paid(1)) == set(sim.members)
    # round 2: everyone agrees again, the odd node included
    assert sim.final_attesters(2) == sim.members
    assert sim.round_done(odd, 2).adopted is False
    assert set(sim.paid(2)) == set(sim.members)
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}


def test_round_the_batch_did_not_pay_is_distributed_once() -> None:
    sim = Sim(4, rounds=2, seed=15)
    odd = sim.members[2]  # round 2's designated submitter: its batch carries its own result
    sim.tamper.add((odd, 1))
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    (batch,) = sim.ok_txs("submit", 2)
    assert batch.node == odd
    assert finals[1].tx == batch.tx  # the batch finalized round 1 but could not pay it
    (d,) = sim.distributed(1)
    assert d.tx != batch.tx
    attesters = sim.final_attesters(1)
    assert odd not in attesters
    # the lowest-address member that attested the finalized pair paid it, nobody else tried
    (dist,) = [t for t in sim.txs if t.kind == "distribute"]
    assert dist.ok
    assert dist.node == attesters[0]
    assert dist.tx == d.tx
    assert [m for m in sim.members if sim.of(m, Distribute)] == [attesters[0]]
    assert sim.paid(1) == dict.fromkeys(sim.members, sim.rules.reward_per_round // 4)
    assert [e.round for e in sim.events(Distributed)] == [1, 2]
    for m in sim.members:
        assert sim.earned(m) == 2 * (sim.rules.reward_per_round // 4)
    assert sim.round_done(odd, 1).adopted is True


def test_last_round_without_attestations_is_closed_failed() -> None:
    sim = Sim(4, rounds=1, seed=16)
    quitters = sim.members[:2]  # gone before attesting round 1

    def hook(m: str, a: Action) -> bool:
        if m in quitters and isinstance(a, Sign) and a.round == 2:
            sim.crash(m)
            return True
        return False

    sim.hook = hook
    sim.run()
    live = sim.members[2:]
    assert not sim.finalized()
    assert by_address(sim.submitted(1)) == sim.members
    assert by_address(sim.submitted(2)) == live
    assert sim.closes_at(2) == {e.round: e.start for e in sim.events(RoundStarted)}[2] + WINDOW
    # round 2 (attestations only) ran out: its designated submitter recorded round 1 failed
    (close,) = [t for t in sim.txs if t.kind == "close"]
    assert close.ok
    assert close.node == sim.members[2 % 4]
    (skipped,) = sim.events(Skipped)
    assert skipped.round == 1
    assert skipped.tx == close.tx
    for m in live:
        done = sim.round_done(m, 1)
        assert (done.model, done.finalized) == (INIT, False)
        assert sim.finished[m] == Finished(INIT, 1)
    assert not sim.events(Distributed)


# ------------------------------------------------------------------------------------------------
# 6. an equivocator
# ------------------------------------------------------------------------------------------------


def test_equivocator_is_slashed_exactly_once() -> None:
    sim = Sim(4, rounds=3, seed=14)
    liar = sim.members[0]
    designated = sim.members[2]  # round 2's: it gets (and submits) the second message
    sim.equivocate[(liar, 2)] = {designated}
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2, 3]
    assert len(sim.signatures[(liar, 2)]) == 2
    (slashed,) = sim.events(Slashed)
    assert slashed.member == liar
    # one slash transaction: the first in rank sent it at once, the others dropped theirs
    (slash,) = [t for t in sim.txs if t.kind == "slash"]
    assert slash.ok
    assert slash.node == sim.members[1]
    assert [m for m in sim.members if sim.of(m, Evidence)] == [sim.members[1]]
    assert sim.task.record(liar).status == STATUS_SLASHED
    assert sim.submitted(2)[liar].signed() in sim.signatures[(liar, 2)]
    assert liar not in sim.submitted(3)
    # round 1 was paid before the slash; nothing after
    reward = sim.rules.reward_per_round
    assert sim.earned(liar) == reward // 4
    with pytest.raises(TransactionReverted, match="slashed"):
        sim.ledgers[liar].claim(liar)
    honest = sim.members[1:]
    assert set(sim.paid(2)) == set(honest)
    assert set(sim.paid(3)) == set(honest)
    for m in honest:
        sim.assert_never_equivocated(m)
        assert sim.finished[m] == Finished(model_of(finals[3]), 3)


# ------------------------------------------------------------------------------------------------
# 7. servable
# ------------------------------------------------------------------------------------------------


def test_update_is_refused_before_its_round_closes_and_served_after() -> None:
    sim = Sim(4, rounds=2, seed=9)
    seen = {"refused": 0, "served": 0}

    def probe() -> None:
        now = sim.chain_now()
        for m in sim.members:
            node = sim.nodes[m]
            assert node.servable(INIT, now)  # anything but an own update of an open round
            for cid, rnd in sim.own[m].items():
                st = sim.task.rounds.get(rnd)
                closed = st is not None and now >= sim.task.closes_at(st)
                if node.servable(cid, now):
                    assert closed, (m, rnd)  # nobody can copy it into a message any more
                    seen["served"] += 1
                else:
                    seen["refused"] += 1

    sim.probe = probe
    sim.run()
    assert seen["refused"] > 0
    assert seen["served"] > 0
    assert sorted(sim.finalized()) == [1, 2]
    now = sim.chain_now()
    for m in sim.members:
        for cid in sim.own[m]:
            assert sim.nodes[m].servable(cid, now)
            assert all(cid in sim.stores[p] for p in sim.members)  # everyone got it after
    for rnd in (1, 2):
        for m in sim.members:
            assert sim.round_done(m, rnd).included == 4


# ------------------------------------------------------------------------------------------------
# events are knowledge: hearing one twice changes nothing
# ------------------------------------------------------------------------------------------------


def test_events_delivered_twice_change_nothing() -> None:
    sim = Sim(4, rounds=2, seed=11)
    sim.echo = set(sim.members)
    sim.run()
    finals = sim.finalized()
    assert sorted(finals) == [1, 2]
    assert [t.kind for t in sim.txs] == ["submit"] * 3
    assert all(t.ok for t in sim.txs)
    for rnd in (1, 2):
        assert by_address(sim.submitted(rnd)) == sim.members
        assert set(sim.paid(rnd)) == set(sim.members)
        for m in sim.members:
            done = sim.round_done(m, rnd)
            assert (done.adopted, done.included, done.attesters) == (False, 4, 4)
    for m in sim.members:
        assert sim.earned(m) == 2 * (sim.rules.reward_per_round // 4)
    assert {f.model for f in sim.finished.values()} == {model_of(finals[2])}


# ------------------------------------------------------------------------------------------------
# secure aggregation (the logic's part: masking sets, reveals, transcripts, abandoned rounds)
# ------------------------------------------------------------------------------------------------


def test_secure_rounds_reveal_once_with_the_chain_s_survivors_and_commit_the_transcript() -> None:
    sim = Sim(5, rounds=3, secure=True)
    dropper = sim.members[2]
    others = [m for m in sim.members if m != dropper]

    def drop_out(m: str, a: Action) -> bool:  # from round 2 on it sends no update
        if m == dropper and isinstance(a, Train) and a.round >= 2:
            sim.apply(m, sim.nodes[m].no_update(a.round, sim.chain_now()))
            return True
        return False

    sim.hook = drop_out
    sim.run()
    assert sorted(sim.finalized()) == [1, 2, 3]
    for m in sim.members:
        assert sim.nodes[m].masking_set(1) == tuple(sim.members)
        reveals = sim.of(m, Reveal)
        assert [r.round for r in reveals] == [1, 2, 3]  # once a round, after it closed
        assert reveals[0].survivors == tuple(sim.members)
        assert reveals[0].dropouts == ()
        for r in reveals[1:]:
            assert r.survivors == tuple(others)
            assert r.dropouts == (dropper,)
    for rnd in (2, 3):
        assert sim.submitted(rnd)[dropper].update == ZERO32  # it attested, sent no update
    # The transcript's digest is part of the finalized result, and the batch paid it.
    for rnd in (1, 2, 3):
        (d,) = sim.distributed(rnd)
        assert d.transcript != ZERO32
        f = sim.finalized()[rnd]
        assert f.result_digest == result_digest(list(d.contributors), list(d.scores),
                                                d.transcript)  # fmt: skip
        assert f.result_digest != result_digest(list(d.contributors), list(d.scores))
    assert list(sim.distributed(2)[0].contributors) == others


def test_a_key_registration_after_the_start_counts_from_the_round_after_next() -> None:
    """The masking set of round r is read when round max(r - 1, 1) started: fixed before any
    member masks for r."""
    sim = Sim(5, rounds=4, secure=True, keyless=1)
    late = sim.members[0]  # registers its keys only during round 2
    started: dict[int, float] = {}

    def watch() -> None:
        for e in sim.events(RoundStarted):
            if e.round not in started:
                started[e.round] = sim.now
                if e.round == 2:
                    sim.register_keys(late, first=1)

    sim.probe = watch
    sim.run()
    node = sim.nodes[sim.members[1]]
    rest = tuple(sim.members[1:])
    assert node.masking_set(1) == rest
    assert node.masking_set(2) == rest  # read at round 1's start
    assert node.masking_set(3) == rest  # read at round 2's start: the event came after it
    assert node.masking_set(4) == tuple(sim.members)
    # Outside the set it sent no update; inside it, one.
    assert [sim.submitted(r)[late].update == ZERO32 for r in (1, 2, 3, 4)] == [
        True, True, True, False,
    ]  # fmt: skip
    assert list(sim.distributed(3)[0].contributors) == list(rest)
    assert list(sim.distributed(4)[0].contributors) == sim.members
    assert sorted(sim.finalized()) == [1, 2, 3, 4]


def test_a_round_nobody_could_unmask_fails_and_the_next_one_finalizes() -> None:
    sim = Sim(4, rounds=3, secure=True)
    sim.abandon = {(m, 2) for m in sim.members}
    sim.run()
    assert sorted(sim.finalized()) == [1, 3]
    assert 2 in [e.round for e in sim.events(Skipped)]
    # Round 3's messages attested nothing for round 2.
    assert all(e.model == ZERO32 and e.result == ZERO32 for e in sim.submitted(3).values())
    for m in sim.members:
        done = sim.round_done(m, 2)
        assert not done.finalized

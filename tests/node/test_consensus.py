"""The consensus round logic, driven by a discrete-event simulation with a virtual clock.

No sockets, no torch: "training" produces a CID derived from (node, round, base), aggregation
a CID derived from the exact input set, so two nodes agree exactly when they aggregated the
same set on the same base. Messages are broadcast with seeded random delays and drops.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from fedledger.node.consensus import (
    Aggregate,
    ConsensusNode,
    Fetch,
    Finished,
    Publish,
    RoundDone,
    Timeouts,
    Train,
)


def h(*parts: object) -> str:
    return "b" + hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:20]


@dataclass(order=True)
class Event:
    time: float
    seq: int
    kind: str = field(compare=False)
    node: str = field(compare=False)
    data: Any = field(compare=False, default=None)


class Sim:
    def __init__(
        self,
        n: int,
        *,
        rounds: int = 4,
        seed: int = 0,
        drop: float = 0.0,
        repair: float | None = 0.5,
        delay: tuple[float, float] = (0.001, 0.01),
        train_time: tuple[float, float] = (0.05, 0.2),
        timeouts: Timeouts | None = None,
    ) -> None:
        self.names = [f"n{i}" for i in range(n)]
        self.rng = random.Random(seed)
        self.drop, self.delay, self.train_time = drop, delay, train_time
        self.repair = repair
        self.rounds = rounds
        self.timeouts = timeouts or Timeouts(initial=2.0, minimum=0.5, maximum=5.0)
        self.nodes = {
            m: ConsensusNode(
                me=m, members=self.names, rounds=rounds, initial_model="init",
                timeouts=self.timeouts,
            )
            for m in self.names
        }  # fmt: skip
        self.queue: list[Event] = []
        self.seq = 0
        self.now = 0.0
        self.dead: set[str] = set()
        self.stores: dict[str, set[str]] = {m: {"init"} for m in self.names}
        self.done: dict[str, list[RoundDone]] = {m: [] for m in self.names}
        self.finished: dict[str, str] = {}
        self.aggregates: dict[str, list[tuple[int, tuple[str, ...]]]] = {m: [] for m in self.names}
        self.log: list[tuple[str, dict[str, Any]]] = []  # every published message
        self.skip_train: set[tuple[str, int]] = set()

    def at(self, t: float, kind: str, node: str, data: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, Event(t, self.seq, kind, node, data))

    def apply(self, node: str, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Train):
                if (node, a.round) in self.skip_train:
                    continue
                dt = self.rng.uniform(*self.train_time)
                self.at(self.now + dt, "trained", node, (a.round, a.base, h(node, a.round, a.base)))
            elif isinstance(a, Publish):
                msg = {"kind": a.kind, "sender": node, "round": a.round, **a.body}
                self.log.append((node, msg))
                for m in self.names:
                    if m == node:
                        continue
                    t = self.now + self.rng.uniform(*self.delay)
                    if self.rng.random() < self.drop:
                        if not self.repair:
                            continue
                        t += self.repair  # lost, then repaired by the next anti-entropy pull
                    self.at(t, "msg", m, msg)
            elif isinstance(a, Fetch):
                ok = any(a.cid in self.stores[s] and s not in self.dead for s in a.sources)
                self.at(self.now + 0.005, "blob_ok" if ok else "blob_fail", node, a.cid)
            elif isinstance(a, Aggregate):
                cid = h("agg", a.base, *(c.cid for c in a.inputs))
                self.aggregates[node].append((a.round, tuple(c.sender for c in a.inputs)))
                self.stores[node].add(cid)
                self.at(self.now + 0.01, "aggregated", node, (a.round, cid))
            elif isinstance(a, RoundDone):
                # a node that re-bases reports a round again: the last report stands
                self.done[node] = [d for d in self.done[node] if d.round != a.round] + [a]
                self.stores[node].add(a.model)
            elif isinstance(a, Finished):
                self.finished[node] = a.model

    def deliver(self, ev: Event) -> None:
        node = self.nodes[ev.node]
        if ev.node in self.dead:
            return
        if ev.kind == "trained":
            rnd, base, cid = ev.data
            self.stores[ev.node].add(cid)
            self.apply(ev.node, node.trained(rnd, base, cid, 10, self.now))
        elif ev.kind == "msg":
            m = ev.data
            if m["kind"] == "update":
                acts = node.on_update(m["sender"], m["round"], m["cid"], m["num_examples"],
                                      m["base"], self.now)  # fmt: skip
            else:
                included = [s for s, _ in m["included"]]
                acts = node.on_model(m["sender"], m["round"], m["cid"], included, self.now)
            self.apply(ev.node, acts)
        elif ev.kind == "blob_ok":
            self.stores[ev.node].add(ev.data)
            self.apply(ev.node, node.blob_ready(ev.data, self.now))
        elif ev.kind == "blob_fail":
            self.apply(ev.node, node.blob_failed(ev.data, self.now))
        elif ev.kind == "aggregated":
            rnd, cid = ev.data
            self.apply(ev.node, node.aggregated(rnd, cid, self.now))
        elif ev.kind == "tick":
            self.apply(ev.node, node.tick(self.now))
            if ev.node not in self.finished:
                self.at(self.now + 0.1, "tick", ev.node)
        elif ev.kind == "start":
            self.apply(ev.node, node.start(self.now))

    def run(self, until: float = 300.0) -> None:
        for m in self.names:
            self.at(0.0, "start", m)
            self.at(0.1, "tick", m)
        while self.queue and self.now < until:
            ev = heapq.heappop(self.queue)
            self.now = ev.time
            if callable(ev.data) and ev.kind == "call":
                ev.data()
                continue
            self.deliver(ev)
            pending_calls = any(e.kind == "call" for e in self.queue)
            if len(self.finished) == len(self.names) - len(self.dead) and not pending_calls:
                break

    def final_models(self, among: list[str] | None = None) -> set[str]:
        return {self.finished[m] for m in (among or self.names) if m in self.finished}


def test_all_nodes_agree_every_round_without_faults() -> None:
    sim = Sim(5, rounds=4)
    sim.run()
    assert len(sim.finished) == 5
    assert len(sim.final_models()) == 1
    for m in sim.names:
        rounds = [d.round for d in sim.done[m]]
        assert rounds == [1, 2, 3, 4]
        assert not any(d.adopted for d in sim.done[m])  # each computed the winner itself
        assert all(d.agreeing == 5 for d in sim.done[m])
        # every node aggregated every node's update, every round
        assert sim.aggregates[m] == [(r, tuple(sim.names)) for r in range(1, 5)]
    # the rounds chain: round r's base is round r-1's model
    models = [d.model for d in sim.done["n0"]]
    assert len(set(models)) == 4


def test_no_fixed_waits_deadline_adapts_to_observed_round_times() -> None:
    sim = Sim(4, rounds=6, timeouts=Timeouts(initial=30.0, minimum=0.2, maximum=60.0))
    sim.run()
    node = sim.nodes["n0"]
    assert node.collect_timeout.average is not None
    # observed waits are well under a second, so the deadline shrank from its initial 30 s
    assert node.collect_timeout.current() < 5.0
    assert len(sim.final_models()) == 1


def by_round(sim: Sim, node: str) -> list[RoundDone]:
    return sorted(sim.done[node], key=lambda d: d.round)


@pytest.mark.parametrize("seed", range(8))
def test_agreement_survives_message_loss(seed: int) -> None:
    # 30% of announcements are lost on first transmission and arrive only after the next
    # anti-entropy pull; deadlines adapt to fast rounds, so some nodes time out and aggregate
    # different sets. Every node must still leave every round with the same model.
    sim = Sim(6, rounds=5, seed=seed, drop=0.3,
              timeouts=Timeouts(initial=0.6, minimum=0.3, maximum=5.0))  # fmt: skip
    sim.run()
    assert len(sim.finished) == 6
    for r in range(5):
        assert len({by_round(sim, m)[r].model for m in sim.names}) == 1, f"round {r + 1} split"
    assert len(sim.final_models()) == 1


def test_lost_messages_without_repair_still_end_in_one_model() -> None:
    # Unrepaired loss (no anti-entropy at all): rounds may split, but the re-base rule pulls
    # every node back to the majority model, so the task still ends with one model.
    sim = Sim(6, rounds=6, seed=0, drop=0.05, repair=None)
    sim.run()
    assert len(sim.finished) == 6
    assert len(sim.final_models()) == 1


def test_minority_result_is_adopted() -> None:
    sim = Sim(5, rounds=2, seed=3)
    # n4 never hears n0's round-1 update, so it aggregates a different set.
    orig = sim.apply

    def apply(node: str, actions: list[Any]) -> None:
        if node == "n0":
            keep = [a for a in actions if not (isinstance(a, Publish) and a.kind == "update"
                                               and a.round == 1)]  # fmt: skip
            for a in actions:
                if isinstance(a, Publish) and a.kind == "update" and a.round == 1:
                    msg = {"kind": a.kind, "sender": node, "round": a.round, **a.body}
                    for m in sim.names[1:4]:
                        sim.at(sim.now + 0.002, "msg", m, msg)
            orig(node, keep)
        else:
            orig(node, actions)

    sim.apply = apply  # type: ignore[method-assign]
    sim.run()
    r1 = {m: by_round(sim, m)[0] for m in sim.names}
    assert len({d.model for d in r1.values()}) == 1
    assert r1["n4"].adopted
    assert not r1["n1"].adopted
    assert "n0" in r1["n4"].included  # n4 adopted the model that includes n0's update
    assert len(sim.final_models()) == 1


def test_dead_member_is_dropped_and_the_rest_finish() -> None:
    sim = Sim(5, rounds=5, seed=1)
    sim.dead.add("n4")  # crashed before it ever trained
    sim.run()
    alive = sim.names[:4]
    assert set(sim.finished) == set(alive)
    assert len(sim.final_models(alive)) == 1
    node = sim.nodes["n0"]
    assert not node.alive("n4")
    # after dead_after missed deadlines, later rounds complete without waiting for n4
    assert all("n4" not in inc for _, inc in sim.aggregates["n0"])


def test_crashed_node_restarts_from_disk_and_catches_up() -> None:
    sim = Sim(5, rounds=10, seed=2)
    saved: dict[str, tuple[int, str]] = {}

    def crash() -> None:
        sim.dead.add("n2")
        last = by_round(sim, "n2")[-1]
        saved["n2"] = (last.round, last.model)  # what the runner persists after each round

    def restart() -> None:
        sim.dead.discard("n2")
        sim.nodes["n2"] = ConsensusNode(
            me="n2", members=sim.names, rounds=sim.rounds, initial_model="init",
            timeouts=sim.timeouts, resume=saved["n2"],
        )  # fmt: skip
        sim.at(sim.now, "start", "n2")
        sim.at(sim.now + 0.1, "tick", "n2")
        # anti-entropy gossip replays the recent announcements to a rejoining node
        for sender, msg in sim.log:
            if msg["round"] >= sim.nodes["n0"].round - 2 and sender != "n2":
                sim.at(sim.now + 0.01, "msg", "n2", msg)

    sim.at(0.6, "call", "-", crash)
    sim.at(1.5, "call", "-", restart)
    sim.run()
    assert set(sim.finished) == set(sim.names)
    assert len(sim.final_models()) == 1
    done = by_round(sim, "n2")
    assert done[-1].round == 10
    assert len(done) < 10  # it missed rounds while down
    assert any(d.adopted for d in done)  # it caught up by adopting the majority's model
    # ... and then took part again: later rounds include its update
    final_round = by_round(sim, "n0")[-1]
    assert "n2" in final_round.included


def test_messages_for_earlier_rounds_and_strangers_are_ignored() -> None:
    node = ConsensusNode(me="a", members=["a", "b", "c"], rounds=3, initial_model="init")
    node.start(0.0)
    assert node.on_update("mallory", 1, "bx", 5, "init", 0.1) == []
    acts = node.on_update("b", 1, "bu", 5, "init", 0.1)
    assert acts == [Fetch("bu", ("b", "c"))]
    assert node.on_update("b", 1, "bother", 5, "init", 0.2) == []  # second announcement: ignored
    assert node.on_model("mallory", 1, "bm", [], 0.3) == []


def test_resume_after_the_last_round_finishes_at_once() -> None:
    node = ConsensusNode(me="a", members=["a", "b"], rounds=3, initial_model="i", resume=(3, "m3"))
    assert node.start(0.0) == [Finished("m3", 3)]


def test_bad_timeouts_are_config_errors() -> None:
    from fedledger.errors import ConfigError

    with pytest.raises(ConfigError):
        Timeouts(minimum=2.0, maximum=1.0)
    with pytest.raises(ConfigError):
        Timeouts(initial=0.1, minimum=1.0)
    with pytest.raises(ConfigError):
        ConsensusNode(me="z", members=["a"], rounds=1, initial_model="i")

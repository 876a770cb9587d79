"""A Jepsen-style fault suite's machinery: a task on real (namespaced) hosts, a nemesis that
hurts it, and the invariants checked after every scenario.

:class:`Cluster` runs one task: ``n`` hosts (tests/netns/harness.py) with mild netem on every
link, anvil on its own host (its state in a file, so that the RPC endpoint can restart), the
task's contracts deployed from this process, one ``fedledger node`` per host.

:class:`Nemesis` plays scenarios while the task runs, each one *fault, hold, heal, recover*:

==================  =======================================================================
``kill``            SIGKILL a node; restart it from its state directory once the others
                    opened a round without it
``pause``           SIGSTOP a node for two rounds, then SIGCONT
``isolate``         one host cut from every other host *and* from the chain
``minority``        two hosts cut from the other three (everyone still reaches the chain)
``majority-ring``   each host sees itself and its two ring neighbours: a majority, but no
                    two hosts see the same one (Jepsen's majorities ring)
``bridge``          {0, 1} and {3, 4} cut apart, host 2 seeing both
``lossy``           33 % loss and 25 % duplication on every link (the chain's too)
``rpc-restart``     the chain's RPC endpoint stops (anvil dumps its state) and restarts from
                    its state file at the same URL (the hosts cut from it meanwhile, so that
                    no transaction is in flight: see :meth:`NamespacedAnvil.restart`)
==================  =======================================================================

The partitions drop frames in the switch between chosen hosts (not ``ip link set down``,
which would also cut a host from the chain: only ``isolate`` wants that).

A scenario holds its fault until the chain opened two more rounds (or two phase timeouts,
the ledger's ``window``, of chain time passed), then heals. Its invariants (:class:`Checker`):

* no two conflicting finalized results for a round (the chain's ``Finalized`` events);
* progress resumes within 3 phase timeouts of the heal: a round at or after the round open
  at the heal finalizes, at most 3 rounds later (rounds and their deadlines read from the
  chain, not the wall clock);
* no node loses state across a restart: its rounds.jsonl and state.json before the kill are
  still there after (same models, rounds never going back);
* every honest node ends on the finalized model of every round it recorded;
* nobody is slashed; the reward token's supply equals the rewards claimed, and the rewards
  credited equal the rewards distributed;
* at the end, the audit (what ``fedledger audit --run`` runs) passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from fedledger.commit.cid import cid_from_digest
from fedledger.config import TaskConfig, load_config
from fedledger.config.node import Peer, write_node_config
from fedledger.gossip.identity import Identity
from fedledger.gossip.topology import TopologySpec
from fedledger.keys import dev_deployer_key
from fedledger.ledger.chain import RpcChain
from fedledger.ledger.chain.anvil import find_anvil, install_anvil
from fedledger.ledger.contract_ledger import ContractLedger
from fedledger.ledger.records import Claimed, Distributed, Finalized, LedgerEvent, Slashed
from fedledger.node.state import STATE_FILE, read_rounds
from fedledger.run.local import start_when_joined
from fedledger.run.plan import plan
from fedledger.run.task import deploy_for_run
from tests.netns.harness import NamespacedAnvil, Network, fedledger_node

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("kill", "pause", "isolate", "minority", "majority-ring", "bridge", "lossy",
             "rpc-restart")  # fmt: skip
BASE_NETEM: dict[str, float] = {"delay": 5.0, "jitter": 2.0, "loss": 0.0, "duplicate": 0.0}


def small_task(*, nodes: int = 5, rounds: int = 12, window: int = 20, seed: int = 0,
               iid: bool = False) -> TaskConfig:  # fmt: skip
    """The suite's task: examples/digits.toml, small (an MLP of 32, ``nodes`` nodes), with a
    short phase timeout (``window`` seconds; a round closes 2 s after a quorum's messages).
    ``iid``: the data split evenly instead of the example's label skew (Dirichlet 0.5), under
    which a round without one node's labels swings the model's accuracy by 10 to 20 points
    whatever the system does (measured: 0.88, then 0.68, then 0.78 in three rounds with one
    node away): churn's cost is then statistics, not the system's."""
    base = load_config(ROOT / "examples" / "digits.toml")
    data = replace(base.data, partition="iid") if iid else base.data
    return replace(base, nodes=nodes, rounds=rounds, seed=seed, data=data,
                   model=replace(base.model, hidden=(32,)),
                   ledger=replace(base.ledger, window=window, grace=2))  # fmt: skip


@dataclass
class Cluster:
    """One task on ``net``'s hosts (see the module)."""

    net: Network
    task: TaskConfig
    out: Path
    chain: NamespacedAnvil | None = None
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopped: set[int] = field(default_factory=set)
    address: str = ""
    addresses: list[str] = field(default_factory=list)
    _reader: ContractLedger | None = None

    def start(self) -> None:
        self.net.impair_all(**BASE_NETEM)
        self.chain = NamespacedAnvil(self.net, state=self.out / "chain" / "state.json",
                                     anvil=find_anvil(ROOT) or install_anvil(ROOT))  # fmt: skip
        self.chain.start()
        url = self.chain.url
        backend = RpcChain(url, private_key=dev_deployer_key())
        identities = [Identity.generate() for _ in range(self.task.nodes)]
        self.addresses = [i.address for i in identities]
        deployment = deploy_for_run(backend, self.task, owner=backend.accounts()[0],
                                    members=self.addresses, backend=url)  # fmt: skip
        deployment.write(self.out)
        self.address = deployment.task
        task_path = self.out / "task.toml"
        task_path.write_text(self.task.to_toml(), encoding="utf-8")
        configs = plan(self.task, task_path=task_path, out=self.out, mode="consensus",
                       topology=TopologySpec(), transport="grpc", chain_url=url,
                       task_address=deployment.task, identities=identities)  # fmt: skip
        hosts = self.net.hosts
        for cfg in configs:
            peers = tuple(Peer(index=p.index, address=p.address, endpoint=hosts[p.index].endpoint())
                          for p in cfg.peers)  # fmt: skip
            cfg = replace(cfg, listen="0.0.0.0:7001", advertise=hosts[cfg.index].endpoint(),
                          peers=peers, rendezvous=None, stall_timeout=300.0)  # fmt: skip
            write_node_config(cfg, self.node_dir(cfg.index) / "node.toml")
        for i in range(self.task.nodes):
            self.start_node(i)
        owner = ContractLedger(RpcChain(url, private_key=dev_deployer_key()), deployment.task,
                               backend.accounts()[0])  # fmt: skip
        self.wait(lambda: start_when_joined(owner, self.task.nodes), 600, "the task's start")

    def node_dir(self, i: int) -> Path:
        return self.out / f"node-{i}"

    def start_node(self, i: int) -> None:
        self.procs[i] = fedledger_node(self.net, self.net.hosts[i], self.node_dir(i))

    @property
    def url(self) -> str:
        assert self.chain is not None
        return self.chain.url

    def ledger(self) -> ContractLedger:
        if self._reader is None:
            self._reader = ContractLedger(RpcChain(self.url), self.address, None)
        return self._reader

    def round(self) -> int:
        """The chain's current round (retrying while its RPC endpoint restarts)."""
        return int(self._retry(lambda: self.ledger().current_round()))

    def now(self) -> int:
        return int(self._retry(lambda: self.ledger().now()))

    def events(self) -> list[LedgerEvent]:
        return list(self._retry(lambda: self.ledger().events(-1)))

    def _retry(self, read: Callable[[], Any]) -> Any:
        for attempt in range(100):
            try:
                return read()
            except Exception:
                if attempt == 99:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def running(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def over(self) -> bool:
        """Every node process has exited (the task is over)."""
        return not self.running()

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout} s waiting for {what}")
            time.sleep(0.25)

    def finish(self, timeout: float = 900) -> None:
        """Wait for the task's end: every node exits (resumed first if paused)."""
        for i in list(self.stopped):
            self.resume(i)
        self.wait(self.over, timeout, "the end of the task")

    def pause(self, i: int) -> None:
        os.kill(self.procs[i].pid, signal.SIGSTOP)
        self.stopped.add(i)

    def resume(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.procs[i].pid, signal.SIGCONT)
        self.stopped.discard(i)

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()

    def accuracy(self) -> float:
        """The final model's test accuracy: the median of the nodes' last records."""
        accs = sorted(r[-1]["acc"] for i in range(self.task.nodes)
                      if (r := read_rounds(self.node_dir(i) / "state")))  # fmt: skip
        return accs[len(accs) // 2] if accs else 0.0


@dataclass
class Outcome:
    scenario: str
    violations: list[str]
    rounds_lost: int | None
    """Rounds from the round open at the heal to the first one finalized after it."""
    recovery: int | None
    """Chain seconds from the heal to that finalization (the block's timestamp)."""


@dataclass
class Checker:
    cluster: Cluster

    def conflicting(self, events: list[LedgerEvent]) -> list[str]:
        seen: dict[int, tuple[bytes, bytes]] = {}
        out = []
        for e in events:
            if isinstance(e, Finalized):
                pair = (e.model_digest, e.result_digest)
                if seen.setdefault(e.round, pair) != pair:
                    out.append(f"round {e.round} finalized twice, differently")
        return out

    def finalized(self, events: list[LedgerEvent]) -> dict[int, str]:
        return {e.round: cid_from_digest(e.model_digest) for e in events
                if isinstance(e, Finalized)}  # fmt: skip

    def models(self, events: list[LedgerEvent], nodes: list[int] | None = None) -> list[str]:
        """Each node's last record of every round the chain finalized holds its model."""
        finalized = self.finalized(events)
        out = []
        for i in nodes if nodes is not None else range(self.cluster.task.nodes):
            last: dict[int, str] = {}
            for r in read_rounds(self.cluster.node_dir(i) / "state"):
                last[r["round"]] = r["model"]
            for rnd, model in last.items():
                if rnd in finalized and finalized[rnd] != model:
                    out.append(f"node {i} ended round {rnd} on {model}, the chain finalized "
                               f"{finalized[rnd]}")  # fmt: skip
        return out

    def economics(self, events: list[LedgerEvent]) -> list[str]:
        """Nobody slashed; the token's supply is the rewards claimed, the rewards credited to
        the members are the rewards distributed, at most ``reward_per_round`` a finalized
        round (read between two identical readings of the balances: the chain moves on)."""
        c = self.cluster
        ledger = c.ledger()

        def balances() -> tuple[int, int]:
            earned = sum(int(c._retry(partial(ledger.earned_of, a))) for a in c.addresses)
            return earned, int(c._retry(ledger.token_supply))

        for _ in range(50):
            first = balances()
            events = c.events()
            if balances() == first:
                break
        earned, supply = first
        out = [f"{e.member} slashed" for e in events if isinstance(e, Slashed)]
        claimed = sum(e.amount for e in events if isinstance(e, Claimed))
        distributed = sum(e.total for e in events if isinstance(e, Distributed))
        cap = len(self.finalized(events)) * c.task.ledger.reward_wei
        if supply != claimed:
            out.append(f"token supply {supply} != rewards claimed {claimed}")
        if earned != distributed:
            out.append(f"rewards credited {earned} != rewards distributed {distributed}")
        if distributed > cap:
            out.append(f"rewards distributed {distributed} > {cap} for the finalized rounds")
        return out

    def snapshot(self, i: int) -> tuple[list[tuple[int, str]], int]:
        state = self.cluster.node_dir(i) / "state"
        records = [(r["round"], r["model"]) for r in read_rounds(state)]
        doc = json.loads((state / STATE_FILE).read_text()) if (state / STATE_FILE).exists() else {}
        return records, int(doc.get("round", 0))

    def kept(self, i: int, before: tuple[list[tuple[int, str]], int]) -> list[str]:
        after = self.snapshot(i)
        out = []
        if after[0][: len(before[0])] != before[0]:
            out.append(f"node {i} lost rounds.jsonl records across its restart")
        if after[1] < before[1]:
            out.append(f"node {i}'s state went back from round {before[1]} to {after[1]}")
        return out


class Nemesis:
    """Plays scenarios on a :class:`Cluster`; see the module."""

    def __init__(self, cluster: Cluster, *, seed: int = 0) -> None:
        self.c = cluster
        self.check = Checker(cluster)
        self.rng = random.Random(seed)
        self.outcomes: list[Outcome] = []
        self.window = cluster.task.ledger.window

    def hold(self, rounds: int = 2) -> None:
        """Until the chain opened ``rounds`` more rounds, or ``rounds`` windows of chain time
        passed (a fault with no quorum anywhere stalls the rounds), or the task ended."""
        r0, t0 = self.c.round(), self.c.now()
        self.c.wait(lambda: self.c.round() >= r0 + rounds or self.c.now() >= t0 + rounds
                    * self.window or self.c.over(), 60 + 3 * rounds * self.window,
                    "the fault's hold")  # fmt: skip

    def play(self, scenario: str) -> Outcome:
        net, c = self.c.net, self.c
        n = c.task.nodes
        victim = self.rng.randrange(n)
        before = None
        if scenario == "kill":
            before = self.check.snapshot(victim)
            c.kill(victim)
            self.hold(1)
            c.start_node(victim)
        elif scenario == "pause":
            c.pause(victim)
            self.hold()
            c.resume(victim)
        elif scenario in ("isolate", "minority", "majority-ring", "bridge"):
            if scenario == "isolate":
                # the chain goes with the first group: the others keep it, the victim not
                net.partition([i for i in range(n) if i != victim], [victim], chain=False)
            elif scenario == "minority":
                order = self.rng.sample(range(n), n)
                net.partition(order[:2], order[2:])
            elif scenario == "majority-ring":
                hosts = net.hosts
                net.block([(hosts[i], hosts[(i + k) % n]) for i in range(n)
                           for k in range(2, n - 1)])  # fmt: skip
            else:
                net.partition([0, 1], [3, 4])
            self.hold()
            net.heal()
        elif scenario == "lossy":
            net.impair_all(**{**BASE_NETEM, "loss": 0.33, "duplicate": 0.25})
            self.hold()
            net.impair_all(**BASE_NETEM)
        elif scenario == "rpc-restart":
            assert c.chain is not None
            net.block([(h, net.chain_host) for h in net.hosts])  # no transaction in flight
            c.chain.restart()  # checks that the chain kept its blocks
            net.heal()
        else:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        outcome = self.recover(scenario)
        if before is not None:
            c.wait(lambda: len(self.check.snapshot(victim)[0]) > len(before[0]) or c.over(),
                   600, f"node {victim} back at work after its restart")  # fmt: skip
            outcome.violations += self.check.kept(victim, before)
        self.outcomes.append(outcome)
        return outcome

    def recover(self, scenario: str) -> Outcome:
        """Wait for a finalization at or after the round open at the heal; the invariants."""
        c = self.c
        healed_round, healed_at = c.round(), c.now()
        limit = healed_round + 3

        def done() -> bool:
            events = c.events()
            late = [e for e in events if isinstance(e, Finalized) and e.round >= healed_round]
            resolved = c.round() > limit + 1 or c.over()
            return bool(late) or resolved

        c.wait(done, 120 + 6 * self.window, f"progress after {scenario}")
        events = c.events()
        violations = self.check.conflicting(events) + self.check.economics(events)
        after = sorted((e for e in events if isinstance(e, Finalized) and e.round >= healed_round),
                       key=lambda e: e.round)  # fmt: skip
        lost = recovery = None
        if after:
            lost = after[0].round - healed_round
            recovery = max(0, after[0].time - healed_at)
        ended = c.over() and healed_round >= c.task.rounds  # no round left to finalize
        if (not after or after[0].round > limit) and not ended:
            violations.append(f"no round finalized within 3 phase timeouts of the heal "
                              f"(round {healed_round})")  # fmt: skip
        # every node that is up has adopted the rounds finalized before the heal
        up = c.running()
        settled = {r for r in self.check.finalized(events) if r < healed_round}

        def adopted() -> bool:
            return not self.check.models(c.events(), up) or c.over()

        with contextlib.suppress(AssertionError):  # what is still wrong is reported below
            c.wait(adopted, 60 + 3 * self.window, "the nodes on the finalized models")
        violations += [v for v in self.check.models(c.events(), up)
                       if int(v.split("round ")[1].split(" ")[0]) in settled]  # fmt: skip
        return Outcome(scenario, violations, lost, recovery)

    def final(self) -> list[str]:
        """The invariants once the task is over, with the audit."""
        from fedledger.audit import audit_run

        events = self.c.events()
        out = self.check.conflicting(events) + self.check.models(events)
        out += self.check.economics(events)
        verdict = audit_run(self.c.out, chain=RpcChain(self.c.url))
        if not verdict.ok:
            out.append("the audit failed: " + json.dumps(verdict.to_dict())[:2000])
        return out


def churn(cluster: Cluster, share: float, *, seed: int = 0) -> Callable[[], None]:
    """A poll function: at each new round, the nodes away in the last one come back and a
    ``share`` of the nodes (rounded, carried over between rounds: 10 % of 5 is one node every
    other round) leave for the round (SIGSTOP: gone without a word)."""
    rng = random.Random(seed)
    state = {"round": 0, "carry": 0.0}

    def poll() -> None:
        rnd = cluster.round()
        if rnd <= state["round"] or cluster.over():
            return
        state["round"] = rnd
        for i in list(cluster.stopped):
            cluster.resume(i)
        state["carry"] += share * cluster.task.nodes
        k = int(state["carry"])
        state["carry"] -= k
        for i in rng.sample(cluster.running(), min(k, len(cluster.running()))):
            cluster.pause(i)

    return poll


def run_churn(net: Network, out: Path, task: TaskConfig, share: float, *, seed: int = 0) -> float:
    """One run of ``task`` with ``share`` churn per round; its final accuracy."""
    cluster = Cluster(net, task, out)
    cluster.start()
    poll = churn(cluster, share, seed=seed)
    cluster.wait(lambda: poll() or cluster.over() or cluster.round() >= task.rounds, 900,
                 "the last round")  # fmt: skip
    cluster.finish()
    return cluster.accuracy()


def churn_matrix(out: Path, task: TaskConfig, shares: Sequence[float], *,
                 seed: int = 0) -> dict[float, float]:  # fmt: skip
    """:func:`run_churn` for each share at once, each on a network of its own (the runs
    wait on phases and peers far more than they compute: side by side they cost little more
    than one); the final accuracy of each."""

    def one(share: float) -> float:
        with Network(task.nodes, out / f"net-{share:g}") as net:
            return run_churn(net, out / f"run-{share:g}", task, share, seed=seed)

    with ThreadPoolExecutor(max_workers=len(shares)) as pool:
        return dict(zip(shares, pool.map(one, shares), strict=True))


def play_all(cluster: Cluster, scenarios: Sequence[str], *, seed: int) -> tuple[Nemesis, list[str]]:
    """Every scenario on ``cluster``, in order, then the end of the task and the final
    invariants; the nemesis (its outcomes) and the final violations. A scenario whose wait
    gave up (a hang) is an outcome with that violation, and the next one still plays."""
    nemesis = Nemesis(cluster, seed=seed)
    for scenario in scenarios:
        try:
            nemesis.play(scenario)
        except AssertionError as exc:
            nemesis.outcomes.append(Outcome(scenario, [str(exc)], None, None))
    try:
        cluster.finish()
        final = nemesis.final()
    except AssertionError as exc:
        final = [str(exc)]
    return nemesis, final

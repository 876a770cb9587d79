"""Run nodes: one per process over gRPC (``fedledger node``), or a whole task on this machine
(``fedledger run``): every node a separate OS process on 127.0.0.1, or all of them in one process
over the in-memory transport. Then merge the nodes' round logs into one report.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from fedledger.attacks.behaviour import (
    OMNISCIENT,
    PROTOCOL_ATTACKS,
    Attack,
    Collusion,
)
from fedledger.attacks.data import choose_attackers
from fedledger.commit import digest_from_cid
from fedledger.config import TaskConfig
from fedledger.config.node import NodeConfig, Peer, write_node_config
from fedledger.errors import ConfigError, FedledgerError
from fedledger.gossip.blobs import FileBlobStore, MemoryBlobStore
from fedledger.gossip.grpc_transport import GrpcTransport
from fedledger.gossip.identity import Identity
from fedledger.gossip.memory import MemoryNetwork
from fedledger.gossip.topology import TopologySpec
from fedledger.gossip.transport import Transport
from fedledger.ledger.chain import Chain, EmbeddedChain, RpcChain
from fedledger.ledger.contract_ledger import ContractLedger, deploy_task
from fedledger.ledger.records import Finalized, Ledger, Slashed
from fedledger.ledger.reputation import uses_reputation
from fedledger.node.build import build_node
from fedledger.node.consensus import Timeouts
from fedledger.report import Accuracy, Report, RoundRecord
from fedledger.task import prepare_task

log = logging.getLogger("fedledger.launcher")

ProgressFn = Callable[[int, int, float], None]
"""``progress(rounds_done_by_all, total_rounds, mean_accuracy)``."""


# -- one node -------------------------------------------------------------------------------------


def load_identity(path: Path, *, password_file: Path | None = None) -> Identity:
    """The node's key from ``path``: hex or an encrypted keystore, mode 0600 (fedledger.keys;
    the password from ``password_file`` or ``$FEDLEDGER_KEY_PASSWORD``). A missing file gets a
    new random key: a keystore when a password is set, hex (mode 0600) otherwise."""
    from fedledger.keys import key_password

    password = key_password(password_file)
    if path.exists():
        return Identity.load(path, password=password)
    identity = Identity.generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {str(path.parent)!r}: {exc}", field="key_file") from exc
    if password is not None:
        identity.save_keystore(path, password)
    else:
        identity.save(path)
    return identity


def run_node(cfg: NodeConfig, *, password_file: Path | None = None) -> dict[str, Any]:
    """Run one node over gRPC until the task's last round (``fedledger node``)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    identity = load_identity(cfg.key_file, password_file=password_file)
    host, _, port = cfg.listen.rpartition(":")
    try:
        transport = GrpcTransport(host=host, port=int(port))
    except ValueError as exc:
        raise ConfigError(f"bad listen address {cfg.listen!r}", field="listen") from exc
    ledger = None
    if cfg.chain is not None and cfg.task_address is not None:
        from eth_account import Account

        chain = RpcChain(cfg.chain, private_key=identity.private_key)
        ledger = ContractLedger(chain, cfg.task_address, Account.from_key(identity.private_key))
    node = build_node(cfg, identity=identity, transport=transport, ledger=ledger)
    summary = asyncio.run(node.run())
    (cfg.state_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# -- a task on this machine -----------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free TCP ports on ``host`` (bound and released at once)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def plan(
    task: TaskConfig,
    *,
    task_path: Path,
    out: Path,
    mode: str,
    topology: TopologySpec,
    transport: str,
    timeouts: Timeouts | None = None,
    mixing: str = "metropolis_hastings",
    chain_url: str | None = None,
    task_address: str | None = None,
    attack: str | None = None,
    attackers: Sequence[int] = (),
    identities: Sequence[Identity] | None = None,
) -> list[NodeConfig]:
    """Node configurations for every member of ``task`` on 127.0.0.1.

    ``identities`` are the nodes' keys; by default they are derived from the task seed
    (:meth:`Identity.from_seed`): reproducible local simulations only, never where stakes are
    real (fedledger.keys decides; ``fedledger node`` makes a fresh key).
    """
    n = task.nodes
    if identities is None:
        identities = [Identity.from_seed(task.seed, i) for i in range(n)]
    if len(identities) != n:
        raise ConfigError(f"{len(identities)} keys for {n} nodes", field="task.nodes")
    if transport == "grpc":
        endpoints = [f"127.0.0.1:{p}" for p in free_ports(n)]
    else:
        endpoints = [f"node-{i}" for i in range(n)]
    configs = []
    for i in range(n):
        node_dir = out / f"node-{i}"
        peers = tuple(
            Peer(index=j, address=identities[j].address, endpoint=endpoints[j])
            for j in range(n)
            if j != i
        )
        configs.append(
            NodeConfig(
                task=task, task_path=task_path, index=i, key_file=node_dir / "node.key",
                state_dir=node_dir / "state", listen=endpoints[i], mode=mode, peers=peers,
                topology=topology, timeouts=timeouts or Timeouts(), mixing=mixing,
                chain=chain_url, task_address=task_address,
                attack=attack if i in attackers else None, attackers=len(attackers),
                probe="backdoor" if attack == "backdoor" else None,
            )
        )  # fmt: skip
        if transport == "grpc":
            node_dir.mkdir(parents=True, exist_ok=True)
            identities[i].save(configs[-1].key_file)  # mode 0600; replaces a previous run's
            write_node_config(configs[-1], node_dir / "node.toml")
    return configs


def _read_rounds(cfg: NodeConfig) -> list[dict[str, Any]]:
    path = cfg.state_dir / "rounds.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def _progress_of(configs: Sequence[NodeConfig]) -> tuple[int, float]:
    last: list[dict[str, Any] | None] = []
    for cfg in configs:
        records = _read_rounds(cfg)
        last.append(max(records, key=lambda r: r["round"]) if records else None)
    done = min((r["round"] if r else 0) for r in last)
    accs = [r["acc"] for r in last if r]
    return done, (sum(accs) / len(accs) if accs else 0.0)


async def run_in_memory(
    configs: Sequence[NodeConfig],
    *,
    network: MemoryNetwork | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Every node in this process, over one in-memory network."""
    if not configs:
        return []
    network = network or MemoryNetwork(seed=configs[0].task.seed)
    task = prepare_task(configs[0].task)
    collusion = _collusion(configs, omniscient=True)
    nodes = [
        build_node(
            cfg,
            identity=Identity.from_seed(cfg.task.seed, cfg.index),
            transport=network.transport(cfg.listen),
            store=MemoryBlobStore(),
            task=task,
            collusion=collusion,
        )
        for cfg in configs
    ]
    runs = [asyncio.create_task(n.run()) for n in nodes]
    if progress is not None:
        total = configs[0].task.rounds
        while not all(r.done() for r in runs):
            rounds = [max((rec["round"] for rec in n.round_records), default=0) for n in nodes]
            accs = [n.round_records[-1]["acc"] for n in nodes if n.round_records]
            progress(min(rounds), total, sum(accs) / len(accs) if accs else 0.0)
            await asyncio.wait(runs, timeout=0.2)
    return list(await asyncio.gather(*runs))


def start_node_process(cfg: NodeConfig) -> subprocess.Popen[bytes]:
    node_dir = cfg.state_dir.parent
    log_file = (node_dir / "stderr.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "fedledger", "node", "--config", str(node_dir / "node.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def run_processes(
    configs: Sequence[NodeConfig],
    *,
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    on_poll: Callable[[dict[int, subprocess.Popen[bytes]]], None] | None = None,
) -> list[dict[str, Any]]:
    """One OS process per node; wait for all of them and return their summaries.

    ``on_poll`` is called every poll with the live processes, by node index: tests use it to
    kill and restart a node mid-run.
    """
    procs = {cfg.index: start_node_process(cfg) for cfg in configs}
    deadline = None if timeout is None else time.monotonic() + timeout
    total = configs[0].task.rounds
    try:
        while any(p.poll() is None for p in procs.values()):
            if deadline is not None and time.monotonic() > deadline:
                raise FedledgerError(f"nodes did not finish within {timeout} s")
            if on_poll is not None:
                on_poll(procs)
            if progress is not None:
                done, acc = _progress_of(configs)
                progress(done, total, acc)
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    failed = {i: p.returncode for i, p in procs.items() if p.returncode != 0}
    if failed:
        raise FedledgerError(f"node process(es) failed: {failed}; see node-N/stderr.log")
    summaries = []
    for cfg in configs:
        path = cfg.state_dir / "summary.json"
        summaries.append(json.loads(path.read_text()) if path.exists() else {"node": cfg.index})
    return summaries


# -- a task with a ledger -------------------------------------------------------------------------

GAS_FUNDS = 10**18
"""Wei each node's account receives for gas, on top of its stake, in ``fedledger run``."""
LEDGER_FILE = "ledger.json"
JOURNAL_FILE = "chain.jsonl"


@dataclass(frozen=True, kw_only=True)
class LedgerDeployment:
    """Where a run's task lives on chain (written to ``ledger.json`` in the run directory)."""

    backend: str
    """``"embedded"`` or the JSON-RPC URL."""
    chain_id: int
    task: str
    token: str
    owner: str
    first_block: int
    """The block before the deployment: events are read from here on."""

    def write(self, out: Path) -> None:
        (out / LEDGER_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, out: Path) -> LedgerDeployment:
        try:
            return cls(**json.loads((out / LEDGER_FILE).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{out / LEDGER_FILE} is missing or not a ledger file: {exc}"
            ) from exc


def deploy_for_run(
    chain: Chain, task: TaskConfig, *, owner: LocalAccount, members: Sequence[str], backend: str
) -> LedgerDeployment:
    """Deploy the task's contracts and fund every member's account with stake and gas."""
    first = chain.block_number()
    task_address, token = deploy_task(chain, task, owner=owner)
    for address in members:
        chain.transfer(address, task.ledger.min_stake + GAS_FUNDS, sender=owner)
    return LedgerDeployment(backend=backend, chain_id=chain.chain_id, task=task_address,
                            token=token, owner=owner.address, first_block=first)  # fmt: skip


def _start_when_joined(owner: ContractLedger, n: int) -> bool:
    """The owner starts round 1 once ``n`` members joined; True once started."""
    if owner.current_round() > 0:
        return True
    if owner.member_count() < n:
        return False
    owner.start()
    return True


def _joining(configs: Sequence[NodeConfig]) -> int:
    """How many nodes the owner waits for before starting: all but the Sybils, whose join the
    contract refuses (their stake is below the minimum)."""
    return sum(1 for c in configs if c.attack != "sybil")


def _collusion(configs: Sequence[NodeConfig], *, omniscient: bool) -> Collusion | None:
    """One board for the attackers of this process to share what they know on: without a
    ledger every update is announced before aggregation, so they see the honest ones too
    (omniscient); under commit-reveal only their own."""
    count = sum(1 for c in configs if c.attack is not None)
    if not count:
        return None
    return Collusion(count, nodes=len(configs), omniscient=omniscient)


async def run_ledger_in_process(
    configs: Sequence[NodeConfig],
    *,
    chain: Chain,
    deployment: LedgerDeployment,
    owner: LocalAccount,
    transport: str = "memory",
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Every node in this process, each with its own account on the shared chain, over the
    memory transport or gRPC on 127.0.0.1. Blobs go to each node's directory (the audit reads
    them). The owner starts round 1 once every node joined."""
    from eth_account import Account

    task = prepare_task(configs[0].task)
    network = MemoryNetwork(seed=configs[0].task.seed)
    collusion = _collusion(configs, omniscient=False)  # commit-reveal hides honest updates
    nodes = []
    for cfg in configs:
        identity = Identity.from_seed(cfg.task.seed, cfg.index)
        if transport == "memory":
            node_transport: Transport = network.transport(cfg.listen)
        else:
            host, _, port = cfg.listen.rpartition(":")
            node_transport = GrpcTransport(host=host, port=int(port))
        ledger = ContractLedger(chain, deployment.task, Account.from_key(identity.private_key))
        store = FileBlobStore(cfg.state_dir / "blobs", durable=False)
        nodes.append(build_node(cfg, identity=identity, transport=node_transport, store=store,
                                task=task, ledger=ledger, collusion=collusion))  # fmt: skip
    runs = [asyncio.create_task(n.run()) for n in nodes]
    owner_ledger = ContractLedger(chain, deployment.task, owner)
    started = False
    total = configs[0].task.rounds
    while not all(r.done() for r in runs):
        if not started:
            started = await asyncio.to_thread(_start_when_joined, owner_ledger, _joining(configs))
        if progress is not None:
            rounds = [max((rec["round"] for rec in n.round_records), default=0) for n in nodes]
            accs = [n.round_records[-1]["acc"] for n in nodes if n.round_records]
            progress(min(rounds), total, sum(accs) / len(accs) if accs else 0.0)
        await asyncio.wait(runs, timeout=0.2)
    return list(await asyncio.gather(*runs))


def ledger_final(
    ledger: Ledger, deployment: LedgerDeployment, addresses: Sequence[str], rounds: int
) -> dict[str, Any]:
    """The report's ledger figures: rounds finalized and each node's reward tokens."""
    events = ledger.events(deployment.first_block)
    finalized = sorted({e.round for e in events if isinstance(e, Finalized) and e.round <= rounds})
    return {
        "rounds_finalized": len(finalized),
        "slashed": sorted({e.member for e in events if isinstance(e, Slashed)}),
        "rewards": {a: ledger.token_balance(a) / 10**18 for a in addresses},
        "token_supply": ledger.token_supply() / 10**18,
        "task_address": deployment.task,
    }


# -- the report ---------------------------------------------------------------------------------


def merge_report(
    configs: Sequence[NodeConfig],
    summaries: Sequence[dict[str, Any]],
    *,
    mode: str,
    transport: str,
    topology: TopologySpec,
    chain: str = "none",
    ledger: dict[str, Any] | None = None,
) -> Report:
    """One report from every node's rounds.jsonl (the last record per node and round wins)."""
    task = configs[0].task
    per_node: list[dict[int, dict[str, Any]]] = []
    for cfg in configs:
        latest: dict[int, dict[str, Any]] = {}
        for rec in _read_rounds(cfg):
            latest[rec["round"]] = rec
        per_node.append(latest)
    starts = [s["started_at"] for s in summaries if s.get("started_at")]
    t0 = min(starts) if starts else 0.0
    records: list[RoundRecord] = []
    prev_sent = [0] * len(configs)
    prev_recv = [0] * len(configs)
    for rnd in range(1, task.rounds + 1):
        recs = [(i, node[rnd]) for i, node in enumerate(per_node) if rnd in node]
        if not recs:
            continue
        acc = Accuracy.over([r["acc"] for _, r in recs])
        honest = [r["acc"] for i, r in recs if configs[i].attack is None]
        backdoor = [r["backdoor"] for i, r in recs
                    if configs[i].attack is None and r.get("backdoor") is not None]  # fmt: skip
        sent = [r["bytes_sent"] - prev_sent[i] for i, r in recs]
        recv = [r["bytes_recv"] - prev_recv[i] for i, r in recs]
        for i, r in recs:
            prev_sent[i], prev_recv[i] = r["bytes_sent"], r["bytes_recv"]
        locals_ = [r["local_acc"] for _, r in recs if r.get("local_acc") is not None]
        local = Accuracy.over(locals_)
        extra = {
            "nodes_reporting": len(recs),
            "bytes_per_node": {"sent": sum(sent) / len(sent), "recv": sum(recv) / len(recv)},
            "model_digests_agree": len({r["model"] for _, r in recs}) == 1,
            "local_acc_mean": local.acc_mean,
            "local_acc_min": local.acc_min,
            "local_acc_max": local.acc_max,
        }
        if any(c.attack is not None for c in configs):  # even when no attacker got this far
            extra["honest_acc"] = sum(honest) / len(honest) if honest else None
        if backdoor:
            extra["honest_backdoor"] = sum(backdoor) / len(backdoor)
        if mode == "consensus":
            extra["adopted"] = sum(1 for _, r in recs if r.get("adopted"))
        gases = [r["gas"] for _, r in recs if "gas" in r]
        if gases:
            extra["gas_per_node"] = sum(gases) / len(gases)
            kinds = sorted({k for _, r in recs for k in r.get("gas_by_kind", {})} - {"distribute"})
            extra["gas_per_node_by_kind"] = {
                k: sum(r.get("gas_by_kind", {}).get(k, 0) for _, r in recs) / len(recs)
                for k in kinds
            }
            extra["finalized"] = any(r.get("finalized") for _, r in recs)
        records.append(RoundRecord(
            round=rnd, acc_mean=acc.acc_mean, acc_min=acc.acc_min, acc_max=acc.acc_max,
            wall_s=max(r["t"] for _, r in recs) - t0, extra=extra,
        ))  # fmt: skip
    # Nodes the task refused to register (a stake below the minimum) hold no model.
    finals = [s.get("final_model") for s in summaries if s.get("refused") is None]
    last = records[-1] if records else None
    final: dict[str, Any] = {
        "acc_mean": last.acc_mean if last else None,
        "acc_min": last.acc_min if last else None,
        "acc_max": last.acc_max if last else None,
        "wall_s": last.wall_s if last else None,
        "wall_s_per_round": (last.wall_s / task.rounds) if last else None,
        "rounds_completed": last.round if last else 0,
        "model_digests_agree": None not in finals and len(set(finals)) == 1,
        "refused": {s["address"]: s["refused"] for s in summaries if s.get("refused")},
        "bytes_per_node_per_round": {
            "sent": sum(r.extra["bytes_per_node"]["sent"] for r in records) / max(len(records), 1),
            "recv": sum(r.extra["bytes_per_node"]["recv"] for r in records) / max(len(records), 1),
        },
        "frames_rejected": sum(s.get("frames_rejected", 0) for s in summaries),
    }
    if final["model_digests_agree"]:
        final["model_cid"] = finals[0]
        final["model_digest"] = digest_from_cid(str(finals[0])).hex()
    gas_rounds = [r.extra["gas_per_node"] for r in records if "gas_per_node" in r.extra]
    if gas_rounds:
        final["gas_per_node_per_round"] = sum(gas_rounds) / len(gas_rounds)
    if ledger is not None:
        final.update(ledger)
    extra_top = {
        "task": task.name,
        "config_digest": task.digest().hex(),
        "rule": task.aggregation.rule,
        "transport": transport,
        "chain": chain,
        "topology": topology.kind,
        "addresses": [s.get("address") for s in summaries],
    }
    return Report(mode=mode, nodes=len(configs), rounds=records, final=final, extra=extra_top)


def run_task(
    task: TaskConfig,
    *,
    out: Path,
    mode: str = "consensus",
    transport: str = "grpc",
    topology: TopologySpec | None = None,
    timeouts: Timeouts | None = None,
    mixing: str = "metropolis_hastings",
    progress: ProgressFn | None = None,
    timeout: float | None = None,
    chain: str = "none",
    deployer_key: str | bytes | None = None,
    audit: bool = True,
    attack: str | None = None,
    attackers: float = 0.0,
) -> Report:
    """``fedledger run``: the whole task on this machine, then report.json in ``out``.

    ``chain``: ``"none"`` (consensus or gossip mode without a ledger), ``"embedded"`` (an
    in-process EVM shared by every node, all in this process; its journal is saved as
    ``chain.jsonl``) or a JSON-RPC URL (one process per node, over gRPC; ``deployer_key``
    deploys and funds, by default anvil's first development account on a local development
    chain only; nodes get random keys unless the chain is one: fedledger.keys). With a ledger
    the run directory also gets ``ledger.json``, and the audit runs at the end unless
    ``audit`` is False.
    """
    if transport not in ("grpc", "memory"):
        raise ConfigError(f"unknown transport {transport!r}; known: grpc, memory",
                          field="transport")  # fmt: skip
    if chain != "none" and mode != "consensus":
        raise ConfigError("a ledger runs consensus rounds: use --mode consensus", field="mode")
    if chain == "none" and uses_reputation(task.aggregation.params):
        raise ConfigError("reputation (min_reputation, reputation_rewards) is kept on chain: "
                          "use --chain", field="aggregation")  # fmt: skip
    if chain not in ("none", "embedded") and transport != "grpc":
        raise ConfigError("nodes on an external chain run as processes over gRPC",
                          field="transport")  # fmt: skip
    topology = topology or TopologySpec()
    bad = attack_setup(task, attack=attack, attackers=attackers, chain=chain,
                       transport=transport)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    task_path = out / "task.toml"  # the effective task, overrides included, for every node
    task_path.write_text(task.to_toml(), encoding="utf-8")
    if chain == "none":
        configs = plan(task, task_path=task_path, out=out, mode=mode, topology=topology,
                       transport=transport, timeouts=timeouts, mixing=mixing, attack=attack,
                       attackers=bad)  # fmt: skip
        if transport == "memory":
            summaries = asyncio.run(run_in_memory(configs, progress=progress))
        else:
            summaries = run_processes(configs, progress=progress, timeout=timeout)
        report = merge_report(configs, summaries, mode=mode, transport=transport,
                              topology=topology)  # fmt: skip
    else:
        report = _run_with_ledger(
            task, out=out, task_path=task_path, transport=transport, topology=topology,
            timeouts=timeouts, progress=progress, timeout=timeout, chain=chain,
            deployer_key=deployer_key, audit=audit, attack=attack, attackers=bad,
        )  # fmt: skip
    if attack is not None:
        _add_attack(report, attack=attack, attackers=bad)
    report.write(out)
    return report


def attack_setup(
    task: TaskConfig, *, attack: str | None, attackers: float, chain: str, transport: str
) -> tuple[int, ...]:
    """Which nodes attack (from the seed), after checking the attack can run this way."""
    if attack is None:
        if attackers:
            raise ConfigError("--attackers needs --attack", field="attackers")
        return ()
    Attack(name=attack, n=task.nodes, f=max(1, round(attackers * task.nodes)))  # validates
    in_process = transport == "memory" or chain == "embedded"
    if attack in OMNISCIENT and not in_process:
        raise ConfigError(f"{attack} needs the attackers in one process to collude: use "
                          "--transport memory or --chain embedded", field="attack")  # fmt: skip
    if attack in PROTOCOL_ATTACKS and chain == "none":
        raise ConfigError(f"{attack} attacks the ledger protocol: use --chain embedded or a "
                          "chain URL", field="attack")  # fmt: skip
    chosen = choose_attackers(task.nodes, attackers, task.seed)
    if not chosen:
        raise ConfigError(f"{attackers} of {task.nodes} nodes is no attacker", field="attackers")
    return chosen


def _add_attack(report: Report, *, attack: str, attackers: Sequence[int]) -> None:
    """The attack in the report, and the honest nodes' final accuracy."""
    report.extra["attack"] = {"name": attack, "attackers": list(attackers)}
    last = report.rounds[-1] if report.rounds else None
    honest = last.extra.get("honest_acc") if last is not None else None
    if honest is not None:
        report.final["honest_acc_mean"] = honest
    backdoor = last.extra.get("honest_backdoor") if last is not None else None
    if backdoor is not None:
        report.final["backdoor_success"] = backdoor


def _run_with_ledger(
    task: TaskConfig,
    *,
    out: Path,
    task_path: Path,
    transport: str,
    topology: TopologySpec,
    timeouts: Timeouts | None,
    progress: ProgressFn | None,
    timeout: float | None,
    chain: str,
    deployer_key: str | bytes | None,
    audit: bool,
    attack: str | None = None,
    attackers: Sequence[int] = (),
) -> Report:
    backend: Chain
    if chain == "embedded":
        # Chain time runs one second per block, and at the wall clock's rate while idle: the
        # windows are upper bounds on waiting, whatever the number of transactions.
        embedded = EmbeddedChain(accounts=1, clock=time.time, pace="elapsed")
        backend = embedded
        identities = [Identity.from_seed(task.seed, i) for i in range(task.nodes)]
    else:
        from fedledger import keys

        # Seeded keys and anvil's public account only on a local development chain: elsewhere
        # anyone holding task.toml could sign for the nodes (fedledger.keys, docs/keys.md).
        chain_id = RpcChain(chain).chain_id
        dev = keys.is_dev_chain(chain_id, chain)
        if deployer_key is None and not dev:
            raise ConfigError(f"the chain at {chain} (chain id {chain_id}) is not a local "
                              f"development chain: give the deployer's key with "
                              f"{keys.DEPLOYER_KEY_ENV} or --deployer-keyfile",
                              field="deployer")  # fmt: skip
        rpc = RpcChain(chain, private_key=deployer_key if deployer_key is not None
                       else keys.dev_deployer_key())  # fmt: skip
        backend = rpc
        identities = keys.node_identities(task.seed, task.nodes, seeded=dev)
    members = [identity.address for identity in identities]
    owner = backend.accounts()[0]
    deployment = deploy_for_run(backend, task, owner=owner, members=members,
                                backend="embedded" if chain == "embedded" else chain)  # fmt: skip
    deployment.write(out)
    if chain == "embedded":
        configs = plan(task, task_path=task_path, out=out, mode="consensus", topology=topology,
                       transport=transport, timeouts=timeouts, attack=attack,
                       attackers=attackers)  # fmt: skip
        runner = run_ledger_in_process(
            configs, chain=backend, deployment=deployment, owner=owner, transport=transport,
            progress=progress,
        )  # fmt: skip
        try:
            summaries = asyncio.run(asyncio.wait_for(runner, timeout))
        finally:
            embedded.save(out / JOURNAL_FILE)
    else:
        configs = plan(task, task_path=task_path, out=out, mode="consensus", topology=topology,
                       transport="grpc", timeouts=timeouts, chain_url=chain,
                       task_address=deployment.task, attack=attack,
                       attackers=attackers, identities=identities)  # fmt: skip
        owner_ledger = ContractLedger(backend, deployment.task, owner)
        started = [False]

        def start(_: dict[int, subprocess.Popen[bytes]]) -> None:
            if not started[0]:
                started[0] = _start_when_joined(owner_ledger, _joining(configs))

        summaries = run_processes(configs, progress=progress, timeout=timeout, on_poll=start)
    reader = ContractLedger(backend, deployment.task, None)
    figures = ledger_final(reader, deployment, members, task.rounds)
    if audit:
        from fedledger.audit import audit_run

        verdict = audit_run(out, chain=backend)
        figures["audit_ok"] = verdict.ok
        (out / "audit.json").write_text(json.dumps(verdict.to_dict(), indent=2) + "\n")
    return merge_report(configs, summaries, mode="consensus", transport=transport,
                        topology=topology, chain=deployment.backend, ledger=figures)  # fmt: skip

